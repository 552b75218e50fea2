"""TLS (spec 1.1, section 2): the server's port, every client, and what a failure costs.

Certificates come from ``trustme`` (a throwaway CA per module). In-process tests run the
server on asyncio's loop and on uvloop (what ``chatcli serve`` uses); the end-to-end
ones run the real ``chatcli`` executables, all on 127.0.0.1 with bounded waits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import ssl
import subprocess
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme
from helpers import HOST, READ_TIMEOUT, LineClient, serving
from processes import EXIT_TIMEOUT, START_TIMEOUT, Terminal, chatcli, read_line, run_join

from chatcli.client.connection import connect
from chatcli.client.resume import ResumeState
from chatcli.client.resuming import Resumed, ResumingClient
from chatcli.core.protocol import Say
from chatcli.errors import ConnectionFailed
from chatcli.tls import ClientTls, TlsError, server_context

LOOPS = ["asyncio", "uvloop"]
_LISTENING = re.compile(rb"chatcli serve listening on 127\.0\.0\.1:(\d+) \(TLS\)\n")
RECORDING = Path(__file__).parent.parent / "recordings" / "20261121-090000_lobby.jsonl"


@dataclass(frozen=True)
class Certs:
    """A CA, and a server certificate (chain and key) it signed, as PEM files."""

    ca: Path
    cert: Path
    key: Path


def _issue(ca: trustme.CA, directory: Path, *names: str) -> Certs:
    directory.mkdir(parents=True, exist_ok=True)
    leaf = ca.issue_cert(*names)
    certs = Certs(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    ca.cert_pem.write_to_path(str(certs.ca))
    leaf.private_key_pem.write_to_path(str(certs.key))
    certs.cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    return certs


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A certificate for 127.0.0.1 (and localhost) from a fresh trustme CA."""
    return _issue(trustme.CA(), tmp_path_factory.mktemp("tls"), "127.0.0.1", "localhost")


def client_context(certs: Certs) -> ssl.SSLContext:
    return ClientTls(ca=certs.ca).context()


def run_on(loop: str, coro: Coroutine[Any, Any, None], timeout: float = 30.0) -> None:
    """Run ``coro`` on asyncio's loop or uvloop, failing after ``timeout`` seconds."""

    async def bounded() -> None:
        async with asyncio.timeout(timeout):
            await coro

    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(bounded())


async def tls_client(port: int, context: ssl.SSLContext) -> LineClient:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(HOST, port, ssl=context), READ_TIMEOUT
    )
    return LineClient(reader, writer)


