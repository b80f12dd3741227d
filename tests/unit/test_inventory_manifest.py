"""Image import reads only the files of the image directory, and only files it knows the
checksum of: an absolute name, '..', a hidden part or a symlink out would upload any file the
daemon can read into a volume guests can read. Each refusal is one line; nothing is recorded."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from localvmss.errors import InvalidSpec
from localvmss.inventory import read_manifest
from tests.unit.servicefake import api_client, make_service, refused, snapshot

FILES = {"disk.qcow2": b"QFI\xfb disk", "vmlinux": b"\x7fELF kernel", "initrd.img": b"initrd"}


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def image_dir(path: Path, change: Callable[[dict[str, Any], Path], None] | None = None) -> Path:
    path.mkdir()
    for name, data in FILES.items():
        (path / name).write_bytes(data)
    manifest: dict[str, Any] = {
        "format": "qcow2",
        "disk": "disk.qcow2",
        "kernel": "vmlinux",
        "initrd": "initrd.img",
        "files": {name: digest(data) for name, data in FILES.items()},
    }
    if change is not None:
        change(manifest, path)
    (path / "image.json").write_text(json.dumps(manifest))
    return path


def secret(tmp_path: Path) -> Path:
    """A file outside the image directory that the daemon could read."""
    target = tmp_path / "shadow"
    if not target.exists():
        target.write_bytes(b"root:$6$secret")
    return target


def role_is(role: str, value: Any) -> Callable[[dict[str, Any], Path], None]:
    def change(m: dict[str, Any], _d: Path) -> None:
        m[role] = value

    return change


def absolute_with_checksum(m: dict[str, Any], d: Path) -> None:
    target = secret(d.parent)
    m["disk"] = str(target)
    m["files"][str(target)] = digest(target.read_bytes())


def dotdot_with_checksum(m: dict[str, Any], d: Path) -> None:
    target = secret(d.parent)
    m["kernel"] = "../shadow"
    m["files"]["../shadow"] = digest(target.read_bytes())


def symlink_out(m: dict[str, Any], d: Path) -> None:
    target = secret(d.parent)
    (d / "initrd.img").unlink()
    os.symlink(target, d / "initrd.img")
    m["files"]["initrd.img"] = digest(target.read_bytes())


def dir_symlink_out(m: dict[str, Any], d: Path) -> None:
    target = secret(d.parent)
    os.symlink(d.parent, d / "up")
    m["kernel"] = "up/shadow"
    m["files"]["up/shadow"] = digest(target.read_bytes())


def manifest_symlink_out(_m: dict[str, Any], d: Path) -> None:
    (d.parent / "elsewhere.json").write_text("{}")
    os.symlink(d.parent / "elsewhere.json", d / "image.json")


def unused_file_outside(m: dict[str, Any], d: Path) -> None:
    m["files"]["/etc/hostname"] = "0" * 64


def no_checksum_for(role: str) -> Callable[[dict[str, Any], Path], None]:
    def change(m: dict[str, Any], _d: Path) -> None:
        del m["files"][m[role]]

    return change


def bad_digest(m: dict[str, Any], _d: Path) -> None:
    m["files"]["vmlinux"] = m["files"]["vmlinux"].upper()


def files_not_a_map(m: dict[str, Any], _d: Path) -> None:
    m["files"] = ["disk.qcow2"]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (absolute_with_checksum, "must be a relative file name"),
        (dotdot_with_checksum, "must be a relative file name"),
        (role_is("initrd", "./initrd.img"), "must be a relative file name"),
        (role_is("initrd", ".hidden"), "must be a relative file name"),
        (role_is("disk", "disk.qcow2\n"), "must be a relative file name"),
        (role_is("disk", "dísk.qcow2"), "must be a relative file name"),
        (role_is("disk", 7), "must be a relative file name"),
        (role_is("disk", None), "must be a relative file name"),
        (role_is("disk", ""), "must be a relative file name"),
        (role_is("kernel", "a//b"), "must be a relative file name"),
        (symlink_out, "leads outside the image directory"),
        (dir_symlink_out, "leads outside the image directory"),
        (manifest_symlink_out, "image.json leads outside"),
        (unused_file_outside, "must be a relative file name"),
        (no_checksum_for("disk"), "disk file disk.qcow2 has no sha256"),
        (no_checksum_for("kernel"), "kernel file vmlinux has no sha256"),
        (no_checksum_for("initrd"), "initrd file initrd.img has no sha256"),
        (bad_digest, "is not a sha256"),
        (files_not_a_map, "'files' must map"),
        (role_is("kernel", "missing-kernel"), "kernel file missing-kernel is missing"),
    ],
)
def test_manifests_that_reach_outside_or_lack_checksums_are_refused(
    tmp_path: Path, change: Callable[[dict[str, Any], Path], None], words: str
) -> None:
    image = image_dir(tmp_path / "img", change)
    with pytest.raises(InvalidSpec) as err:
        read_manifest(image)
    assert words in err.value.message and "\n" not in err.value.message


@pytest.mark.parametrize(
    "change",
    [
        None,
        role_is("kernel", None),  # a disk that boots itself
        role_is("initrd", ""),
    ],
)
def test_plain_image_directories_are_accepted(tmp_path: Path, change: Any) -> None:
    assert read_manifest(image_dir(tmp_path / "img", change))["disk"] == "disk.qcow2"


def test_a_subdirectory_inside_is_fine(tmp_path: Path) -> None:
    def nested(m: dict[str, Any], d: Path) -> None:
        (d / "boot").mkdir()
        (d / "vmlinux").rename(d / "boot" / "vmlinux")
        m["kernel"] = "boot/vmlinux"
        m["files"]["boot/vmlinux"] = m["files"].pop("vmlinux")

    assert read_manifest(image_dir(tmp_path / "img", nested))["kernel"] == "boot/vmlinux"


@pytest.mark.parametrize("directory", ["relative/dir", "", "/tmp/x\x00y"])
def test_image_import_through_the_api_needs_an_absolute_directory(tmp_path: Path, directory: str) -> None:
    h = make_service(tmp_path)
    before = snapshot(h.store)
    refused(api_client(h).put("/images/base2", json={"sourceDirectory": directory}), 400, "absolute path")
    assert snapshot(h.store) == before and h.inventory.calls == []


def test_image_import_records_the_real_directory(tmp_path: Path) -> None:
    h = make_service(tmp_path)
    real = image_dir(tmp_path / "img")
    os.symlink(real, tmp_path / "link")
    assert h.service.import_image("base2", str(tmp_path / "link"))["source"] == str(real)
    assert h.inventory.calls == [("import_image", ("base2", real))]
