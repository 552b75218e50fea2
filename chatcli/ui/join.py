"""``chatcli join``: the chat session and its two front ends.

``JoinSession`` holds what both front ends share: the connection, the renderer, the
recorder, the input commands and the bookkeeping of messages waiting for their
acknowledgement. ``interactive`` runs it under prompt_toolkit (the line being typed is
never garbled by incoming messages); ``piped`` reads lines from stdin, prints plain lines
or JSON, and exits once everything it sent has been acknowledged.
"""

from __future__ import annotations

import asyncio
import io
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from chatcli.client.acks import (
    DEFAULT_ACK_TIMEOUT,
    RETRY_RATE_LIMITED,
    AckTracker,
    Outcome,
    Retry,
)
from chatcli.client.connection import ChatClient, connect
from chatcli.core.commands import HELP, parse_input
from chatcli.core.protocol import (
    ClientEvent,
    JoinRoom,
    Me,
    Ping,
    Pong,
    Ready,
    RoomsRequest,
    Say,
    SendDirect,
    ServerEvent,
    Who,
    checked_text,
    clean_text,
)
from chatcli.errors import ChatError, ConnectionFailed, ProtocolError
from chatcli.transcript import TranscriptWriter, client_filename
from chatcli.ui.input_lines import expand_line
from chatcli.ui.output import JsonlOutput, Output, PlainOutput, RichOutput
from chatcli.ui.render import Renderer

__all__ = ["JoinOptions", "JoinSession", "run_join"]

#: seconds piped mode waits at end of input for its last messages to be acknowledged
ACK_TIMEOUT = DEFAULT_ACK_TIMEOUT


@dataclass(frozen=True)
class JoinOptions:
    """Everything ``chatcli join`` was asked to do."""

    host: str
    port: int
    name: str
    room: str | None = None
    history: int | None = None
    timestamps: bool = False
    json_output: bool = False
    record_dir: Path = Path("recordings")
    record: bool = False
    #: ring the terminal bell when someone names you (interactive only)
    bell: bool = True
    #: remember host, port and name for the next join (interactive joins only)
    remember: bool = True


class JoinSession:
    """A logged-in chat session and what the user can do with it."""

    def __init__(
        self, client: ChatClient, options: JoinOptions, output: Output, renderer: Renderer
    ) -> None:
        self.client = client
        self.options = options
        self.output = output
        self.renderer = renderer
        self.room = client.ready.room if client.ready else options.room or "lobby"
        self.recorder: TranscriptWriter | None = None
        #: the messages sent that wait for the server's acknowledgement or refusal
        self.acks: AckTracker[ClientEvent] = AckTracker(RETRY_RATE_LIMITED)
        self.refused = 0
        self.acked = asyncio.Event()
        self.acked.set()
        #: what went wrong re-sending in the background, raised by the front end
        self.failure: ChatError | None = None
        #: set when a pong arrives: everything sent before the ping has been answered
        self.pong = asyncio.Event()

    # -- input -------------------------------------------------------------------------

    async def submit(self, line: str) -> bool:
        """Act on one typed line; False means the user asked to quit."""
        if not line.strip():
            return True
        command = parse_input(_valid_unicode(line))
        if command.error:
            self._refuse_locally(command.error)
            return True
        verb = command.verb
        if verb == "quit":
            return False
        if verb == "help":
            self.output.notice("commands:\n" + HELP)
        elif verb == "time":
            self.renderer.timestamps = not self.renderer.timestamps
            self.output.notice(f"timestamps {'on' if self.renderer.timestamps else 'off'}")
        elif verb == "record":
            self.toggle_recording()
        elif verb == "who":
            await self.client.send(Who())
        elif verb == "rooms":
            await self.client.send(RoomsRequest())
        elif verb == "join":
            await self.client.send(JoinRoom(room=command.arg))
        else:
            try:
                text = checked_text(command.text)
            except ProtocolError as exc:
                self._refuse_locally(exc.message)
                return True
            ref = self.client.next_ref()
            event: ClientEvent
            if verb == "msg":
                event = SendDirect(to=command.arg, text=text, ref=ref)
            elif verb == "me":
                event = Me(text=text, ref=ref)
            else:
                event = Say(text=text, ref=ref)
            await self.send_tracked(ref, event)
        return True

    def _refuse_locally(self, why: str) -> None:
        """A line that cannot be sent as typed: say so, and count it as refused."""
        self.refused += 1
        self.output.notice(why, error=True)

    @property
    def pending(self) -> int:
        """How many messages sent still wait for the server's answer."""
        return self.acks.waiting

    async def send_tracked(self, ref: str, event: ClientEvent) -> None:
        """Send a message whose acknowledgement (or refusal) will be waited for."""
        self.acks.sent(ref, event)
        self.acked.clear()
        await self.client.send(event)

    # -- events ------------------------------------------------------------------------

    def handle(self, event: ServerEvent) -> None:
        """Account for, record and show one event from the server."""
        if isinstance(event, Pong):
            self.pong.set()
            return
        if isinstance(event, Ready):
            self.room = event.room
        answer = self.acks.receive(event)
        if isinstance(answer, Retry):
            self._retry(answer)
            return
        if answer is not None:
            if answer.outcome is Outcome.RATE_LIMITED:  # retried until the policy gave up
                self._refuse_locally("message refused: rate limited")
                self._settled()
                return
            if answer.outcome is Outcome.REFUSED:
                self.refused += 1
            self._settled()
        if self.recorder is not None:
            self._record(event)
        self.output.show(event)

    def _retry(self, retry: Retry[ClientEvent]) -> None:
        """Send a rate-limited message again after the pause the policy asks for."""
        loop = asyncio.get_running_loop()
        loop.call_later(retry.delay, lambda: loop.create_task(self._resend(retry)))

    async def _resend(self, retry: Retry[ClientEvent]) -> None:
        self.acks.resent(retry.ref)  # before sending: the answer may come at once
        try:
            await self.client.send(retry.sent)
        except ConnectionFailed as exc:
            self.failure = exc

    def _settled(self) -> None:
        if not self.acks.waiting:
            self.acked.set()

    async def receive_forever(self) -> None:
        """Handle server events until the connection ends (raises ChatError then)."""
        async for event in self.client.events():
            self.handle(event)

    # -- recording ---------------------------------------------------------------------

    def toggle_recording(self) -> None:
        """Start recording to a new transcript, or stop the current one."""
        if self.recorder is not None:
            path = self.recorder.path
            self.recorder.close()
            self.recorder = None
            self.output.notice(f"recording stopped: {path}")
            return
        try:
            self.recorder = TranscriptWriter.create(
                self.options.record_dir / client_filename(),
                source="client",
                name=self.client.name,
                room=self.room,
                host=f"{self.options.host}:{self.options.port}",
            )
        except ChatError as exc:
            self.output.notice(f"cannot record: {exc}", error=True)
            return
        self.output.notice(f"recording to {self.recorder.path} (/record again stops)")

    def _record(self, event: ServerEvent) -> None:
        assert self.recorder is not None
        try:
            self.recorder.write(event)
        except ChatError as exc:
            self.output.notice(f"recording stopped: {exc}", error=True)
            self.recorder = None

    def stop_recording(self) -> None:
        if self.recorder is not None:
            self.recorder.close()
            self.output.notice(f"recording saved: {self.recorder.path}")
            self.recorder = None


