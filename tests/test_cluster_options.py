"""The NATS options (``--cluster``, ``--nats-*``): parsing, checks, and real logins.

The login tests start nats-server with a user and password, with TLS, and with mutual
TLS, and connect with nothing but ``NatsOptions.connect_kwargs()``: what a node and
``chatcli cluster`` will do.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path

import click
import nats
import pytest
import trustme
from click.testing import CliRunner
from helpers import run
from nats_server import NatsServer
from processes import EXIT_TIMEOUT, START_TIMEOUT, chatcli

from chatcli.cluster.options import NatsOptions, nats_options, parse_servers, redact
from chatcli.errors import UsageError
from chatcli.tls import TlsError


@pytest.mark.parametrize(
    ("given", "servers"),
    [
        (["nats://127.0.0.1:4222"], ("nats://127.0.0.1:4222",)),
        (["127.0.0.1:5000"], ("nats://127.0.0.1:5000",)),
        (["nats://a"], ("nats://a:4222",)),
        (["NATS://a:1/"], ("nats://a:1",)),
        (["tls://a:1,nats://b:2", "c"], ("tls://a:1", "nats://b:2", "nats://c:4222")),
        (["a:1, a:1 ,b:2"], ("nats://a:1", "nats://b:2")),
        (["nats://[::1]:4222"], ("nats://[::1]:4222",)),
        (["nats://u:p@h:1"], ("nats://u:p@h:1",)),
        (["nats://tok@h"], ("nats://tok@h:4222",)),
    ],
)
def test_parse_servers(given: list[str], servers: tuple[str, ...]) -> None:
    assert parse_servers(given) == servers


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ([], "no NATS server given"),
        (["a:1,,b:2"], "'a:1,,b:2' has an empty item"),
        (["ws://h:1"], "scheme 'ws' is not nats:// or tls://"),
        (["http://u:secret@h:1"], "'http://u:***@h:1': scheme 'http'"),
        (["nats://h:1/path"], "no path, query or fragment"),
        (["nats://h:99999"], "port 99999 is outside 1-65535"),
        (["nats://h:port"], "port 'port' is not a number"),
        (["nats://:4222"], "no host"),
        (["nats://u:secret@:4222"], "'nats://u:***@:4222': no host"),
        (["nats://a b:1"], "is not a host name"),
    ],
)
def test_parse_servers_refuses(given: list[str], reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)) as info:
        parse_servers(given)
    assert "secret" not in str(info.value) and "\n" not in str(info.value)


def test_redact() -> None:
    assert redact("nats://u:secret@h:1") == "nats://u:***@h:1"
    assert redact("nats://u:p@ss@h:1") == "nats://u:***@h:1"
    assert redact("nats://s3cr3t-token@h:1") == "nats://***@h:1"
    assert redact("nats://h:1") == "nats://h:1"


def test_options_checks() -> None:
    with pytest.raises(UsageError, match="no NATS server"):
        NatsOptions(servers=())
    with pytest.raises(UsageError, match="--nats-cert and --nats-key go together"):
        NatsOptions(servers=("nats://h:1",), cert=Path("c.pem"))
    with pytest.raises(UsageError, match="give one of them"):
        NatsOptions(servers=("nats://h:1",), creds=Path("x.creds"), user="u", password="p")
    with pytest.raises(UsageError, match="--nats-user and --nats-password go together"):
        NatsOptions(servers=("nats://h:1",), user="u")


def test_password_stays_out_of_repr_and_shown_servers() -> None:
    options = NatsOptions(servers=("nats://a:pw1@h:1",), user="u", password="pw2")
    assert "pw1" not in repr(options) and "pw2" not in repr(options)
    assert options.shown_servers() == "nats://a:***@h:1"


def test_connect_kwargs_plain() -> None:
    kwargs = NatsOptions(servers=("nats://h:1", "nats://g:2")).connect_kwargs()
    assert kwargs == {
        "servers": ["nats://h:1", "nats://g:2"],
        "name": "chatcli",
        "connect_timeout": 2.0,
        "reconnect_time_wait": 0.5,
        "max_reconnect_attempts": -1,
        "allow_reconnect": True,
    }


def test_connect_kwargs_credentials(tmp_path: Path) -> None:
    creds = tmp_path / "u.creds"
    kwargs = NatsOptions(servers=("nats://h:1",), creds=creds).connect_kwargs()
    assert kwargs["user_credentials"] == str(creds) and "user" not in kwargs
    kwargs = NatsOptions(servers=("nats://h:1",), user="u", password="p").connect_kwargs()
    assert (kwargs["user"], kwargs["password"]) == ("u", "p")


def test_tls_is_implied() -> None:
    assert not NatsOptions(servers=("nats://h:1",)).tls
    assert NatsOptions(servers=("nats://h:1", "tls://g:2")).tls
    context = NatsOptions(servers=("tls://h:1",)).connect_kwargs()["tls"]
    assert context.verify_mode.name == "CERT_REQUIRED" and context.check_hostname


def test_tls_files_that_cannot_be_used(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(TlsError, match=r"--nats-ca .*missing.pem: no such file"):
        NatsOptions(servers=("nats://h:1",), ca=tmp_path / "missing.pem").tls_context()
    with pytest.raises(TlsError, match=r"--nats-ca .*junk.pem: no usable CA certificate"):
        NatsOptions(servers=("nats://h:1",), ca=junk).tls_context()
    with pytest.raises(TlsError, match=r"--nats-cert .*junk.pem / --nats-key .*: cannot use them"):
        NatsOptions(servers=("tls://h:1",), cert=junk, key=junk).tls_context()


# -- the click decorator --------------------------------------------------------------


@click.command()
@nats_options()
def probe(nats: NatsOptions | None) -> None:
    click.echo(repr(nats))


def test_decorator_hands_one_argument() -> None:
    result = CliRunner().invoke(probe, [])
    assert (result.exit_code, result.output) == (0, "None\n")
    result = CliRunner().invoke(probe, ["--cluster", "a:1,b:2", "--cluster", "tls://c"])
    assert result.exit_code == 0
    assert "servers=('nats://a:1', 'nats://b:2', 'tls://c:4222')" in result.output


def test_decorator_refuses_nats_options_without_cluster() -> None:
    result = CliRunner().invoke(probe, ["--nats-user", "u"])
    assert isinstance(result.exception, UsageError)
    assert str(result.exception) == "--nats-user needs --cluster"


def test_password_from_the_environment_alone_is_not_an_error() -> None:
    result = CliRunner().invoke(probe, [], env={"CHATCLI_NATS_PASSWORD": "pw"})
    assert (result.exit_code, result.output) == (0, "None\n")
    result = CliRunner().invoke(
        probe, ["--cluster", "h:1", "--nats-user", "u"], env={"CHATCLI_NATS_PASSWORD": "pw"}
    )
    assert result.exit_code == 0 and "user='u'" in result.output and "pw" not in result.output


def cluster_cli(*args: str) -> tuple[int, str, str]:
    proc = chatcli("cluster", *args)
    out, err = proc.communicate(timeout=START_TIMEOUT + EXIT_TIMEOUT)
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cluster", "h:1", "--nats-cert", "c.pem"], "--nats-cert and --nats-key go together"),
        (["--cluster", "h:1", "--nats-ca", "/no/such.pem"], "--nats-ca /no/such.pem: no such file"),
        (["--cluster", "ws://h:1"], "scheme 'ws' is not nats:// or tls://"),
    ],
)
def test_bad_options_are_one_line_exit_2(args: list[str], message: str) -> None:
    code, out, err = cluster_cli(*args)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and message in err, err


# -- real logins ----------------------------------------------------------------------


async def _ignore(exc: Exception) -> None:
    """nats-py reports each failed attempt here (else it logs a traceback); the test
    sees the failure as the exception ``connect`` raises."""


async def _round_trip(options: NatsOptions) -> bytes:
    # one try per server (nats-py's 0 would mean: retry for ever), so a refusal raises
    nc = await options.connect(max_reconnect_attempts=1, allow_reconnect=False, error_cb=_ignore)
    try:
        sub = await nc.subscribe("probe")
        await nc.publish("probe", b"ok")
        return (await sub.next_msg(timeout=2)).data
    finally:
        await nc.close()


@pytest.mark.e2e
def test_user_and_password(tmp_path: Path) -> None:
    with NatsServer(tmp_path / "auth", args=("--user", "alice", "--pass", "s3cret")) as server:
        good = NatsOptions(servers=(server.url,), user="alice", password="s3cret")
        assert run(_round_trip(good)) == b"ok"
        in_url = server.url.replace("nats://", "nats://alice:s3cret@")
        assert run(_round_trip(NatsOptions(servers=parse_servers([in_url])))) == b"ok"
        code, out, err = cluster_cli("--cluster", server.url.replace("//", "//alice:wrong@"))
    assert (code, out) == (1, "")
    assert err == (
        f"chatcli: cannot reach NATS at {server.url.replace('//', '//alice:***@')}: "
        "authorization violation\n"
    )


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def _tls_server(ca: trustme.CA, directory: Path, *extra: str) -> NatsServer:
    directory.mkdir(parents=True)
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(directory / "server.pem"))
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    files = ("--tlscert", str(directory / "server.pem"), "--tlskey", str(directory / "server.pem"))
    return NatsServer(directory / "nats", args=("--tls", *files, *extra))


@pytest.mark.e2e
def test_tls_with_a_ca(tmp_path: Path, ca: trustme.CA) -> None:
    with _tls_server(ca, tmp_path / "tls") as server:
        url = server.url.replace("nats://", "tls://")
        trusted = NatsOptions(servers=(url,), ca=tmp_path / "tls" / "ca.pem")
        assert run(_round_trip(trusted)) == b"ok"
        # without the CA the server's certificate is not trusted: no connection
        with pytest.raises(ssl.SSLCertVerificationError):
            run(_round_trip(NatsOptions(servers=(url,))), timeout=10)
        code, out, err = cluster_cli("--cluster", url)
        assert (code, out) == (1, "")
        assert err == (
            f"chatcli: cannot reach NATS at {url}: its certificate is not trusted (unable to "
            "get local issuer certificate); give --nats-ca FILE with the CA that signed it\n"
        )
        code, out, err = cluster_cli("--cluster", url, "--nats-ca", str(tmp_path / "tls/ca.pem"))
        assert (code, err) == (0, "") and "no chatcli node has run on this NATS" in out


@pytest.mark.e2e
def test_mutual_tls(tmp_path: Path, ca: trustme.CA) -> None:
    directory = tmp_path / "mtls"
    server = _tls_server(ca, directory, "--tlsverify", "--tlscacert", str(directory / "ca.pem"))
    with server:
        client = ca.issue_cert("chatcli-node")
        client.cert_chain_pems[0].write_to_path(str(tmp_path / "client.pem"))
        client.private_key_pem.write_to_path(str(tmp_path / "client.key"))
        options = NatsOptions(
            servers=(server.url,),
            ca=directory / "ca.pem",
            cert=tmp_path / "client.pem",
            key=tmp_path / "client.key",
        )
        assert run(_round_trip(options)) == b"ok"
        # the same without a client certificate is refused by the server
        anonymous = NatsOptions(servers=(server.url,), ca=directory / "ca.pem")
        with pytest.raises((OSError, nats.errors.Error)) as refused:
            run(_round_trip(anonymous), timeout=10)
        assert not isinstance(refused.value, TimeoutError)


@pytest.mark.e2e
def test_tls_asked_for_but_not_required_by_the_server_is_refused(
    tmp_path: Path, ca: trustme.CA
) -> None:
    """nats-py alone would log in in the clear to a tls:// URL whose server does not
    require TLS (or to someone in the way who says so); NatsOptions.connect refuses."""
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    with NatsServer(tmp_path / "plain", args=("--user", "alice", "--pass", "s3cret")) as plain:
        tls_url = plain.url.replace("nats://", "tls://")
        login = {"user": "alice", "password": "s3cret"}
        for options in (
            NatsOptions(servers=(tls_url,), **login),
            NatsOptions(servers=(plain.url,), ca=tmp_path / "ca.pem", **login),
        ):
            with pytest.raises(nats.errors.Error, match="does not require TLS"):
                run(_round_trip(options), timeout=10)
        # the same server without TLS asked for: the login works (the refusal was TLS's)
        plain_login = NatsOptions(servers=(plain.url,), user="alice", password="s3cret")
        assert run(_round_trip(plain_login)) == b"ok"
        code, out, err = cluster_cli("--cluster", tls_url)
    assert (code, out) == (1, "")
    assert err == (
        f"chatcli: cannot reach NATS at {tls_url}: the server does not require TLS, and TLS "
        "was asked for: nothing was sent to it in the clear\n"
    )
