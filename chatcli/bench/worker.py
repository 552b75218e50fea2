"""A load-generator process: some of the simulated clients, their sends and receives.

The coordinator (runner.py) starts one worker per ``--workers`` process and talks to it
over a pipe, in the typed messages of :mod:`chatcli.bench.messages`: the worker connects
its clients and says ``Connected``, waits for ``Start`` (a common start time on the
system-wide monotonic clock), sends on schedule, streams ``WorkerProgress`` snapshots,
drains, and returns its histograms and delivery logs as a ``WorkerResult``. All times
are ``time.monotonic_ns() // 1000`` microseconds, which every process on the machine
shares, so a latency measured across workers is still true.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, cast

from chatcli.bench.accounting import DUPLICATE, ClientLog
from chatcli.bench.histogram import Histogram
from chatcli.bench.messages import (
    Connected,
    CoordinatorMessage,
    Start,
    WorkerFailed,
    WorkerMessage,
    WorkerProgress,
    WorkerResult,
)
from chatcli.bench.payload import PAYLOAD_RE, say_event
from chatcli.bench.sampling import WorkerSampler
from chatcli.bench.schedule import Schedule, ramp, room_of
from chatcli.client.acks import AckPolicy, AckTracker
from chatcli.core.client import ClientConnection
from chatcli.core.protocol import Bye, ClientEvent, Error, Hello, LineFramer
from chatcli.errors import ChatError, FrameTooLarge, ProtocolError, ServerRefused
from chatcli.runtime import freeze_heap, raise_open_files_limit, run
from chatcli.tls import ClientTls, client_reason

__all__ = ["WorkerSpec", "worker_main"]

_MSG_PREFIX = b'{"type":"msg"'
#: board changes (the draw mix): a chat client has nothing to do with them, so they are
#: skipped by their start (the relay writes ``type`` first) instead of being decoded as
#: events; decoding thousands a second of pencil strokes slowed the very loop that
#: timestamps the chat messages' arrival
_BOARD_PREFIXES = (b'{"type":"draw"', b'{"type":"erase"', b'{"type":"move"', b'{"type":"clear"')
#: frames ``_other_frames`` never needs: messages (read by PAYLOAD_RE) and board changes
_NOT_OTHER = (_MSG_PREFIX, *_BOARD_PREFIXES)
#: longest frame accepted from the relay (bench asks for no history: frames are small)
MAX_FRAME = 1 << 22
#: bench counts a rate-limited message (by its code) and moves on; it never times out
#: a message (the delivery accounting finds what went missing)
BENCH_ACK_POLICY = AckPolicy(timeout=None)
#: how often a worker reports progress, seconds
PROGRESS_EVERY = 0.5
NEVER = 1 << 62
#: shortest sleep of the send loop, seconds (one event-loop timer tick)
MIN_SLEEP = 0.001
#: latencies batched before they are folded into the histograms (small: no long stalls)
FOLD_AT = 2048
#: one latency in this many is kept for the live p99 shown while running
LIVE_SAMPLE_EVERY = 8
#: connections opened at once while ramping up
CONNECT_CONCURRENCY = 100


def target_of(index: int, targets: int) -> int:
    """Which of ``targets`` relays client ``index`` connects to: round-robin."""
    return index % targets


def now_us() -> int:
    """Microseconds on the clock every process shares."""
    return time.monotonic_ns() // 1000


@dataclass(frozen=True)
class WorkerSpec:
    """What one worker process simulates.

    ``targets`` are the relays (a cluster's nodes, or one relay): client ``i`` connects
    to ``targets[i % len(targets)]``, so the clients are spread round-robin over them
    whatever the worker (:func:`target_of`).
    """

    targets: tuple[tuple[str, int], ...]
    clients: range
    total_clients: int
    rooms: int
    rate: float
    duration: float
    warmup: float
    size: int
    arrivals: str
    seed: int
    spawn_rate: float | None
    closed: bool = False
    churn: bool = False
    churn_period: float = 2.0
    name_prefix: str = "bench"
    connect_timeout: float = 10.0
    drain_quiet: float = 0.5
    drain_max: float = 5.0
    #: speak TLS, verifying the relay as this says (None: plain TCP)
    tls: ClientTls | None = None


class BenchClient(asyncio.Protocol):
    """One simulated user: a connection with the leanest receive path we can write.

    Frames come from the shared LineFramer. The benchmark ``msg`` frames (nearly all of
    them) take a lean path: one scan of the payload regex over a chunk's frames, no JSON
    decoding. Every other frame goes to the shared client core (ClientConnection), which
    does the handshake, answers pings and reports refusals. The client's own echoes are
    its acks, counted by the shared AckTracker under bench's policy.
    """

    def __init__(self, worker: Worker, index: int, room: str) -> None:
        self.worker = worker
        self.index = index
        self.room = room
        self.name = f"{worker.spec.name_prefix}{index}"
        self.log = worker.logs[index]
        self.transport: asyncio.Transport | None = None
        self.framer = LineFramer(MAX_FRAME)
        #: whole frames are handed to the core: the framer above does the framing
        self.connection = ClientConnection(framing=None)
        #: bench's says carry no ref (the relay would then encode each sender's echo
        #: apart, changing what is measured): a message's ref is its seq, which its echo
        #: carries in the payload. Nor a txn: bench never sends a message twice, so a txn
        #: could never de-duplicate anything, while a durable relay would store a second
        #: row per message for it (measured: p99 higher in 6 of 6 interleaved pairs; see
        #: docs/benchmarks.md, "Cost of durability")
        self.acks: AckTracker[None] = AckTracker(BENCH_ACK_POLICY)
        self.ready: asyncio.Future[float] = worker.loop.create_future()
        self.closed: asyncio.Future[None] = worker.loop.create_future()
        self.live = False
        self.failed = False
        self.index_bytes = b"%d" % index
        self.next_seq = 0
        #: where this connection's sends start in the client's log (a client that
        #: churns sends over several connections, each with its own ack tracker)
        self.first_send = self.log.sent_count

    def give_up_acks(self) -> None:
        """Report to the log every send of this connection whose echo never came back.

        Called once the connection is done with (run drained, or churned away): the
        sender's copy is the relay's acknowledgement, so a missing one is a loss.
        """
        acks = self.acks
        if acks.waiting:
            self.log.never_acked(s for s in self.log.sent_seqs(self.first_send) if s in acks)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.log.joining(f"r{self.room}", time.monotonic())
        self.send(Hello(name=self.name, room=self.room, history=0))

    def send(self, event: ClientEvent) -> None:
        """Send one event through the client core."""
        assert self.transport is not None
        self.connection.send(event)
        self._flush()

    def _flush(self) -> None:
        data = self.connection.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        arrival = now_us()
        worker = self.worker
        try:
            frames = self.framer.feed(data)
        except FrameTooLarge as exc:  # no relay sends such a line: give the connection up
            self._frames(exc.frames, arrival)
            self._fail(exc)
            return
        if frames:
            self._frames(frames, arrival)
        if arrival >= worker.next_due_us:
            worker.pump()  # sends due now go out between chunks, not after all of them

    def _frames(self, frames: list[bytes], arrival: int) -> None:
        found = PAYLOAD_RE.findall(b"\n".join(frames))
        if len(found) < len(frames):  # some frames are not benchmark messages
            others = [f for f in frames if not f.startswith(_NOT_OTHER)]
            if others:
                self._other_frames(others)
        if found:
            self._deliveries(found, arrival)

    def _deliveries(self, found: list[tuple[bytes, bytes, bytes, bytes]], arrival: int) -> None:
        """Account for a chunk's benchmark messages: the generator's hottest loop."""
        worker = self.worker
        me = self.index_bytes
        log = self.log
        expected = log.next_expected
        delivered = log.delivered
        measure_from = worker.measure_from_us
        latencies = worker.lat_batch
        uncorrected = worker.unc_batch
        acknowledge = self.acks.acknowledge
        own = acked = 0
        for sender_b, seq_b, planned_b, sent_b in found:
            if sender_b == me:
                own += 1  # our own echo: the relay's ack, not a delivery
                if acknowledge(int(seq_b)) is not None:
                    acked += 1
                continue
            sender = int(sender_b)
            seq = int(seq_b)
            if expected.get(sender) == seq:
                expected[sender] = seq + 1
            elif delivered(sender, seq) == DUPLICATE:
                continue
            planned = int(planned_b)
            if planned >= measure_from:
                latencies.append(arrival - planned)
                uncorrected.append(arrival - int(sent_b))
        worker.received += len(found) - own
        if acked:
            worker.acked += acked
            if worker.spec.closed:
                worker.loop.call_soon(worker.send_next, self)
        if len(latencies) >= FOLD_AT:
            worker.fold()

    def _other_frames(self, frames: list[bytes]) -> None:
        """Everything that is not a benchmark msg: ready, ping, errors, presence."""
        conn = self.connection
        conn.receive_frames(frames)
        self._flush()  # pongs
        for event in conn.events_received():
            if isinstance(event, Error):
                self._count_error(event.code)
                self.acks.receive(event)
        if conn.ready is not None and not self.ready.done():
            joined = time.monotonic()
            self.log.joined(joined)
            self.ready.set_result(joined)
        if conn.failure is not None and not self.failed:
            self._fail(conn.failure)

    def _count_error(self, code: str) -> None:
        self.worker.errors += 1
        codes = self.worker.error_codes
        codes[code] = codes.get(code, 0) + 1

    def _fail(self, exc: ChatError) -> None:
        """The session ended (a refusal, a fatal error, a frame too long): count it once."""
        self.failed = True
        if isinstance(exc, ServerRefused):
            self._count_error(exc.code)
        if not self.ready.done():
            code = exc.code if isinstance(exc, (ServerRefused, ProtocolError)) else "failed"
            self.ready.set_exception(ConnectionError(f"refused: {code}"))
        if self.transport is not None and isinstance(exc, FrameTooLarge):
            self.transport.abort()  # the stream cannot be resynchronised

    def connection_lost(self, exc: Exception | None) -> None:
        was_live = self.live  # not yet logged in: open_client counts a failed connect
        self.live = False
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("connection closed before ready"))
        if not self.closed.done():
            self.closed.set_result(None)
        if was_live and not self.worker.stopping and not self.worker.churning.get(self.index):
            self.worker.disconnects += 1


@dataclass
class Worker:
    """The state of one worker process's run."""

    spec: WorkerSpec
    loop: asyncio.AbstractEventLoop
    logs: dict[int, ClientLog] = field(default_factory=dict)
    clients: dict[int, BenchClient] = field(default_factory=dict)
    latency: Histogram = field(default_factory=Histogram)
    uncorrected: Histogram = field(default_factory=Histogram)
    connect: Histogram = field(default_factory=Histogram)
    lag: Histogram = field(default_factory=Histogram)
    live_sample: list[int] = field(default_factory=list)
    lat_batch: list[int] = field(default_factory=list)
    unc_batch: list[int] = field(default_factory=list)
    lag_batch: list[int] = field(default_factory=list)
    churning: dict[int, bool] = field(default_factory=dict)
    error_codes: dict[str, int] = field(default_factory=dict)
    sent: int = 0
    skipped: int = 0
    acked: int = 0
    received: int = 0
    errors: int = 0
    disconnects: int = 0
    connect_failures: int = 0
    stopping: bool = False
    start_us: int = 0
    measure_from_us: int = NEVER
    sent_in_window: int = 0
    schedule: Schedule | None = None
    next_due_us: int = NEVER
    #: the TLS context of every connection (made once from ``spec.tls``)
    tls: ssl.SSLContext | None = None
    #: why the first connection that failed did, for the report when none connects
    first_failure: str | None = None

    # -- connecting ----------------------------------------------------------------------

    async def open_client(self, index: int) -> BenchClient | None:
        room = f"r{room_of(index, self.spec.rooms)}"
        client = BenchClient(self, index, room)
        started = now_us()
        spec = self.spec
        host, port = spec.targets[target_of(index, len(spec.targets))]
        tls: dict[str, Any] = {}
        if self.tls is not None:
            tls = {"ssl": self.tls, "ssl_handshake_timeout": spec.connect_timeout}
        try:
            await asyncio.wait_for(
                self.loop.create_connection(lambda: client, host, port, **tls),
                spec.connect_timeout,
            )
            await asyncio.wait_for(client.ready, spec.connect_timeout)
        except (TimeoutError, OSError, ConnectionError) as exc:
            if self.first_failure is None:
                self.first_failure = _failure(exc, bool(tls))
            self.connect_failures += 1
            if client.transport is not None:
                client.transport.abort()
            return None
        self.connect.record(max(0, now_us() - started))
        client.live = True
        self.clients[index] = client
        return client

    async def connect_all(self) -> None:
        plan = ramp(self.spec.clients, self.spec.spawn_rate)
        began = time.monotonic()
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one(at: float, index: int) -> None:
            delay = began + at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            async with gate:
                await self.open_client(index)

        await asyncio.gather(*(one(at, index) for at, index in plan))

    # -- sending -------------------------------------------------------------------------

    def send(self, client: BenchClient, seq: int, planned: int) -> None:
        sent = now_us()
        assert client.transport is not None
        client.acks.sent(seq, None)
        client.send(say_event(client.index, seq, planned, sent, self.spec.size))
        # the planned time decides whether a message is measured, for every figure alike
        client.log.sent(seq, planned / 1e6)
        self.sent += 1
        if planned >= self.measure_from_us:
            self.sent_in_window += 1
            self.lag_batch.append(sent - planned)

    def send_next(self, client: BenchClient) -> None:
        """Closed loop: the next message as soon as the previous one came back."""
        now = now_us()
        if self.stopping or not client.live or now >= self.end_us:
            return
        seq = client.next_seq
        client.next_seq += 1
        self.send(client, seq, now)

    def pump(self) -> None:
        """Send everything the schedule has due by now.

        Called by the open-loop timer and also from the receive path, so that a loop turn
        busy with big incoming chunks does not hold planned sends back.
        """
        schedule = self.schedule
        if schedule is None:
            return
        start = self.start_us
        clients = self.clients
        for when, index, seq in schedule.due((now_us() - start) / 1e6):
            client = clients.get(index)
            if client is None or not client.live:
                self.skipped += 1
                continue
            self.send(client, seq, start + int(when * 1e6))
        upcoming = schedule.next_time()
        self.next_due_us = NEVER if upcoming is None else start + int(upcoming * 1e6)

    async def open_loop(self) -> None:
        spec = self.spec
        self.schedule = Schedule(
            spec.clients,
            rate=spec.rate,
            duration=spec.warmup + spec.duration,
            arrivals=cast(Any, spec.arrivals),
            seed=spec.seed,
            total_clients=spec.total_clients,
        )
        self.pump()
        while not self.schedule.done:
            # At least one timer tick: uvloop's timers count whole milliseconds, so a
            # shorter sleep returns at once and the loop would spin a core. Sends that
            # fall due meanwhile also go out from the receive path (see pump).
            await asyncio.sleep(max(MIN_SLEEP, (self.next_due_us - now_us()) / 1e6))
            self.pump()
        # the run lasts its planned time even when the schedule ends early (or is empty)
        await asyncio.sleep(max(0.0, (self.end_us - now_us()) / 1e6))

    async def closed_loop(self) -> None:
        for client in list(self.clients.values()):
            self.send_next(client)
        await asyncio.sleep(max(0.0, (self.end_us - now_us()) / 1e6))

    async def churn(self) -> None:
        """Every fifth client keeps leaving and coming back while the others chat."""
        spec = self.spec
        rng = random.Random(spec.seed)
        churners = [i for i in spec.clients if i % 5 == 4]

        async def cycle(index: int) -> None:
            while True:
                await asyncio.sleep(rng.uniform(0.5, 1.5) * spec.churn_period)
                if now_us() >= self.end_us - 1_000_000:
                    break  # no cycle may outlast the run
                client = self.clients.get(index)
                if client is None or client.transport is None or not client.live:
                    continue  # its comeback failed (counted): it stays away
                self.churning[index] = True
                client.log.leaving(time.monotonic())
                await asyncio.sleep(0.3)  # keep reading what was in flight
                client.live = False
                client.send(Bye())
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(client.closed, 5.0)
                client.transport.abort()
                client.log.left(time.monotonic())
                client.give_up_acks()
                self.churning[index] = False
                await asyncio.sleep(rng.uniform(0.1, 0.5))
                await self.open_client(index)

        await asyncio.gather(*(cycle(i) for i in churners))

    # -- measuring -----------------------------------------------------------------------

    def fold(self) -> None:
        """Move the batched samples into the histograms (a small batch: a short pause)."""
        if self.lat_batch:
            self.latency.record_many(self.lat_batch)
            self.live_sample.extend(self.lat_batch[::LIVE_SAMPLE_EVERY])
            self.lat_batch.clear()
        if self.unc_batch:
            self.uncorrected.record_many(self.unc_batch)
            self.unc_batch.clear()
        if self.lag_batch:
            self.lag.record_many([max(0, v) for v in self.lag_batch])
            self.lag_batch.clear()

    def per_target(self) -> tuple[int, ...]:
        """How many of this worker's clients are logged in, per target."""
        counts = [0] * len(self.spec.targets)
        for index in self.clients:
            counts[target_of(index, len(counts))] += 1
        return tuple(counts)

    def snapshot(self) -> WorkerProgress:
        """Totals so far, and the p99 of the latencies sampled since the last snapshot."""
        self.fold()
        sample = sorted(self.live_sample)
        self.live_sample.clear()
        p99 = sample[min(len(sample) - 1, int(len(sample) * 0.99))] if sample else None
        return WorkerProgress(
            sent=self.sent,
            received=self.received,
            acked=self.acked,
            errors=self.errors,
            connected=sum(1 for c in self.clients.values() if c.live),
            p99_us=p99,
        )

    def result(
        self, cpu_s: float, wall_s: float, timeline: list[dict[str, Any]] | None = None
    ) -> WorkerResult:
        """Everything measured, for the coordinator (after :meth:`fold`)."""
        return WorkerResult(
            sent=self.sent,
            sent_in_window=self.sent_in_window,
            skipped=self.skipped,
            acked=self.acked,
            received=self.received,
            errors=self.errors,
            error_codes=self.error_codes,
            disconnects=self.disconnects,
            connect_failures=self.connect_failures,
            cpu_s=cpu_s,
            wall_s=wall_s,
            histograms={
                "latency": self.latency,
                "uncorrected": self.uncorrected,
                "connect": self.connect,
                "lag": self.lag,
            },
            logs=list(self.logs.values()),
            timeline=timeline or [],
        )

    @property
    def end_us(self) -> int:
        return self.start_us + int((self.spec.warmup + self.spec.duration) * 1e6)

    async def drain(self) -> None:
        """Wait until deliveries stop arriving (or drain_max), so in-flight ones count."""
        deadline = time.monotonic() + self.spec.drain_max
        last = -1
        while time.monotonic() < deadline:
            if self.received == last:
                break
            last = self.received
            await asyncio.sleep(self.spec.drain_quiet)


async def _run(conn: Connection, spec: WorkerSpec) -> None:
    loop = asyncio.get_running_loop()
    worker = Worker(spec, loop)
    if spec.tls is not None:
        worker.tls = spec.tls.context()
    for index in spec.clients:
        worker.logs[index] = ClientLog(index)
    await worker.connect_all()
    freeze_heap()  # a full collection while measuring would stop the clock's loop
    _say(
        conn,
        Connected(
            connected=len(worker.clients),
            failures=worker.connect_failures,
            first_failure=worker.first_failure,
            per_target=worker.per_target(),
        ),
    )
    try:
        message: CoordinatorMessage = await loop.run_in_executor(None, conn.recv)
    except EOFError:
        return  # the coordinator gave up (no client connected, Ctrl-C): nothing to say
    if not isinstance(message, Start):
        return
    worker.start_us = int(message.at * 1e6)
    worker.measure_from_us = worker.start_us + int(spec.warmup * 1e6)
    await asyncio.sleep(max(0.0, message.at - time.monotonic()))
    cpu_start = time.process_time()
    wall_start = time.monotonic()

    async def report() -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY)
            _say(conn, worker.snapshot())

    reporter = loop.create_task(report())
    sampler = WorkerSampler(worker.start_us, now_us)
    sampling = loop.create_task(sampler.run(worker))
    tasks = [worker.closed_loop() if spec.closed else worker.open_loop()]
    if spec.churn:
        tasks.append(worker.churn())
    await asyncio.gather(*tasks)
    # the generator's CPU share while it generated load: the idle drain would dilute it
    cpu = time.process_time() - cpu_start
    wall = time.monotonic() - wall_start
    await worker.drain()
    reporter.cancel()
    sampling.cancel()
    worker.stopping = True
    sampler.sample(worker)  # the last interval ends when the deliveries stopped
    for client in worker.clients.values():
        client.give_up_acks()
        if client.transport is not None:
            client.transport.abort()
    _say(conn, worker.result(cpu, wall, sampler.rows))


def _failure(exc: BaseException, tls: bool) -> str:
    """A few words on why a connection failed (TLS failures as every client words them)."""
    if tls and isinstance(exc, ssl.SSLError | ConnectionError):
        return f"TLS: {client_reason(exc)}"
    if isinstance(exc, TimeoutError):
        return "no login in time"
    return str(getattr(exc, "strerror", None) or exc or type(exc).__name__).lower()


def _say(conn: Connection, message: WorkerMessage) -> None:
    """Send one typed message to the coordinator."""
    conn.send(message)


def worker_main(conn: Connection, spec: WorkerSpec) -> None:
    """Process entry point: run the worker on uvloop when available, report any failure."""
    raise_open_files_limit()  # thousands of connections: take the hard limit
    try:
        run(_run(conn, spec))
    except KeyboardInterrupt:
        pass  # Ctrl-C reaches the whole process group: the coordinator reports it
    except Exception as exc:  # the coordinator turns this into one clear line
        _say(conn, WorkerFailed(f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()