# ------------------------------------------------------------------------- front ends


async def run_join(options: JoinOptions, interactive: bool) -> int:
    """Connect, run the chosen front end, and return the process exit code."""
    client = await connect(
        options.host, options.port, options.name, options.room, history=options.history
    )
    renderer = Renderer(me=client.name, timestamps=options.timestamps)
    output: Output
    if interactive:
        output = RichOutput(renderer)
    elif options.json_output:  # what the server said, one JSON line each, as it comes
        output = JsonlOutput(line_buffered=True)
    else:
        output = PlainOutput(renderer, line_buffered=True)
    session = JoinSession(client, options, output, renderer)
    from chatcli.config import LastJoin, save_last_join

    if options.remember:
        save_last_join(LastJoin(options.host, options.port, client.name, options.room))
    if options.json_output and client.welcome is not None:
        output.show(client.welcome)
    assert client.ready is not None
    output.show(client.ready)
    if options.record:
        session.toggle_recording()
    try:
        if interactive:
            return await _interactive(session)
        return await _piped(session)
    finally:
        session.stop_recording()
        await client.close()


async def _interactive(session: JoinSession) -> int:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.formatted_text import FormattedText
    from prompt_toolkit.history import FileHistory, InMemoryHistory
    from prompt_toolkit.patch_stdout import patch_stdout

    from chatcli.config import config_dir

    try:
        config_dir().mkdir(parents=True, exist_ok=True)
        history: FileHistory | InMemoryHistory = FileHistory(str(config_dir() / "input-history"))
    except OSError:
        history = InMemoryHistory()

    def prompt() -> FormattedText:
        rec = [("fg:ansired bold", "● rec ")] if session.recorder else []
        # the room and name come from the server: shown cleaned, like everything it sends
        room, name = clean_text(session.room), clean_text(session.client.name)
        return FormattedText([*rec, ("fg:ansicyan", f"[{room}] "), ("bold", f"{name}> ")])

    from chatcli.ui.input_lines import Roster
    from chatcli.ui.prompt_input import (
        WatchingOutput,
        ask_to_send,
        input_bindings,
        lines_typed,
        name_completer,
    )

    roster = Roster()
    if session.client.ready is not None:
        roster.update(session.client.ready)
    session.output = WatchingOutput(
        session.output, session.renderer, roster, bell=session.options.bell
    )
    prompt_session: PromptSession[str] = PromptSession(
        history=history,
        erase_when_done=True,
        key_bindings=input_bindings(),
        completer=name_completer(roster),
        complete_while_typing=False,
    )
    failure: list[BaseException] = []

    async def receive() -> None:
        try:
            await session.receive_forever()
        except ChatError as exc:
            failure.append(exc)
            if prompt_session.app.is_running:
                prompt_session.app.exit(exception=EOFError())

    lines: asyncio.Queue[str | None] = asyncio.Queue()
    done = asyncio.Event()

    async def send() -> None:
        # Typed (or pasted) lines go out in order, one message in flight at a time,
        # so a paste longer than the flood limit's burst is paced, not refused.
        try:
            await _send_in_order(session, lines, receiver)
        except ChatError as exc:
            failure.append(exc)
        finally:
            done.set()
            if prompt_session.app.is_running:
                prompt_session.app.exit(exception=EOFError())

    session.output.notice("type /help for commands, /quit to leave")
    with patch_stdout(raw=True):
        receiver = asyncio.create_task(receive())
        sender = asyncio.create_task(send())
        try:
            while not failure and not done.is_set():
                try:
                    typed = lines_typed(await prompt_session.prompt_async(prompt))
                    if not await ask_to_send(typed, session.output):
                        continue
                except (EOFError, KeyboardInterrupt):
                    break
                for line in typed:
                    lines.put_nowait(line)
        finally:
            sender.cancel()
            receiver.cancel()
    if failure:
        raise failure[0]
    if session.failure is not None:
        raise session.failure
    return 0


