"""The save-file header rewrite and the clone XML (localvmss.virt.template), as tables of cases."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from localvmss.errors import WarmCloneUnavailable
from localvmss.virt import template
from localvmss.virt.domainxml import InstanceDomain, build_domain_xml

XML = "<domain type='qemu'><name>tpl</name></domain>"
COOKIE = b"<cookie><cpu/></cookie>"


def save_file(xml: str = XML, cookie: bytes = COOKIE, data_len: int = 4096, magic: bytes = template.SAVE_MAGIC,
              version: int = 2, compressed: int = 0, stream: bytes = b"QEVM-stream") -> bytes:  # fmt: skip
    body = xml.encode() + b"\0" + (cookie + b"\0" if cookie else b"")
    offset = len(xml.encode()) + 1 if cookie else 0
    head = template.HEADER.pack(magic, version, data_len, 1, compressed, offset)
    return head + body.ljust(data_len, b"\0") + stream


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"short", "too short"),
        (save_file(magic=template.SAVE_PARTIAL), "incomplete"),
        (save_file(magic=b"SomethingElse!!!"), "wrong magic"),
        (save_file(version=3), "version 3"),
        (save_file(compressed=1), "compressed"),
        (save_file()[:200], "truncated"),
    ],
)
def test_bad_headers_are_refused(data: bytes, error: str) -> None:
    with pytest.raises(WarmCloneUnavailable, match=error):
        template.parse_save_header(data)


@pytest.mark.parametrize(
    ("new_xml", "cookie"),
    [
        ("<domain type='qemu'><name>clone-1</name></domain>", COOKIE),
        ("<domain type='qemu'><name>" + "x" * 3000 + "</name></domain>", COOKIE),  # longer than before
        ("<domain/>", COOKIE),  # shorter
        ("<domain type='qemu'><name>no-cookie</name></domain>", b""),
    ],
)
def test_rewrite_keeps_length_cookie_and_stream(new_xml: str, cookie: bytes) -> None:
    old = save_file(cookie=cookie)
    image = template.parse_save_header(old)
    assert (image.xml, image.cookie, image.was_running) == (XML, cookie, 1)
    head = template.build_save_header(image, new_xml)
    assert len(head) == image.stream_offset, "the memory stream after the header does not move"
    new = head + old[image.stream_offset :]
    again = template.parse_save_header(new)
    assert (again.xml, again.cookie, again.data_len) == (new_xml, cookie, image.data_len)
    assert new[again.stream_offset :] == b"QEVM-stream"


def test_xml_too_big_for_the_header_is_refused() -> None:
    image = template.parse_save_header(save_file(data_len=200))
    with pytest.raises(WarmCloneUnavailable, match="does not fit"):
        template.build_save_header(image, "<domain>" + "x" * 300 + "</domain>")


def domain(name: str, mac: str, **changes: object) -> str:
    values: dict[str, object] = dict(
        name=name, domain_type="qemu", vcpus=1, memory_mib=256, pool="p", os_volume=f"{name}-os.qcow2",
        seed_volume=f"{name}-seed.iso", network="net", mac=mac, kernel_path="/p/vmlinux", initrd_path="/p/initrd",
        cmdline="console=ttyS0", serial_log=f"/log/{name}-serial.log",
    )  # fmt: skip
    values.update(changes)
    return build_domain_xml(InstanceDomain(**values))  # type: ignore[arg-type]


def saved(xml: str) -> str:
    """What libvirt's saved XML adds: a UUID and PCI addresses (ABI, to be kept)."""
    root = ET.fromstring(xml)
    ET.SubElement(root, "uuid").text = "11111111-2222-3333-4444-555555555555"
    for i, disk in enumerate(root.iterfind("devices/disk")):
        ET.SubElement(disk, "address", type="pci", slot=f"0x0{i + 4}")
    return ET.tostring(root, encoding="unicode")


def test_clone_xml_takes_identity_and_keeps_abi() -> None:
    out = ET.fromstring(
        template.clone_xml(saved(domain("tpl", "52:54:00:00:00:01")), domain("c1", "52:54:00:00:00:02"))
    )
    assert out.findtext("name") == "c1"
    assert out.findtext("uuid") not in (None, "11111111-2222-3333-4444-555555555555")
    assert [d.find("source").get("volume") for d in out.iterfind("devices/disk")] == ["c1-os.qcow2", "c1-seed.iso"]
    assert [d.find("address").get("slot") for d in out.iterfind("devices/disk")] == ["0x04", "0x05"]
    assert out.find("devices/interface/mac").get("address") == "52:54:00:00:00:02"
    assert out.find("devices/serial/log").get("file") == "/log/c1-serial.log"


@pytest.mark.parametrize(
    ("change", "what"),
    [
        ({"memory_mib": 512}, "memory"),
        ({"vcpus": 2}, "vCPUs"),
        ({"kernel_path": "/p/other-vmlinux"}, "kernel"),
        ({"domain_type": "kvm"}, "domain type"),
        ({"cmdline": "console=ttyS0 quiet"}, "command line"),
    ],
)
def test_clone_of_a_different_machine_is_refused(change: dict[str, object], what: str) -> None:
    with pytest.raises(WarmCloneUnavailable, match=what):
        template.clone_xml(saved(domain("tpl", "52:54:00:00:00:01")), domain("c1", "52:54:00:00:00:02", **change))


@pytest.mark.parametrize(
    ("address", "gateway", "line"),
    [
        (None, None, "identity i h 52:54:00:00:00:01"),
        ("198.18.1.5/24", "198.18.1.1", "identity i h 52:54:00:00:00:01 198.18.1.5/24 198.18.1.1"),
        ("10.0.0.9/8", "10.0.0.1", "identity i h 52:54:00:00:00:01 10.0.0.9/8 10.0.0.1"),
    ],
)
def test_identity_line(address: str | None, gateway: str | None, line: str) -> None:
    assert template.identity_line("i", "h", "52:54:00:00:00:01".upper(), address, gateway) == line


def test_identity_line_with_a_static_address() -> None:
    line = template.identity_line("i", "h", "52:54:00:00:00:01", "198.18.1.5/24", "198.18.1.1", static=True)
    assert line == "identity i h 52:54:00:00:00:01 198.18.1.5/24 198.18.1.1 static"
    with pytest.raises(ValueError, match="static clone address needs"):
        template.identity_line("i", "h", "52:54:00:00:00:01", static=True)


@pytest.mark.parametrize(
    ("address", "gateway", "error"),
    [
        ("198.18.1.5/24", None, "together"),
        (None, "198.18.1.1", "together"),
        ("198.18.1.5", "198.18.1.1", "prefix"),
        ("198.18.1.500/24", "198.18.1.1", "invalid"),
        ("198.18.1.5/33", "198.18.1.1", "invalid"),
        ("198.18.1.5/24", "198.18.2.1", "not another address"),
        ("198.18.1.5/24", "198.18.1.5", "not another address"),
        ("198.18.1.5/24", "gw", "invalid"),
    ],
)
def test_identity_line_refuses_bad_addresses(address: str | None, gateway: str | None, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        template.identity_line("i", "h", "52:54:00:00:00:01", address, gateway)
