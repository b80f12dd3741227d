"""The fault-injection stage (``make test`` runs it after the main suite, on its own).

It has a lab and a daemon of its own (never shared with the main suite's, so the daemon can be
killed at any moment), with the daemon's state directory on a small tmpfs so that a test can fill
its disk. One Uniform set of 2 behind a load-balancing rule (one instance on each lab host) is
shared by the tests; each waits until it is back at 2 ready instances first.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localvmss.cli.client import ApiClient
from localvmss.lab.testbed import DaemonProcess, Testbed, free_port
from tests import conftest as main_conftest
from tests.conftest import Cli
from tests.e2e.helpers import backend_names, create_set, wait_until
from tests.faults.world import observe, problems

STATE_TMPFS_MIB = 256


@pytest.fixture(scope="session")
def testbed() -> Iterator[Testbed]:
    yield from main_conftest.lab_session("f")


@pytest.fixture(scope="session")
def state_tmpfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A tmpfs of STATE_TMPFS_MIB for the daemon's state directory (test_disk_full fills it)."""
    mount = tmp_path_factory.mktemp("state-tmpfs")
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={STATE_TMPFS_MIB}m,mode=0700", "tmpfs", str(mount)], check=True
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture(scope="session")
def daemon(testbed: Testbed, image_dir: Path, state_tmpfs: Path) -> Iterator[DaemonProcess]:
    proc = testbed.daemon(state_tmpfs / "localvmssd")
    proc.start()
    main_conftest._session["daemon"] = proc
    client = ApiClient(str(proc.socket_path), timeout=120)
    client.put(f"/images/{main_conftest.IMAGE_NAME}", {"sourceDirectory": str(image_dir)})
    client.close()
    try:
        yield proc
    finally:
        main_conftest._session.pop("daemon", None)
        main_conftest.end_daemon_session(proc)


def client(daemon: DaemonProcess, timeout: float = 60) -> ApiClient:
    """A client of its own: the daemon may have been restarted since another was opened."""
    return ApiClient(str(daemon.socket_path), timeout=timeout)


def settled(daemon: DaemonProcess, shared: dict[str, Any], count: int = 2) -> bool:
    """The shared set at ``count`` ready instances, latest model, all answering through HAProxy."""
    api = client(daemon, 15)
    try:
        props = api.get(f"/scaleSets/{shared['name']}")["properties"]
        if props["provisioningState"] != "Succeeded" or props["readyCount"] != count:
            return False
        insts = api.get(f"/scaleSets/{shared['name']}/virtualMachines")["value"]
        if len(insts) != count or not all(i["properties"]["latestModelApplied"] for i in insts):
            return False
        names = {i["properties"]["osProfile"]["computerName"] for i in insts}
    finally:
        api.close()
    return backend_names(shared["port"], 4 * count) == names


def wait_settled(daemon: DaemonProcess, shared: dict[str, Any], count: int = 2, timeout: float = 600) -> None:
    wait_until(lambda: settled(daemon, shared, count), timeout, f"{shared['name']} at {count} ready instances")


def converged_world(testbed: Testbed, daemon: DaemonProcess, timeout: float, what: str) -> list[str]:
    """Wait until libvirt and HAProxy agree with the records (``world.problems`` is empty), up to
    ``timeout``; returns the problems still there then (empty when converged)."""
    last: list[str] = ["not looked at yet"]

    def clean() -> bool:
        nonlocal last
        api = client(daemon, 30)
        try:
            last = problems(observe(testbed, daemon, api))
        finally:
            api.close()
        return not last

    try:
        wait_until(clean, timeout, what, 2.0)
    except AssertionError:
        pass
    return last


@pytest.fixture(scope="session")
def shared(daemon: DaemonProcess, testbed: Testbed) -> Iterator[dict[str, Any]]:
    """A Uniform set of 2, one instance on each lab host, behind an LB rule, with a Rolling
    upgrade policy of one instance per batch."""
    name = f"ft{uuid.uuid4().hex[:6]}"
    port = free_port()
    create_set(
        Cli(daemon.socket_path),
        name,
        2,
        "--platform-fault-domain-count",
        "2",
        "--fault-domain-mapping",
        "host",
        "--computer-name-prefix",
        "ft",
        "--upgrade-policy-mode",
        "Rolling",
        "--max-batch-instance-percent",
        "50",
        "--max-unhealthy-instance-percent",
        "100",
        "--max-unhealthy-upgraded-instance-percent",
        "100",
        port=port,
    )
    yield {"name": name, "port": port}
