"""The sans-I/O protocol core: framing, decoding, validation, cleaning and text mode.

No sockets and no event loop; the decoder, the framer and clean_text are also fuzzed with
hypothesis, because nothing a peer sends may make them raise anything but ProtocolError.
"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatcli.client.connection import MAX_SERVER_FRAME
from chatcli.core.protocol import (
    MAX_TEXT,
    TEXT_HELP,
    Bye,
    DirectMessage,
    Error,
    Hello,
    Joined,
    JoinRoom,
    Left,
    LineFramer,
    Me,
    Msg,
    Ping,
    Pong,
    Ready,
    RoomInfo,
    RoomList,
    RoomsRequest,
    Say,
    SendDirect,
    Users,
    Welcome,
    Who,
    clean_text,
    decode_client_frame,
    decode_server_frame,
    encode,
    format_text_event,
    name_key,
    parse_text_line,
    valid_name,
    valid_room,
)
from chatcli.errors import FrameTooLarge, ProtocolError

# ------------------------------------------------------------------------------ framing


def test_framer_splits_lines_and_keeps_the_tail() -> None:
    framer = LineFramer(100)
    assert framer.feed(b'{"a":1}\n{"b":2}\n{"c"') == [b'{"a":1}', b'{"b":2}']
    assert framer.pending == 4
    assert framer.feed(b":3}\n") == [b'{"c":3}']
    assert framer.pending == 0


def test_framer_strips_one_cr_and_skips_empty_lines() -> None:
    framer = LineFramer(100)
    assert framer.feed(b"a\r\n\n\r\nb\n\n") == [b"a", b"b"]
    # only one trailing \r is part of the line ending; a lone \r is a (blank) frame
    assert framer.feed(b"c\r\r\n") == [b"c\r"]
    assert framer.feed(b"\r\r\n") == [b"\r"]


def test_framer_cr_and_lf_split_across_chunks() -> None:
    framer = LineFramer(100)
    assert framer.feed(b"hello\r") == []
    assert framer.feed(b"\nworld") == [b"hello"]
    assert framer.feed(b"\n") == [b"world"]


def test_framer_byte_by_byte() -> None:
    framer = LineFramer(16)
    data = b"one\r\ntwo\n\nthree\n"
    frames = [frame for byte in data for frame in framer.feed(bytes([byte]))]
    assert frames == [b"one", b"two", b"three"]
    assert framer.pending == 0


def test_framer_accepts_a_line_of_exactly_max_frame() -> None:
    framer = LineFramer(10)
    assert framer.feed(b"x" * 10 + b"\n") == [b"x" * 10]
    assert framer.feed(b"y" * 10 + b"\r\n") == [b"y" * 10]


def test_framer_refuses_a_complete_line_over_max_frame() -> None:
    framer = LineFramer(10)
    with pytest.raises(FrameTooLarge) as info:
        framer.feed(b"x" * 11 + b"\n")
    assert info.value.code == "frame_too_large"
    assert info.value.limit == 10


def test_framer_refuses_an_unfinished_tail_over_max_frame() -> None:
    framer = LineFramer(10)
    assert framer.feed(b"x" * 10) == []
    with pytest.raises(FrameTooLarge):
        framer.feed(b"xx")


def test_framer_refuses_a_long_tail_after_complete_lines() -> None:
    framer = LineFramer(10)
    with pytest.raises(FrameTooLarge):
        framer.feed(b"ok\n" + b"x" * 20)


def test_framer_max_frame_line_with_cr_split_before_the_newline() -> None:
    """A line of exactly max_frame bytes plus \\r\\n is accepted however it is chunked."""
    framer = LineFramer(10)
    assert framer.feed(b"x" * 10 + b"\r") == []
    assert framer.feed(b"\n") == [b"x" * 10]


def test_framer_default_is_64_kib() -> None:
    framer = LineFramer()
    assert framer.max_frame == 65536
    assert framer.feed(b"a" * 65536 + b"\n") == [b"a" * 65536]
    with pytest.raises(FrameTooLarge):
        framer.feed(b"a" * 65537 + b"\n")


def _chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


def _reference_frames(data: bytes, max_frame: int) -> list[bytes] | None:
    """What a framer must produce from ``data``; None when some line is too large."""
    *lines, tail = data.split(b"\n")
    out = []
    for line in lines:
        line = line.removesuffix(b"\r")
        if len(line) > max_frame:
            return None
        if line:
            out.append(line)
    if len(tail) > max_frame + 1:
        return None
    return out


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(max_size=300)
    | st.lists(st.sampled_from([b"a", b"bb", b"\r", b"\n", b"\r\n", b"x" * 9]), max_size=60).map(
        b"".join
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=20),
    max_frame=st.integers(min_value=1, max_value=20),
)
def test_framer_any_chunking_frames_within_limit_or_too_large(
    data: bytes, cuts: list[int], max_frame: int
) -> None:
    framer = LineFramer(max_frame)
    frames: list[bytes] = []
    try:
        for chunk in _chunked(data, cuts):
            frames.extend(framer.feed(chunk))
    except FrameTooLarge:
        assert _reference_frames(data, max_frame) is None
        return
    assert all(0 < len(f) <= max_frame for f in frames)
    assert all(b"\n" not in f for f in frames)
    assert framer.pending <= max_frame + 1
    # the framing does not depend on how the bytes were chunked
    assert frames == _reference_frames(data, max_frame)


# ----------------------------------------------------------------------------- decoding


@pytest.mark.parametrize(
    ("line", "event"),
    [
        (b'{"type":"hello","name":"alice"}', Hello(name="alice")),
        (
            b'{"type":"hello","name":"alice","room":"dev","since":3,"history":0}',
            Hello(name="alice", room="dev", since=3, history=0),
        ),
        (b'{"type":"hello","name":"bob","since":null}', Hello(name="bob")),
        (b'{"type":"say","text":"hi"}', Say(text="hi")),
        (b'{"type":"say","text":"hi","ref":"c-17"}', Say(text="hi", ref="c-17")),
        (b'{"type":"say","text":"hi","ref":17}', Say(text="hi", ref=17)),
        (b'{"type":"me","text":"waves","ref":"r"}', Me(text="waves", ref="r")),
        (b'{"type":"dm","to":"bob","text":"psst"}', SendDirect(to="bob", text="psst")),
        (b'{"type":"who"}', Who()),
        (b'{"type":"rooms"}', RoomsRequest()),
        (b'{"type":"join","room":"dev"}', JoinRoom(room="dev")),
        (b'{"type":"bye"}', Bye()),
        (b'{"type":"ping"}', Ping()),
        (b'{"type":"pong"}', Pong()),
        # unknown fields are ignored, including a spoofed sender
        (b'{"type":"say","text":"hi","from":"mallory","x":[1,{}]}', Say(text="hi")),
        (b' {"text":"hi","type":"say"} ', Say(text="hi")),
    ],
)
def test_decode_every_client_frame_type(line: bytes, event: object) -> None:
    assert decode_client_frame(line) == event


def test_decode_cleans_text_of_say_me_and_dm() -> None:
    raw = {"text": "\x1b[31mred\x1b[0m \u202eevil", "ref": "r"}
    assert decode_client_frame(json.dumps({"type": "say", **raw}).encode()) == Say(
        text="red evil", ref="r"
    )
    assert decode_client_frame(json.dumps({"type": "me", **raw}).encode()) == Me(
        text="red evil", ref="r"
    )
    assert decode_client_frame(json.dumps({"type": "dm", "to": "bob", **raw}).encode()) == (
        SendDirect(to="bob", text="red evil", ref="r")
    )


def _refusal(line: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode_client_frame(line)
    return info.value


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        (b"not json", "not valid JSON"),
        (b'{"type":"say","text":"hi"', "not valid JSON"),
        (b'{"type":"say","text":"\xff\xfe"}', "UTF-8"),
        (b"[1,2]", "array"),
        (b'"say"', "a string"),
        (b"42", "a number"),
        (b"null", "null"),
        (b"true", "a boolean"),
        (b"{}", '"type"'),
        (b'{"type":1}', '"type"'),
        (b'{"type":null}', '"type"'),
        (b'{"type":["say"]}', '"type"'),
        (b'{"type":"say"}', "text"),
        (b'{"type":"say","text":5}', "text"),
        (b'{"type":"say","text":"a","ref":true}', "ref"),
        (b'{"type":"say","text":"a","ref":1.5}', "ref"),
        (b'{"type":"say","text":"a","ref":{}}', "ref"),
        (b'{"type":"hello"}', "name"),
        (b'{"type":"hello","name":7}', "name"),
        (b'{"type":"hello","name":"a","room":5}', "room"),
        (b'{"type":"hello","name":"a","since":-1}', "since"),
        (b'{"type":"hello","name":"a","history":-1}', "history"),
        (b'{"type":"hello","name":"a","history":"3"}', "history"),
        (b'{"type":"dm","text":"x"}', "to"),
        (b'{"type":"dm","to":5,"text":"x"}', "to"),
        (b'{"type":"join"}', "room"),
        (b'{"type":"join","room":null}', "room"),
    ],
)
def test_decode_bad_request(line: bytes, needle: str) -> None:
    error = _refusal(line)
    assert error.code == "bad_request"
    assert needle in error.message
    assert error.ref is None


@pytest.mark.parametrize("kind", ["msg", "welcome", "ready", "users", "error", "nope", "SAY", ""])
def test_decode_unknown_type(kind: str) -> None:
    error = _refusal(json.dumps({"type": kind, "ref": "r9"}).encode())
    assert error.code == "unknown_type"
    assert error.ref == "r9"


def test_unknown_type_message_is_clean_and_short() -> None:
    error = _refusal(json.dumps({"type": "\x1b]0;pwned\x07" + "z" * 500}).encode())
    assert error.code == "unknown_type"
    assert "\x1b" not in error.message and "\x07" not in error.message
    assert len(error.message) < 100


@pytest.mark.parametrize(
    ("line", "ref"),
    [
        (b'{"type":"say","text":"   ","ref":"c-1"}', "c-1"),
        (b'{"type":"say","text":"","ref":2}', 2),
        (b'{"type":"say","text":5,"ref":"c-3"}', "c-3"),
        (b'{"type":"me","text":"\\u001b[2J","ref":"c-4"}', "c-4"),
        (b'{"type":"dm","to":"bob","text":"\\t\\n","ref":"c-5"}', "c-5"),
        (b'{"type":"nope","ref":"c-6"}', "c-6"),
        (b'{"type":7,"ref":"c-7"}', "c-7"),
    ],
)
def test_errors_echo_the_ref(line: bytes, ref: object) -> None:
    assert _refusal(line).ref == ref


@pytest.mark.parametrize("ref", ["true", "1.5", "[1]", "{}"])
def test_an_unusable_ref_is_not_echoed(ref: str) -> None:
    assert _refusal(b'{"type":"nope","ref":' + ref.encode() + b"}").ref is None


@pytest.mark.parametrize(
    "line",
    [
        b"[" * 100_000,
        b"{" * 100_000,
        b'{"a":' * 50_000,
        b"[" * 5_000 + b"]" * 5_000,
        b'{"type":"say","text":"a","x":' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        b'{"type":"say","text":"a","ref":' + b"[" * 50_000,
    ],
)
def test_deeply_nested_json_is_a_bad_request_not_a_crash(line: bytes) -> None:
    error = _refusal(line)
    assert error.code == "bad_request"


def test_decode_server_frames_ignore_unknown_fields_and_refuse_unknown_types() -> None:
    msg = decode_server_frame(
        b'{"type":"msg","id":1,"room":"lobby","from":"a","text":"hi","ts":1.5,"new":true}'
    )
    assert msg == Msg(id=1, room="lobby", from_="a", text="hi", ts=1.5)
    with pytest.raises(ProtocolError) as info:
        decode_server_frame(b'{"type":"from_the_future"}')
    assert info.value.code == "unknown_type"
    with pytest.raises(ProtocolError) as info:
        decode_server_frame(b"[" * 100_000)
    assert info.value.code == "bad_request"


def test_encode_is_compact_one_line_and_omits_defaults() -> None:
    assert encode(Msg(id=3, room="lobby", from_="a", text="hi", ts=1.0)) == (
        b'{"type":"msg","id":3,"room":"lobby","from":"a","text":"hi","ts":1.0}\n'
    )
    assert encode(Error(code="bad_request", message="m", ref="r")) == (
        b'{"type":"error","code":"bad_request","message":"m","ref":"r"}\n'
    )
    assert encode(Ping()) == b'{"type":"ping"}\n'
    assert encode(Say(text="a\nb")) == b'{"type":"say","text":"a\\nb"}\n'


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.binary(max_size=200)
    | st.builds(
        lambda obj: json.dumps(obj).encode(),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(
                    st.sampled_from(["type", "text", "name", "ref", "to", "room", "since", "x"]),
                    inner,
                    max_size=5,
                )
            ),
            max_leaves=12,
        ),
    )
    | st.builds(
        lambda kind, fields: json.dumps({"type": kind, **fields}).encode(),
        st.sampled_from(["hello", "say", "me", "dm", "who", "rooms", "join", "bye", "ping"]),
        st.dictionaries(
            st.sampled_from(["text", "name", "ref", "to", "room", "since", "history"]),
            st.none() | st.integers() | st.text(max_size=8) | st.booleans(),
            max_size=4,
        ),
    )
)
def test_decoder_raises_nothing_but_protocol_error(line: bytes) -> None:
    try:
        event = decode_client_frame(line)
    except ProtocolError as exc:
        assert exc.code in {"bad_request", "unknown_type"}
        return
    # whatever was accepted can be re-encoded, and its text is clean and bounded
    encode(event)
    text = getattr(event, "text", None)
    if text is not None:
        assert clean_text(text) == text and 0 < len(text) <= MAX_TEXT and not text.isspace()


# --------------------------------------------------------------------------- clean_text

_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


@pytest.mark.parametrize(
    ("dirty", "clean"),
    [
        ("\x1b[31mred\x1b[0m", "red"),
        ("\x1b[2J\x1b[Hhome", "home"),
        ("\x1b[?25lhidden", "hidden"),
        ("a\x1b[1;2;3mb", "ab"),
        ("\x9b31mC1 csi", "C1 csi"),
        ("\x1b]0;title\x07after", "after"),
        ("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "link"),
        ("\x9d0;title\x9cafter", "after"),
        ("before\x1b]0;never terminated", "before"),
        ("\x1bPdcs payload\x1b\\ok", "ok"),
        ("\x1b_apc\x1b\\ok", "ok"),
        ("\x1b^pm\x07ok", "ok"),
        ("\x1bXsos\x1b\\ok", "ok"),
        ("\x1bcreset", "reset"),
        ("\x1b7saved\x1b8", "saved"),
        ("trailing esc\x1b", "trailing esc"),
        ("bell\x07 back\x08 nul\x00 tab\t nl\n cr\r", "bell back nul tab nl cr"),
        ("del\x7f", "del"),
        ("c1\x80\x85\x9f", "c1"),
        ("\u202eevil\u202c", "evil"),
        ("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069x", "x"),
    ],
)
def test_clean_text_strips(dirty: str, clean: str) -> None:
    assert clean_text(dirty) == clean


@pytest.mark.parametrize(
    "text",
    [
        "hello",
        "héllo wörld",
        "日本語",
        "emoji 👍🏽 👨‍👩‍👧",
        "[red]markup[/] stays",
        "a  b",
        "ü\u200d",
    ],
)
def test_clean_text_leaves_plain_unicode_alone(text: str) -> None:
    assert clean_text(text) == text


@settings(max_examples=500)
@given(
    st.text(
        alphabet=st.characters(codec="utf-8")
        | st.sampled_from(["\x1b", "[", "]", "\\", "\x07", "\x9b", "\x9c", "\x9d", "m", ";", "P"])
        | st.characters(min_codepoint=0, max_codepoint=0x9F)
        | st.characters(min_codepoint=0x2066, max_codepoint=0x2069)
        | st.characters(min_codepoint=0x202A, max_codepoint=0x202E),
        max_size=60,
    )
)
def test_clean_text_output_is_clean_and_idempotent(text: str) -> None:
    cleaned = clean_text(text)
    assert not _FORBIDDEN.search(cleaned)
    assert clean_text(cleaned) == cleaned


# ----------------------------------------------------------------------- text limits


def _say(text: str, ref: str | None = None) -> bytes:
    return json.dumps({"type": "say", "text": text, "ref": ref}).encode()


def test_text_of_4096_code_points_is_accepted() -> None:
    assert decode_client_frame(_say("é" * MAX_TEXT)) == Say(text="é" * MAX_TEXT)
    assert decode_client_frame(_say("👍" * MAX_TEXT)) == Say(text="👍" * MAX_TEXT)


def test_text_of_4097_code_points_is_refused() -> None:
    error = _refusal(_say("x" * (MAX_TEXT + 1), "r"))
    assert (error.code, error.ref) == ("bad_request", "r")
    assert "4096" in error.message


def test_text_length_counts_after_cleaning() -> None:
    assert decode_client_frame(_say("x" * MAX_TEXT + "\x1b[0m" * 10)) == Say(text="x" * MAX_TEXT)


@pytest.mark.parametrize("text", ["", " ", "\t\n ", "\u3000", "\x1b[31m", "\x00\x01", "\u202e "])
def test_empty_or_whitespace_only_text_is_refused(text: str) -> None:
    error = _refusal(_say(text, "c-9"))
    assert (error.code, error.ref) == ("bad_request", "c-9")


# ---------------------------------------------------------------------- names and rooms


@pytest.mark.parametrize(
    "name",
    ["a", "alice", "Alice_B", "x.y-z", "0", "a" * 24, "SERVERS", "sys", "_", "élise"],
)
def test_valid_names(name: str) -> None:
    assert valid_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a" * 25,
        "al ice",
        "alice!",
        "bob\n",
        "a/b",
        "server",
        "Server",
        "SERVER",
        "system",
        "SyStEm",
    ],
)
def test_invalid_names(name: str) -> None:
    assert not valid_name(name)


def test_name_key_is_case_insensitive() -> None:
    assert name_key("Alice") == name_key("alice") == name_key("ALICE")


@pytest.mark.parametrize("room", ["lobby", "a", "dev-2", "x_y", "0", "a" * 32])
def test_valid_rooms(room: str) -> None:
    assert valid_room(room)


@pytest.mark.parametrize("room", ["", "Lobby", "a" * 33, "a b", "dev.2", "#dev", "café", "a\n"])
def test_invalid_rooms(room: str) -> None:
    assert not valid_room(room)


# ---------------------------------------------------------------------------- text mode


@pytest.mark.parametrize(
    ("line", "event"),
    [
        ("say hello there", Say(text="hello there")),
        ("SAY  hi ", Say(text="hi")),
        ("hello world", Say(text="hello world")),
        ("  indented", Say(text="  indented")),
        ("look", Who()),
        ("/who", Who()),
        ("/WHO", Who()),
        ("/users", Who()),
        ("/rooms", RoomsRequest()),
        ("/join dev", JoinRoom(room="dev")),
        ("/msg bob hi there", SendDirect(to="bob", text="hi there")),
        ("/dm bob psst", SendDirect(to="bob", text="psst")),
        ("/me waves", Me(text="waves")),
        ("logout", Bye()),
        ("/quit", Bye()),
        ("/exit", Bye()),
        ("say \x1b[31mred", Say(text="red")),
        # the aliases join has always had: one alias table now serves both
        ("/names", Who()),
        ("/list", RoomsRequest()),
        ("/tell bob hi", SendDirect(to="bob", text="hi")),
        ("/bye", Bye()),
        ("/join #dev", JoinRoom(room="dev")),
        ("//etc/hosts", Say(text="/etc/hosts")),
        (".q", Say(text=".q")),  # join's dot shortcuts are chat in text mode
    ],
)
def test_parse_text_line_logged_in(line: str, event: object) -> None:
    assert parse_text_line(line, logged_in=True) == event


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        ("/help", TEXT_HELP),
        ("help", TEXT_HELP),
        ("/join", "!! usage: /join ROOM"),
        ("/msg bob", "!! usage: /msg NAME TEXT"),
        ("/msg bob    ", "!! usage: /msg NAME TEXT"),
        ("/msg", "!! usage: /msg NAME TEXT"),
        ("/me", "!! usage: /me TEXT"),
        ("login bob", "you are already logged in"),
        ("/frobnicate", "!! unknown command /frobnicate; try /help"),
        # join's client-only commands mean nothing to a text session
        ("/time", "!! unknown command /time; try /help"),
        ("/record", "!! unknown command /record; try /help"),
    ],
)
def test_parse_text_line_local_replies(line: str, reply: str) -> None:
    assert parse_text_line(line, logged_in=True) == reply


@pytest.mark.parametrize(
    "line", ["help me please", "look at this", "logout is broken", "Look, a bird"]
)
def test_text_lines_that_merely_start_with_a_bare_command_word_are_said(line: str) -> None:
    """After login, any line not starting with / is said (spec), even 'look at this'."""
    assert parse_text_line(line, logged_in=True) == Say(text=line)


def test_parse_text_line_before_login() -> None:
    assert parse_text_line("login alice", logged_in=False) == Hello(name="alice")
    assert parse_text_line("LOGIN  alice ", logged_in=False) == Hello(name="alice")
    assert parse_text_line("login", logged_in=False) == "!! usage: login NAME [PASSWORD]"
    assert parse_text_line("help", logged_in=False) == TEXT_HELP
    assert parse_text_line("logout", logged_in=False) == Bye()
    for line in ("hi there", "say hi", "/who", "look", "/msg bob hi", "/join dev"):
        with pytest.raises(ProtocolError) as info:
            parse_text_line(line, logged_in=False)
        assert info.value.code == "not_logged_in"


@pytest.mark.parametrize("line", ["say ", "say \x1b[0m", "   ", "/me \x07", "/msg bob \x1b[2J"])
def test_parse_text_line_refuses_empty_text(line: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_text_line(line, logged_in=True)
    assert info.value.code == "bad_request"


def test_parse_text_line_refuses_long_text() -> None:
    assert parse_text_line("y" * MAX_TEXT, logged_in=True) == Say(text="y" * MAX_TEXT)
    with pytest.raises(ProtocolError):
        parse_text_line("y" * (MAX_TEXT + 1), logged_in=True)


TS = 1763700000.123


def _clock(ts: float = TS) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def test_format_text_event() -> None:
    c = _clock()
    msg = Msg(id=1, room="lobby", from_="alice", text="hi", ts=TS)
    assert format_text_event(msg) == f"{c} [lobby] <alice> hi"
    action = Msg(id=2, room="lobby", from_="alice", text="waves", ts=TS, action=True)
    assert format_text_event(action) == f"{c} [lobby] * alice waves"
    dm = DirectMessage(from_="alice", to="bob", text="psst", ts=TS)
    assert format_text_event(dm) == f"{c} [dm] alice -> bob: psst"
    assert format_text_event(Joined(room="dev", name="bob", ts=TS)) == f"{c} -- bob joined dev"
    assert format_text_event(Left(room="dev", name="bob", reason="lost", ts=TS)) == (
        f"{c} -- bob left dev (connection lost)"
    )
    assert format_text_event(Users(room="dev", users=["a", "b"])) == "-- in dev: a, b"
    rooms = RoomList(rooms=[RoomInfo("dev", 1), RoomInfo("lobby", 3)])
    assert format_text_event(rooms) == "-- rooms: dev (1), lobby (3)"
    error = Error(code="no_such_user", message="no user named 'x' is online")
    assert format_text_event(error) == "!! no_such_user: no user named 'x' is online"
    welcome = Welcome(server="chatcli/9", proto=1, users=[], rooms=[], hint="type login NAME")
    assert format_text_event(welcome) == "-- connected to chatcli/9"
    assert format_text_event(Ping()) is None
    assert format_text_event(Pong()) is None


def test_format_text_ready_with_history() -> None:
    c = _clock()
    ready = Ready(
        name="bob",
        room="lobby",
        users=["alice", "bob"],
        history=[Msg(id=1, room="lobby", from_="alice", text="earlier", ts=TS)],
        truncated=True,
    )
    assert format_text_event(ready) == (
        f"{c} [lobby] <alice> earlier\n"
        "-- you are bob in lobby; here: alice, bob (older messages were not kept)"
    )
    empty = Ready(name="bob", room="dev", users=["bob"], history=[])
    assert format_text_event(empty) == "-- you are bob in dev; here: bob"


def test_the_cores_import_no_io_or_ui_library() -> None:
    """Convention 1: protocol and relay stay sans-I/O (checked in a fresh interpreter)."""
    code = (
        "import sys, chatcli.core.protocol, chatcli.core.relay\n"
        "bad = {'asyncio', 'socket', 'selectors', 'click', 'rich', 'uvloop'} & set(sys.modules)\n"
        "assert not bad, sorted(bad)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


# ------------------------------------------------------------------ framer review


def test_a_long_line_arriving_in_many_chunks_is_framed_in_linear_time() -> None:
    """The framer copied its whole unfinished tail on every chunk: quadratic time.

    A hostile server sending a line of tens of MiB (the client allows 64 MiB) froze
    ``chatcli join`` for many seconds of CPU before any limit applied; a relay paid the
    same for every client trickling a 64 KiB line. 32 MiB in 64 KiB reads took ~5 s.
    """
    framer = LineFramer(MAX_SERVER_FRAME)
    chunk = b"x" * 65536
    # CPU seconds of this process, not wall seconds: a busy machine does not stretch them.
    # Linear framing takes a few hundredths; the quadratic copy took seconds.
    started = time.process_time()
    for _ in range(512):
        assert framer.feed(chunk) == []
    assert framer.pending == 512 * 65536
    frames = framer.feed(b"y\nz")
    spent = time.process_time() - started
    assert [len(frame) for frame in frames] == [512 * 65536 + 1]
    assert frames[0] == b"x" * (512 * 65536) + b"y"
    assert framer.pending == 1
    assert spent < 1.0, f"{spent:.2f} s of CPU to frame 32 MiB"


def test_frame_too_large_carries_the_frames_before_it() -> None:
    for data in (b"a\nbb\n" + b"x" * 11 + b"\nc\n", b"a\nbb\n" + b"x" * 12):
        framer = LineFramer(10)
        with pytest.raises(FrameTooLarge) as caught:
            framer.feed(data)
        assert caught.value.frames == [b"a", b"bb"]
