"""images/build-cloud: its partition table, its --check, and the guest's YAML reader (yaml.awk,
run with the busybox awk the guest runs it with), as tables of cases."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.scripts import load_script

IMAGES = Path(__file__).resolve().parents[2] / "images"
YAML_AWK = IMAGES / "cloud" / "rootfs" / "usr" / "lib" / "nocloud" / "yaml.awk"
BUSYBOX = shutil.which("busybox") or "/bin/busybox"
INPUTS = {"builder:build-cloud": "aa" * 32, "package:extlinux": "3:6.04"}


build_cloud = load_script("build_cloud", IMAGES / "build-cloud")


def test_the_partition_table_has_one_bootable_linux_partition_from_1_mib() -> None:
    table = build_cloud.mbr_partition_table(1 << 30)
    assert len(table) == 512 - 440 and table[-2:] == b"\x55\xaa"
    status, _chs, kind, _chs_end, start, sectors = struct.unpack_from("<B3sB3sII", table, 446 - 440)
    assert (status, kind, start, sectors) == (0x80, 0x83, 2048, (1 << 30) // 512 - 2048)
    assert table[6 + 16 : -2] == b"\0" * 48  # the other three entries are empty


def test_a_disk_too_small_for_the_partition_is_an_error() -> None:
    with pytest.raises(build_cloud.BuildError, match="no room for a partition"):
        build_cloud.mbr_partition_table(1 << 20)


def test_extlinux_boots_the_partition_without_a_prompt() -> None:
    conf = build_cloud.extlinux_conf()
    assert "PROMPT 0" in conf and "LINUX /boot/vmlinuz" in conf and "INITRD /boot/initrd.img" in conf
    assert f"APPEND {build_cloud.CMDLINE}" in conf and "root=/dev/vda1" in build_cloud.CMDLINE


def make_image(directory: Path, inputs: dict[str, str], **changes: object) -> Path:
    directory.mkdir()
    (directory / "disk.qcow2").write_bytes(b"QFI\xfb fake disk")
    manifest: dict[str, object] = {
        "name": "t",
        "format": "qcow2",
        "disk": "disk.qcow2",
        "inputs_sha256": build_cloud.base.inputs_digest(inputs),
        "inputs": inputs,
        "files": {"disk.qcow2": hashlib.sha256(b"QFI\xfb fake disk").hexdigest()},
        **changes,
    }
    (directory / "build.json").write_text(json.dumps(manifest))
    return directory


def built(d: Path) -> None:
    make_image(d, INPUTS)


def nothing(d: Path) -> None:
    pass


def no_checksums(d: Path) -> None:
    make_image(d, INPUTS, files={})


def no_disk_named(d: Path) -> None:
    make_image(d, INPUTS, disk=None)


def unreadable_manifest(d: Path) -> None:
    (make_image(d, INPUTS) / "build.json").write_text("{")


def changed_disk(d: Path) -> None:
    (make_image(d, INPUTS) / "disk.qcow2").write_bytes(b"other")


def deleted_disk(d: Path) -> None:
    (make_image(d, INPUTS) / "disk.qcow2").unlink()


@pytest.mark.parametrize(
    "make, inputs, expected",
    [
        (built, INPUTS, None),
        (nothing, INPUTS, "missing: "),
        (no_checksums, INPUTS, "corrupt: "),
        (no_disk_named, INPUTS, "corrupt: "),
        (unreadable_manifest, INPUTS, "corrupt: "),
        (changed_disk, INPUTS, "corrupt: checksum"),
        (deleted_disk, INPUTS, "missing: "),
        (built, {**INPUTS, "package:extlinux": "3:6.05"}, "stale: "),
    ],
)
def test_check_reports_one_line(
    tmp_path: Path, make: Callable[[Path], None], inputs: dict[str, str], expected: str | None
) -> None:
    directory = tmp_path / "img"
    make(directory)
    problem = build_cloud.check_image(directory, lambda: inputs)
    if expected is None:
        assert problem is None
    else:
        assert problem is not None and problem.startswith(expected) and "\n" not in problem


def test_stale_names_the_changed_input(tmp_path: Path) -> None:
    make_image(tmp_path / "img", INPUTS)
    problem = build_cloud.check_image(tmp_path / "img", lambda: {**INPUTS, "package:extlinux": "9"})
    assert problem is not None and "package:extlinux" in problem and "images/build-cloud --out" in problem


def test_check_without_a_build_is_one_line_and_exit_1(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(IMAGES / "build-cloud"), "--check", str(tmp_path / "none")], capture_output=True, text=True
    )
    assert done.returncode == 1 and done.stdout.startswith("missing: ") and done.stdout.count("\n") == 1


# -- yaml.awk -----------------------------------------------------------------------------------

needs_busybox = pytest.mark.skipif(not Path(BUSYBOX).exists(), reason="busybox-static not installed")


def flatten(text: str) -> dict[str, str]:
    done = subprocess.run([BUSYBOX, "awk", "-f", str(YAML_AWK)], input=text, capture_output=True, text=True, check=True)
    return dict(line.split("\t", 1) for line in done.stdout.splitlines())


@needs_busybox
@pytest.mark.parametrize(
    "yaml, expected",
    [
        # What localvmss/virt/seed.py writes.
        (
            "instance-id: 'lvmss-web-0'\nlocal-hostname: 'web000000'\npublic-keys:\n  - 'ssh-ed25519 AAAA k'\n",
            {"instance-id": "lvmss-web-0", "local-hostname": "web000000", "public-keys.0": "ssh-ed25519 AAAA k"},
        ),
        ("a: plain # comment\nb: \"dq \\\"x\\\"\"\nc: 'it''s'\n", {"a": "plain", "b": 'dq "x"', "c": "it's"}),
        ("a: ~\nb:\nc: null\n", {"a": "", "b": "", "c": ""}),
        ("list:\n- one\n- two\nnext: 3\n", {"list.0": "one", "list.1": "two", "next": "3"}),
        ("flow: [a, 'b, c', \"d\"]\nempty: []\nmap: {}\n", {"flow.0": "a", "flow.1": "b, c", "flow.2": "d"}),
        (
            "runcmd:\n  - echo a\n  - [ sh, -c, 'x y' ]\n  -\n    - ls\n",
            {"runcmd.0": "echo a", "runcmd.1.0": "sh", "runcmd.1.1": "-c", "runcmd.1.2": "x y", "runcmd.2.0": "ls"},
        ),
        (
            "write_files:\n- path: /a\n  content: |\n    l1\n      l2\n    back\\slash\n- path: /b\n  defer: true\n",
            {
                "write_files.0.path": "/a",
                "write_files.0.content": "l1\\n  l2\\nback\\\\slash\\n",
                "write_files.1.path": "/b",
                "write_files.1.defer": "true",
            },
        ),
        ("s: |-\n  no newline\nf: >\n  folded\n  line\n\n  para\n", {"s": "no newline", "f": "folded line\\npara\\n"}),
        (
            "network:\n  version: 2\n  ethernets:\n    eth0:\n      addresses: [198.18.0.5/24]\n",
            {"network.version": "2", "network.ethernets.eth0.addresses.0": "198.18.0.5/24"},
        ),
        (
            "config:\n  - type: physical\n    subnets:\n      - type: static\n        address: 1.2.3.4\n",
            {"config.0.type": "physical", "config.0.subnets.0.type": "static", "config.0.subnets.0.address": "1.2.3.4"},
        ),
        ("#cloud-config\n---\nhostname: h\r\n", {"hostname": "h"}),
        ("url: http://x:80/a\n", {"url": "http://x:80/a"}),
    ],
)
def test_yaml_awk_flattens_the_nocloud_subset(yaml: str, expected: dict[str, str]) -> None:
    assert flatten(yaml) == expected
