"""The TCP API's TLS certificate: Azure's SDKs send a bearer token only over https.

The daemon (``serve``) asks for it once at start. Without ``api_tls_cert``/``api_tls_key`` a
self-signed certificate and its key are made under ``state_dir/tls`` on the first start and
reused on the next ones; they are made again only when missing, unreadable, expired (or close
to it), or no longer naming the address ``api_tcp`` listens on. Clients trust the certificate
file itself (``connection_verify=``, ``REQUESTS_CA_BUNDLE``, ``SSL_CERT_FILE``). Given paths are
used as they are, never rewritten; a bad one is refused in one line.

Files are written to a temporary name and renamed into place, the key with mode 0600 from
its creation, so a crash never leaves a half-written key or one readable by others.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificatePublicKeyTypes,
    PrivateKeyTypes,
    PublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from localvmss.errors import InvalidSpec
from localvmss.tlsfiles import CERT_FILE, KEY_FILE, TLS_DIR, Certificate, default_paths

__all__ = ["CERT_FILE", "KEY_FILE", "TLS_DIR", "Certificate", "api_certificate", "default_paths", "given_certificate"]

VALID_FOR = dt.timedelta(days=3650)
RENEW_BEFORE = dt.timedelta(days=30)  # a certificate this close to its end is made again
ALWAYS_NAMED = ("localhost", "127.0.0.1")
WILDCARD_HOSTS = {"0.0.0.0", "::", "[::]", ""}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Name = IPAddress | str


def wanted_names(api_host: str, hostname: str | None = None) -> set[Name]:
    """The names a made certificate must carry: the ``api_tcp`` host (an IP address or a DNS
    name; for a wildcard bind, this machine's hostname), ``localhost`` and ``127.0.0.1``."""
    names: set[Name] = {_name(n) for n in ALWAYS_NAMED}
    host = api_host.strip("[]") if api_host not in WILDCARD_HOSTS else (hostname or socket.gethostname())
    if host:
        names.add(_name(host))
    return names


def _name(text: str) -> Name:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return text.lower()


def api_certificate(
    state_dir: Path,
    api_host: str,
    cert: Path | None = None,
    key: Path | None = None,
    now: dt.datetime | None = None,
) -> Certificate:
    """The certificate to serve: the given pair, or the one under ``state_dir/tls`` (made or
    made again when it does not fit). Raises InvalidSpec, one line, for a given pair that cannot
    be read or does not match, or a directory where none can be written."""
    now = now or dt.datetime.now(dt.UTC)
    if cert is not None and key is not None:
        return given_certificate(cert, key)
    cert_path, key_path = default_paths(state_dir)
    names = wanted_names(api_host)
    found = _load_pair(cert_path, key_path)
    if found is not None and _fits(found[0], names, now):
        return _describe(cert_path, key_path, found[0], made=False)
    return _make(cert_path, key_path, names, now)


def given_certificate(cert: Path, key: Path) -> Certificate:
    """``api_tls_cert``/``api_tls_key`` as they are: readable PEM, and the key the certificate's."""
    for what, path in (("api_tls_cert", cert), ("api_tls_key", key)):
        try:
            path.read_bytes()
        except OSError as exc:
            raise InvalidSpec(f"{what} {path} cannot be read: {exc.strerror}") from None
    try:
        certificate = x509.load_pem_x509_certificate(cert.read_bytes())
    except ValueError:
        raise InvalidSpec(f"api_tls_cert {cert} is not a PEM certificate") from None
    try:
        private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    except (ValueError, TypeError):
        raise InvalidSpec(f"api_tls_key {key} is not an unencrypted PEM private key") from None
    if _public_der(private.public_key()) != _public_der(certificate.public_key()):
        raise InvalidSpec(f"api_tls_key {key} is not the key of api_tls_cert {cert}")
    return _describe(cert, key, certificate, made=False)


def _load_pair(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, PrivateKeyTypes] | None:
    """A made pair read back, or None when either is missing, unreadable or not the other's."""
    try:
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        private = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    if _public_der(private.public_key()) != _public_der(certificate.public_key()):
        return None
    return certificate, private


def _fits(certificate: x509.Certificate, names: set[Name], now: dt.datetime) -> bool:
    """Valid now and for a while yet, and naming every wanted name."""
    if not certificate.not_valid_before_utc <= now < certificate.not_valid_after_utc - RENEW_BEFORE:
        return False
    return names <= _san(certificate)


def _san(certificate: x509.Certificate) -> set[Name]:
    try:
        ext = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    found: set[Name] = {str(n).lower() for n in ext.get_values_for_type(x509.DNSName)}
    found |= {ip for ip in ext.get_values_for_type(x509.IPAddress) if isinstance(ip, IPAddress)}
    return found


def _make(cert_path: Path, key_path: Path, names: set[Name], now: dt.datetime) -> Certificate:
    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localvmssd")])
    alt: list[x509.GeneralName] = [
        x509.IPAddress(n) if not isinstance(n, str) else x509.DNSName(n) for n in sorted(names, key=str)
    ]
    ski = x509.SubjectKeyIdentifier.from_public_key(public)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # a client whose clock is a little behind
        .not_valid_after(now + VALID_FOR)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(private, hashes.SHA256())
    )
    key_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        cert_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write(key_path, key_pem, 0o600)
        _write(cert_path, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
    except OSError as exc:
        raise InvalidSpec(f"cannot write the TLS certificate under {cert_path.parent}: {exc.strerror}") from None
    return _describe(cert_path, key_path, certificate, made=True)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write to a temporary file created with ``mode``, then rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def _public_der(public: PublicKeyTypes | CertificatePublicKeyTypes) -> bytes:
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _describe(cert: Path, key: Path, certificate: x509.Certificate, made: bool) -> Certificate:
    digest = certificate.fingerprint(hashes.SHA256()).hex().upper()
    fingerprint = ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))
    return Certificate(cert, key, fingerprint, certificate.not_valid_after_utc, made)


def main(argv: list[str] | None = None) -> int:
    """``python -m localvmss.tlscert --state-dir D --host H [--cert C --key K]``: the daemon's
    certificate as JSON on stdout (``tlsfiles.certificate_from_child``); a refusal is one line
    on stderr and exit status 2."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="python -m localvmss.tlscert", description=main.__doc__)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--cert", type=Path)
    parser.add_argument("--key", type=Path)
    args = parser.parse_args(argv)
    try:
        found = api_certificate(args.state_dir, args.host, args.cert, args.key)
    except InvalidSpec as exc:
        print(exc.message, file=sys.stderr)
        return 2
    print(json.dumps(found.as_json()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
