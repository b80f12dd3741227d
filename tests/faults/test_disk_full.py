"""The state directory's disk fills up (it is a small tmpfs in this stage, see conftest).

While it is full a change the daemon cannot record is refused with one line that says so (the
CLI exits 11, StateStoreUnavailable) and changes nothing; a change it did acknowledge is kept.
The daemon stays up, reads go on, and the data plane serves every request. Once space is freed,
the next change is taken and carried out, and libvirt and HAProxy end exactly as the records say.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from typing import Any

from localvmss.errors import LocalVMSSError
from localvmss.lab.testbed import DaemonProcess, Testbed
from tests.conftest import Cli
from tests.e2e.helpers import wait_until
from tests.e2e.load import Load
from tests.faults.conftest import client, converged_world, settled, wait_settled

CHUNK = b"\0" * (1 << 20)


def _fill(directory: Path) -> Path:
    """A ballast file that takes every free byte of ``directory``'s file system."""
    ballast = directory / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while True:
            try:
                os.write(fd, CHUNK)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
        for size in (4096, 512, 1):  # the last partial blocks too
            try:
                while True:
                    os.write(fd, CHUNK[:size])
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(fd)
    return ballast


def test_a_full_state_disk_refuses_changes_cleanly_and_recovers(
    daemon: DaemonProcess, testbed: Testbed, shared: dict[str, Any], state_tmpfs: Path, cli: Cli
) -> None:
    name, port = shared["name"], shared["port"]
    wait_settled(daemon, shared)
    daemon_pid = daemon.pid
    with Load(port, threads=4, max_seconds=600) as load:
        ballast = _fill(state_tmpfs)
        try:
            statvfs = os.statvfs(state_tmpfs)
            assert statvfs.f_bavail == 0, f"{statvfs.f_bavail} blocks still free"
            time.sleep(5)  # reconcile passes, health probes and scrapes meet the full disk
            api = client(daemon)
            try:
                try:
                    api.patch(f"/scaleSets/{name}", {"sku": {"capacity": 3}})
                    acknowledged = 3
                    refusal = ""
                except LocalVMSSError as exc:
                    acknowledged = 2
                    refusal = exc.message
                read = api.get(f"/scaleSets/{name}")
            finally:
                api.close()
            assert read["sku"]["capacity"] == acknowledged, f"capacity {read['sku']['capacity']} after '{refusal}'"
            by_cli = cli("scale", name, "--new-capacity", "4", "--no-wait")
            time.sleep(3)
            assert daemon.proc is not None and daemon.proc.poll() is None, "the daemon died on a full disk"
        finally:
            ballast.unlink()
        print(
            f"\nfull disk: the API {'refused' if refusal else 'acknowledged'} capacity 3 ({refusal or 'kept'}); "
            f"the CLI exited {by_cli.returncode}: {by_cli.stderr.strip()!r}"
        )
        if refusal:
            assert "disk is full" in refusal and "\n" not in refusal, refusal
        assert by_cli.returncode in (0, 11), by_cli.stderr
        if by_cli.returncode == 11:
            assert "disk is full" in by_cli.stderr and by_cli.stderr.count("\n") <= 1, by_cli.stderr
        api = client(daemon)
        try:
            api.patch(f"/scaleSets/{name}", {"sku": {"capacity": 3}})  # taken now that there is room
        finally:
            api.close()
        wait_until(lambda: settled(daemon, shared, 3), 300, f"{name} at 3 after space was freed")
        problems = converged_world(testbed, daemon, 90, "libvirt and HAProxy to match the records")
        assert not problems, "\n".join(problems)
        api = client(daemon)
        try:
            api.patch(f"/scaleSets/{name}", {"sku": {"capacity": 2}})
        finally:
            api.close()
        wait_until(lambda: settled(daemon, shared), 300, f"{name} back at 2")
    result = load.result
    print(f"load during it: sent {result.sent}, failed {result.failed} {dict(result.errors)}")
    assert daemon.pid == daemon_pid
    problems = converged_world(testbed, daemon, 90, "libvirt and HAProxy to match the records")
    assert not problems, "\n".join(problems)
    assert result.failed == 0, f"{result.failed} of {result.sent} requests failed: {result.failures[:20]}"
