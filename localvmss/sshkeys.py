"""SSH public keys as users give them: the one check, used where keys enter and where seeds are built.

A key ends up in the guest's ``authorized_keys`` (through the NoCloud seed's single-quoted YAML),
so it is checked when a request brings it (scale-set model, Flexible VM body) and not only when a
seed is built, long after the API said yes. Also the public half of an OpenSSH private key file
(``openssh_public_key``), read from the file's unencrypted header: the daemon names its
management key's public half at start without importing an SSH or crypto library (paramiko
alone is ~14 MiB of the daemon's RSS; it is imported on the first run-command). Imports nothing
of ours but ``errors``.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct

from localvmss.errors import InvalidSpec

SSH_KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)
# An RSA key of 16384 bits is about 2.8 KB of base64; anything much longer is not a public key.
MAX_KEY_CHARS = 8192
_KEY_LINE = re.compile(r"(?P<type>\S+) +(?P<blob>\S+)(?: +(?P<comment>.*))?")
# Letters, digits, space and punctuation seen in real key comments (user@host, dates, names), and
# nothing a YAML quote, a shell or authorized_keys options could trip over.
_COMMENT = re.compile(r"[A-Za-z0-9 @._+=:,/()-]{1,200}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_OPENSSH_MAGIC = b"openssh-key-v1\x00"
_PEM_BEGIN = "-----BEGIN OPENSSH PRIVATE KEY-----"
_PEM_END = "-----END OPENSSH PRIVATE KEY-----"


def check_ssh_public_key(key: object) -> str:
    """``TYPE BASE64 [comment]`` with single spaces, or InvalidSpec saying what is wrong.

    The base64 blob must decode to a key of the declared type (its first length-prefixed string
    is the type), which catches truncated or pasted-together keys; authorized_keys options
    (``command=...``), line breaks and control characters are refused.
    """
    if not isinstance(key, str):
        raise InvalidSpec(f"SSH public key must be a string, not {type(key).__name__}")
    if len(key) > MAX_KEY_CHARS:
        raise InvalidSpec(f"SSH public key is {len(key)} characters long; the limit is {MAX_KEY_CHARS}")
    text = key.strip()  # a trailing newline (a pasted .pub file) is fine; a carriage return is not
    match = _KEY_LINE.fullmatch(text)
    if match is None or "\r" in key or _CONTROL.search(text):
        raise InvalidSpec("SSH public key must be one line: TYPE BASE64 [comment]")
    key_type, blob, comment = match["type"], match["blob"], match["comment"]
    if key_type not in SSH_KEY_TYPES:
        supported = ", ".join(sorted(SSH_KEY_TYPES))
        raise InvalidSpec(f"SSH public key type {key_type[:40]!r} is not supported; use one of {supported}")
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSpec(f"SSH public key ({key_type}) is not valid base64") from None
    if len(raw) < 4 or raw[4 : 4 + struct.unpack(">I", raw[:4])[0]] != key_type.encode():
        raise InvalidSpec(f"SSH public key data does not hold a {key_type} key (truncated or mixed up?)")
    if comment is not None and not _COMMENT.fullmatch(comment):
        raise InvalidSpec("SSH public key comment may hold only letters, digits, spaces and @._+=:,/()- (at most 200)")
    return f"{key_type} {blob}" + (f" {comment}" if comment else "")


def _ssh_string(raw: bytes, at: int) -> tuple[bytes, int]:
    """One length-prefixed string of the SSH wire format at ``at``, and where the next begins."""
    if at + 4 > len(raw):
        raise ValueError("truncated")
    (length,) = struct.unpack(">I", raw[at : at + 4])
    end = at + 4 + length
    if end > len(raw):
        raise ValueError("truncated")
    return raw[at + 4 : end], end


def openssh_public_key(private_key_file: str, comment: str = "") -> str:
    """``TYPE BASE64 [comment]`` of an OpenSSH-format private key file's text (``-----BEGIN
    OPENSSH PRIVATE KEY-----``), as ``ssh-keygen -y`` prints it. The public key is the file's
    first key in its unencrypted header (``openssh-key-v1``: cipher, KDF, KDF options, the number
    of keys, then each public key blob), so an encrypted file is read too. InvalidSpec when the
    text is not such a file or its public key is not one ``check_ssh_public_key`` accepts."""
    text = private_key_file.strip()
    if not (text.startswith(_PEM_BEGIN) and text.endswith(_PEM_END)):
        raise InvalidSpec("not an OpenSSH private key file (no BEGIN/END OPENSSH PRIVATE KEY lines)")
    body = "".join(text[len(_PEM_BEGIN) : -len(_PEM_END)].split())
    try:
        raw = base64.b64decode(body, validate=True)
        if not raw.startswith(_OPENSSH_MAGIC):
            raise ValueError("no openssh-key-v1 header")
        at = len(_OPENSSH_MAGIC)
        for _ in ("cipher", "kdf", "kdf options"):
            _skipped, at = _ssh_string(raw, at)
        if at + 4 > len(raw) or struct.unpack(">I", raw[at : at + 4])[0] < 1:
            raise ValueError("no key")
        blob, _ = _ssh_string(raw, at + 4)
        key_type, _ = _ssh_string(blob, 0)
        line = f"{key_type.decode('ascii')} {base64.b64encode(blob).decode()}" + (f" {comment}" if comment else "")
    except ValueError as exc:  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise InvalidSpec(f"not a readable OpenSSH private key file: {exc}") from None
    return check_ssh_public_key(line)
