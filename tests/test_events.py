"""The event table is complete and consistent, and every list of event types comes from it."""

from __future__ import annotations

import io
import re
import typing
from pathlib import Path

import msgspec
import pytest

from chatcli.core import events, protocol, relay
from chatcli.core.events import (
    CLIENT_TYPES,
    ERROR_CODES,
    ERRORS,
    EVENTS,
    FATAL_CODES,
    RECORDED,
    RECORDED_TYPES,
    SERVER_TYPES,
    EventType,
    Msg,
    event_type,
)
from chatcli.core.lines import Line, LineOptions, Role, Span, notice
from chatcli.replay import player
from chatcli.transcript import (
    Item,
    ServerRecorder,
    TranscriptEvent,
    TranscriptWriter,
    read_transcript,
)
from chatcli.ui.render import Renderer

ROOT = Path(__file__).resolve().parent.parent
T0 = 1795251600.0  # 2026-11-21 09:00:00 UTC


def members(union: object) -> set[type]:
    return set(typing.get_args(union))


def table_classes(*directions: str) -> set[type]:
    return {entry.cls for entry in EVENTS if entry.direction in directions}


def all_event_structs() -> set[type]:
    """Every wire event struct defined in chatcli.core.events."""
    base = events._Event
    return {
        value
        for value in vars(events).values()
        if isinstance(value, type) and issubclass(value, base) and value is not base
    }


# ----------------------------------------------------------------------------- the table


def test_every_event_struct_has_exactly_one_entry() -> None:
    classes = [entry.cls for entry in EVENTS]
    assert len(classes) == len(set(classes))
    assert set(classes) == all_event_structs()


def test_the_unions_hold_what_the_table_gives_each_direction() -> None:
    assert members(protocol.ClientEvent) == table_classes("client", "both")
    assert members(protocol.ServerEvent) == table_classes("server", "both")
    recorded = {entry.cls for entry in RECORDED}
    assert members(events.RecordedEvent) == recorded
    assert members(TranscriptEvent) == recorded
    assert members(player.Event) == recorded
    assert members(Item) - recorded == {
        t for t in members(Item) if t.__module__ == "chatcli.transcript"
    }


def test_derived_type_sets() -> None:
    def tags(union: object) -> set[str]:
        return {cls.__struct_config__.tag for cls in members(union)}

    assert tags(protocol.ClientEvent) == CLIENT_TYPES
    assert tags(protocol.ServerEvent) == SERVER_TYPES
    board = ["draw", "erase", "move", "clear"]
    assert {"msg", "dm", "join", "leave", *board} == RECORDED_TYPES
    assert {entry.type: entry.cls for entry in RECORDED} == player.EVENT_TYPES
    # as --type lists them
    assert list(player.EVENT_TYPES) == ["msg", "dm", "join", "leave", *board]
    # the names protocol exported before the table keep working
    assert protocol.CLIENT_TYPES is CLIENT_TYPES and protocol.SERVER_TYPES is SERVER_TYPES


@pytest.mark.parametrize("entry", EVENTS, ids=lambda entry: f"{entry.direction}-{entry.type}")
def test_entry_fields_name_attributes_of_its_struct(entry: EventType) -> None:
    fields = set(entry.cls.__struct_fields__)
    for field in (entry.room, entry.actor, entry.target):
        assert field is None or field in fields
    if entry.recorded:  # transcripts and replay need a time and something to show
        assert "ts" in fields
        assert entry.layout is not None
    if entry.text:
        assert entry.layout is not None and entry.direction != "client"


@pytest.mark.parametrize(
    ("decode", "known", "foreign"),
    [
        (protocol.decode_client_frame, CLIENT_TYPES, "welcome"),
        (protocol.decode_server_frame, SERVER_TYPES, "hello"),
    ],
)
def test_decoders_know_every_type_of_their_direction(
    decode: typing.Callable[[bytes], object], known: frozenset[str], foreign: str
) -> None:
    for kind in known:
        try:
            decode(b'{"type":"%s"}' % kind.encode())
        except protocol.ProtocolError as exc:  # a known type missing its fields
            assert exc.code == "bad_request", kind
    with pytest.raises(protocol.ProtocolError) as info:
        decode(b'{"type":"%s"}' % foreign.encode())
    assert info.value.code == "unknown_type"


def test_transcripts_read_back_every_recorded_type(tmp_path: Path) -> None:
    samples = [
        Msg(id=1, room="lobby", from_="alice", text="hi", ts=T0),
        events.DirectMessage(from_="alice", to="bob", text="psst", ts=T0),
        events.Joined(room="lobby", name="bob", ts=T0),
        events.Left(room="lobby", name="bob", reason="quit", ts=T0),
        events.Drawn(
            id=7,
            room="lobby",
            from_="alice",
            shape=events.Shape(kind="text", points=((10.5, 20.0),), color="#d62728", text="hi"),
            ts=T0,
        ),
        events.Erased(room="lobby", id=7, by="alice", ts=T0),
        events.Moved(room="lobby", id=8, dx=10.0, dy=-5.5, by="bob", ts=T0),
        events.Cleared(room="lobby", by="carol", all=False, ts=T0),
    ]
    assert {type(sample) for sample in samples} == {entry.cls for entry in RECORDED}
    path = tmp_path / "t.jsonl"
    with TranscriptWriter.create(path, source="client", clock=lambda: T0) as writer:
        for sample in samples:
            assert writer.write(sample)
    with read_transcript(path) as reader:
        read = [entry.event for entry in reader][1:-1]
    assert read == samples


