"""Rendering: exact output, literal markup, no escape sequence ever reaching the terminal."""

from __future__ import annotations

import io
import re
import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from rich.console import Console
from rich.text import Text

from chatcli.core.protocol import (
    DirectMessage,
    Error,
    Joined,
    Left,
    Msg,
    Ping,
    Pong,
    Ready,
    RoomInfo,
    RoomList,
    Users,
    Welcome,
)
from chatcli.transcript import End, Header
from chatcli.ui.render import PALETTE, PALETTE_RGB, Renderer, fnv1a_32, user_colour

T0 = 1795251600.0  # 2026-11-21 09:00:00 UTC
ESC = "\x1b"


def console(color_system: str | None = "truecolor") -> Console:
    return Console(file=io.StringIO(), width=100, force_terminal=True, color_system=color_system)  # type: ignore[arg-type]


def show(renderer: Renderer, event: object, color_system: str | None = "truecolor") -> str:
    out = console(color_system)
    text = renderer.render(event)
    assert text is not None
    out.print(text)
    return out.file.getvalue()  # type: ignore[attr-defined]


def msg(text: str = "hi", who: str = "alice", i: int = 1, **kw: object) -> Msg:
    return Msg(id=i, room="lobby", from_=who, text=text, ts=T0 + i, **kw)  # type: ignore[arg-type]


def sgr(style: str) -> str:
    return f"{ESC}[{style}m"


RESET = sgr("0")


def plain(event: object, **options: object) -> str | None:
    return Renderer(tz=UTC, clock=lambda: T0, **options).plain(event)  # type: ignore[arg-type]


# ------------------------------------------------------------------------ exact output


def test_message_exact_output() -> None:
    assert user_colour("alice") == "color(71)"  # fixed for ever: FNV-1a, not hash()
    out = show(Renderer(), msg("hello there"))
    assert out == f"{sgr('38;5;71')}<alice>{RESET} hello there\n"


def test_action_dm_and_system_lines_exact_output() -> None:
    renderer = Renderer()
    bob = user_colour("bob").removeprefix("color(").removesuffix(")")
    assert show(renderer, msg("waves", action=True)) == f"{sgr('38;5;71')}* alice{RESET} waves\n"
    assert show(renderer, DirectMessage(from_="alice", to="bob", text="psst", ts=T0)) == (
        f"{sgr('1;35')}[dm] {RESET}{sgr('38;5;71')}alice{RESET}{sgr('2')} -> {RESET}"
        f"{sgr(f'38;5;{bob}')}bob{RESET}: psst\n"
    )
    assert show(renderer, Joined(room="lobby", name="alice", ts=T0)) == (
        f"{sgr('2')}-- {RESET}{sgr('2;38;5;71')}alice{RESET}{sgr('2')} joined lobby{RESET}\n"
    )
    assert show(renderer, Error(code="rate_limited", message="slow down")) == (
        f"{sgr('31')}!! {RESET}{sgr('1;31')}rate_limited{RESET}{sgr('31')}: slow down{RESET}\n"
    )


