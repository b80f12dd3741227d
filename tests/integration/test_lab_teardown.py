"""Tearing a lab down leaves no process of it behind, even one its daemon never stopped.

A full run once left a metadata proxy running (started with ``ip netns exec`` inside a lab
host's namespace by a test daemon whose data plane was never stopped): the namespace was gone
from ``ip netns list`` but lived on in that process. ``destroy_lab`` now ends whatever still
runs inside each host's namespace.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from localvmss.lab import hosts as lab_module

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="lab hosts need root")


def _pids_in(netns: str) -> set[int]:
    out = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout
    return {int(p) for p in out.split() if p.isdigit()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def test_destroy_lab_ends_what_still_runs_in_a_host_namespace() -> None:
    lab = lab_module.create_lab(f"td{uuid.uuid4().hex[:4]}", host_count=1)
    netns = lab.hosts[0].netns
    stray = subprocess.Popen(["ip", "netns", "exec", netns, "sleep", "600"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not (_pids_in(netns) - {lab.hosts[0].libvirtd_pid}):
            assert time.monotonic() < deadline, "the stray process never showed in the namespace"
            time.sleep(0.1)
        inside = _pids_in(netns)
    finally:
        lab_module.destroy_lab(lab)
    stray.wait(timeout=15)  # it ends (a timeout here means it was left running)
    assert not [pid for pid in inside if _alive(pid)], f"left running: {sorted(inside)}"
    assert netns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_destroy_lab_leaves_no_rack_link_so_the_slot_can_be_used_at_once() -> None:
    """A host's rack veth, left to the kernel's clean-up of its deleted namespace, outlived the
    lab for a moment, and a lab made right after on the same slot failed with "RTNETLINK
    answers: File exists" (a bench run once). Teardown deletes it itself."""
    tag = f"rl{uuid.uuid4().hex[:4]}"
    lab = lab_module.create_lab(tag, host_count=2)
    links = [lab_module._rack_link(lab, host.index) for host in lab.hosts]
    shown = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    assert all(link in shown for link in links), (links, shown)
    lab_module.destroy_lab(lab)
    left = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout.split("\n")
    assert not [line for line in left if line.split("@")[0].split(" ")[0] in links], left
    again = lab_module.create_lab(tag, host_count=2)  # on the same slot: the very same link names
    lab_module.destroy_lab(again)