class Lines(logging.Handler):
    """Every record the server logs, as text."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextmanager
def server_log() -> Iterator[Lines]:
    handler = Lines()
    logger = logging.getLogger("chatcli.server")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


# ----------------------------------------------------------------------- contexts


def test_server_context_is_tls_1_2_or_later(certs: Certs) -> None:
    context = server_context(certs.cert, certs.key)
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    client = ClientTls().context()
    assert client.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert client.verify_mode is ssl.CERT_REQUIRED and client.check_hostname


def test_insecure_client_context_checks_nothing() -> None:
    context = ClientTls(insecure=True).context()
    assert context.verify_mode is ssl.CERT_NONE and not context.check_hostname


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda c, d: (d / "missing.pem", c.key), "--tls-cert {d}/missing.pem: no such file"),
        (lambda c, d: (c.cert, d), "--tls-key {d}: is a directory, not a file"),
        (lambda c, d: (c.ca, c.key), "the key does not belong to the certificate"),
        (lambda c, d: (c.key, c.key), "not a PEM certificate and key"),
    ],
    ids=["missing", "directory", "mismatch", "not-a-certificate"],
)
def test_unusable_certificate_or_key_is_one_line(
    certs: Certs, tmp_path: Path, make: Callable[[Certs, Path], tuple[Path, Path]], message: str
) -> None:
    cert, key = make(certs, tmp_path)
    with pytest.raises(TlsError) as caught:
        server_context(cert, key)
    text = str(caught.value)
    assert message.format(d=tmp_path) in text and "\n" not in text, text


def test_unusable_ca_file_is_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(TlsError, match=r"--ca .*junk.pem: no usable CA certificate"):
        ClientTls(ca=junk).context()
    with pytest.raises(TlsError, match="no such file"):
        ClientTls(ca=tmp_path / "nope.pem").context()


# ---------------------------------------------------------- the server, in process


@pytest.mark.parametrize("loop", LOOPS)
def test_json_and_text_clients_chat_over_tls(loop: str, certs: Certs) -> None:
    async def scenario() -> None:
        async with serving(tls_cert=certs.cert, tls_key=certs.key, rate_limit=0) as srv:
            context = client_context(certs)
            alice = await tls_client(srv.port, context)
            welcome = await alice.expect("welcome")
            assert "tls" in welcome["features"], welcome
            await alice.send({"type": "hello", "name": "alice"})
            await alice.expect("ready", name="alice")
            bob = await tls_client(srv.port, context)  # text mode, as openssl s_client
            await bob.expect("welcome")
            await bob.send("login bob")
            while not (await bob.text()).startswith("-- you are bob"):
                pass
            await alice.recv_until("join", name="bob")
            await bob.send("hello from text mode")
            got = await alice.recv_until("msg")
            assert (got["from"], got["text"]) == ("bob", "hello from text mode")
            await alice.send({"type": "say", "text": "hello from json"})
            while "hello from json" not in (line := await bob.text()):
                pass
            assert "<alice> hello from json" in line
            assert alice.writer.get_extra_info("ssl_object") is not None
            for client in (alice, bob):
                client.writer.close()

    run_on(loop, scenario())


@pytest.mark.parametrize("loop", LOOPS)
def test_plaintext_client_is_dropped_and_logged_once_while_tls_chat_goes_on(
    loop: str, certs: Certs
) -> None:
    async def scenario() -> None:
        with server_log() as log:
            async with serving(tls_cert=certs.cert, tls_key=certs.key, rate_limit=0) as srv:
                context = client_context(certs)
                alice = await tls_client(srv.port, context)
                await alice.expect("welcome")
                await alice.send({"type": "hello", "name": "alice"})
                await alice.expect("ready")
                before = len(log.lines)
                plain = await LineClient.open(srv.port)  # speaks JSON, not TLS
                await plain.send({"type": "hello", "name": "mallory"})
                assert await plain.eof() == b""  # dropped without a word
                http = await LineClient.open(srv.port)
                await http.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                assert await http.eof() == b""
                await alice.send({"type": "say", "text": "still here"})
                await alice.recv_until("msg", text="still here")
                assert await alice.barrier() == []  # nobody joined, nothing else happened
                dropped = log.lines[before:]
                port = r"127\.0\.0\.1:\d+"
                assert len(dropped) == 2, dropped
                assert re.fullmatch(
                    rf"TLS handshake failed from {port}: not TLS, a plaintext client\? .*",
                    dropped[0],
                ), dropped
                assert re.fullmatch(
                    rf"TLS handshake failed from {port}: a plain HTTP request \(not TLS\)",
                    dropped[1],
                ), dropped
                alice.writer.close()
                for client in (plain, http):
                    client.writer.close()

    run_on(loop, scenario())


@pytest.mark.parametrize("loop", LOOPS)
def test_silent_connection_is_dropped_after_the_login_timeout(loop: str, certs: Certs) -> None:
    async def scenario() -> None:
        with server_log() as log:
            async with serving(tls_cert=certs.cert, tls_key=certs.key, login_timeout=0.5) as srv:
                silent = await LineClient.open(srv.port)
                assert await silent.eof(timeout=5.0) == b""
                assert log.lines == [
                    line for line in log.lines if "no TLS handshake within 0.5 s" in line
                ]
                assert len(log.lines) == 1, log.lines
                silent.writer.close()

    run_on(loop, scenario())


@pytest.mark.parametrize("loop", LOOPS)
def test_client_refuses_a_certificate_for_another_name(loop: str, tmp_path: Path) -> None:
    other = _issue(trustme.CA(), tmp_path, "chat.example.org")

    async def scenario() -> None:
        async with serving(tls_cert=other.cert, tls_key=other.key) as srv:
            with pytest.raises(ConnectionFailed) as caught:
                await connect(HOST, srv.port, "alice", tls=client_context(other), timeout=5)
            assert str(caught.value).startswith(
                f"cannot connect to {HOST}:{srv.port} over TLS: its certificate is not for "
                "this address ("
            ), caught.value

    run_on(loop, scenario())


@pytest.mark.parametrize("loop", LOOPS)
def test_resuming_client_reconnects_over_tls(loop: str, certs: Certs) -> None:
    async def scenario() -> None:
        async with serving(tls_cert=certs.cert, tls_key=certs.key, rate_limit=0) as srv:
            state = ResumeState("alice", "lobby")
            link = ResumingClient(HOST, srv.port, state, tls=client_context(certs))
            await link.start()
            statuses: list[object] = []
            resumed = asyncio.Event()

            def on_status(status: object) -> None:
                statuses.append(status)
                if isinstance(status, Resumed):
                    resumed.set()

            runner = asyncio.create_task(link.run(lambda event, new: None, on_status))
            for core in list(srv.server.connections):  # the connection drops
                core.link.transport.abort()
            await asyncio.wait_for(resumed.wait(), 10)
            assert link.generation == 2
            assert link.client is not None
            assert link.client._writer.get_extra_info("ssl_object") is not None
            await link.send(Say(text="after the reconnect"))
            await link.close()
            await asyncio.wait_for(runner, 5)

    run_on(loop, scenario())


# ----------------------------------------------------------- end to end: chatcli


@contextmanager
def tls_serve(certs: Certs, *args: str) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """``chatcli serve`` with TLS (logging at INFO to a file), its port and its log."""
    log = certs.cert.parent / f"serve-{os.getpid()}-{id(args)}.log"
    with open(log, "wb") as err:
        proc = chatcli(
            "serve", "--host", HOST, "--port", "0", "--store", "memory",
            "--tls-cert", str(certs.cert), "--tls-key", str(certs.key), *args,
            stderr=err,
        )  # fmt: skip
    try:
        line = read_line(proc.stdout, START_TIMEOUT)
        match = _LISTENING.fullmatch(line)
        assert match, line
        yield proc, int(match.group(1)), log
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(EXIT_TIMEOUT)
        assert proc.stdout is not None
        proc.stdout.close()


@pytest.fixture(scope="module")
def tls_server(certs: Certs) -> Iterator[int]:
    with tls_serve(certs) as (_proc, port, _log):
        yield port


def errors_of(done: subprocess.CompletedProcess[bytes]) -> list[str]:
    """stderr's lines, which must hold no traceback."""
    text = done.stderr.decode()
    assert "Traceback" not in text, text
    return text.splitlines()


