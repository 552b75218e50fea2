"""``chatcli join``: the chat session and its two front ends.

``JoinSession`` holds what both front ends share: the connection, the renderer, the
recorder, the input commands and the bookkeeping of messages waiting for their
acknowledgement. ``interactive`` runs it under prompt_toolkit (the line being typed is
never garbled by incoming messages); ``piped`` reads lines from stdin, prints plain lines
or JSON, and exits once everything it sent has been acknowledged.

The connection is a :class:`~chatcli.client.resuming.ResumingClient`: when it drops, the
session reconnects by itself, says so through the renderer's notices, shows the messages
missed once, and sends what was typed meanwhile (``--retry-for`` bounds the attempt).
"""

from __future__ import annotations

import asyncio
import io
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from chatcli.client.acks import (
    DEFAULT_ACK_TIMEOUT,
    RETRY_RATE_LIMITED,
    AckTracker,
    Outcome,
    Retry,
)
from chatcli.client.resume import DEFAULT_RETRY_FOR, ResumeState
from chatcli.client.resuming import Lost, NotConnected, Resumed, ResumingClient, Status
from chatcli.core.commands import DEFAULT_MUTE_MINUTES, HELP, Command, parse_input
from chatcli.core.events import (
    Ban,
    ChangePassword,
    Kick,
    Mute,
    Nick,
    PasswordChanged,
    Register,
    Registered,
    Renamed,
    Unban,
)
from chatcli.core.protocol import (
    ClientEvent,
    DirectMessage,
    Error,
    JoinRoom,
    Me,
    Msg,
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
    name_key,
)
from chatcli.errors import ChatError, ProtocolError
from chatcli.tls import ClientTls
from chatcli.transcript import TranscriptWriter, client_filename
from chatcli.ui.board_activity import BoardBursts, BoardSummary, is_board_event
from chatcli.ui.input_lines import expand_line
from chatcli.ui.output import JsonlOutput, Output, PlainOutput, RichOutput
from chatcli.ui.passwords import Ask, log_in, new_password, terminal_asker
from chatcli.ui.render import Renderer

if TYPE_CHECKING:
    from prompt_toolkit.history import FileHistory

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
    #: seconds without a connection after which the session gives up reconnecting
    retry_for: float = DEFAULT_RETRY_FOR
    #: ring the terminal bell when someone names you (interactive only)
    bell: bool = True
    #: remember host, port and name for the next join (interactive joins only)
    remember: bool = True
    #: the account's password (CHATCLI_PASSWORD) and the server's; never shown by repr()
    password: str | None = field(default=None, repr=False)
    server_password: str | None = field(default=None, repr=False)
    #: speak TLS (None: plain TCP); remembered with the host, --insecure excepted
    tls: ClientTls | None = None
    #: other servers of the same chat (cluster nodes), tried in turn after host:port
    fallbacks: tuple[tuple[str, int], ...] = ()


