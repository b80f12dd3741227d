"""The systemd service notification protocol (sd_notify(3)), without a dependency: datagrams to
``$NOTIFY_SOCKET``. Outside systemd (no variable) every call does nothing, so the daemon runs
the same under systemd, in the tests and by hand.

Who calls it: the daemon sends READY once the API socket accepts connections, STATUS after
reconcile passes, RELOADING/READY around a SIGHUP reload, STOPPING on SIGTERM, and WATCHDOG
from its watchdog thread while the reconcile loop is alive.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """One service's notify socket; ``environ`` is an argument so tests can point it anywhere."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        target = env.get("NOTIFY_SOCKET") or None
        if target and target.startswith("@"):
            target = "\0" + target[1:]  # the abstract namespace
        self.target = target
        self.watchdog_s = watchdog_interval(env, os.getpid())

    @property
    def enabled(self) -> bool:
        return self.target is not None

    def send(self, *fields: str) -> bool:
        """Send one message (fields joined by newlines); False when nobody listens."""
        if self.target is None:
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            try:
                sock.connect(self.target)
                sock.sendall("\n".join(fields).encode())
                return True
            except OSError as exc:
                log.debug("sd_notify %s failed: %s", fields[0], exc)
                return False

    def ready(self, status: str | None = None) -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def reloading(self) -> None:
        # MONOTONIC_USEC lets systemd (253+, Type=notify-reload) tell this reload from an earlier one.
        self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")


def watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """The watchdog period systemd asks for (``WATCHDOG_USEC``, for ``WATCHDOG_PID`` if set),
    in seconds; None when no watchdog is wanted from this process."""
    usec = environ.get("WATCHDOG_USEC", "")
    owner = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if owner and (not owner.isdigit() or int(owner) != pid):
        return None
    return int(usec) / 1_000_000