@pytest.mark.e2e
def test_serve_logs_one_line_per_plaintext_client_and_nothing_else(
    certs: Certs, config: dict[str, str]
) -> None:
    with tls_serve(certs) as (proc, port, log):
        chat = run_join(
            "logan", "--port", str(port), "--ca", str(certs.ca), stdin=b"hi\n", env=config
        )  # says bye and closes its TLS cleanly: nothing for the log but its leave
        assert chat.returncode == 0, chat.stderr
        import socket

        for payload in (b'{"type":"hello","name":"mallory"}\n', b"login mallory\n"):
            with socket.create_connection((HOST, port), timeout=5) as plain:
                plain.sendall(payload)
                assert plain.recv(100) == b""  # closed without a word
        with (
            ClientTls(ca=certs.ca)
            .context()
            .wrap_socket(
                socket.create_connection((HOST, port), timeout=5), server_hostname=HOST
            ) as good
        ):
            assert json.loads(good.recv(65536).split(b"\n")[0])["type"] == "welcome"
        proc.terminate()
        assert proc.wait(EXIT_TIMEOUT) == 0
    lines = log.read_text().splitlines()
    failed = [line for line in lines if "TLS handshake failed" in line]
    assert len(failed) == 2, lines
    assert all("not TLS, a plaintext client?" in line for line in failed), failed
    assert "Traceback" not in "\n".join(lines)
    expected = re.compile(r"(store: |Ctrl-C stops it|\d\d:\d\d:\d\d (INFO|WARNING) )")
    assert all(expected.match(line) for line in lines), lines  # nothing unexpected


