"""The lab's and the harness's contracts that need no VM: who can reach a lab libvirtd, which
user runs its QEMU, which ports the harness hands out, and how it ends a daemon's data plane."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from localvmss.lab import hosts as lab
from localvmss.lab import testbed
from localvmss.lab.hosts import LabHost
from localvmss.lab.testbed import DaemonProcess, free_port


def _host(state_dir: str = "/var/lib/localvmss-lab/t1/h1") -> LabHost:
    return LabHost("h1", 1, "lvmss-t1-h1", state_dir, "198.19.0.11", "198.18.1.0/24", "lvmss-net", "lvbt10h1")


def _conf(path: Path) -> dict[str, str]:
    """key -> value of a libvirt .conf file, the last setting winning (as libvirt reads it)."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "=" in line:
            key, value = (part.strip() for part in line.split("=", 1))
            out[key] = value.strip('"')
    return out


def test_a_lab_host_is_reached_through_its_unix_socket_only() -> None:
    host = _host()
    assert host.socket_uri == "qemu+unix:///system?socket=/var/lib/localvmss-lab/t1/h1/run/libvirt-sock"
    assert host.uri == host.socket_uri
    assert host.socket_path == "/var/lib/localvmss-lab/t1/h1/run/libvirt-sock"


@pytest.mark.skipif(not Path("/etc/libvirt/libvirtd.conf").exists(), reason="needs libvirt's /etc/libvirt")
def test_lab_libvirtd_listens_on_no_port_and_runs_qemu_unprivileged(tmp_path: Path) -> None:
    state = tmp_path / "h1"
    lab._prepare_state_dir(state)
    daemon_conf = _conf(state / "etc" / "libvirtd.conf")
    assert daemon_conf["listen_tcp"] == "0" and daemon_conf["listen_tls"] == "0"
    assert "listen_addr" not in daemon_conf and daemon_conf.get("auth_tcp") is None
    for key in ("unix_sock_rw_perms", "unix_sock_ro_perms", "unix_sock_admin_perms"):
        assert daemon_conf[key] == "0700", key
    qemu_conf = _conf(state / "etc" / "qemu.conf")
    assert (qemu_conf["user"], qemu_conf["group"]) == ("libvirt-qemu", "libvirt-qemu")
    assert qemu_conf["dynamic_ownership"] == "1"
    assert state.stat().st_mode & 0o777 == 0o700
    for sub, mode in lab.BIND_DIR_MODES.items():
        assert (state / sub).stat().st_mode & 0o777 == mode, sub


def test_host_init_starts_libvirtd_without_listen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[list[str]] = []

    class FakePopen:
        pid = 4242

        def __init__(self, args: list[str], **_kw: Any) -> None:
            ran.append(args)

    def fake_run(args: list[str], **_kw: Any) -> subprocess.CompletedProcess[str]:
        ran.append(args)
        return subprocess.CompletedProcess(args, 0)

    def fake_exec(file: str, args: list[str]) -> None:
        ran.append(args)

    monkeypatch.setattr(lab.subprocess, "run", fake_run)
    monkeypatch.setattr(lab.subprocess, "Popen", FakePopen)
    monkeypatch.setattr(lab.os, "execvp", fake_exec)
    monkeypatch.setattr(lab, "BIND_DIRS", {sub: str(tmp_path / "target" / sub) for sub in lab.BIND_DIRS})
    lab.host_init(str(tmp_path))
    assert ran[-1][0] == "libvirtd" and "--listen" not in ran[-1] and "-l" not in ran[-1], ran[-1]


def test_free_ports_stay_out_of_the_ephemeral_range() -> None:
    low, high = testbed._ephemeral_range()
    for _ in range(20):
        port = free_port()
        assert not low <= port <= high and testbed._bindable(port)
    start = free_port(10)
    assert all(not low <= p <= high for p in range(start, start + 10))


def _daemon(tmp_path: Path) -> DaemonProcess:
    state = tmp_path / "state"
    config = tmp_path / "localvmssd.toml"
    config.write_text(f'state_dir = "{state}"\n')
    return DaemonProcess(config, state / "api.sock", tmp_path / "localvmssd.log")


def test_haproxy_master_pid_is_the_pid_files_first_line(tmp_path: Path) -> None:
    proc = _daemon(tmp_path)
    assert proc.state_dir == tmp_path / "state"
    assert proc.haproxy_master_pid() is None
    (tmp_path / "state" / "haproxy").mkdir(parents=True)
    (tmp_path / "state" / "haproxy" / "haproxy.pid").write_text("1234\n1240\n")
    assert proc.haproxy_master_pid() == 1234


def test_stop_data_plane_runs_the_daemon_flag_and_raises_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proc = _daemon(tmp_path)
    calls: list[tuple[list[str], dict[str, Any]]] = []
    answer = subprocess.CompletedProcess([], 0, "", "")

    def fake_run(args: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        calls.append((args, kw))
        return answer

    monkeypatch.setattr(testbed.subprocess, "run", fake_run)
    proc.stop_data_plane(timeout_s=7)
    args, kw = calls[-1]
    assert args == [sys.executable, "-m", "localvmss.daemon", "--config", str(proc.config_path), "--stop-data-plane"]
    assert kw["timeout"] == 7 and "shell" not in kw

    answer = subprocess.CompletedProcess([], 2, "", "usage: localvmssd ...\nlocalvmssd: error: unrecognized arguments")
    with pytest.raises(RuntimeError, match=r"failed \(exit 2\): localvmssd: error: unrecognized arguments"):
        proc.stop_data_plane()
