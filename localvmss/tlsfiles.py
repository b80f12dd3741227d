"""The TCP API's certificate as the daemon knows it, obtained without loading cryptography.

``localvmss.tlscert`` makes, checks and reuses the certificate with cryptography, whose library
stays resident once loaded (~10 MiB of the daemon's RSS, for one look at start). So the daemon
asks a child process (``python -m localvmss.tlscert``) and keeps only what it answers: the
files' paths, the fingerprint and expiry the log shows, and whether it was made on this start.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localvmss.errors import InvalidSpec
from localvmss.pychild import run_module, why_failed

TLS_DIR = "tls"
CERT_FILE = "api.crt"
KEY_FILE = "api.key"
CHILD_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Certificate:
    """The files uvicorn serves and what the log says about them."""

    cert: Path
    key: Path
    fingerprint: str  # SHA-256 of the DER certificate, colon-separated hex
    not_after: dt.datetime
    made: bool  # made on this start (False: reused, or given)

    def as_json(self) -> dict[str, Any]:
        return {
            "cert": str(self.cert),
            "key": str(self.key),
            "fingerprint": self.fingerprint,
            "not_after": self.not_after.isoformat(),
            "made": self.made,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Certificate:
        return cls(
            Path(doc["cert"]),
            Path(doc["key"]),
            str(doc["fingerprint"]),
            dt.datetime.fromisoformat(doc["not_after"]),
            bool(doc["made"]),
        )


def default_paths(state_dir: Path) -> tuple[Path, Path]:
    """Where a made certificate and its key live: ``state_dir/tls/api.crt`` and ``api.key``."""
    return state_dir / TLS_DIR / CERT_FILE, state_dir / TLS_DIR / KEY_FILE


def certificate_from_child(state_dir: Path, api_host: str, cert: Path | None, key: Path | None) -> Certificate:
    """``tlscert.api_certificate`` run in a child process; its refusal (a given pair that
    cannot be used, a directory where none can be written) is raised here as the same one-line
    InvalidSpec."""
    args = ["--state-dir", str(state_dir), "--host", api_host]
    if cert is not None and key is not None:
        args += ["--cert", str(cert), "--key", str(key)]
    try:
        done = run_module("localvmss.tlscert", args, CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise InvalidSpec(f"the TLS certificate was not ready within {CHILD_TIMEOUT_S:.0f} s") from None
    if done.returncode != 0:
        raise InvalidSpec(why_failed(done))
    try:
        return Certificate.from_json(json.loads(done.stdout))
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidSpec(f"the TLS certificate's child process answered {done.stdout[:200]!r}: {exc}") from None