def test_plain_lines_for_every_event() -> None:
    cases: list[tuple[object, str]] = [
        (msg("hi"), "09:00:01 <alice> hi"),
        (msg("waves", action=True), "09:00:01 * alice waves"),
        (
            DirectMessage(from_="alice", to="bob", text="psst", ts=T0 + 2),
            ("09:00:02 [dm] alice -> bob: psst"),
        ),
        (Joined(room="dev", name="carol", ts=T0 + 3), "09:00:03 -- carol joined dev"),
        (
            Left(room="dev", name="carol", reason="quit", ts=T0 + 4),
            "09:00:04 -- carol left dev (quit)",
        ),
        (
            Left(room="dev", name="dan", reason="lost", ts=T0),
            "09:00:00 -- dan left dev (connection lost)",
        ),
        (
            Left(room="dev", name="dan", reason="part", ts=T0),
            "09:00:00 -- dan left dev (moved to another room)",
        ),
        (
            Left(room="dev", name="dan", reason="timeout", ts=T0),
            "09:00:00 -- dan left dev (timed out)",
        ),
        (
            Left(room="dev", name="dan", reason="slow", ts=T0),
            "09:00:00 -- dan left dev (too slow to keep up)",
        ),
        (Left(room="dev", name="dan", reason="kicked", ts=T0), "09:00:00 -- dan left dev (kicked)"),
        (Left(room="dev", name="dan", reason="eaten", ts=T0), "09:00:00 -- dan left dev (eaten)"),
        (Users(room="lobby", users=["alice", "bob"]), "09:00:00 -- in lobby: alice, bob"),
        (Users(room="lobby", users=[]), "09:00:00 -- in lobby: nobody"),
        (
            RoomList(rooms=[RoomInfo("dev", 1), RoomInfo("lobby", 3)]),
            ("09:00:00 -- rooms: dev (1), lobby (3)"),
        ),
        (RoomList(rooms=[]), "09:00:00 -- rooms: none"),
        (
            Error(code="no_such_user", message="no user zed"),
            "09:00:00 !! no_such_user: no user zed",
        ),
        (
            Welcome(server="chatcli/0.1.0", proto=1, users=["alice"], rooms=[], hint="login NAME"),
            ("09:00:00 -- connected to chatcli/0.1.0; online: alice"),
        ),
        (
            Welcome(server="chatcli/0.1.0", proto=1, users=[], rooms=[], hint=""),
            ("09:00:00 -- connected to chatcli/0.1.0"),
        ),
        (End(ts=T0 + 60, events=12), "09:01:00 -- recording ended (12 events)"),
    ]
    for event, line in cases:
        assert plain(event, timestamps=True) == line
        assert plain(event) == line[len("09:00:00 ") :]


def test_ready_shows_history_then_who_is_here() -> None:
    ready = Ready(
        name="bob",
        room="lobby",
        users=["alice", "bob"],
        history=[msg("earlier", i=1), msg("later", who="carol", i=2)],
        truncated=True,
    )
    assert plain(ready, timestamps=True) == (
        "09:00:01 <alice> earlier\n"
        "09:00:02 <carol> later\n"
        "09:00:00 -- you are bob in lobby; here: alice, bob (older messages were not kept)"
    )
    assert plain(Ready(name="bob", room="dev", users=["bob"], history=[])) == (
        "-- you are bob in dev; here: bob"
    )


def test_transcript_header_line() -> None:
    header = Header(
        version=1,
        started=datetime.fromtimestamp(T0, UTC),
        source="client",
        recorder="chatcli 0.1.0",
        room="lobby",
        name="alice",
    )
    assert plain(header, timestamps=True) == (
        "09:00:00 -- recording started 2026-11-21 09:00:00 UTC in lobby by alice"
        " (client, chatcli 0.1.0)"
    )


def test_heartbeats_render_nothing() -> None:
    renderer = Renderer()
    for event in (Ping(), Pong(), object(), None):
        assert renderer.render(event) is None
        assert renderer.plain(event) is None


def test_show_room_prefixes_messages() -> None:
    assert plain(msg("hi"), show_room=True) == "[lobby] <alice> hi"


# --------------------------------------------------------------------------- options


def test_timestamps_toggle_and_default_to_local_time() -> None:
    renderer = Renderer()
    assert renderer.plain(msg()) == "<alice> hi"
    renderer.timestamps = True
    local = time.strftime("%H:%M:%S", time.localtime(T0 + 1))
    assert renderer.plain(msg()) == f"{local} <alice> hi"
    renderer.timestamps = False
    assert renderer.plain(msg()) == "<alice> hi"


def test_timestamps_in_a_given_zone_and_from_the_clock() -> None:
    tokyo = timezone(timedelta(hours=9))
    renderer = Renderer(timestamps=True, tz=tokyo, clock=lambda: T0 + 3600)
    assert renderer.plain(msg()) == "18:00:01 <alice> hi"
    assert renderer.plain(Users(room="lobby", users=[])) == "19:00:00 -- in lobby: nobody"
    stamp = show(renderer, msg()).split(RESET)[0]
    assert stamp == f"{sgr('2')}18:00:01 "  # the time is dim


def test_own_lines_are_bold_and_mentions_stand_out() -> None:
    colour = "38;5;71"
    mine = show(Renderer(me="ALICE"), msg("my line"))
    assert mine == f"{sgr('1;' + colour)}<alice>{RESET} {sgr('1')}my line{RESET}\n"
    carol = user_colour("carol").removeprefix("color(").removesuffix(")")
    mention = show(Renderer(me="Alice"), msg("hey alice, look", who="carol"))
    assert mention == f"{sgr('38;5;' + carol)}<carol>{RESET} {sgr('1;7')}hey alice, look{RESET}\n"
    for text in ("hey alicia", "malice", "alice_b here"):
        assert show(Renderer(me="alice"), msg(text, who="carol")).endswith(f" {text}\n")
    # Plain logs look the same whoever reads them.
    assert Renderer(me="alice").plain(msg("my line")) == "<alice> my line"


