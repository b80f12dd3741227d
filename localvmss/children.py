"""Child processes the daemon owns (Prometheus, HAProxy), recorded by pid file.

If the daemon is killed (kill -9), its children outlive it and hold their ports. At the next
start the daemon stops exactly those processes: the pid file names them, and a process counts
as ours only if its command line mentions our state directory (a reused pid is left alone).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

log = logging.getLogger(__name__)


def _dir(state_dir: Path) -> Path:
    path = state_dir / "children"
    path.mkdir(parents=True, exist_ok=True)
    return path


def record(state_dir: Path, name: str, pid: int | None) -> None:
    if pid:
        (_dir(state_dir) / f"{name}.pid").write_text(str(pid))


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def reap_leftovers(state_dir: Path) -> list[str]:
    """Stop children a previous daemon left behind; returns what was stopped."""
    stopped = []
    for pidfile in sorted(_dir(state_dir).glob("*.pid")):
        try:
            pid = int(pidfile.read_text().strip())
        except ValueError:
            pidfile.unlink()
            continue
        if str(state_dir) in _cmdline(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _cmdline(pid):
                time.sleep(0.1)
            if _cmdline(pid):
                os.kill(pid, signal.SIGKILL)
            stopped.append(f"{pidfile.stem} (pid {pid})")
            log.warning("stopped %s left by a previous daemon (pid %d)", pidfile.stem, pid)
        pidfile.unlink()
    return stopped
