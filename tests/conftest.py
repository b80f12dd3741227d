"""Test harness: one lab (two libvirt hosts in network namespaces), one base image and one
daemon shared by the whole session; unique names per test; everything torn down at the end,
and labs left by an interrupted run are removed first. Failing tests get the daemon log and
the guests' serial consoles attached to their report.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from localvmss.cli.client import ApiClient
from localvmss.lab.hosts import collect_garbage
from localvmss.lab.testbed import DEFAULT_IMAGE_DIR, REPO, DaemonProcess, Testbed, free_port

IMAGE_NAME = "base"
_session: dict[str, object] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(part in str(item.fspath) for part in ("/integration/", "/e2e/", "/faults/")):
            item.add_marker(pytest.mark.vm)


def built_image(builder_name: str, out: Path) -> Path:
    """``images/<builder_name>``'s output in ``out``, rebuilt only when missing or stale."""
    builder = REPO / "images" / builder_name
    check = subprocess.run([sys.executable, str(builder), "--check", str(out)], capture_output=True, text=True)
    if check.returncode != 0:
        subprocess.run([sys.executable, str(builder), "--out", str(out)], check=True)
    return out


@pytest.fixture(scope="session")
def image_dir() -> Path:
    """The base image, built by `make` (scripts/setup); rebuilt here only if missing or stale."""
    return built_image("build-base", DEFAULT_IMAGE_DIR)


def lab_session(tag_prefix: str) -> Iterator[Testbed]:
    """A two-host lab (zones 1 and 2) for a test session, with leftovers of interrupted runs
    removed first; failing tests get its serial consoles; torn down at the end."""
    if os.geteuid() != 0:
        pytest.fail("VM tests need root (network namespaces, libvirtd): run 'sudo make test'")
    collect_garbage()
    tb = Testbed(tag=f"{tag_prefix}{os.getpid() % 100000}", host_count=2, zones=["1", "2"])
    tb.up()
    _session["testbed"] = tb
    try:
        yield tb
    finally:
        _session.pop("testbed", None)
        tb.down()


@pytest.fixture(scope="session")
def testbed() -> Iterator[Testbed]:
    yield from lab_session("t")


@pytest.fixture(scope="session")
def daemon(testbed: Testbed, image_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    state = tmp_path_factory.mktemp("localvmssd")
    # The TCP API too (TLS, a token), for Azure's SDKs (tests/e2e/test_azure_sdk.py).
    proc = testbed.daemon(state, api_tcp=f"127.0.0.1:{free_port()}", api_token=f"e2e-{uuid.uuid4().hex}")
    proc.start()
    _session["daemon"] = proc
    client = ApiClient(str(proc.socket_path))
    client.put(f"/images/{IMAGE_NAME}", {"sourceDirectory": str(image_dir)})
    client.close()
    try:
        yield proc
    finally:
        _session.pop("daemon", None)
        end_daemon_session(proc)


def end_daemon_session(proc: DaemonProcess) -> None:
    """Delete what the tests left (a Flexible set's VMs first, as its mode requires), then stop
    the daemon and, the session being over, its HAProxy and Prometheus too (a stopped daemon
    leaves them running for the next one to adopt)."""
    try:
        if proc.proc is None or proc.proc.poll() is not None:
            proc.start()  # a test left it dead: a daemon is needed to delete what it made
        c = ApiClient(str(proc.socket_path), timeout=30)
        for s in c.get("/scaleSets")["value"]:
            if s["properties"]["orchestrationMode"] == "Flexible":
                for vm in c.get(f"/scaleSets/{s['name']}/virtualMachines")["value"]:
                    c.delete(f"/virtualMachines/{vm['name']}")
            c.delete(f"/scaleSets/{s['name']}")
        c.close()
    except Exception:
        pass  # the lab's teardown removes whatever is left
    proc.stop()
    proc.stop_data_plane()


@pytest.fixture
def api(daemon: DaemonProcess) -> Iterator[ApiClient]:
    client = ApiClient(str(daemon.socket_path))
    yield client
    client.close()


@pytest.fixture
def name() -> str:
    """A unique, valid scale-set name per test."""
    return f"s{uuid.uuid4().hex[:7]}"


class Cli:
    """Runs the real `localvmss` command against the test daemon."""

    def __init__(self, socket_path: Path) -> None:
        self.exe = str(Path(sys.executable).parent / "localvmss")
        self.env = {**os.environ, "LOCALVMSS_SOCKET": str(socket_path)}

    def __call__(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.exe, *args], capture_output=True, text=True, env=self.env, timeout=timeout)

    def ok(self, *args: str, timeout: float = 600) -> str:
        result = self(*args, timeout=timeout)
        assert result.returncode == 0, f"localvmss {' '.join(args)} failed ({result.returncode}): {result.stderr}"
        return result.stdout


@pytest.fixture
def cli(daemon: DaemonProcess) -> Cli:
    return Cli(daemon.socket_path)


def _haproxy_abnormal(proc: DaemonProcess, lines: int = 15) -> str:
    """HAProxy logs only abnormal connections (dontlog-normal), with their termination state."""
    try:
        text = (proc.log_path.parent / "haproxy" / "haproxy.log").read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join([ln for ln in text.splitlines() if "] lvmss-" in ln and "lvmss-stats" not in ln][-lines:])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when not in ("setup", "call") or not report.failed:
        return
    proc = _session.get("daemon")
    if isinstance(proc, DaemonProcess):
        report.sections.append(("localvmssd log (tail)", proc.log_tail(80)))
    tb = _session.get("testbed")
    if isinstance(tb, Testbed):
        for where, text in tb.serial_logs().items():
            report.sections.append((f"serial console {where}", text))
    if isinstance(proc, DaemonProcess):
        report.sections.append(("HAProxy: connections that ended abnormally", _haproxy_abnormal(proc)))
        # Last, so that a shortened CI excerpt (which keeps the end) still shows them.
        report.sections.append(("localvmssd warnings and errors", proc.log_tail(30, problems_only=True)))