def test_same_colour_for_a_name_in_any_case_and_any_renderer() -> None:
    first, second = Renderer(), Renderer(me="bob", timestamps=True)
    for name in ("alice", "Bob", "x", "carol.w", "Zoë"):
        expected = PALETTE[fnv1a_32(name.lower().encode()) % len(PALETTE)]
        assert user_colour(name) == user_colour(name.upper()) == user_colour(name.lower())
        assert user_colour(name) == expected
        for renderer in (first, second):
            text = renderer.render(msg(who=name))
            assert text is not None
            styles = {str(span.style) for span in text.spans}
            assert any(expected in style for style in styles)


def test_fnv1a_matches_the_published_test_vectors() -> None:
    assert fnv1a_32(b"") == 0x811C9DC5
    assert fnv1a_32(b"a") == 0xE40C292C
    assert fnv1a_32(b"foobar") == 0xBF9CF968


def test_common_names_get_different_colours() -> None:
    """The README's and the textbooks' names must be told apart at a glance."""
    common = ["alice", "bob", "carol", "dave", "eve", "mallory"]
    assert len({user_colour(n) for n in common}) == len(common)
    assert user_colour("alice") != user_colour("carol")


def test_every_name_colour_reads_on_dark_and_light_backgrounds() -> None:
    """WCAG relative luminance between the extremes: contrast >= 2.5 against both."""

    def luminance(rgb: str) -> float:
        def channel(value: int) -> float:
            c = value / 255
            return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

        r, g, b = (int(rgb[i : i + 2], 16) for i in (1, 3, 5))
        return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)

    for index, rgb in PALETTE_RGB:
        lum = luminance(rgb)
        on_black, on_white = (lum + 0.05) / 0.05, 1.05 / (lum + 0.05)
        assert min(on_black, on_white) >= 2.5, (index, rgb, on_black, on_white)


def test_palette_spreads_names_and_avoids_error_red() -> None:
    names = [f"user{i}" for i in range(200)]
    assert len({user_colour(n) for n in names}) == len(PALETTE) >= 8
    assert not {"red", "bright_red", "yellow", "white", "black"} & set(PALETTE)


# ----------------------------------------------------------------------- untrusted text

MARKUP = [
    "[red]x[/]",
    "[link=http://e]click[/link]",
    "[bold magenta]loud[/bold magenta]",
    ":smile: :thumbs_up:",
    "\\[escaped] [/]",
    "[#ff0000 on white]hex[/]",
]


@pytest.mark.parametrize("text", MARKUP)
def test_markup_in_messages_prints_literally(text: str) -> None:
    for renderer in (Renderer(), Renderer(me="alice")):
        out = show(renderer, msg(text, who="alice"), color_system=None)
        assert out == f"<alice> {text}\n"
        assert renderer.plain(msg(text)) == f"<alice> {text}"
        colour = show(renderer, msg(text))
        assert "\x1b]8;" not in colour  # no hyperlink was made
        assert "\x1b[31m" not in colour and "\x1b[35m" not in colour


def test_markup_in_names_rooms_and_errors_prints_literally() -> None:
    renderer = Renderer()
    evil = "[red]r[/]"
    assert renderer.plain(Joined(room=evil, name="bob", ts=T0)) == f"-- bob joined {evil}"
    assert renderer.plain(Error(code=evil, message=evil)) == f"!! {evil}: {evil}"
    assert show(renderer, Users(room=evil, users=[evil]), color_system=None) == (
        f"-- in {evil}: {evil}\n"
    )


HOSTILE = [
    "\x1b[31mred\x1b[0m",  # SGR
    "\x1b[2J\x1b[H",  # clear screen, cursor home
    "\x1b]0;pwned title\x07",  # OSC set title
    "\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\",  # OSC 8 hyperlink
    "\x1bP+q544e\x1b\\",  # DCS
    "\x9b31m C1 CSI",
    "\x9d0;title\x9c C1 OSC",
    "bell\x07 bs\x08 cr\r lf\n tab\t nul\x00 del\x7f",
    "\x85 NEL \x8d RI",
    "bidi \u202eevil\u202c \u2066iso\u2069 \u202a\u202b\u202d",
    "trailing lone ESC \x1b",
]
FORBIDDEN = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
RICH_SGR = re.compile("\x1b\\[[0-9;]*m")


