"""The daemon's supervisor: one failing step (a full disk refusing the guest targets file) must
not keep the next ones (HAProxy and Prometheus restarts) from running, and a failure is logged
once per reason, not every 2 s (tests/faults/test_disk_full.py found both)."""

from __future__ import annotations

import errno
import logging

import pytest

from localvmss.daemon import run_supervisor_steps
from localvmss.errors import HostUnavailable

DISK_FULL = OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize(
    ("first_step_raises", "logged"),
    [
        (DISK_FULL, "OSError: [Errno 28] No space left on device"),
        (HostUnavailable("host h1 does not answer"), "host h1 does not answer"),
        (RuntimeError("a bug"), "RuntimeError: a bug"),
    ],
)
def test_a_failing_step_does_not_stop_the_others_and_is_logged_once(
    first_step_raises: Exception, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[str] = []
    broken = [True]

    def targets() -> None:
        ran.append("targets")
        if broken[0]:
            raise first_step_raises

    steps = [("writing the guest metrics targets", targets), ("supervising haproxy", lambda: ran.append("haproxy"))]
    failing: dict[str, str] = {}
    with caplog.at_level(logging.INFO, logger="localvmssd"):
        for _ in range(3):
            run_supervisor_steps(steps, failing)
        assert ran == ["targets", "haproxy"] * 3, "the step after the failing one still ran every time"
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and logged in errors[0].getMessage(), [r.getMessage() for r in errors]
        assert bool(errors[0].exc_info) == isinstance(first_step_raises, RuntimeError), "a traceback only for a bug"
        broken[0] = False
        run_supervisor_steps(steps, failing)
    assert failing == {}
    assert any("works again" in r.getMessage() for r in caplog.records)
