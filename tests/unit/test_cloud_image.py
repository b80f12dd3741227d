"""Self-booting disk images: what `image import --file` accepts and refuses, the guest-metrics
endpoint an image records, and the scrape targets (with ``__metrics_path__``) that follow it.

qemu-img is run for real on small files made here (it is a host tool, not a VM); the rest are
pure functions over tables of cases."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from localvmss.cli import client as client_module
from localvmss.cli.main import main
from localvmss.config import DaemonConfig
from localvmss.errors import InvalidSpec
from localvmss.inventory import (
    DIRECTORY_GUEST_METRICS,
    DISK_GUEST_METRICS,
    DiskInfo,
    GuestMetrics,
    Inventory,
    check_boot_sector,
    check_guest_metrics,
    guest_metrics_of,
    inspect_disk,
    parse_disk_info,
    read_manifest,
    resolve_guest_metrics,
)
from localvmss.metrics.file_sd import read_file_sd, render_file_sd, write_file_sd
from localvmss.metrics.sources import guest_targets
from localvmss.model import OrchestrationMode
from localvmss.service import parse_image_body
from localvmss.spec import ScaleSetSpec
from localvmss.store import Store
from tests.unit.servicefake import api_client, instance_row, make_service, refused, snapshot

needs_qemu_img = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img (qemu-utils) not installed")


def info(**fields: Any) -> str:
    return json.dumps({"format": "qcow2", "virtual-size": 1 << 30, **fields})


# -- qemu-img info ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        (info(), DiskInfo("qcow2", 1 << 30)),
        (info(format="raw", **{"virtual-size": 2048 * 512}), DiskInfo("raw", 2048 * 512)),
        (
            info(**{"format-specific": {"type": "qcow2", "data": {"compat": "1.1", "corrupt": False}}}),
            DiskInfo("qcow2", 1 << 30),
        ),
    ],
)
def test_standalone_qcow2_and_raw_disks_pass(text: str, expected: DiskInfo) -> None:
    assert parse_disk_info("/d", text) == expected


@pytest.mark.parametrize(
    "text, words",
    [
        ("not json", "no readable answer"),
        ("[1, 2]", "no readable answer"),
        (info(format="vmdk"), "is a vmdk disk; localvmss imports qcow2 or raw"),
        (info(format="vpc"), "qemu-img convert -O qcow2"),
        (info(**{"backing-filename": "base.qcow2"}), "has a backing file (base.qcow2)"),
        (info(**{"full-backing-filename": "/x/base.qcow2"}), "flattens the chain"),
        (info(encrypted=True), "is encrypted"),
        (info(**{"format-specific": {"type": "qcow2", "data": {"corrupt": True}}}), "marked corrupt"),
        (info(**{"format-specific": {"type": "qcow2", "data": {"data-file": "d.raw"}}}), "external file (d.raw)"),
        (info(**{"virtual-size": 0}), "is empty"),
        (info(**{"virtual-size": None}), "is empty"),
        (info(format="raw", **{"virtual-size": 1000}), "not a whole number of 512-byte sectors"),
    ],
)
def test_disks_that_cannot_be_a_base_are_refused_in_one_line(text: str, words: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        parse_disk_info("/d", text)
    assert words in err.value.message and "\n" not in err.value.message


MBR = b"\0" * 510 + b"\x55\xaa"


@pytest.mark.parametrize(
    "sector, boots",
    [
        (MBR, True),
        (b"\xeb\x63" + MBR[2:], True),
        (b"hello world\n", False),
        (b"\0" * 512, False),
        (MBR[:511], False),
    ],
)
def test_a_raw_file_needs_a_boot_signature(sector: bytes, boots: bool) -> None:
    if boots:
        check_boot_sector("/d", sector)
    else:
        with pytest.raises(InvalidSpec, match="no MBR boot signature"):
            check_boot_sector("/d", sector)


def make_raw_disk(path: Path, size: int = 4 << 20) -> Path:
    """A raw disk with an MBR partition table (one partition from 1 MiB)."""
    with path.open("wb") as f:
        f.truncate(size)
        f.seek(446)
        f.write(struct.pack("<B3sB3sII", 0x80, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff", 2048, size // 512 - 2048))
        f.seek(510)
        f.write(b"\x55\xaa")
    return path


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


@needs_qemu_img
@pytest.mark.parametrize(
    "make, words",
    [
        (lambda d: d / "absent.qcow2", "does not exist"),
        (lambda d: d, "is a directory"),
        (lambda d: (d / "notes.txt").write_text("not a disk") and d / "notes.txt", "no MBR boot signature"),
        (lambda d: (d / "empty.img").write_bytes(b"") or d / "empty.img", "is empty"),
    ],
)
def test_inspect_refuses_what_is_not_a_disk(tmp_path: Path, make: Any, words: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        inspect_disk(make(tmp_path))
    assert words in err.value.message and "\n" not in err.value.message


@needs_qemu_img
def test_inspect_reads_real_qemu_img_output(tmp_path: Path) -> None:
    raw = make_raw_disk(tmp_path / "disk.raw")
    qemu_img("convert", "-f", "raw", "-O", "qcow2", str(raw), str(tmp_path / "disk.qcow2"))
    qemu_img(
        "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(tmp_path / "disk.qcow2"), str(tmp_path / "ov.qcow2")
    )
    assert inspect_disk(raw) == DiskInfo("raw", 4 << 20)
    assert inspect_disk(tmp_path / "disk.qcow2") == DiskInfo("qcow2", 4 << 20)
    with pytest.raises(InvalidSpec, match="has a backing file"):
        inspect_disk(tmp_path / "ov.qcow2")


# -- importing a disk ---------------------------------------------------------------------------


def inventory(tmp_path: Path) -> tuple[Inventory, Store]:
    """An Inventory with no available host: imports are checked and recorded, nothing uploaded."""
    store = Store(tmp_path / "state.db")
    return Inventory(DaemonConfig(state_dir=tmp_path / "state"), store), store


@needs_qemu_img
def test_a_qcow2_disk_is_recorded_where_it_is_with_node_exporter_metrics(tmp_path: Path) -> None:
    inv, store = inventory(tmp_path)
    (tmp_path / "img").mkdir()
    qemu_img(
        "convert", "-f", "raw", "-O", "qcow2", str(make_raw_disk(tmp_path / "d.raw")), str(tmp_path / "img/x.qcow2")
    )
    manifest = inv.import_disk("cloud", tmp_path / "img/x.qcow2")
    stored, source = store.images()["cloud"]
    assert stored == manifest and source == str(tmp_path / "img")
    assert manifest["disk"] == "x.qcow2" and manifest["boot"] == "disk" and not manifest.get("kernel")
    assert manifest["guest_metrics"] == {"port": 9100, "path": "/metrics"}
    assert len(manifest["files"]["x.qcow2"]) == 64


@needs_qemu_img
def test_a_raw_disk_is_converted_once_into_the_state_directory(tmp_path: Path) -> None:
    inv, store = inventory(tmp_path)
    raw = make_raw_disk(tmp_path / "cloud.img")
    first = inv.import_disk("cloud", raw, {"port": 9200})
    again = inv.import_disk("cloud", raw)
    source = Path(store.images()["cloud"][1])
    assert source.parent == tmp_path / "state" / "images" and (source / "disk.qcow2").is_file()
    assert [p.name for p in (tmp_path / "state" / "images").iterdir()] == [source.name]
    assert first["source_format"] == "raw" and first["format"] == "qcow2" and first["source_file"] == str(raw)
    assert first["guest_metrics"] == {"port": 9200, "path": "/metrics"}
    assert again["guest_metrics"] == {"port": 9100, "path": "/metrics"} and first["files"] == again["files"]


@needs_qemu_img
def test_a_refused_disk_records_nothing(tmp_path: Path) -> None:
    inv, store = inventory(tmp_path)
    (tmp_path / "x.txt").write_text("text")
    for path in (tmp_path / "x.txt", tmp_path / "missing.qcow2"):
        with pytest.raises(InvalidSpec):
            inv.import_disk("cloud", path)
    with pytest.raises(InvalidSpec, match="image name"):
        inv.import_disk("Bad Name", make_raw_disk(tmp_path / "ok.img"))
    assert store.images() == {} and not (tmp_path / "state" / "images").exists()


# -- the guest-metrics endpoint -----------------------------------------------------------------


@pytest.mark.parametrize(
    "value, expected",
    [
        ({"port": 9100}, {"port": 9100}),
        ({"path": "/metrics"}, {"path": "/metrics"}),
        ({"port": 1, "path": "/a/b-c_d.e~f"}, {"port": 1, "path": "/a/b-c_d.e~f"}),
        ({"port": 65535, "path": "/"}, {"port": 65535, "path": "/"}),
    ],
)
def test_guest_metrics_overrides_pass(value: Any, expected: dict[str, Any]) -> None:
    assert check_guest_metrics(value) == expected


@pytest.mark.parametrize(
    "value, words",
    [
        ({}, "takes"),
        ([], "takes"),
        ("9100", "takes"),
        ({"port": 9100, "scheme": "https"}, "takes"),
        ({"port": 0}, "from 1 to 65535"),
        ({"port": 65536}, "from 1 to 65535"),
        ({"port": True}, "from 1 to 65535"),
        ({"port": "9100"}, "from 1 to 65535"),
        ({"path": "metrics"}, "absolute URL path"),
        ({"path": "/metrics?x=1"}, "absolute URL path"),
        ({"path": "/a b"}, "absolute URL path"),
        ({"path": "/m\u00e9trics"}, "absolute URL path"),
        ({"path": "/" + "a" * 300}, "absolute URL path"),
        ({"path": 5}, "absolute URL path"),
    ],
)
def test_bad_guest_metrics_are_refused_in_one_line(value: Any, words: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        check_guest_metrics(value)
    assert words in err.value.message and "\n" not in err.value.message


@pytest.mark.parametrize(
    "manifest, expected",
    [
        ({}, DIRECTORY_GUEST_METRICS),  # recorded before images had an endpoint: the base image
        ({"guest_metrics": {"port": 9100, "path": "/metrics"}}, DISK_GUEST_METRICS),
        ({"guest_metrics": {"port": 8080}}, GuestMetrics(8080, "/cgi-bin/metrics")),
        ({"guest_metrics": {"port": "junk"}}, DIRECTORY_GUEST_METRICS),
        ({"guest_metrics": None}, DIRECTORY_GUEST_METRICS),
    ],
)
def test_the_recorded_endpoint_of_an_image(manifest: dict[str, Any], expected: GuestMetrics) -> None:
    assert guest_metrics_of(manifest) == expected


def test_overrides_replace_only_their_fields() -> None:
    assert resolve_guest_metrics(DISK_GUEST_METRICS, {"path": "/m"}) == GuestMetrics(9100, "/m")
    assert resolve_guest_metrics(DISK_GUEST_METRICS, None) == DISK_GUEST_METRICS


def test_image_json_may_carry_guest_metrics(tmp_path: Path) -> None:
    (tmp_path / "disk.qcow2").write_bytes(b"QFI")
    manifest = {
        "format": "qcow2",
        "disk": "disk.qcow2",
        "files": {"disk.qcow2": hashlib.sha256(b"QFI").hexdigest()},
        "guest_metrics": {"port": 9100},
    }
    (tmp_path / "image.json").write_text(json.dumps(manifest))
    assert read_manifest(tmp_path)["guest_metrics"] == {"port": 9100, "path": "/cgi-bin/metrics"}
    manifest["guest_metrics"] = {"path": "no-slash"}
    (tmp_path / "image.json").write_text(json.dumps(manifest))
    with pytest.raises(InvalidSpec, match="guest_metrics.path"):
        read_manifest(tmp_path)


# -- the PUT /images body -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, expected",
    [
        ({"sourceDirectory": "/img"}, ("sourceDirectory", "/img", None)),
        ({"sourceFile": "/d.qcow2"}, ("sourceFile", "/d.qcow2", None)),
        ({"sourceFile": "/d.qcow2", "guestMetrics": {"port": 9101}}, ("sourceFile", "/d.qcow2", {"port": 9101})),
        ({"sourceDirectory": "/i", "guestMetrics": {"path": "/m"}}, ("sourceDirectory", "/i", {"path": "/m"})),
    ],
)
def test_image_bodies_that_pass(body: Any, expected: tuple[str, str, Any]) -> None:
    assert parse_image_body(body) == expected


@pytest.mark.parametrize(
    "body, words",
    [
        ([], "PUT /images/{name} takes"),
        ({}, "exactly one of sourceDirectory and sourceFile"),
        ({"sourceDirectory": "/a", "sourceFile": "/b"}, "exactly one of"),
        ({"guestMetrics": {"port": 9100}}, "exactly one of"),
        ({"sourceFile": "/d", "kernel": "/k"}, "PUT /images/{name} takes"),
        ({"sourceFile": 5}, "sourceFile must be a string"),
        ({"sourceFile": None}, "sourceFile must be a string"),
        ({"sourceFile": "/d", "guestMetrics": {"port": 0}}, "from 1 to 65535"),
        ({"sourceFile": "/d", "guestMetrics": 9100}, "guestMetrics takes"),
    ],
)
def test_bad_image_bodies_are_refused(body: Any, words: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        parse_image_body(body)
    assert words in err.value.message and "\n" not in err.value.message


@pytest.mark.parametrize(
    "body, words",
    [
        ({"sourceFile": "relative/disk.qcow2"}, "must be an absolute path"),
        ({"sourceFile": "/tmp/x\x00y"}, "must be an absolute path"),
        ({"sourceFile": "/d.qcow2", "sourceDirectory": "/d"}, "exactly one of"),
        ({"sourceFile": "/d.qcow2", "guestMetrics": {"path": "x"}}, "absolute URL path"),
        ({"sourceDirectory": "/d", "extra": 1}, "takes"),
    ],
)
def test_the_api_refuses_bad_image_bodies_and_changes_nothing(tmp_path: Path, body: Any, words: str) -> None:
    h = make_service(tmp_path)
    before = snapshot(h.store)
    refused(api_client(h).put("/images/cloud", json=body), 400, words)
    assert snapshot(h.store) == before and h.inventory.calls == []


# -- scrape targets -----------------------------------------------------------------------------


def spec(image: str | None) -> ScaleSetSpec:
    return ScaleSetSpec(mode=OrchestrationMode.UNIFORM, image=image)


IMAGES: dict[str, dict[str, Any]] = {
    "base": {"disk": "disk.qcow2"},
    "cloud": {"disk": "x.qcow2", "boot": "disk", "guest_metrics": {"port": 9100, "path": "/metrics"}},
}


@pytest.mark.parametrize(
    "inst, set_image, expected",
    [
        (instance_row("web", 0), "base", ("198.18.1.10:80", "/cgi-bin/metrics")),
        (instance_row("web", 1), "cloud", ("198.18.1.11:9100", "/metrics")),
        # A Flexible VM runs its own image, whatever the set's model says.
        (instance_row("web", 2, overrides={"image": "cloud"}), "base", ("198.18.1.12:9100", "/metrics")),
        # An image that is no longer recorded: the base image's endpoint.
        (instance_row("web", 3), "gone", ("198.18.1.13:80", "/cgi-bin/metrics")),
        (instance_row("web", 4), None, ("198.18.1.14:80", "/cgi-bin/metrics")),
        (instance_row("web", 5, desired_power="stopped"), "cloud", None),
        (instance_row("web", 6, provisioning_state="Deleting"), "cloud", None),
    ],
)
def test_guest_targets_follow_the_image(inst: Any, set_image: str | None, expected: tuple[str, str] | None) -> None:
    targets = guest_targets([inst], {"web": spec(set_image)}, IMAGES)
    if expected is None:
        assert targets == []
        return
    [(address, labels)] = targets
    assert (address, labels["__metrics_path__"]) == expected
    assert labels == {
        "scale_set": "web",
        "instance_id": str(inst.instance_id),
        "host": "h1",
        "__metrics_path__": expected[1],
    }


def test_a_set_being_gone_still_gives_a_target() -> None:
    [(address, labels)] = guest_targets([instance_row("old", 0)], {}, IMAGES)
    assert address == "198.18.1.10:80" and labels["__metrics_path__"] == "/cgi-bin/metrics"


@pytest.mark.parametrize(
    "labels, ok",
    [
        ({"__metrics_path__": "/metrics"}, True),
        ({"__scheme__": "https"}, True),
        ({"__param_module": "x"}, True),
        ({"__address__": "1.2.3.4:1"}, False),
        ({"__meta_x": "y"}, False),
        ({"__metrics_path__": "metrics"}, False),
        ({"__metrics_path__": "/a b"}, False),
        ({"__scheme__": "ftp"}, False),
        ({"job": "x", "__name__": "y"}, False),
    ],
)
def test_file_sd_takes_only_the_scrape_labels_prometheus_honours(labels: dict[str, str], ok: bool) -> None:
    targets = [("198.18.1.10:9100", {"scale_set": "web", **labels})]
    if ok:
        assert json.loads(render_file_sd(targets))[0]["labels"]["scale_set"] == "web"
    else:
        with pytest.raises(InvalidSpec):
            render_file_sd(targets)


def test_file_sd_round_trips_the_metrics_path(tmp_path: Path) -> None:
    targets = guest_targets([instance_row("web", 0), instance_row("web", 1)], {"web": spec("cloud")}, IMAGES)
    write_file_sd(tmp_path / "guests.json", targets)
    assert read_file_sd(tmp_path / "guests.json") == targets


# -- the CLI ------------------------------------------------------------------------------------


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, Any]]:
    """Requests as httpx sends them (method, path, JSON body), answered with a 200."""
    seen: list[tuple[str, str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.raw_path.decode(), json.loads(request.content or b"null")))
        return httpx.Response(200, content=b"{}")

    monkeypatch.setattr(client_module.httpx, "HTTPTransport", lambda **_kw: httpx.MockTransport(handler))
    return seen


@pytest.mark.parametrize(
    "args, body",
    [
        (["--file", "{disk}"], {"sourceFile": "{disk}"}),
        (["--file", "{disk}", "--metrics-port", "9200"], {"sourceFile": "{disk}", "guestMetrics": {"port": 9200}}),
        (["{dir}", "--metrics-path", "/m"], {"sourceDirectory": "{dir}", "guestMetrics": {"path": "/m"}}),
        (["{dir}"], {"sourceDirectory": "{dir}"}),
    ],
)
def test_image_import_sends_the_source_and_metrics(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sent: list[Any], args: list[str], body: dict[str, Any]
) -> None:
    (tmp_path / "d.qcow2").write_bytes(b"QFI")
    paths = {"{disk}": str(tmp_path / "d.qcow2"), "{dir}": str(tmp_path)}
    args = [paths.get(a, a) for a in args]
    monkeypatch.setattr(sys, "argv", ["localvmss", "--socket", "/nonexistent.sock", "image", "import", "c", *args])
    try:
        main()
    except SystemExit as exit_:
        assert exit_.code in (0, None)
    expected = json.loads(json.dumps(body).replace("{disk}", paths["{disk}"]).replace("{dir}", paths["{dir}"]))
    assert sent == [("PUT", "/images/c", expected)]


@pytest.mark.parametrize("args", [[], ["{dir}", "--file", "{disk}"], ["--file", "{disk}", "--metrics-port", "0"]])
def test_image_import_usage_errors_send_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sent: list[Any], args: list[str]
) -> None:
    (tmp_path / "d.qcow2").write_bytes(b"QFI")
    paths = {"{disk}": str(tmp_path / "d.qcow2"), "{dir}": str(tmp_path)}
    args = [paths.get(a, a) for a in args]
    monkeypatch.setattr(sys, "argv", ["localvmss", "--socket", "/nonexistent.sock", "image", "import", "c", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2 and sent == []
