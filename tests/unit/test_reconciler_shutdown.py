"""A clean shutdown with work in flight: ``Daemon.shutdown`` stops the loops, then waits for the
reconciler's running workers (bounded) before the store closes, so no worker meets a closed
database. The workers here are slowed by a slow host (every define takes a while)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from localvmss.config import DaemonConfig, HostConfig
from localvmss.daemon import Daemon
from tests.unit.fakehost import FakeHost
from tests.unit.test_reconciler import Env  # its ``env`` fixture (conftest) has the image

SLOW_S = 0.3


def test_shutdown_waits_for_workers_in_flight_before_closing_the_store(
    tmp_path: Path, env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = DaemonConfig(
        state_dir=tmp_path / "daemon",
        hosts=[HostConfig(name="h1", zone=None)],
        kvm_probe=False,
        haproxy_enabled=False,
        max_parallel_boots=4,
    )
    daemon = Daemon(cfg)
    manifest, source = env.store.images()["base"]
    daemon.store.put_image("base", manifest, source)
    slow = FakeHost("h1")
    started = threading.Event()

    def slowly(verb: str) -> None:
        if verb == "define_domain":
            started.set()
            time.sleep(SLOW_S)

    slow.on_call = slowly
    daemon.inventory.hosts["h1"] = slow  # type: ignore[assignment]
    daemon.inventory.prepare_all()
    body_env = Env(daemon.store, daemon.inventory, daemon.reconciler, {"h1": slow}, env.clock, env.balancer)
    body_env.create_set("web", 8)
    report = daemon.reconciler.pass_once()
    assert report.submitted == 8
    assert started.wait(5), "a worker is defining a domain on the slow host"
    caplog.set_level(logging.DEBUG)
    daemon.shutdown()
    assert daemon.reconciler.idle(), "every worker that ran had finished before the store closed"
    closed = [r.getMessage() for r in caplog.records if "closed" in r.getMessage() or "database" in r.getMessage()]
    assert closed == [], closed
    errors = [r for r in caplog.records if r.levelno >= logging.WARNING and r.exc_info]
    assert errors == [], [r.getMessage() for r in errors]
    defined = [v for v, _ in slow.calls if v == "define_domain"]
    assert 1 <= len(defined) <= 8, "the ones in flight finished; queued ones were dropped"