def test_event_type_and_people() -> None:
    dm = events.DirectMessage(from_="alice", to="bob", text="psst", ts=T0)
    entry = event_type(dm)
    assert entry is not None and entry.type == "dm" and entry.direction == "server"
    assert entry.people(dm) == ("alice", "bob")
    assert entry.room_of(dm) is None
    joined = events.Joined(room="dev", name="carol", ts=T0)
    assert event_type(joined).room_of(joined) == "dev"  # type: ignore[union-attr]
    assert event_type("not an event") is None
    assert event_type(events.SendDirect(to="bob", text="x")).type == "dm"  # type: ignore[union-attr]


def test_text_mode_lines_are_the_lines_join_and_replay_print() -> None:
    """One layout: a text session gets what join prints with times and rooms shown."""
    renderer = Renderer(timestamps=True, show_room=True)
    for event in [
        Msg(id=1, room="lobby", from_="alice", text="hi", ts=T0),
        Msg(id=2, room="lobby", from_="alice", text="waves", ts=T0, action=True),
        events.DirectMessage(from_="alice", to="bob", text="psst", ts=T0),
        events.Joined(room="lobby", name="bob", ts=T0),
        events.Left(room="lobby", name="bob", reason="slow", ts=T0),
    ]:
        line = protocol.format_text_event(event)
        assert line is not None and line == renderer.plain(event)
    # events that carry no time: join stamps them with its clock, text sessions do not
    users = events.Users(room="lobby", users=["alice", "bob"])
    assert protocol.format_text_event(users) == "-- in lobby: alice, bob"
    clocked = Renderer(timestamps=True, tz=None, clock=lambda: T0).plain(users)
    assert clocked is not None and clocked.endswith(" -- in lobby: alice, bob")
    for silent in (events.Ping(), events.Pong()):
        assert protocol.format_text_event(silent) is None and renderer.plain(silent) is None


# ------------------------------------------------------------------- a future event type


class Draw(events._Event, tag="draw", frozen=True):
    """A v1.1-style board event: recorded, in a room, not sent to text sessions."""

    id: int
    room: str
    from_: str = msgspec.field(name="from")
    ts: float


def _draw_lines(event: Draw, options: LineOptions) -> list[Line]:
    return [notice(event.ts, options, Span(event.from_, Role.NAME, event.from_), " drew")]


DRAW = EventType(
    Draw, "server", room="room", actor="from_", recorded=True, text=False, layout=_draw_lines
)


def test_one_entry_is_all_a_recorded_board_event_needs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The table's shape fits v1.1's board events: one entry and everything follows."""
    monkeypatch.setitem(events._BY_CLASS, Draw, DRAW)
    draw = Draw(id=7, room="dev", from_="alice", ts=T0)
    # recorded, in its room's file
    writer = TranscriptWriter(io.BytesIO(), source="server", close_file=False)
    assert writer.write(draw)
    recorder = ServerRecorder(tmp_path, clock=lambda: T0)
    assert recorder.write(draw)
    recorder.close()
    assert [Path(p).name for p in recorder.paths] == ["20261121-090000_dev.jsonl"]
    # shown by join and replay, not sent to text sessions
    assert Renderer(timestamps=False).plain(draw) == "-- alice drew"
    assert protocol.format_text_event(draw) is None  # type: ignore[arg-type]
    # replay's filters find its room and its actor
    keep = player.EventFilter.build(rooms=["dev"], users=["ALICE"])
    assert keep(draw)
    assert not player.EventFilter.build(rooms=["lobby"])(draw)


# ----------------------------------------------------------------------------- errors


def test_error_table_is_complete_and_says_what_closes() -> None:
    codes = [error.code for error in ERRORS]
    assert len(codes) == len(set(codes))
    assert set(codes) == ERROR_CODES
    v1_open = {"bad_request", "unknown_type", "not_logged_in", "no_such_user", "rate_limited"}
    v1_closed = {
        "frame_too_large",
        "name_invalid",
        "name_taken",
        "login_timeout",
        "auth_failed",
        "slow_consumer",
        "server_shutdown",
        "server_full",
    }
    v11_closed = {"replaced", "kicked", "banned"}
    v11_open = {"muted", "forbidden", "board_full", "unavailable"}
    assert v1_open | v1_closed | v11_closed | v11_open == ERROR_CODES
    assert v1_closed | v11_closed == FATAL_CODES
    # one set, re-exported where it was imported from before
    assert protocol.FATAL_CODES is FATAL_CODES and relay.FATAL_CODES is FATAL_CODES
    assert protocol.ERROR_CODES is ERROR_CODES


_RAISED = re.compile(
    r"""(?:ProtocolError|ServerRefused|FrameTooLarge|__init__)\(\s*["']([a-z_]+)["']"""
    r"""|\bcode\s*(?:=|==|!=)\s*["']([a-z_]+)["']"""
)


def test_every_error_code_the_code_base_uses_is_in_the_table() -> None:
    found: dict[str, str] = {}
    for path in sorted((ROOT / "chatcli").rglob("*.py")):
        for match in _RAISED.finditer(path.read_text(encoding="utf-8")):
            code = match.group(1) or match.group(2)
            found.setdefault(code, str(path.relative_to(ROOT)))
    # the scan must see the codes raised in several layers, or it proves nothing
    assert {"name_invalid", "server_full", "slow_consumer", "frame_too_large"} <= found.keys()
    unknown = {code: where for code, where in found.items() if code not in ERROR_CODES}
    assert not unknown


def test_the_documented_error_table_agrees() -> None:
    doc = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([a-z_]+)` \|[^|]*\| (closed|stays open) \|$", doc, re.MULTILINE)
    assert len(rows) >= 13
    for code, connection in rows:
        assert code in ERROR_CODES
        assert (code in FATAL_CODES) == (connection == "closed"), code
