"""join's side of accounts: hidden password flows, resending them on a reconnect, no
reconnect after a kick, /ignore, /nick and the operator commands' frames."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import async_test
from processes import serve_process
from rich.console import Console

from chatcli.client.resume import ResumeState
from chatcli.client.resuming import Resumed, ResumingClient, Status
from chatcli.core.commands import parse_input
from chatcli.core.events import Ban, Kick, Mute, Nick, Register, Renamed, Unban
from chatcli.core.hub import audit_line
from chatcli.core.protocol import DirectMessage, Msg, ServerEvent
from chatcli.core.relay import AuditRecord
from chatcli.errors import ServerRefused
from chatcli.ui.join import JoinOptions, JoinSession, _named_event
from chatcli.ui.output import RichOutput
from chatcli.ui.passwords import MAX_ASKS, log_in, new_password
from chatcli.ui.render import Renderer

PASSWORD = "correct-horse-42"


class Asker:
    """A scripted user at the hidden prompt: answers in order, records the prompts."""

    def __init__(self, *answers: str | None) -> None:
        self.answers = list(answers)
        self.prompts: list[str] = []

    async def __call__(self, prompt: str) -> str | None:
        self.prompts.append(prompt)
        return self.answers.pop(0) if self.answers else None


# ----------------------------------------------------------------- new passwords


@async_test
async def test_register_asks_twice_and_refuses_a_mismatch_locally() -> None:
    ask = Asker("first-password", "other-password")
    assert await new_password(ask) == (None, "the two passwords differ; nothing sent")
    assert ask.prompts == ["new password: ", "new password again: "]
    assert await new_password(Asker(PASSWORD, PASSWORD)) == (PASSWORD, "")
    short, why = await new_password(Asker("short", "short"))
    assert short is None and "8-256" in why
    assert await new_password(Asker(None)) == (None, "cancelled")


# ----------------------------------------------------------------- a real server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[int]:
    with serve_process("--store", str(tmp_path / "s.db"), "--op", "boss") as (_, port):
        yield port


async def _register(port: int, name: str, password: str = PASSWORD) -> None:
    client = ResumingClient("127.0.0.1", port, ResumeState(name))
    await client.start()
    assert client.client is not None
    await client.client.send(Register(password=password))
    while True:
        event = await client.client.receive()
        if event.__struct_config__.tag == "registered":
            break
    await client.close()


@async_test
async def test_log_in_asks_for_a_registered_names_password(server: int) -> None:
    await _register(server, "tanaka")
    ask = Asker("wrong-password", PASSWORD)
    told: list[str] = []
    client = ResumingClient("127.0.0.1", server, ResumeState("Tanaka"))
    await log_in(client, ask, told.append)
    assert client.ready is not None and client.ready.name == "Tanaka"
    assert ask.prompts == ["password for Tanaka: "] * 2
    assert "registered" in told[0] and "wrong password" in told[1]
    assert client.state.password == PASSWORD
    await client.close()


@async_test
async def test_log_in_gives_up_after_a_few_asks_and_a_script_gets_a_hint(server: int) -> None:
    await _register(server, "kim")
    client = ResumingClient("127.0.0.1", server, ResumeState("kim"))
    ask = Asker(*["nope-nope"] * 10)
    with pytest.raises(ServerRefused, match="auth_failed"):
        await log_in(client, ask)
    assert len(ask.prompts) == MAX_ASKS
    with pytest.raises(ServerRefused, match="CHATCLI_PASSWORD"):
        await log_in(ResumingClient("127.0.0.1", server, ResumeState("kim")), None)


@async_test
async def test_log_in_asks_for_the_server_password_first(tmp_path: Path) -> None:
    secret = tmp_path / "p"
    secret.write_text("server-secret\n")
    with serve_process("--store", "memory", "--password-file", str(secret)) as (_, port):
        client = ResumingClient("127.0.0.1", port, ResumeState("ana"))
        ask = Asker("server-secret")
        await log_in(client, ask)
        assert ask.prompts == [f"server password for 127.0.0.1:{port}: "]
        await client.close()
        client = ResumingClient("127.0.0.1", port, ResumeState("bea"))
        ask = Asker("mistyped", "server-secret")  # a wrong one is asked again, not the account's
        await log_in(client, ask)
        assert ask.prompts == [f"server password for 127.0.0.1:{port}: "] * 2
        await client.close()


@async_test
async def test_a_reconnect_sends_the_password_again_without_asking(server: int) -> None:
    await _register(server, "josé")
    state = ResumeState("josé")
    state.password = PASSWORD
    client = ResumingClient("127.0.0.1", server, state, sleep=lambda _: asyncio.sleep(0.01))
    await log_in(client, None)
    statuses: list[Status] = []
    events: list[ServerEvent] = []

    def status(update: Status) -> None:
        statuses.append(update)
        if isinstance(update, Resumed):
            asyncio.get_running_loop().call_soon(asyncio.ensure_future, client.close())

    assert client.client is not None
    client.client._writer.transport.abort()  # the network drops the connection
    await asyncio.wait_for(client.run(lambda e, _new: events.append(e), status), 10)
    assert any(isinstance(s, Resumed) for s in statuses), statuses


@async_test
async def test_no_reconnect_after_a_kick(server: int) -> None:
    await _register(server, "boss")
    boss = ResumingClient("127.0.0.1", server, ResumeState("boss"))
    boss.state.password = PASSWORD
    await log_in(boss, None)
    assert boss.ready is not None and boss.ready.op
    bob = ResumingClient("127.0.0.1", server, ResumeState("bob"))
    await bob.start()
    statuses: list[Status] = []
    running = asyncio.ensure_future(bob.run(lambda e, n: None, statuses.append))
    await boss.send(Kick(name="bob", reason="enough"))
    with pytest.raises(ServerRefused, match="kicked by boss: enough"):
        await asyncio.wait_for(running, 10)
    assert not statuses  # never "connection lost, reconnecting"
    await boss.close()


# ----------------------------------------------------------------- the session


def _session() -> tuple[JoinSession, io.StringIO]:
    screen = io.StringIO()
    renderer = Renderer(me="alice")
    output = RichOutput(renderer, Console(file=screen, width=100, color_system=None))
    client = ResumingClient("127.0.0.1", 1, ResumeState("alice"))
    options = JoinOptions(host="127.0.0.1", port=1, name="alice")
    return JoinSession(client, options, output, renderer), screen


@async_test
async def test_ignore_hides_messages_and_dms_by_skeleton_and_notes_it_once() -> None:
    session, screen = _session()
    await session.submit("/ignore Bob")
    for n in (1, 2):
        session.handle(Msg(id=n, room="lobby", from_="BOB", text=f"spam {n}", ts=0.0))
    session.handle(DirectMessage(from_="bob", to="alice", text="psst", ts=0.0))
    session.handle(Msg(id=3, room="lobby", from_="carol", text="hello", ts=0.0))
    shown = screen.getvalue()
    assert "spam" not in shown and "psst" not in shown and "<carol> hello" in shown
    assert shown.count("hidden") == 1
    await session.submit("/ignore")
    assert "ignoring: Bob" in screen.getvalue()
    session.handle(Renamed(room="lobby", old="bob", name="robert", ts=0.0))
    session.handle(Msg(id=4, room="lobby", from_="robert", text="renamed spam", ts=0.0))
    assert "renamed spam" not in screen.getvalue()
    await session.submit("/unignore robert")
    session.handle(Msg(id=5, room="lobby", from_="robert", text="welcome back", ts=0.0))
    assert "<robert> welcome back" in screen.getvalue()
    await session.submit("/ignore alice")
    assert "cannot ignore yourself" in screen.getvalue()


def test_a_nick_of_ones_own_renames_the_session() -> None:
    session, screen = _session()
    session.handle(Renamed(room="lobby", old="alice", name="alicia", ts=0.0))
    assert "alice is now known as alicia" in screen.getvalue()
    assert session.client.state.name == "alicia" and session.renderer.me == "alicia"


def test_operator_commands_become_their_frames() -> None:
    def frame(line: str) -> object:
        return _named_event(parse_input(line), "r")

    assert frame("/kick bob be nice") == Kick(name="bob", reason="be nice", ref="r")
    assert frame("/ban bob") == Ban(name="bob", minutes=0, reason="", ref="r")
    assert frame("/ban bob 30 spam") == Ban(name="bob", minutes=30, reason="spam", ref="r")
    assert frame("/unban bob") == Unban(name="bob", ref="r")
    assert frame("/mute bob") == Mute(name="bob", minutes=10, ref="r")
    assert frame("/mute bob 0") == Mute(name="bob", minutes=0, ref="r")
    assert frame("/unmute bob") == Mute(name="bob", minutes=0, ref="r")
    assert frame("/nick 田中さん") == Nick(name="田中さん", ref="r")


def test_register_with_the_password_on_the_line_is_refused_in_join() -> None:
    command = parse_input("/register hunter2hunter2")
    assert command.error and "hunter2" not in command.error


def test_an_audit_line_says_who_did_what_and_escapes_what_clients_typed() -> None:
    assert audit_line(AuditRecord("alice", "ban", "bob", 60, "spam", "10.0.0.9")) == (
        "operator alice ban bob for 60 min address 10.0.0.9 reason spam"
    )
    assert audit_line(AuditRecord("alice", "mute", "bob", 0)) == "operator alice unmute bob"
    forged = audit_line(AuditRecord("alice", "kick", "bob", None, "x\nINFO fake line"))
    assert "\n" not in forged


def test_colours_are_the_same_for_case_and_composition_variants() -> None:
    from chatcli.ui.render import user_colour

    assert user_colour("José") == user_colour("JOSÉ") == user_colour("jose\u0301")
    assert user_colour("田中さん") == user_colour("田中さん")


def test_a_wide_name_takes_two_cells_per_character_on_screen() -> None:
    from rich.cells import cell_len

    screen = io.StringIO()
    renderer = Renderer(me="José")
    console = Console(file=screen, width=24, color_system=None)
    RichOutput(renderer, console).show(
        Msg(id=1, room="lobby", from_="田中さん", text="こんにちは、みなさん", ts=0.0)
    )
    lines = screen.getvalue().splitlines()
    assert lines[0].startswith("<田中さん> ")
    assert all(cell_len(line) <= 24 for line in lines), lines  # wrapped by cells, not len()


def test_a_password_typed_on_the_line_is_not_kept_in_the_input_history(
    tmp_path: Path,
) -> None:
    from chatcli.ui.join import _private_history

    path = tmp_path / "input-history"
    history = _private_history(str(path))
    for line in ("hello", "/register hunter2hunter2", "/PASSWORD old new-one-1", "/register"):
        history.append_string(line)
    kept = path.read_text()
    assert "hello" in kept and "/register" in kept and "hunter2" not in kept
    assert "new-one" not in kept
