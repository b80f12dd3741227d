"""The TCP API's certificate: made once under state_dir/tls and reused, made again only when it
no longer fits (missing, unreadable, not its key's, expiring, naming another address); given
files used as they are; bad given files refused in one line with nothing written. A handshake
through Python's own ssl (strict X.509 checks on) shows clients that trust the file accept it."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from localvmss.config import DaemonConfig
from localvmss.daemon import check_config
from localvmss.errors import InvalidSpec
from localvmss.tlscert import RENEW_BEFORE, VALID_FOR, api_certificate, default_paths, wanted_names
from localvmss.tlsfiles import certificate_from_child

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
IP = ipaddress.ip_address


def _san(cert_path: Path) -> set[object]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {*ext.get_values_for_type(x509.DNSName), *ext.get_values_for_type(x509.IPAddress)}


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", {"localhost", IP("127.0.0.1")}),
        ("198.18.0.1", {"localhost", IP("127.0.0.1"), IP("198.18.0.1")}),
        ("[::1]", {"localhost", IP("127.0.0.1"), IP("::1")}),
        ("Api.Example.Test", {"localhost", IP("127.0.0.1"), "api.example.test"}),
        ("0.0.0.0", {"localhost", IP("127.0.0.1"), "box1"}),  # a wildcard bind: the machine's name
        ("::", {"localhost", IP("127.0.0.1"), "box1"}),
    ],
)
def test_the_names_a_made_certificate_carries(host: str, expected: set[object]) -> None:
    assert wanted_names(host, hostname="box1") == expected


def test_made_once_then_reused(tmp_path: Path) -> None:
    first = api_certificate(tmp_path, "198.18.0.1", now=NOW)
    cert_path, key_path = default_paths(tmp_path)
    assert (first.cert, first.key, first.made) == (cert_path, key_path, True)
    assert cert_path.parent == tmp_path / "tls"
    assert key_path.stat().st_mode & 0o777 == 0o600
    assert _san(cert_path) == {"localhost", IP("127.0.0.1"), IP("198.18.0.1")}
    assert first.not_after - NOW >= VALID_FOR - dt.timedelta(minutes=1)
    assert len(first.fingerprint.split(":")) == 32

    again = api_certificate(tmp_path, "198.18.0.1", now=NOW + dt.timedelta(days=400))
    assert (again.made, again.fingerprint) == (False, first.fingerprint)
    # A bind on loopback needs only names the certificate already has.
    assert api_certificate(tmp_path, "127.0.0.1", now=NOW).fingerprint == first.fingerprint
    assert sorted(p.name for p in cert_path.parent.iterdir()) == ["api.crt", "api.key"]  # no temporary left


def _break_key(tmp_path: Path) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    pem = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    default_paths(tmp_path)[1].write_bytes(pem)


@pytest.mark.parametrize(
    ("why", "change", "now", "host"),
    [
        ("expired", None, NOW + VALID_FOR + dt.timedelta(days=1), "198.18.0.1"),
        ("about to expire", None, NOW + VALID_FOR - RENEW_BEFORE + dt.timedelta(hours=1), "198.18.0.1"),
        ("not valid yet (clock set back)", None, NOW - dt.timedelta(days=1), "198.18.0.1"),
        ("another address", None, NOW, "198.18.0.2"),
        ("certificate missing", lambda d: default_paths(d)[0].unlink(), NOW, "198.18.0.1"),
        ("key missing", lambda d: default_paths(d)[1].unlink(), NOW, "198.18.0.1"),
        ("certificate garbage", lambda d: default_paths(d)[0].write_text("junk"), NOW, "198.18.0.1"),
        ("key garbage", lambda d: default_paths(d)[1].write_text("junk"), NOW, "198.18.0.1"),
        ("key of another certificate", _break_key, NOW, "198.18.0.1"),
    ],
)
def test_made_again_when_it_no_longer_fits(
    tmp_path: Path, why: str, change: object, now: dt.datetime, host: str
) -> None:
    first = api_certificate(tmp_path, "198.18.0.1", now=NOW)
    if callable(change):
        change(tmp_path)
    again = api_certificate(tmp_path, host, now=now)
    assert again.made and again.fingerprint != first.fingerprint, why
    assert IP(host) in _san(again.cert)
    assert default_paths(tmp_path)[1].stat().st_mode & 0o777 == 0o600
    assert api_certificate(tmp_path, host, now=now).fingerprint == again.fingerprint, "and then reused"


def test_given_files_are_used_as_they_are(tmp_path: Path) -> None:
    own = api_certificate(tmp_path / "elsewhere", "api.example.test", now=NOW)
    before = (own.cert.read_bytes(), own.key.read_bytes())
    state = tmp_path / "state"
    # Even expired by then, and naming another address: given files are the operator's to renew.
    given = api_certificate(state, "198.18.0.9", own.cert, own.key, now=NOW + VALID_FOR * 2)
    assert (given.cert, given.key, given.made, given.fingerprint) == (own.cert, own.key, False, own.fingerprint)
    assert (own.cert.read_bytes(), own.key.read_bytes()) == before
    assert not state.exists()


def _encrypted_key(path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    return path


@pytest.mark.parametrize(
    ("cert", "key", "message"),
    [
        ("missing.crt", "good.key", "api_tls_cert {d}/missing.crt cannot be read: No such file or directory"),
        ("good.crt", "missing.key", "api_tls_key {d}/missing.key cannot be read: No such file or directory"),
        ("dir", "good.key", "api_tls_cert {d}/dir cannot be read: Is a directory"),
        ("junk", "good.key", "api_tls_cert {d}/junk is not a PEM certificate"),
        ("good.crt", "junk", "api_tls_key {d}/junk is not an unencrypted PEM private key"),
        ("good.crt", "encrypted.key", "api_tls_key {d}/encrypted.key is not an unencrypted PEM private key"),
        ("good.crt", "other.key", "api_tls_key {d}/other.key is not the key of api_tls_cert {d}/good.crt"),
        ("good.key", "good.key", "api_tls_cert {d}/good.key is not a PEM certificate"),
    ],
)
def test_bad_given_files_are_refused_in_one_line(tmp_path: Path, cert: str, key: str, message: str) -> None:
    made = api_certificate(tmp_path / "made", "127.0.0.1", now=NOW)
    d = tmp_path / "given"
    d.mkdir()
    (d / "good.crt").write_bytes(made.cert.read_bytes())
    (d / "good.key").write_bytes(made.key.read_bytes())
    (d / "junk").write_text("not pem\n")
    (d / "dir").mkdir()
    _encrypted_key(d / "encrypted.key")
    other = api_certificate(tmp_path / "other", "127.0.0.1", now=NOW)
    (d / "other.key").write_bytes(other.key.read_bytes())
    state = tmp_path / "state"
    with pytest.raises(InvalidSpec) as err:
        api_certificate(state, "127.0.0.1", d / cert, d / key, now=NOW)
    assert err.value.message == message.format(d=d)
    assert "\n" not in err.value.message
    assert not state.exists(), "a refusal writes nothing"
    # --check-config names the same problem before a start would.
    cfg = DaemonConfig(
        state_dir=state,
        api_tcp="127.0.0.1:8470",
        api_token="s3cret-token",
        api_tls_cert=d / cert,
        api_tls_key=d / key,
        haproxy_enabled=False,
        prometheus_url="http://127.0.0.1:9090",
    )
    assert check_config(cfg, None) == [message.format(d=d)]


def test_a_directory_where_none_can_be_written_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "tls").write_text("a file where the directory goes")
    with pytest.raises(
        InvalidSpec, match=r"^cannot write the TLS certificate under .*/tls: (File exists|Not a directory)$"
    ):
        api_certificate(tmp_path, "127.0.0.1", now=NOW)


@pytest.mark.parametrize("server_hostname", ["127.0.0.1", "localhost", "198.18.0.1"])
def test_a_client_that_trusts_the_file_accepts_it(tmp_path: Path, server_hostname: str) -> None:
    made = api_certificate(tmp_path, "198.18.0.1")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(made.cert, made.key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def answer() -> None:
        conn, _ = listener.accept()
        with server_ctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"hello")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    client_ctx = ssl.create_default_context(cafile=str(made.cert))
    client_ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
            assert tls.recv(5) == b"hello"
    thread.join(10)
    listener.close()


def test_a_client_that_does_not_trust_it_refuses_it(tmp_path: Path) -> None:
    made = api_certificate(tmp_path, "127.0.0.1")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(made.cert, made.key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def answer() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True):
                pass
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with pytest.raises(ssl.SSLCertVerificationError, match="self-signed certificate"):
            ssl.create_default_context().wrap_socket(raw, server_hostname="127.0.0.1")
    thread.join(10)
    listener.close()


def test_the_daemon_gets_it_from_a_child_the_same_as_in_process(tmp_path: Path) -> None:
    """The daemon asks ``python -m localvmss.tlscert`` (tlsfiles.certificate_from_child), so
    cryptography never loads in it: the child makes, then reuses, what in-process would."""
    made = certificate_from_child(tmp_path, "198.18.0.1", None, None)
    cert_path, key_path = default_paths(tmp_path)
    assert (made.cert, made.key, made.made) == (cert_path, key_path, True)
    assert _san(cert_path) == {"localhost", IP("127.0.0.1"), IP("198.18.0.1")}
    reused = certificate_from_child(tmp_path, "198.18.0.1", None, None)
    assert not reused.made and reused.fingerprint == made.fingerprint and reused.not_after == made.not_after
    in_process = api_certificate(tmp_path, "198.18.0.1")
    assert (in_process.fingerprint, in_process.not_after, in_process.made) == (made.fingerprint, made.not_after, False)
    assert certificate_from_child(tmp_path / "other", "x", made.cert, made.key) == in_process


def test_a_refusal_in_the_child_is_the_same_one_line(tmp_path: Path) -> None:
    made = api_certificate(tmp_path / "made", "127.0.0.1", now=NOW)
    (tmp_path / "junk").write_text("not pem\n")
    with pytest.raises(InvalidSpec) as err:
        certificate_from_child(tmp_path / "state", "127.0.0.1", tmp_path / "junk", made.key)
    assert err.value.message == f"api_tls_cert {tmp_path}/junk is not a PEM certificate"
    assert not (tmp_path / "state").exists(), "a refusal writes nothing"
