"""``chatcli replay``: play a transcript back, filter or export it, check it, or re-inject it."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from chatcli.core.board import Board
    from chatcli.replay.player import TimeSpec
    from chatcli.transcript import Source

__all__ = ["replay"]

_INJECT_ONLY = ("prefix", "loop", "dry_run", "ack_timeout")
_NOT_WITH_INJECT = ("follow", "fmt", "realtime")


@click.command()
@click.argument("files", metavar="FILE...", nargs=-1, required=True)
@click.option("--speed", "-s", metavar="X", help="Play X times as fast: 2, 0.5, 10x.  [default: 1]")
@click.option(
    "--max-idle",
    "-i",
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Cap every pause in the transcript at SECONDS (applied before --speed).",
)
@click.option("--instant", is_flag=True, help="No waiting at all.")
@click.option(
    "--realtime",
    is_flag=True,
    help="Keep the timing in the text and jsonl formats (instant by default).",
)
@click.option("--start-at", metavar="TIME", help="Skip what was said before TIME (see TIME above).")
@click.option("--until", metavar="TIME", help="Stop after TIME (see TIME above).")
@click.option(
    "--room", "-r", "rooms", multiple=True, metavar="ROOM", help="Only in ROOM (repeatable)."
)
@click.option(
    "--user",
    "-u",
    "users",
    multiple=True,
    metavar="NAME",
    help="Only events by or about NAME, any case (repeatable).",
)
@click.option(
    "--type",
    "types",
    multiple=True,
    metavar="TYPE",
    help="Only msg, dm, join, leave, draw, erase, move or clear events (repeatable).",
)
@click.option("--grep", "-g", metavar="REGEX", help="Only messages whose text matches REGEX.")
@click.option("--ignore-case", "-I", is_flag=True, help="Match --grep in any case.")
@click.option(
    "--timestamps/--no-timestamps",
    default=True,
    show_default=True,
    help="Show the time in front of each line.",
)
@click.option("--utc", is_flag=True, help="Show and read times of day in UTC, not local time.")
@click.option(
    "--format",
    "fmt",
    metavar="FORMAT",
    help="rich: coloured, with keys; text: a plain IRC-style log; jsonl: the transcript "
    "lines themselves.  [default: rich on a terminal, else text]",
)
@click.option(
    "--follow", "-f", is_flag=True, help="Keep reading a growing transcript until its end line."
)
@click.option("--check", is_flag=True, help="Validate the FILEs instead of playing them.")
@click.option(
    "--list-rooms", is_flag=True, help="STORE: list its rooms (messages, ids, time span)."
)
@click.option(
    "--board",
    "board_out",
    metavar="OUT.svg",
    help="Write the room's whiteboard as an SVG picture instead of playing.",
)
@click.option(
    "--at", metavar="TIME", help="--board: the board as it stood at TIME (default: the end)."
)
@click.option(
    "--to", "target", metavar="HOST:PORT", help="Re-inject into a live server instead of showing."
)
@click.option("--prefix", default="", metavar="TEXT", help="--to: put TEXT before every name.")
@click.option(
    "--loop", type=click.IntRange(min=1), default=1, metavar="N", help="--to: play N times."
)
@click.option("--dry-run", is_flag=True, help="--to: print what would be sent; connect nowhere.")
@click.option(
    "--ack-timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="--to: how long to wait for the server's answers at the end.",
)
@click.pass_context
def replay(
    ctx: click.Context,
    files: tuple[str, ...],
    speed: str | None,
    max_idle: float | None,
    instant: bool,
    realtime: bool,
    start_at: str | None,
    until: str | None,
    rooms: tuple[str, ...],
    users: tuple[str, ...],
    types: tuple[str, ...],
    grep: str | None,
    ignore_case: bool,
    timestamps: bool,
    utc: bool,
    fmt: str | None,
    follow: bool,
    check: bool,
    list_rooms: bool,
    board_out: str | None,
    at: str | None,
    target: str | None,
    prefix: str,
    loop: int,
    dry_run: bool,
    ack_timeout: float,
) -> None:
    """Play a transcript (FILE, or - for stdin) as it happened, shown as join shows it.

    Several FILEs (one server run's rooms) play merged into one timeline by time.

    \b
    On a terminal: space pauses and resumes, + and - double and halve the
    speed, n (or the right arrow) skips to the next line, q quits; a status
    line shows the time, position / duration and speed.
    Off a terminal the format is text. The text and jsonl formats print at
    once, with no keys: add --realtime, --speed or --max-idle to keep the
    timing. jsonl passes the selected lines through unchanged (header first),
    so its output is itself a transcript: replay filters and exports.

    \b
    TIME (--start-at, --until), counted from the start of the transcript:
      90  90s  1m30s  1h2m  1:30  1:02:03  +12:30   an offset
      09:15  09:15:30  @9:15                        a time of day, as the
                                                    timestamps show it
      2026-11-21T09:15                              a date and time

    \b
    --check validates each FILE, prints every problem as FILE:LINE: reason and
    exits 1 if there was any; a truncated last line or a missing end line (what
    a crash leaves) are warnings only.

    \b
    --to HOST:PORT re-injects the transcript into a live server: each sender
    becomes its own client (named --prefix + name), joins the original room and
    says its lines at the original pace (--speed, --max-idle, --instant apply,
    as do the filters). At the end it reports messages sent, acknowledged,
    rate-limited, refused and lost, the send lag and the speed achieved, and
    exits 1 unless every message was acknowledged.

    \b
    Board activity shows as one line per person per burst ("alice drew 3
    shapes on the board"). --board OUT.svg writes the room's whiteboard as it
    stood at the end (or --at TIME) as an SVG picture; give --room when the
    transcript has several rooms with boards. Shapes drawn before the
    recording began are not in it. Given a STORE, --board draws a room's
    board as the store keeps it now.

    \b
    FILE may also be a store written by `chatcli serve --store` (a SQLite
    file, recognised by its content): it is read, never written, and a room
    of it (--room ROOM; needed when it holds several) plays as that room's
    transcript, messages only. --list-rooms lists its rooms; --format jsonl
    exports a room as a transcript file; --check checks every room (or the
    --room given).

    \b
    Examples:
      chatcli replay recordings/20261121-090000_lobby.jsonl --max-idle 2
      chatcli replay chat.jsonl --speed 10 --start-at 09:15 --until 09:30
      chatcli replay chat.jsonl --format text --user alice --grep 'deploy|CI'
      chatcli replay chat.jsonl --format jsonl --room dev > dev-only.jsonl
      chatcli replay --follow recordings/$(ls recordings | tail -1) --format text
      chatcli replay --check recordings/*.jsonl
      chatcli replay chat.jsonl --to 127.0.0.1:7777 --prefix re- --speed 50
      chatcli replay chat.jsonl --to 127.0.0.1:7777 --dry-run --max-idle 1
      chatcli replay chat.jsonl --board board.svg --at 09:30
      chatcli replay chatcli.db --list-rooms
      chatcli replay chatcli.db --room lobby --format jsonl > lobby.jsonl
    """
    from chatcli.cli.common import EXIT_USAGE, fail

    given = {
        name
        for name in ctx.params
        if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
    }
    from chatcli.replay.store import is_store

    stores = {file for file in files if file != "-" and is_store(file)}
    if list_rooms:
        if len(files) != 1 or not stores:
            fail(
                "--list-rooms goes with one STORE (a file chatcli serve --store wrote)", EXIT_USAGE
            )
        from chatcli.replay.store import rooms_table

        for line in rooms_table(files[0]):
            click.echo(line)
        sys.exit(0)
    if check:
        sys.exit(_check(files, stores, rooms))
    if at is not None and board_out is None:
        fail("--at goes with --board OUT.svg", EXIT_USAGE)
    if board_out is not None and stores and len(files) == 1 and target is None:
        if at is not None:
            fail("--at needs a transcript: a store holds its boards as they are now", EXIT_USAGE)
        sys.exit(_store_board(files[0], rooms, board_out))
    if board_out is not None and (len(files) != 1 or target is not None or follow):
        fail("--board reads one transcript FILE or STORE (not with --to or --follow)", EXIT_USAGE)
    if stores and len(files) != 1:
        fail("give one STORE to play, alone (several FILEs only with --check)", EXIT_USAGE)
    if len(files) != 1 and (target is not None or follow or "-" in files):
        fail("several FILEs play merged, but not with --to, --follow or -", EXIT_USAGE)
    if stores and follow:
        fail("--follow reads a growing transcript file, not a store", EXIT_USAGE)
    if stores and loop > 1:
        fail("--loop needs a transcript FILE: export the room with --format jsonl", EXIT_USAGE)
    if target is None and (extra := given & set(_INJECT_ONLY)):
        fail(f"--{sorted(extra)[0].replace('_', '-')} goes with --to HOST:PORT", EXIT_USAGE)
    if target is not None and (extra := given & set(_NOT_WITH_INJECT)):
        option = "--format" if "fmt" in extra else f"--{sorted(extra)[0]}"
        fail(f"{option} does not go with --to", EXIT_USAGE)
    if instant and (realtime or speed is not None):
        fail("--instant does not go with --realtime or --speed", EXIT_USAGE)
    if loop > 1 and files[0] == "-":
        fail("--loop needs a FILE: stdin can be read only once", EXIT_USAGE)

    from datetime import UTC

    from chatcli.replay.player import FORMATS, EventFilter, PlayOptions, TimeSpec, parse_speed

    tty = sys.stdout.isatty()
    fmt = (fmt or ("rich" if tty else "text")).lower()
    if fmt not in FORMATS:
        fail(f"--format {fmt!r}: choose rich, text or jsonl", EXIT_USAGE)
    if target is None and fmt != "rich" and not (realtime or speed is not None or max_idle):
        instant = True  # a log or an export: no reason to wait
    options = PlayOptions(
        speed=parse_speed(speed) if speed is not None else 1.0,
        max_idle=max_idle,
        instant=instant,
        start_at=TimeSpec.parse(start_at) if start_at is not None else None,
        until=TimeSpec.parse(until) if until is not None else None,
        keep=EventFilter.build(
            rooms=rooms, users=users, types=types, grep=grep, ignore_case=ignore_case
        ),
        timestamps=timestamps,
        tz=UTC if utc else None,
        follow=follow,
    )
    if options.start_at and options.until and _after(options.start_at, options.until):
        fail(f"--start-at {start_at} is after --until {until}: nothing to play", EXIT_USAGE)
    source: Source = files[0]
    if stores:
        from chatcli.replay.store import choose_room, open_room

        source = open_room(files[0], choose_room(files[0], rooms))
    if target is not None:
        sys.exit(_inject(source, options, target, prefix, loop, dry_run, ack_timeout))
    if board_out is not None:
        sys.exit(_write_board(source, options, board_out, at, rooms))

    from chatcli.ui.playback import run_playback

    interactive = fmt == "rich" and tty and sys.stdin.isatty() and not instant and files[0] != "-"
    sources = files if len(files) > 1 else source
    sys.exit(run_playback(sources, options, fmt, interactive=interactive))


def _after(start: TimeSpec, until: TimeSpec) -> bool:
    """True when ``start`` is surely later than ``until`` (same kind of time, so comparable
    before the transcript is read; two times of day more than 12 h apart may straddle
    midnight, so they are left to the player)."""
    if start.kind != until.kind:
        return False
    if start.kind == "moment":
        assert start.moment is not None and until.moment is not None
        return start.moment > until.moment
    if start.kind == "clock" and start.seconds - until.seconds > 12 * 3600:
        return False
    return start.seconds > until.seconds


def _write_board(
    source: Source, options: object, out: str, at: str | None, rooms: tuple[str, ...]
) -> int:
    """``--board OUT.svg``: the room's board at the end (or ``--at``) as an SVG file."""
    from chatcli.replay.board_svg import board_at
    from chatcli.replay.player import Playback, PlayOptions, TimeSpec

    assert isinstance(options, PlayOptions)
    playback = Playback(source, options)
    try:
        until = None
        if at is not None:
            until = TimeSpec.parse(at).resolve(playback.started, options.tz)
        boards = board_at((entry.event for entry in playback.entries()), until)
    finally:
        playback.close()
    for problem in playback.problems:
        click.echo(f"{problem} (line skipped)", err=True)
    return _save_board(boards, rooms, playback.header.room or "", out)


def _store_board(path: str, rooms: tuple[str, ...], out: str) -> int:
    """``STORE --board OUT.svg``: a room's board as the store file keeps it now."""
    from chatcli.store.sqlite import open_read_only, read_boards

    with open_read_only(path) as db:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        boards = read_boards(db) if version >= 3 else {}
    return _save_board(boards, rooms, "", out)


def _save_board(boards: dict[str, Board], rooms: tuple[str, ...], default: str, out: str) -> int:
    """Write the board of the ``--room`` given (or the only one) to ``out`` as SVG."""
    from pathlib import Path

    from chatcli.cli.common import EXIT_USAGE, fail
    from chatcli.core.sanitize import clean_text
    from chatcli.replay.board_svg import board_svg

    with_shapes = sorted(room for room, board in boards.items() if len(board))
    if rooms:
        room = rooms[0]
    elif len(with_shapes) > 1:
        shown = clean_text(", ".join(with_shapes))
        fail(f"boards in several rooms ({shown}): choose one with --room", EXIT_USAGE)
    else:
        room = with_shapes[0] if with_shapes else default
    shapes = boards[room].in_order() if room in boards else []
    title = f"chatcli board of {room}" if room else "chatcli board"
    try:
        Path(out).write_text(board_svg(shapes, title=title), encoding="utf-8")
    except OSError as exc:
        fail(f"--board {out}: cannot write it ({exc.strerror or exc})", EXIT_USAGE)
    plural = "" if len(shapes) == 1 else "s"
    click.echo(f"wrote {out}: {len(shapes)} shape{plural} in {clean_text(room) or '?'}")
    return 0


def _check(files: tuple[str, ...], stores: set[str], rooms: tuple[str, ...]) -> int:
    """``--check``: every problem and warning of every file, then a summary per file.

    A store is checked room by room (each as the transcript it exports), or only the
    ``--room``s given.
    """
    from chatcli.replay.player import check, check_lines

    sources: list[Source] = []
    for file in files:
        if file in stores:
            from chatcli.replay.store import open_room
            from chatcli.store.sqlite import list_rooms

            names = rooms or tuple(info.name for info in list_rooms(file))
            sources += [open_room(file, name) for name in names]
        else:
            sources.append(file)
    results = check(sources)
    for result in results:
        for line in check_lines(result):
            click.echo(line)
    bad = sum(not result.ok for result in results)
    if len(results) > 1:
        click.echo(f"{len(results)} files checked, {bad} with problems")
    return 1 if bad else 0


def _inject(
    file: Source,
    options: object,
    target: str,
    prefix: str,
    loops: int,
    dry: bool,
    ack_timeout: float,
) -> int:
    """``--to``: plan, then print the plan (--dry-run) or carry it out and report."""
    from chatcli.cli.common import EXIT_INTERRUPTED, fail
    from chatcli.replay.inject import (
        Injector,
        InjectReport,
        Planner,
        Reread,
        dry_run,
        parse_target,
        plan,
    )
    from chatcli.replay.player import PlayOptions, Timeline
    from chatcli.runtime import run

    assert isinstance(options, PlayOptions)
    host, port = parse_target(target)
    planner = Planner(prefix)
    source = Reread(file, options)
    timeline = Timeline(speed=options.speed, max_idle=options.max_idle, instant=options.instant)
    steps = plan(source, planner, loops)
    if dry:
        dry_run(steps, planner, timeline, sys.stdout)
        source.report(sys.stderr)
        return 0
    injector = Injector(host, port, timeline, ack_timeout=ack_timeout, loops=loops)
    live = sys.stderr.isatty()

    def progress(report: InjectReport) -> None:
        sys.stderr.write("\r\x1b[K" + report.progress())
        sys.stderr.flush()

    report = run(injector.run_interruptible(steps, progress if live else None))
    if live:
        sys.stderr.write("\r\x1b[K")
    for line in report.lines():
        click.echo(line)
    source.report(sys.stderr)
    if report.failure:
        fail(report.failure)
    if report.interrupted:
        return EXIT_INTERRUPTED
    if not report.ok:
        missing = report.refused + report.rate_limited + report.lost
        fail(f"{missing} of {report.sent} messages did not get through")
    return 0