def hostile_events(bad: str) -> list[object]:
    return [
        Msg(id=1, room=bad, from_=bad, text=bad, ts=T0),
        Msg(id=1, room=bad, from_=bad, text=bad, ts=T0, action=True),
        DirectMessage(from_=bad, to=bad, text=bad, ts=T0),
        Joined(room=bad, name=bad, ts=T0),
        Left(room=bad, name=bad, reason=bad, ts=T0),
        Users(room=bad, users=[bad, bad]),
        RoomList(rooms=[RoomInfo(bad, 1)]),
        Error(code=bad, message=bad),
        Welcome(server=bad, proto=1, users=[bad], rooms=[], hint=bad),
        Ready(
            name=bad,
            room=bad,
            users=[bad],
            history=[Msg(id=1, room=bad, from_=bad, text=bad, ts=T0)],
        ),
        Header(
            version=1,
            started=datetime.fromtimestamp(T0, UTC),
            source=bad,
            recorder=bad,
            room=bad,
            name=bad,
        ),
    ]


@pytest.mark.parametrize("bad", HOSTILE)
def test_no_escape_or_control_character_reaches_the_terminal(bad: str) -> None:
    for renderer in (Renderer(), Renderer(me=bad, timestamps=True, show_room=True, tz=UTC)):
        for event in hostile_events(bad):
            text = renderer.render(event)
            assert text is not None
            assert not FORBIDDEN.search(text.plain), (event, text.plain)
            assert not FORBIDDEN.search(renderer.plain(event) or "")
            # Without colours, rich must print no escape at all...
            assert ESC not in show(renderer, event, color_system=None)
            # ...and with colours, only its own SGR styling codes.
            coloured = show(renderer, event)
            leftover = RICH_SGR.sub("", coloured)
            assert not FORBIDDEN.search(leftover), (event, coloured)
            assert "pwned" not in coloured and "http://evil" not in coloured  # payloads too


def test_escape_payloads_are_removed_not_just_the_escape() -> None:
    renderer = Renderer()
    assert renderer.plain(msg("a\x1b[31mred\x1b[0mb")) == "<alice> aredb"
    assert renderer.plain(msg("x\x1b]0;pwned\x07y")) == "<alice> xy"
    assert renderer.plain(msg("\u202egnp.exe\u202c")) == "<alice> gnp.exe"


def test_unicode_is_shown_as_is() -> None:
    renderer = Renderer()
    for text in ("café ☕", "😀👍🏽👨‍👩‍👧", "مرحبا", "你好，世界", "e\u0301"):
        assert renderer.plain(msg(text)) == f"<alice> {text}"
        assert show(renderer, msg(text), color_system=None) == f"<alice> {text}\n"


def test_render_returns_rich_text() -> None:
    assert isinstance(Renderer().render(msg()), Text)


def test_history_on_entry_is_dim_timed_and_ruled_off_from_live_lines() -> None:
    ready = Ready(
        name="bob",
        room="lobby",
        users=["alice", "bob"],
        history=[msg("earlier"), msg("later")],
    )
    renderer = Renderer(me="bob", tz=UTC)  # timestamps off: history shows them anyway
    out = show(renderer, ready, color_system=None)
    assert out == (
        "09:00:01 <alice> earlier\n"
        "09:00:01 <alice> later\n"
        "──── history above, live below ────\n"
        "-- you are bob in lobby; here: alice, bob\n"
    )
    text = renderer.render(ready)
    assert text is not None
    dim = [(span.start, span.end) for span in text.spans if str(span.style) == "dim"]
    first, second = len("09:00:01 <alice> earlier"), len("09:00:01 <alice> later")
    assert (0, first) in dim and (first + 1, first + 1 + second) in dim  # whole lines
    # logs and pipes are unchanged: the same lines as before, no rule
    assert renderer.plain(ready) == (
        "<alice> earlier\n<alice> later\n-- you are bob in lobby; here: alice, bob"
    )