async def _piped(session: JoinSession) -> int:
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | None] = asyncio.Queue()

    def read_stdin() -> None:
        # A daemon thread: a blocking read never keeps the process alive at exit.
        # Decoded leniently, and end of input signalled whatever happens: a decoding
        # error here used to kill the thread and leave the session waiting.
        if isinstance(sys.stdin, io.TextIOWrapper):
            sys.stdin.reconfigure(errors="replace")
        try:
            for line in sys.stdin:
                loop.call_soon_threadsafe(lines.put_nowait, line.rstrip("\r\n"))
        finally:
            loop.call_soon_threadsafe(lines.put_nowait, None)

    threading.Thread(target=read_stdin, name="stdin", daemon=True).start()
    receiver = asyncio.create_task(session.receive_forever())
    try:
        await _send_in_order(session, lines, receiver)
        await _wait_acked(session, receiver)
        await _barrier(session, receiver)
    finally:
        receiver.cancel()
    if session.failure is not None:
        raise session.failure
    if session.pending:
        session.output.notice(
            f"{session.pending} message(s) not acknowledged within {ACK_TIMEOUT:g} s",
            error=True,
        )
        return 1
    return 1 if session.refused else 0


def _valid_unicode(line: str) -> str:
    """``line`` with lone surrogates replaced by U+FFFD, so that it can be encoded.

    Input that is not UTF-8 (a Latin-1 terminal, a binary pipe) reaches Python as lone
    surrogates (surrogateescape), which made encoding the frame raise a traceback.
    """
    if line.isascii():
        return line
    return "".join("\ufffd" if "\ud800" <= char <= "\udfff" else char for char in line)


async def _send_in_order(
    session: JoinSession, lines: asyncio.Queue[str | None], receiver: asyncio.Task[None]
) -> None:
    """Submit queued lines in order, each after the previous message was acknowledged.

    One message in flight at a time keeps order even when the server rate-limits some
    and they are sent again. A line longer than one message is sent as several, cut at
    word boundaries (:func:`chatcli.ui.input_lines.expand_line`). Returns at end of input
    (None) or when the user quits; raises the ChatError that ended the connection, if it ends first.
    """
    while True:
        next_line = asyncio.ensure_future(lines.get())
        finished, _ = await asyncio.wait({next_line, receiver}, return_when=asyncio.FIRST_COMPLETED)
        if receiver in finished:
            next_line.cancel()
            receiver.result()  # raises the ChatError that ended the session
            return
        line = next_line.result()
        if line is None:
            return
        for piece in expand_line(line):  # a line too long for one message: several
            await _wait_acked(session, receiver)
            if session.failure is not None:
                raise session.failure
            if not await session.submit(piece):
                return


async def _barrier(session: JoinSession, receiver: asyncio.Task[None]) -> None:
    """Wait until the server has answered everything sent so far (ping, then its pong)."""
    session.pong.clear()
    await session.client.send(Ping())
    await _wait_for(session.pong, receiver)


async def _wait_acked(session: JoinSession, receiver: asyncio.Task[None]) -> None:
    await _wait_for(session.acked, receiver)


async def _wait_for(event: asyncio.Event, receiver: asyncio.Task[None]) -> None:
    """Wait (at most ACK_TIMEOUT) for ``event``, or raise what ended the receiver."""
    if event.is_set():
        return
    waiter = asyncio.ensure_future(event.wait())
    done, _ = await asyncio.wait(
        {waiter, receiver}, timeout=ACK_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
    )
    waiter.cancel()
    if receiver in done:
        receiver.result()
