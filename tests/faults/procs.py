"""The processes the fault tests stop, kill and start again: only ones this test session started
(the lab's libvirtd, the daemon's HAProxy and Prometheus), always by pid, checked against
/proc first so that a reused pid is never signalled."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from localvmss.lab.hosts import LabHost, start_libvirtd, wait_libvirtd
from localvmss.lab.testbed import DaemonProcess, Testbed
from tests.e2e.helpers import process_gone


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def wait_gone(pid: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not process_gone(pid):
        time.sleep(0.05)
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if this process started it
    except ChildProcessError:
        pass
    if not process_gone(pid):
        raise AssertionError(f"pid {pid} ({cmdline(pid)!r}) did not end within {timeout:.0f} s")


def lab_host(testbed: Testbed, name: str) -> LabHost:
    assert testbed.lab is not None
    return next(h for h in testbed.lab.hosts if h.name == name)


def libvirtd_pid(host: LabHost) -> int:
    pid = host.libvirtd_pid
    assert cmdline(pid).split(" ")[0].endswith("libvirtd"), f"pid {pid} of {host.name} is {cmdline(pid)!r}"
    return pid


def restart_libvirtd(testbed: Testbed, host: LabHost) -> None:
    """SIGTERM the lab host's libvirtd (its guests' QEMU processes keep running) and start it
    again exactly as the lab does."""
    assert testbed.lab is not None
    pid = libvirtd_pid(host)
    os.kill(pid, signal.SIGTERM)
    wait_gone(pid)
    start_libvirtd(host)
    testbed.lab.save()
    wait_libvirtd(host, timeout=60)


def prometheus_pid(daemon: DaemonProcess) -> int | None:
    """The daemon's Prometheus: the process started with this state directory's configuration."""
    config = str(daemon.state_dir / "prometheus" / "prometheus.yml")
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and config in cmdline(int(entry.name)) and "prometheus" in cmdline(int(entry.name)):
            return int(entry.name)
    return None


def haproxy_pids(daemon: DaemonProcess) -> list[int]:
    """HAProxy's master and its workers (the master's children)."""
    master = daemon.haproxy_master_pid()
    if not master or "haproxy" not in cmdline(master):
        return []
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == master and "haproxy" in cmdline(int(entry.name)):
            children.append(int(entry.name))
    return [master, *children]
