"""NoCloud seed ISOs: how an instance learns its identity, SSH keys and user-data.

The seed is the format cloud-init's NoCloud datasource reads (an ISO9660 volume labelled
``cidata`` with ``meta-data`` and ``user-data``), so the same seed works for the project's busybox
guest and for stock Debian/Ubuntu cloud images. It is built in memory with pycdlib: no temp files,
and no genisoimage on the host.

``meta-data`` is written as a deliberately tiny YAML subset (every value single-quoted, keys as a
list) that PyYAML in cloud-init and the guest's awk parser read identically. Quoting matters: an
unquoted ``instance-id: 0123`` or ``local-hostname: no`` would be a number or a boolean to YAML.
Inputs are validated here because the values end up in the guest's hostname, ``/etc/hosts`` and
``authorized_keys``.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import struct

import pycdlib

from localvmss.errors import InvalidSpec

VOLUME_LABEL = "cidata"
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
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
_KEY_LINE = re.compile(r"(?P<type>\S+) +(?P<blob>\S+)(?: +(?P<comment>.*))?")
# Letters, digits, space and punctuation seen in real key comments (user@host, dates, names), and
# nothing a YAML quote, a shell or authorized_keys options could trip over.
_COMMENT = re.compile(r"[A-Za-z0-9 @._+=:,/()-]{1,200}")
EMPTY_USER_DATA = b"#cloud-config\n"
# Small ISOs are padded with zeros to this size: busybox's findfs reads the first 68 KiB of a device
# to identify it and finds nothing on a shorter one (genisoimage pads its ISOs by 300 KiB too).
MIN_SEED_BYTES = 256 * 1024


def build_nocloud_seed(instance_id: str, hostname: str, ssh_public_keys: list[str], user_data: bytes | None) -> bytes:
    """Return a NoCloud seed ISO (label ``cidata``, Joliet + Rock Ridge) as bytes.

    ``user_data`` is stored unchanged (the busybox guest runs it once per instance-id when it starts
    with ``#!``; cloud-init also understands ``#cloud-config``); None stores an empty cloud-config.
    Raises InvalidSpec for a bad instance id, hostname or key.
    """
    _check_name("instance-id", instance_id)
    _check_name("hostname", hostname)
    keys = [normalize_ssh_public_key(key) for key in ssh_public_keys]
    if user_data is not None and not isinstance(user_data, bytes):
        raise InvalidSpec(f"user-data must be bytes or None, not {type(user_data).__name__}")
    meta_data = render_meta_data(instance_id, hostname, keys).encode()
    return _iso({"meta-data": meta_data, "user-data": EMPTY_USER_DATA if user_data is None else user_data})


def render_meta_data(instance_id: str, hostname: str, keys: list[str]) -> str:
    """meta-data YAML for values already validated (so they hold no quote to escape)."""
    lines = [f"instance-id: '{instance_id}'", f"local-hostname: '{hostname}'"]
    if keys:  # an empty list is left out: `public-keys: []` would be one more syntax to parse
        lines.append("public-keys:")
        lines.extend(f"  - '{key}'" for key in keys)
    return "\n".join(lines) + "\n"


def normalize_ssh_public_key(key: str) -> str:
    """``TYPE BASE64 [comment]`` with single spaces, or InvalidSpec saying what is wrong.

    The base64 blob must decode to a key of the declared type, which catches truncated or pasted-
    together keys; authorized_keys options (``command=...``) are refused.
    """
    if not isinstance(key, str):
        raise InvalidSpec(f"SSH public key must be a string, not {type(key).__name__}")
    match = _KEY_LINE.fullmatch(key.strip())
    if match is None or "\n" in key.strip() or "\r" in key:
        raise InvalidSpec("SSH public key must be one line: TYPE BASE64 [comment]")
    key_type, blob, comment = match["type"], match["blob"], match["comment"]
    if key_type not in SSH_KEY_TYPES:
        supported = ", ".join(sorted(SSH_KEY_TYPES))
        raise InvalidSpec(f"SSH public key type {key_type[:40]!r} is not supported; use one of {supported}")
    try:
        raw = base64.b64decode(blob, validate=True)
    except binascii.Error:
        raise InvalidSpec(f"SSH public key ({key_type}) is not valid base64") from None
    if len(raw) < 4 or raw[4 : 4 + struct.unpack(">I", raw[:4])[0]] != key_type.encode():
        raise InvalidSpec(f"SSH public key data does not hold a {key_type} key (truncated or mixed up?)")
    if comment is not None and not _COMMENT.fullmatch(comment):
        raise InvalidSpec("SSH public key comment may hold only letters, digits, spaces and @._+=:,/()- (at most 200)")
    return f"{key_type} {blob}" + (f" {comment}" if comment else "")


def _check_name(what: str, value: str) -> None:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise InvalidSpec(
            f"{what} {value!r} is invalid: use 1-63 lowercase letters, digits and '-', starting with a letter or digit"
        )


def _iso(files: dict[str, bytes]) -> bytes:
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident=VOLUME_LABEL, joliet=3, rock_ridge="1.09")
    for name, data in files.items():
        # ISO9660 names are upper case without '-'; Rock Ridge and Joliet carry the real name.
        iso_name = "/" + name.replace("-", "").upper() + ".;1"
        iso.add_fp(io.BytesIO(data), len(data), iso_name, rr_name=name, joliet_path=f"/{name}", file_mode=0o100444)
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue().ljust(MIN_SEED_BYTES, b"\0")