@pytest.mark.e2e
def test_openssl_s_client_speaks_text_mode(certs: Certs, tls_server: int) -> None:
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("no openssl command on this machine")
    proc = subprocess.Popen(
        ["openssl", "s_client", "-quiet", "-CAfile", str(certs.ca),
         "-connect", f"{HOST}:{tls_server}"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"login sslbob\n")
        proc.stdin.flush()
        seen = b""
        while b"-- you are sslbob" not in seen:
            seen += read_line(proc.stdout, 10)
    finally:
        proc.kill()
        proc.wait(EXIT_TIMEOUT)


@pytest.mark.e2e
def test_serve_wants_both_cert_and_key(certs: Certs) -> None:
    done = subprocess.run(
        [*_python_chatcli(), "serve", "--port", "0", "--tls-cert", str(certs.cert)],
        capture_output=True,
        timeout=START_TIMEOUT,
    )
    assert done.returncode == 2
    assert errors_of(done) == [
        "chatcli: --tls-cert needs --tls-key: TLS takes a certificate and its private key"
    ]
    done = subprocess.run(
        [*_python_chatcli(), "serve", "--port", "0", "--tls-cert", str(certs.ca),
         "--tls-key", str(certs.key)],
        capture_output=True,
        timeout=START_TIMEOUT,
    )  # fmt: skip
    assert done.returncode == 2
    (line,) = errors_of(done)
    assert line.endswith("the key does not belong to the certificate"), line


def _python_chatcli() -> list[str]:
    import sys

    return [sys.executable, "-m", "chatcli"]


@pytest.mark.e2e
def test_join_with_ca_chats(certs: Certs, tls_server: int, config: dict[str, str]) -> None:
    done = run_join(
        "cathy", "--port", str(tls_server), "--tls", "--ca", str(certs.ca),
        stdin=b"hello over tls\n", env=config,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "<cathy> hello over tls" in done.stdout.decode()
    assert errors_of(done) == []


@pytest.mark.e2e
def test_join_without_ca_is_one_line_and_exit_1(tls_server: int, config: dict[str, str]) -> None:
    done = run_join("dan", "--port", str(tls_server), "--tls", env=config)
    assert done.returncode == 1
    (line,) = errors_of(done)
    assert line.startswith(
        f"chatcli: cannot connect to 127.0.0.1:{tls_server} over TLS: its certificate is "
        "not trusted ("
    ), line
    assert line.endswith(
        "give --ca FILE with the CA that signed it, or --insecure to skip the check"
    )


@pytest.mark.e2e
def test_join_insecure_chats_with_a_warning(tls_server: int, config: dict[str, str]) -> None:
    done = run_join(
        "ivy", "--port", str(tls_server), "--insecure", stdin=b"unverified\n", env=config
    )
    assert done.returncode == 0, done.stderr
    assert "<ivy> unverified" in done.stdout.decode()
    assert errors_of(done) == [
        "chatcli: warning: --insecure: the server's certificate is not checked, so anyone "
        "on the way can read and change this chat"
    ]


@pytest.mark.e2e
def test_plain_join_to_a_tls_port_says_to_add_tls(tls_server: int, config: dict[str, str]) -> None:
    done = run_join("pat", "--port", str(tls_server), env=config)
    assert done.returncode == 1
    (line,) = errors_of(done)
    assert "before its welcome (if it speaks TLS only, add --tls)" in line, line


@pytest.mark.e2e
def test_tls_join_to_a_plain_server_is_one_line(server: int, config: dict[str, str]) -> None:
    done = run_join("tim", "--port", str(server), "--tls", env=config)
    assert done.returncode == 1
    assert errors_of(done) == [
        f"chatcli: cannot connect to 127.0.0.1:{server} over TLS: the server does not speak "
        "TLS (wrong version number); connect without TLS"
    ]


@pytest.mark.e2e
def test_join_remembers_tls_and_ca_with_the_host(
    certs: Certs, tls_server: int, server: int, config: dict[str, str]
) -> None:
    args = ("join", "remy", "--port", str(tls_server), "--tls", "--ca", str(certs.ca))
    with Terminal(*args, env=config) as term:
        term.read_until(b"remy>")
        term.type(b"/quit\r")
        assert term.proc.wait(EXIT_TIMEOUT) == 0
    remembered = json.loads((Path(config["CHATCLI_CONFIG_DIR"]) / "last-join.json").read_text())
    assert remembered["tls"] is True and remembered["ca"] == str(certs.ca.resolve())
    again = run_join(stdin=b"/who\n", env=config)  # host, port, name, TLS and CA remembered
    assert again.returncode == 0, again.stderr
    assert "-- in lobby: remy" in again.stdout.decode()
    off = run_join("--no-tls", env=config)  # the remembered TLS turned off for once
    assert off.returncode == 1
    assert "before its welcome (if it speaks TLS only, add --tls)" in off.stderr.decode()


@pytest.mark.e2e
def test_tls_remembered_for_one_host_is_not_used_for_another(
    server: int, config: dict[str, str]
) -> None:
    path = Path(config["CHATCLI_CONFIG_DIR"]) / "last-join.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"host": "10.9.9.9", "port": 7777, "name": "al", "tls": True}))
    done = run_join("--host", "127.0.0.1", "--port", str(server), stdin=b"plain\n", env=config)
    assert done.returncode == 0, done.stderr
    assert "<al> plain" in done.stdout.decode()


@pytest.mark.e2e
def test_a_remembered_tls_is_named_when_connecting_fails(
    server: int, config: dict[str, str]
) -> None:
    path = Path(config["CHATCLI_CONFIG_DIR"]) / "last-join.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"host": "127.0.0.1", "port": server, "name": "al", "tls": True}))
    done = run_join("--port", str(server), env=config)
    assert done.returncode == 1
    (line,) = errors_of(done)
    assert line.endswith(
        "does not speak TLS (wrong version number); connect without TLS; TLS remembered from "
        "your last join; give --no-tls to change it"
    ), line


@pytest.mark.e2e
@pytest.mark.slow
def test_bench_tls_with_its_own_relay(tmp_path: Path) -> None:
    report = tmp_path / "run.json"
    done = subprocess.run(
        [*_python_chatcli(), "bench", "--tls", "--clients", "4", "--rate", "5",
         "--duration", "1", "--warmup", "0.2", "--json", str(report)],
        capture_output=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    data = json.loads(report.read_text())
    assert data["params"]["tls"] == "verified against a throwaway certificate"
    assert data["metrics"]["lost"] == 0 and data["metrics"]["deliveries_per_s"] > 0


@pytest.mark.e2e
@pytest.mark.slow
def test_bench_tls_target_is_verified(certs: Certs, tls_server: int) -> None:
    target = f"127.0.0.1:{tls_server}"
    run = [*_python_chatcli(), "bench", "--target", target, "--clients", "2", "--rate", "2",
           "--duration", "0.5", "--warmup", "0"]  # fmt: skip
    done = subprocess.run([*run, "--tls", "--ca", str(certs.ca)], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    untrusted = subprocess.run([*run, "--tls"], capture_output=True, timeout=120)
    assert untrusted.returncode == 3
    assert "(first failure: TLS: its certificate is not trusted" in untrusted.stderr.decode()


@pytest.mark.e2e
def test_replay_to_a_tls_server(certs: Certs, tls_server: int) -> None:
    done = subprocess.run(
        [*_python_chatcli(), "replay", str(RECORDING), "--to", f"127.0.0.1:{tls_server}",
         "--instant", "--prefix", "tls-", "--tls", "--ca", str(certs.ca)],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    assert re.search(r"messages sent +21\n +acknowledged +21\n", done.stdout.decode()), done.stdout
    untrusted = subprocess.run(
        [*_python_chatcli(), "replay", str(RECORDING), "--to", f"127.0.0.1:{tls_server}",
         "--instant", "--prefix", "tls2-", "--tls"],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert untrusted.returncode == 1
    (line,) = errors_of(untrusted)
    assert "over TLS: its certificate is not trusted" in line, line
    plain = subprocess.run(
        [*_python_chatcli(), "replay", str(RECORDING), "--tls"], capture_output=True, timeout=60
    )
    assert plain.returncode == 2
    assert errors_of(plain) == ["chatcli: --tls goes with --to HOST:PORT"]


@pytest.mark.e2e
def test_replay_insecure_to_a_tls_server_warns(tls_server: int) -> None:
    done = subprocess.run(
        [*_python_chatcli(), "replay", str(RECORDING), "--to", f"127.0.0.1:{tls_server}",
         "--instant", "--prefix", "tls3-", "--insecure"],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    assert errors_of(done) == [
        "chatcli: warning: --insecure: the server's certificate is not checked, so anyone "
        "on the way can read and change this chat"
    ]


@pytest.mark.e2e
def test_bench_own_relay_refuses_ca_and_insecure(certs: Certs) -> None:
    for option in (["--insecure"], ["--ca", str(certs.ca)]):
        done = subprocess.run(
            [*_python_chatcli(), "bench", "--duration", "1", *option],
            capture_output=True,
            timeout=60,
        )
        assert done.returncode == 2
        assert errors_of(done) == [
            "chatcli: --ca and --insecure go with --target: the relay bench starts gets a "
            "throwaway certificate that its clients trust"
        ]


def test_encrypted_key_is_one_line_not_a_passphrase_prompt(certs: Certs, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(certs.key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(TlsError, match=r"^--tls-key .*encrypted.pem: the key is encrypted;"):
        server_context(certs.cert, encrypted)


def test_the_web_port_serves_https_and_wss_with_the_tls_options(certs: Certs) -> None:
    """Spec 1.1, section 5: with TLS options the web port serves HTTPS and WSS."""
    import json
    import re
    import urllib.request

    from websockets.asyncio.client import connect as ws_connect

    context = client_context(certs)
    with tls_serve(certs, "--web", "0") as (proc, _port, _log):
        line = read_line(proc.stdout, START_TIMEOUT).decode()
        match = re.fullmatch(r"chatcli web page at (https://127\.0\.0\.1:(\d+)/)\n?", line)
        assert match, line
        with urllib.request.urlopen(match.group(1), timeout=10, context=context) as answer:
            assert answer.status == 200
            assert b"<html" in answer.read().lower()

        async def chat() -> None:
            async with ws_connect(f"wss://127.0.0.1:{match.group(2)}/ws", ssl=context) as ws:
                welcome = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert welcome["web"] == match.group(1)
                assert {"tls", "web"} <= set(welcome["features"])
                await ws.send(json.dumps({"type": "hello", "name": "webby"}))
                ready = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert ready["type"] == "ready", ready

        asyncio.run(asyncio.wait_for(chat(), 30))