class JoinSession:
    """A logged-in chat session and what the user can do with it."""

    def __init__(
        self, client: ResumingClient, options: JoinOptions, output: Output, renderer: Renderer
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
        #: set after each reconnect: a waiter re-asks what the lost connection never answered
        self.reconnected = asyncio.Event()
        #: who is hidden on this screen (/ignore): name key (skeleton) -> name as typed
        self.ignored: dict[str, str] = {}
        #: the ignored whose hidden lines were noted once already
        self._noted: set[str] = set()
        #: passwords of /register and /password sent, by ref, kept once the server agrees
        self._secrets: dict[str, str] = {}
        #: refs of account and operator requests sent: a refusal of one counts as refused
        self._asked: set[str] = set()
        #: board activity gathered into one line per person per burst (not with --json)
        self.board = BoardBursts()
        self._board_timer: asyncio.TimerHandle | None = None

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
        elif verb in ("ignore", "unignore"):
            self.ignore(command.arg, verb == "ignore")
        elif verb in ("register", "password"):
            await self.secret_command(verb, None)
        elif verb in ("who", "rooms", "join"):
            request: ClientEvent
            if verb == "who":
                request = Who()
            elif verb == "rooms":
                request = RoomsRequest()
            else:
                request = JoinRoom(room=command.arg)
            await self.request(request)
        elif verb in _NAMED:
            await self.request(_named_event(command, self.client.next_ref()))
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

    async def request(self, event: ClientEvent) -> None:
        """Send a request that is answered (or refused) by a reply of its own.

        A refusal of one that carries a ``ref`` counts as refused (a script's exit code).
        """
        ref = getattr(event, "ref", None)
        if isinstance(ref, str):
            self._asked.add(ref)
        try:
            await self.client.send(event)
        except NotConnected as exc:
            self.output.notice(str(exc), error=True)

    async def secret_command(self, verb: str, ask: Ask | None) -> None:
        """``/register`` or ``/password``: ask for passwords (hidden), then send them.

        Without ``ask`` (a script) ``/register`` takes CHATCLI_PASSWORD, and ``/password``
        needs a terminal. A mismatch or a bad length is refused here, nothing sent.
        """
        ref = self.client.next_ref()
        event: ClientEvent
        if verb == "register":
            if ask is None:
                password = self.options.password
                if password is None:
                    self._refuse_locally("/register in a script takes CHATCLI_PASSWORD")
                    return
            else:
                password, why = await new_password(ask, "password for your name")
                if password is None:
                    self._refuse_locally(f"not registered: {why}")
                    return
            event = Register(password=password, ref=ref)
        else:
            if ask is None:
                self._refuse_locally("/password needs a terminal to ask in")
                return
            old = await ask("current password: ")
            if not old:
                self._refuse_locally("password not changed: cancelled")
                return
            password, why = await new_password(ask)
            if password is None:
                self._refuse_locally(f"password not changed: {why}")
                return
            event = ChangePassword(old=old, new=password, ref=ref)
        self._secrets[ref] = password
        await self.request(event)

    def ignore(self, name: str, hide: bool) -> None:
        """``/ignore NAME`` hides NAME's messages and direct messages on this screen;
        ``/unignore`` shows them again; ``/ignore`` alone lists who is hidden.

        Names compare by the skeleton the server uses, so a look-alike is hidden too.
        """
        if not name:
            hidden = ", ".join(clean_text(n) for n in self.ignored.values())
            self.output.notice(f"ignoring: {hidden}" if hidden else "ignoring nobody")
            return
        key = name_key(name)
        shown = clean_text(name)
        if hide:
            if self.renderer.is_me(name):
                self._refuse_locally("you cannot ignore yourself")
                return
            self.ignored[key] = name
            self._noted.discard(key)
            self.output.notice(f"ignoring {shown} here (/unignore {shown} shows them again)")
        elif self.ignored.pop(key, None) is None:
            self._refuse_locally(f"you are not ignoring {shown}")
        else:
            self.output.notice(f"no longer ignoring {shown}")

    def _hidden(self, event: ServerEvent) -> bool:
        """True for a message or DM from someone ignored (noted, dim, the first time)."""
        if not self.ignored or not isinstance(event, (Msg, DirectMessage)):
            return False
        key = name_key(event.from_)
        if key not in self.ignored:
            return False
        if key not in self._noted:
            self._noted.add(key)
            who = clean_text(event.from_)
            self.output.notice(f"(messages from {who} are hidden here; /unignore {who} shows them)")
        return True

    def _account_event(self, event: ServerEvent) -> None:
        """Keep what the server agreed to: a new password (for reconnects), a new name."""
        state = self.client.state
        ref = getattr(event, "ref", None)
        if not isinstance(event, Error) and ref is not None:
            self._asked.discard(str(ref))
        if isinstance(event, (Registered, PasswordChanged)) and event.ref is not None:
            password = self._secrets.pop(str(event.ref), None)
            if password is not None:
                state.password = password
        elif isinstance(event, Error) and event.ref is not None:
            self._secrets.pop(str(event.ref), None)
            if str(event.ref) in self._asked:
                self._asked.discard(str(event.ref))
                self.refused += 1
        elif isinstance(event, Renamed):
            old_key = name_key(event.old)
            if old_key in self.ignored:  # an ignored user stays ignored under a new name
                del self.ignored[old_key]
                self.ignored[name_key(event.name)] = event.name
            if self.renderer.is_me(event.old):
                self.client.renamed(event.name)
                self.renderer.me = event.name

    def _refuse_locally(self, why: str) -> None:
        """A line that cannot be sent as typed: say so, and count it as refused."""
        self.refused += 1
        self.output.notice(why, error=True)

    @property
    def pending(self) -> int:
        """How many messages sent still wait for the server's answer."""
        return self.acks.waiting

    async def send_tracked(self, ref: str, event: ClientEvent) -> None:
        """Send a message whose acknowledgement (or refusal) will be waited for.

        A say or me gets its ``txn`` here, so a resend after a reconnect is stored once.
        """
        event = self.client.stamp(ref, event)
        self.acks.sent(ref, event)
        self.acked.clear()
        try:
            await self.client.send(event)
        except NotConnected as exc:  # a dm cannot wait for the reconnect: it has no txn
            self.acks.lose(ref)
            self._settled()
            self._refuse_locally(f"{exc} (direct message not sent)")

    # -- events ------------------------------------------------------------------------

    def handle(self, event: ServerEvent, new: bool = True) -> None:
        """Account for, record and show one event from the server.

        ``new`` is False for a message already seen (the ack of a resend whose first copy
        arrived before the connection dropped): it settles its wait, and is not shown again.
        """
        if isinstance(event, Pong):
            self.pong.set()
            return
        if isinstance(event, Ready):
            self.room = event.room
        answer = self.acks.receive(event)
        if isinstance(answer, Retry):
            if isinstance(event, Error) and event.code == "unavailable" and answer.attempt == 1:
                self.output.notice("the server cannot store messages right now; retrying")
            self._retry(answer)
            return
        if answer is not None:
            if answer.outcome is not Outcome.ACKNOWLEDGED:
                self.client.settled(str(answer.ref))
            if answer.outcome is Outcome.RATE_LIMITED:  # retried until the policy gave up
                self._refuse_locally("message refused: rate limited")
                self._settled()
                return
            if answer.outcome is Outcome.REFUSED:
                self.refused += 1
            self._settled()
        if not new:
            return
        self._account_event(event)
        if self.recorder is not None:
            self._record(event)
        if self._hidden(event):
            return
        if not self.options.json_output:
            if is_board_event(event):
                self._board_activity(event)
                return
            if self.board:  # what came before this line is shown before it
                self._show_bursts(self.board.flush())
        self.output.show(event)

    # -- board activity: one line per person per burst -------------------------------------

    def _board_activity(self, event: ServerEvent) -> None:
        loop = asyncio.get_running_loop()
        self.board.add(event, loop.time())  # type: ignore[arg-type]
        self._arm_board_timer()

    def _arm_board_timer(self) -> None:
        deadline = self.board.next_deadline()
        if self._board_timer is not None:
            self._board_timer.cancel()
            self._board_timer = None
        if deadline is not None:
            loop = asyncio.get_running_loop()
            self._board_timer = loop.call_at(deadline, self._board_due)

    def _board_due(self) -> None:
        self._board_timer = None
        self._show_bursts(self.board.due(asyncio.get_running_loop().time()))
        self._arm_board_timer()

    def _show_bursts(self, bursts: list[BoardSummary]) -> None:
        for burst in bursts:
            self.output.show(burst)

    def flush_board(self) -> None:
        """Show the bursts still open (at the end of the session)."""
        if self._board_timer is not None:
            self._board_timer.cancel()
            self._board_timer = None
        self._show_bursts(self.board.flush())

    def _retry(self, retry: Retry[ClientEvent]) -> None:
        """Send a rate-limited message again after the pause the policy asks for."""
        loop = asyncio.get_running_loop()
        loop.call_later(retry.delay, lambda: loop.create_task(self._resend(retry)))

    async def _resend(self, retry: Retry[ClientEvent]) -> None:
        self.acks.resent(retry.ref)  # before sending: the answer may come at once
        try:
            await self.client.send(retry.sent)
        except ChatError as exc:
            self.failure = exc

    def _settled(self) -> None:
        if not self.acks.waiting:
            self.acked.set()

    def status(self, status: Status) -> None:
        """Say what the connection is doing: lost (and when it retries), or back."""
        if isinstance(status, Lost):
            to = f" to {status.address}" if status.address else ""
            self.output.notice(
                f"connection lost, reconnecting{to} in {_seconds(status.delay)} "
                f"(attempt {status.attempt})",
                error=True,
            )
            return
        assert isinstance(status, Resumed)
        self._lose_unsure()
        back = f"reconnected to {status.address}" if status.address else "reconnected"
        if status.truncated:
            self.output.notice(f"{back}; some messages may have been lost while you were away")
        elif status.missed:
            what = "message you missed is" if status.missed == 1 else "messages you missed are"
            self.output.notice(f"{back}; {status.missed} {what} shown above")
        else:
            self.output.notice(back)
        self.reconnected.set()

    def _lose_unsure(self) -> None:
        """Direct messages in flight when the connection dropped cannot be resent safely
        (a ``dm`` has no ``txn``): tell the user instead of maybe saying them twice."""
        for ref, event in self.acks.waiting_items():
            if isinstance(event, SendDirect):
                self.acks.lose(ref)
                self.output.notice(
                    f"direct message to {clean_text(event.to)} may not have been delivered",
                    error=True,
                )
        self._settled()

    async def receive_forever(self) -> None:
        """Handle server events, reconnecting as needed, until the session ends.

        Raises ChatError when it ends other than by :meth:`ResumingClient.close`.
        """
        await self.client.run(self.handle, self.status)

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
                host=self.client.address,
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


def _tls_memory(options: JoinOptions) -> dict[str, Any]:
    """What the next join remembers of this one's TLS: on or off, and the --ca file."""
    tls = options.tls
    if tls is None:
        return {"tls": False, "ca": None}
    return {"tls": True, "ca": str(tls.ca) if tls.ca is not None and not tls.insecure else None}


def _hosts_memory(client: ResumingClient) -> tuple[str, ...]:
    """What the next join remembers of several servers: each as HOST:PORT (none: one)."""
    from chatcli.addresses import format_address

    if len(client.servers) < 2:
        return ()
    return tuple(format_address(host, port) for host, port in client.servers)


async def run_join(options: JoinOptions, interactive: bool) -> int:
    """Connect, run the chosen front end, and return the process exit code."""
    state = ResumeState(options.name, options.room, options.history, retry_for=options.retry_for)
    state.password, state.server_password = options.password, options.server_password
    tls = options.tls.context() if options.tls is not None else None
    client = ResumingClient(options.host, options.port, state, tls=tls, fallbacks=options.fallbacks)
    if interactive:
        from chatcli.logs import console_err

        def tell(why: str) -> None:
            console_err.print(f"** {clean_text(why)}", style="dim", markup=False, highlight=False)

        await log_in(client, terminal_asker(), tell)
    else:
        await log_in(client, None)
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
        save_last_join(
            LastJoin(
                options.host,
                options.port,
                client.name,
                options.room,
                **_tls_memory(options),
                hosts=_hosts_memory(client),
            )
        )
    if options.json_output and client.welcome is not None:
        output.show(client.welcome)
    assert client.ready is not None
    if interactive or options.fallbacks:  # which of several servers answered
        output.notice(f"connected to {client.address}")
    output.show(client.ready)
    if not options.json_output:
        _show_board_url(client, options, output)
    if options.record:
        session.toggle_recording()
    try:
        if interactive:
            return await _interactive(session)
        return await _piped(session)
    finally:
        session.flush_board()
        session.stop_recording()
        await client.close()


def _show_board_url(client: ResumingClient, options: JoinOptions, output: Output) -> None:
    """Say where the room's whiteboard is when the server serves the web page."""
    welcome, ready = client.welcome, client.ready
    if welcome is None or not welcome.web or "web" not in welcome.features:
        return
    shapes = len(ready.board) if ready is not None else 0
    on_it = f" ({shapes} shape{'s' if shapes != 1 else ''} on it)" if shapes else ""
    output.notice(f"whiteboard: {board_url(welcome.web, client.host)}{on_it}")


def board_url(url: str, host: str) -> str:
    """The page ``url`` from ``welcome.web``, with a wildcard host (a server listening on
    every address) replaced by the host this client reached the server at."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.hostname not in ("0.0.0.0", "::"):
        return url
    shown = f"[{host}]" if ":" in host else host
    netloc = f"{shown}:{parts.port}" if parts.port else shown
    return urlunsplit(parts._replace(netloc=netloc))


async def _interactive(session: JoinSession) -> int:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.formatted_text import FormattedText
    from prompt_toolkit.history import InMemoryHistory
    from prompt_toolkit.patch_stdout import patch_stdout

    from chatcli.config import config_dir

    try:
        config_dir().mkdir(parents=True, exist_ok=True)
        history: FileHistory | InMemoryHistory = _private_history(
            str(config_dir() / "input-history")
        )
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

    asker = terminal_asker()
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
                    command = parse_input(line)
                    if command.verb in ("register", "password") and not command.error:
                        # asked here, between two prompts: never while the prompt runs
                        await session.secret_command(command.verb, asker)
                        continue
                    if not session.client.connected and line.strip():
                        session.output.notice(f"pending, sent once reconnected: {line}")
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

    async def ping() -> None:
        session.pong.clear()
        if session.client.connected:
            await session.client.send(Ping())

    await ping()
    await _wait_for(session, session.pong, receiver, renew=ping)


async def _wait_acked(session: JoinSession, receiver: asyncio.Task[None]) -> None:
    await _wait_for(session, session.acked, receiver)


async def _wait_for(
    session: JoinSession,
    event: asyncio.Event,
    receiver: asyncio.Task[None],
    renew: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Wait for ``event``, or raise what ended the receiver.

    The wait is bounded by ACK_TIMEOUT of connected time: while the session reconnects it
    goes on (the reconnect itself is bounded by ``--retry-for``), and ``renew`` re-asks,
    after each reconnect, what the lost connection may never have answered.
    """
    while not event.is_set():
        session.reconnected.clear()
        waiter = asyncio.ensure_future(event.wait())
        again = asyncio.ensure_future(session.reconnected.wait())
        timeout = ACK_TIMEOUT if session.client.connected else None
        done, _ = await asyncio.wait(
            {waiter, again, receiver}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        waiter.cancel()
        again.cancel()
        if receiver in done:
            receiver.result()
            return
        if waiter in done:
            return
        if again in done:
            if renew is not None:
                await renew()
            continue
        if session.client.connected:
            return  # ACK_TIMEOUT passed with the connection up: the caller reports it


def _seconds(delay: float) -> str:
    """A pause as a person reads it: "0.5 s", "4 s"."""
    return f"{delay:.1f} s" if delay < 1.5 else f"{delay:.0f} s"


#: the commands that name someone and become one frame each
_NAMED: Final = frozenset({"nick", "kick", "ban", "unban", "mute", "unmute"})


def _named_event(command: Command, ref: str) -> ClientEvent:
    """The frame of ``/nick``, ``/kick``, ``/ban``, ``/unban``, ``/mute``, ``/unmute``."""
    name, verb = command.arg, command.verb
    if verb == "nick":
        return Nick(name=name, ref=ref)
    if verb == "kick":
        return Kick(name=name, reason=command.text, ref=ref)
    if verb == "ban":
        return Ban(name=name, minutes=command.minutes or 0, reason=command.text, ref=ref)
    if verb == "unban":
        return Unban(name=name, ref=ref)
    if verb == "mute":
        minutes = DEFAULT_MUTE_MINUTES if command.minutes is None else command.minutes
        return Mute(name=name, minutes=minutes, ref=ref)
    return Mute(name=name, minutes=0, ref=ref)


def _keeps_a_secret(line: str) -> bool:
    """True for ``/register ...`` or ``/password ...`` with something after the verb: the
    user typed a password on the line (join refuses it), which must not be kept."""
    word, _, rest = line.strip().partition(" ")
    return word.lower() in ("/register", "/password") and bool(rest.strip())


def _private_history(path: str) -> FileHistory:
    """prompt_toolkit's file history that never keeps a line holding a password."""
    from prompt_toolkit.history import FileHistory

    class PrivateHistory(FileHistory):
        def append_string(self, string: str) -> None:
            if not _keeps_a_secret(string):
                super().append_string(string)

    return PrivateHistory(path)
