"""The data plane's processes the daemon started (Prometheus; HAProxy keeps its own pid file),
recorded by pid file so that they outlive the daemon.

HAProxy and Prometheus keep serving while the daemon stops, crashes or is upgraded: a new daemon
adopts the processes recorded here instead of stopping them. A pid counts as ours only while its
command line mentions our state directory (a reused pid is left alone). They are stopped only
on purpose: ``localvmssd --stop-data-plane``.
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


def record(state_dir: Path, name: str, pid: int | None, timeout_s: float = 2.0) -> None:
    """Remember ``pid`` as the process ``name``, written then renamed (never half a file).

    ``Popen`` returns while the kernel is still in the child's exec, when /proc/PID/cmdline
    reads empty for a moment: so wait (bounded) until the process shows the command line that
    makes it ours, and whoever reads the record next (``recorded``, --stop-data-plane, the next
    daemon) recognises it."""
    if not pid:
        return
    path = _dir(state_dir) / f"{name}.pid"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(str(pid))
    os.replace(tmp, path)
    deadline = time.monotonic() + timeout_s
    while str(state_dir) not in cmdline(pid) and Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def cmdline(pid: int) -> str:
    """The process's command line as one string ("" if there is no such process)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def recorded(state_dir: Path, name: str) -> int | None:
    """The pid recorded for ``name`` if that process still runs and is ours, else None."""
    try:
        pid = int((_dir(state_dir) / f"{name}.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if str(state_dir) in cmdline(pid) else None


def stop(state_dir: Path, name: str, timeout_s: float = 10.0) -> bool:
    """SIGTERM the recorded process (SIGKILL after ``timeout_s``); True if one was running."""
    pid = recorded(state_dir, name)
    (_dir(state_dir) / f"{name}.pid").unlink(missing_ok=True)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and str(state_dir) in cmdline(pid):
        time.sleep(0.1)
    if str(state_dir) in cmdline(pid):
        os.kill(pid, signal.SIGKILL)
    log.info("stopped %s (pid %d)", name, pid)
    return True
