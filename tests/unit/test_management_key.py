"""The daemon's management key: its public half is read from the OpenSSH private key file's
header (``sshkeys.openssh_public_key``), exactly as ``ssh-keygen -y``/paramiko name it, and the
daemon's start imports neither paramiko nor cryptography for it (issue 16's footprint)."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from localvmss.errors import InvalidSpec, LocalVMSSError
from localvmss.runcommand import KEY_COMMENT, ManagementKey
from localvmss.sshkeys import openssh_public_key


def private_file(key: Any, password: bytes | None = None) -> str:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption)
    return str(pem.decode())


def public_line(key: Any) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return str(raw.decode())


KEYS = {
    "ed25519": ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32))),
    "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "ecdsa-p256": ec.derive_private_key(0x10CA1F55, ec.SECP256R1()),
    "ecdsa-p521": ec.derive_private_key(0x10CA1F55, ec.SECP521R1()),
}


@pytest.mark.parametrize(
    ("kind", "password", "comment"),
    [
        ("ed25519", None, ""),
        ("ed25519", None, "localvmssd"),
        ("ed25519", b"secret", "x@y"),  # the public half is in the unencrypted header
        ("rsa", None, ""),
        ("ecdsa-p256", None, "a comment"),
        ("ecdsa-p521", b"secret", ""),
    ],
)
def test_the_public_half_is_what_cryptography_says(kind: str, password: bytes | None, comment: str) -> None:
    key = KEYS[kind]
    expected = public_line(key) + (f" {comment}" if comment else "")
    assert openssh_public_key(private_file(key, password), comment) == expected


GOOD = private_file(KEYS["ed25519"])
BODY = "".join(GOOD.strip().splitlines()[1:-1])
RAW = base64.b64decode(BODY)


HEAD = RAW[:15] + b"\x00\x00\x00\x04none" * 2 + b"\x00\x00\x00\x00"  # magic, cipher, KDF, KDF options


def pem(raw: bytes) -> str:
    return f"-----BEGIN OPENSSH PRIVATE KEY-----\n{base64.b64encode(raw).decode()}\n-----END OPENSSH PRIVATE KEY-----\n"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("", "not an OpenSSH private key file"),
        (GOOD.replace("OPENSSH PRIVATE", "RSA PRIVATE"), "not an OpenSSH private key file"),
        (GOOD.replace(BODY[10:14], "!!!!"), "not a readable"),  # not base64
        (pem(b"openssh-key-v2\x00" + RAW[15:]), "no openssh-key-v1 header"),
        (pem(RAW[:20]), "truncated"),  # cut inside the cipher name
        (pem(RAW[:60]), "truncated"),  # cut before the public key
        (pem(HEAD + b"\x00\x00\x00\x00"), "no key"),  # zero keys
        (pem(HEAD + b"\x00\x00\x00\x01" + b"\x00\x00\x00\x09\x00\x00\x00\x05dsa-x"), "not supported"),
    ],
)
def test_what_is_not_an_openssh_private_key_is_refused_in_one_line(text: str, said: str) -> None:
    with pytest.raises(InvalidSpec, match=said):
        openssh_public_key(text)


def test_the_management_key_names_the_same_public_key_as_paramiko(tmp_path: Path) -> None:
    made = ManagementKey(tmp_path)
    assert made.path.stat().st_mode & 0o777 == 0o600
    pkey = paramiko.Ed25519Key.from_private_key_file(str(made.path))
    assert made.public == f"ssh-ed25519 {pkey.get_base64()} {KEY_COMMENT}"
    again = ManagementKey(tmp_path)  # the next daemon reads the same file
    assert again.public == made.public
    assert again.private.get_base64() == pkey.get_base64()  # paramiko's key, on first use


@pytest.mark.parametrize("first_start", [True, False])
def test_the_daemon_start_path_imports_neither_paramiko_nor_cryptography(tmp_path: Path, first_start: bool) -> None:
    if not first_start:
        ManagementKey(tmp_path)  # the key exists, as on every start but the first
    code = (
        "import sys; from pathlib import Path; from localvmss.runcommand import ManagementKey; "
        f"ManagementKey(Path({str(tmp_path)!r})); "
        "print(sorted(m for m in ('paramiko', 'cryptography', 'nacl', 'bcrypt') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert (tmp_path / "ssh" / "id_ed25519").stat().st_mode & 0o777 == 0o600


def test_a_key_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "ssh").write_text("a file where the directory should be")
    with pytest.raises(LocalVMSSError, match="cannot make the management SSH key .*id_ed25519: "):
        ManagementKey(tmp_path)
