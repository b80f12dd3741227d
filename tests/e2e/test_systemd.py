"""localvmssd under the systemd notify protocol, with a real notify socket the test listens on:
READY only once the API answers, STATUS lines, WATCHDOG pings that stop while a libvirt call
hangs and come back after, a reload on SIGHUP, STOPPING on SIGTERM.

The daemon here has a lab host of its own (its own libvirtd in its own namespace), because the
test freezes that libvirtd with SIGSTOP; the session's testbed is not touched."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from localvmss.cli.client import ApiClient
from localvmss.lab.testbed import DaemonProcess, Testbed, free_port

pytestmark = pytest.mark.vm

WATCHDOG_USEC = 2_000_000  # pings every second
WATCHDOG_PASS_S = 6.0


@dataclass
class NotifyListener:
    """The systemd side: a datagram socket that records every message with its arrival time."""

    path: Path
    messages: list[tuple[float, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            now = time.monotonic()
            self.messages.extend((now, line) for line in data.decode().split("\n"))

    def wait_for(self, prefix: str, after: float = 0.0, timeout_s: float = 120.0) -> float:
        """The arrival time of the first ``prefix`` message after ``after``; fails after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for at, line in list(self.messages):
                if at >= after and line.startswith(prefix):
                    return at
            time.sleep(0.05)
        pytest.fail(f"no {prefix} within {timeout_s:.0f} s; got {[m for _, m in self.messages][-10:]}")

    def lines(self, prefix: str, after: float = 0.0, before: float = float("inf")) -> list[str]:
        return [line for at, line in list(self.messages) if after <= at < before and line.startswith(prefix)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture(scope="module")
def own_testbed() -> Iterator[Testbed]:
    if os.geteuid() != 0:
        pytest.fail("VM tests need root (network namespaces, libvirtd): run 'sudo make test'")
    tb = Testbed(tag=f"sd{os.getpid() % 100000}", host_count=1)
    tb.up()
    try:
        yield tb
    finally:
        tb.down()


def test_the_notify_protocol_from_start_to_stop(own_testbed: Testbed, tmp_path: Path) -> None:
    settings = {
        "haproxy_enabled": False,
        "prometheus_url": f"http://127.0.0.1:{free_port()}",  # nothing listens: no autoscale here
        "reconcile_interval_s": 1.0,
        "watchdog_pass_s": WATCHDOG_PASS_S,
    }
    proc: DaemonProcess = own_testbed.daemon(tmp_path / "state", **settings)
    listener = NotifyListener(tmp_path / "notify")
    try:
        started = time.monotonic()
        proc.launch({"NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": str(WATCHDOG_USEC)})

        # READY: the API answers the very first request made after it, no retry.
        ready_at = listener.wait_for("READY=1")
        client = ApiClient(str(proc.socket_path), timeout=10)
        assert client.get("/healthz")["status"] == "ok"
        assert listener.lines("READY=1") == ["READY=1"], "READY sent more than once at start"
        assert ready_at > started

        # STATUS and WATCHDOG while reconcile passes run.
        listener.wait_for("STATUS=", after=ready_at)
        assert any("scale sets" in line and "instances" in line for line in listener.lines("STATUS="))
        first_ping = listener.wait_for("WATCHDOG=1", after=ready_at)
        listener.wait_for("WATCHDOG=1", after=first_ping + 0.5)

        # A reload: a live key changes, a restart-only key is named, READY follows RELOADING.
        config = proc.config_path
        text = config.read_text().replace("reconcile_interval_s = 1.0", "reconcile_interval_s = 1.5")
        config.write_text(
            "memory_overcommit = 1.1\n" + text.replace("scrape_interval_s = 2.0", "scrape_interval_s = 3.0")
        )
        hup_at = time.monotonic()
        assert proc.proc is not None
        proc.proc.send_signal(signal.SIGHUP)
        reloading_at = listener.wait_for("RELOADING=1", after=hup_at, timeout_s=30)
        listener.wait_for("READY=1", after=reloading_at, timeout_s=30)
        assert any(line.startswith("MONOTONIC_USEC=") for line in listener.lines("MONOTONIC_USEC=", after=hup_at))
        log = proc.log_path.read_text()
        assert "reload: " in log and "memory_overcommit = 1.1" in log and "reconcile_interval_s = 1.5" in log
        assert "only a restart applies: scrape_interval_s" in log

        # A bad file on reload changes nothing and is said.
        good = config.read_text()
        config.write_text("max_parallel_boots = 'many'\n" + good)
        hup_at = time.monotonic()
        proc.proc.send_signal(signal.SIGHUP)
        listener.wait_for("READY=1", after=listener.wait_for("RELOADING=1", after=hup_at, timeout_s=30), timeout_s=30)
        assert "reload refused, the running configuration stays" in proc.log_path.read_text()
        config.write_text(good)

        # A hung libvirt call: the host's libvirtd frozen. Pings stop once no pass has finished
        # for WATCHDOG_PASS_S, the daemon says why, and they come back after the thaw.
        libvirtd = own_testbed.lab.hosts[0].libvirtd_pid if own_testbed.lab else 0
        assert libvirtd > 0
        os.kill(libvirtd, signal.SIGSTOP)
        frozen_at = time.monotonic()
        try:
            deadline = frozen_at + WATCHDOG_PASS_S + 30
            quiet_since = None
            while time.monotonic() < deadline:
                last_ping = max((at for at, line in listener.messages if line == "WATCHDOG=1"), default=0.0)
                if time.monotonic() - last_ping > 3 * WATCHDOG_USEC / 1e6:
                    quiet_since = last_ping
                    break
                time.sleep(0.2)
            assert quiet_since is not None, "the watchdog kept pinging while libvirtd was frozen"
            print(f"watchdog: last ping {quiet_since - frozen_at:.1f} s after libvirtd froze")
            assert "withholding the watchdog ping" in proc.log_path.read_text()
        finally:
            os.kill(libvirtd, signal.SIGCONT)
        thawed_at = time.monotonic()
        resumed_at = listener.wait_for("WATCHDOG=1", after=thawed_at, timeout_s=90)
        print(f"watchdog: pings again {resumed_at - thawed_at:.1f} s after the thaw; READY {ready_at - started:.1f} s")

        # STOPPING on SIGTERM, then a clean exit.
        term_at = time.monotonic()
        proc.stop()
        assert listener.lines("STOPPING=1", after=term_at), "no STOPPING=1 on SIGTERM"
        assert proc.proc.returncode == 0
        client.close()
    finally:
        proc.stop()
        proc.stop_data_plane()  # its metadata proxy (HAProxy is off, Prometheus is not ours here)
        listener.close()
