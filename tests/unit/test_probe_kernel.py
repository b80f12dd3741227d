"""The accelerator probe's kernel when no image has one (a host with only self-booting disks):
this machine's newest kernel, uploaded once per host as a content-named volume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import localvmss.inventory as inventory_module
from localvmss.config import DaemonConfig, HostConfig
from localvmss.errors import NotFound
from localvmss.inventory import Inventory, newest_kernel
from localvmss.store import Store


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ([], None),
        (["config-6.1.0-9-amd64", "System.map-6.1.0-9-amd64"], None),
        (["vmlinuz-6.1.0-9-amd64"], "vmlinuz-6.1.0-9-amd64"),
        (["vmlinuz-6.1.0-9-amd64", "vmlinuz-6.1.0-10-amd64"], "vmlinuz-6.1.0-10-amd64"),  # 10 > 9
        (["vmlinuz-6.1.0-57-amd64", "vmlinuz-6.10.0-1-amd64", "vmlinuz-6.1.0-rc1"], "vmlinuz-6.10.0-1-amd64"),
    ],
)
def test_the_newest_kernel_is_chosen_by_version_order(tmp_path: Path, files: list[str], expected: str | None) -> None:
    for name in files:
        (tmp_path / name).write_bytes(b"kernel " + name.encode())
    found = newest_kernel(tmp_path)
    assert (found.name if found else None) == expected


def test_no_boot_directory_means_no_kernel(tmp_path: Path) -> None:
    assert newest_kernel(tmp_path / "absent") is None


class RecordingHost:
    """Just the volume calls the probe kernel needs; records uploads."""

    def __init__(self) -> None:
        self.volumes: dict[str, bytes] = {}
        self.uploads: list[str] = []

    def volume_exists(self, pool: str, name: str) -> bool:
        return name in self.volumes

    def volume_sha256(self, pool: str, name: str, size: int) -> str:
        import hashlib

        return hashlib.sha256(self.volumes[name][:size]).hexdigest()

    def upload_file(self, pool: str, name: str, path: str, fmt: str) -> None:
        self.uploads.append(name)
        self.volumes[name] = Path(path).read_bytes()

    def volume_path(self, pool: str, name: str) -> str:
        if name not in self.volumes:
            raise NotFound(f"volume {name}")  # as Host's: libvirt has no such volume
        return f"/pool/{pool}/{name}"

    def close(self) -> None:
        pass


def _inventory(tmp_path: Path) -> tuple[Inventory, RecordingHost]:
    store = Store(tmp_path / "state.db")
    inv = Inventory(DaemonConfig(state_dir=tmp_path, hosts=[HostConfig(name="h1")]), store)
    host = RecordingHost()
    inv.hosts["h1"] = host  # type: ignore[assignment]
    return inv, host


def test_the_probe_kernel_is_uploaded_once_and_named_by_content(tmp_path: Path, monkeypatch: Any) -> None:
    boot = tmp_path / "boot"
    boot.mkdir()
    (boot / "vmlinuz-6.1.0-9-amd64").write_bytes(b"a kernel")
    monkeypatch.setattr(inventory_module, "BOOT_DIR", boot)
    inv, host = _inventory(tmp_path)
    first = inv._probe_kernel_path("h1")
    second = inv._probe_kernel_path("h1")
    assert first == second and first is not None and first.startswith("/pool/lvmss-pool/lvmss-probe-kernel-")
    assert len(host.uploads) == 1, "uploaded again although the volume is complete"
    (boot / "vmlinuz-6.1.0-10-amd64").write_bytes(b"a newer kernel")
    third = inv._probe_kernel_path("h1")
    assert third != first and len(host.uploads) == 2


def test_without_a_kernel_here_there_is_no_probe_kernel(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(inventory_module, "BOOT_DIR", tmp_path / "no-boot")
    inv, host = _inventory(tmp_path)
    assert inv._probe_kernel_path("h1") is None and host.uploads == []
