"""One daemon per state directory, data-plane processes adopted by pid, libvirt's busy answers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from localvmss import children
from localvmss.daemon import lock_state_dir
from localvmss.errors import Conflict
from localvmss.virt.host import is_busy


def test_a_second_lock_on_the_state_directory_is_refused_and_names_the_holder(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys,time; from pathlib import Path; from localvmss.daemon import lock_state_dir;"
            "lock_state_dir(Path(sys.argv[1])); print('locked', flush=True); time.sleep(30)",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(Conflict) as info:
            lock_state_dir(tmp_path)
        assert f"pid {holder.pid}" in info.value.message and str(tmp_path) in info.value.message
    finally:
        holder.kill()
        holder.wait()
    fd = lock_state_dir(tmp_path)  # free again once the holder is gone
    os.close(fd)


def test_a_recorded_child_is_ours_only_while_its_command_line_names_the_state_dir(tmp_path: Path) -> None:
    ours = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", str(tmp_path)])
    other = subprocess.Popen(["sleep", "30"])
    try:
        children.record(tmp_path, "prometheus", ours.pid)
        assert children.recorded(tmp_path, "prometheus") == ours.pid
        children.record(tmp_path, "prometheus", other.pid)  # e.g. a reused pid
        assert children.recorded(tmp_path, "prometheus") is None
        assert children.stop(tmp_path, "prometheus") is False
        assert other.poll() is None, "a process that is not ours is never signalled"
        children.record(tmp_path, "prometheus", ours.pid)
        assert children.stop(tmp_path, "prometheus") is True
        assert ours.wait(10) is not None
        assert children.recorded(tmp_path, "prometheus") is None
    finally:
        for proc in (ours, other):
            proc.kill()
            proc.wait()


def test_a_child_just_spawned_is_recognised_at_once(tmp_path: Path) -> None:
    """Popen returns while the kernel is still in the child's exec (/proc/PID/cmdline reads
    empty for a moment); ``record`` waits for the command line, so the next reader always
    recognises the child. A full run once failed the test above on that race."""
    for _ in range(30):
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", str(tmp_path)])
        try:
            children.record(tmp_path, "prometheus", proc.pid)
            assert children.recorded(tmp_path, "prometheus") == proc.pid
        finally:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(
    ("code", "message", "busy"),
    [
        (1, "internal error: pool 'lvmss-pool' has asynchronous jobs running.", True),
        (68, "Timed out during operation: cannot acquire state change lock (held by monitor=remoteDispatch)", True),
        (1, "internal error: client socket is closed", False),
        (38, "Cannot recv data: Connection reset by peer", False),
        (55, "Requested operation is not valid: domain is not running", False),
    ],
)
def test_busy_answers_of_libvirt(code: int, message: str, busy: bool) -> None:
    assert is_busy(code, message) is busy
