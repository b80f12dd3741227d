"""images/build-base --check: a missing, corrupt or stale image directory is reported in one line."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.scripts import load_script

BUILD_BASE = Path(__file__).resolve().parents[2] / "images" / "build-base"
INPUTS = {
    "builder:build-base": "aa" * 32,
    "kernel_version": "6.1.0-test-amd64",
    "package:busybox-static": "1:1.35",
}


build_base = load_script("build_base", BUILD_BASE)


def make_image(directory: Path, inputs: dict[str, str]) -> Path:
    """A fake image directory whose manifest matches its files and `inputs`."""
    directory.mkdir()
    files = {
        "disk.qcow2": b"QFI\xfb fake disk",
        "vmlinux": b"\x7fELF fake kernel",
        "initrd.img": b"fake initrd",
    }
    for name, data in files.items():
        (directory / name).write_bytes(data)
    manifest = {
        "name": "test",
        "format": "qcow2",
        "disk": "disk.qcow2",
        "kernel": "vmlinux",
        "initrd": "initrd.img",
        "cmdline": "console=ttyS0 root=/dev/vda rw",
        "inputs_sha256": build_base.inputs_digest(inputs),
        "inputs": inputs,
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
    }
    (directory / "image.json").write_text(json.dumps(manifest))
    return directory


def no_inputs() -> dict[str, str]:
    raise AssertionError("inputs must not be computed before the files are known to be good")


def test_current_image_passes(tmp_path: Path) -> None:
    image = make_image(tmp_path / "img", INPUTS)
    assert build_base.check_image(image, lambda: dict(INPUTS)) is None


def test_missing_directory(tmp_path: Path) -> None:
    problem = build_base.check_image(tmp_path / "nothing", no_inputs)
    assert problem.startswith("missing:") and "image.json" in problem


def test_missing_file(tmp_path: Path) -> None:
    image = make_image(tmp_path / "img", INPUTS)
    (image / "initrd.img").unlink()
    problem = build_base.check_image(image, no_inputs)
    assert problem.startswith("missing:") and "initrd.img" in problem


def test_corrupt_file(tmp_path: Path) -> None:
    image = make_image(tmp_path / "img", INPUTS)
    with (image / "disk.qcow2").open("r+b") as f:
        f.write(b"X")
    problem = build_base.check_image(image, no_inputs)
    assert problem.startswith("corrupt:") and "disk.qcow2" in problem


@pytest.mark.parametrize("text", ["{not json", "[]", '{"name": "x"}', "\xff"])
def test_corrupt_manifest(tmp_path: Path, text: str) -> None:
    image = make_image(tmp_path / "img", INPUTS)
    (image / "image.json").write_text(text, encoding="latin-1")
    assert build_base.check_image(image, no_inputs).startswith("corrupt:")


def test_manifest_without_checksum_for_the_kernel_is_corrupt(tmp_path: Path) -> None:
    image = make_image(tmp_path / "img", INPUTS)
    manifest = json.loads((image / "image.json").read_text())
    del manifest["files"]["vmlinux"]
    (image / "image.json").write_text(json.dumps(manifest))
    assert build_base.check_image(image, no_inputs).startswith("corrupt:")


def test_changed_input_is_stale_and_named(tmp_path: Path) -> None:
    image = make_image(tmp_path / "img", INPUTS)
    problem = build_base.check_image(image, lambda: {**INPUTS, "kernel_version": "6.1.0-newer-amd64"})
    assert problem.startswith("stale:")
    assert "kernel_version" in problem and "--out" in problem


def test_added_input_is_stale(tmp_path: Path) -> None:
    image = make_image(tmp_path / "img", INPUTS)
    problem = build_base.check_image(image, lambda: {**INPUTS, "builder:guest/new-file": "bb" * 32})
    assert problem.startswith("stale:") and "builder:guest/new-file" in problem


def run_check(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(BUILD_BASE), "--check", str(directory)], capture_output=True, text=True)


def test_cli_reports_one_line_and_exit_1(tmp_path: Path) -> None:
    result = run_check(tmp_path / "nothing")
    assert result.returncode == 1
    assert result.stdout.startswith("missing:") and result.stdout.count("\n") == 1
    assert "Traceback" not in result.stderr


def test_cli_detects_stale_image_on_a_build_host(tmp_path: Path) -> None:
    """Needs the packages the builder reads (kernel, busybox-static, dropbear-bin)."""
    try:
        current = build_base.collect_inputs(build_base.find_sources())
    except build_base.BuildError as e:
        pytest.skip(f"not a build host: {e}")
    image = make_image(tmp_path / "img", current)
    assert run_check(image).returncode == 0
    make_image(tmp_path / "old", {**current, "builder:build-base": "00" * 32})
    result = run_check(tmp_path / "old")
    assert result.returncode == 1
    assert result.stdout.startswith("stale:") and "builder:build-base" in result.stdout


def test_the_daemon_accepts_what_the_builder_writes(tmp_path: Path) -> None:
    """The builder's manifest names plain files and checksums disk, kernel and initrd: exactly
    what inventory.read_manifest insists on."""
    from localvmss.inventory import read_manifest

    image = make_image(tmp_path / "img", INPUTS)
    manifest = read_manifest(image)
    assert {manifest["disk"], manifest["kernel"], manifest["initrd"]} <= manifest["files"].keys()
