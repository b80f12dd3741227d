"""Work done in a short-lived ``python -m`` child so that what it loads (cryptography for a key or
a certificate) never stays resident in the daemon: one way to start it and one way to say why it
failed, for every such child."""

from __future__ import annotations

import subprocess
import sys


def run_module(module: str, args: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    """``python -m module args`` with this interpreter: no stdin, output captured as text.
    subprocess.TimeoutExpired after ``timeout_s``."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout_s,
        check=False,
    )


def why_failed(done: subprocess.CompletedProcess[str]) -> str:
    """The child's last line on stderr (its one-line refusal), else its exit status."""
    return (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
