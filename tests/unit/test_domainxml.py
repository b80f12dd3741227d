"""Domain, network and volume XML as localvmss generates it, read back with lxml.

NUMA placement across several cells cannot be run on the project machines (libvirt reports one
NUMA cell there), so the multi-cell case is checked here, on the generated XML: a fault domain
mapped to cell 1 of a two-cell host pins vCPUs to that cell's CPUs and memory to that cell.
Where libvirt is installed the documents are also checked against its own RelaxNG schemas.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from localvmss.model import METADATA_NS
from localvmss.virt.domainxml import (
    InstanceDomain,
    NumaPinning,
    Ownership,
    build_domain_xml,
    dhcp_host_xml,
    network_xml,
    pool_xml,
    probe_domain_xml,
    read_macs,
    read_ownership,
    volume_xml,
)


def instance(**overrides: object) -> InstanceDomain:
    values: dict[str, object] = {
        "name": "lvmss-web-3",
        "domain_type": "qemu",
        "vcpus": 2,
        "memory_mib": 512,
        "pool": "lvmss-pool",
        "os_volume": "lvmss-web-3-os.qcow2",
        "seed_volume": "lvmss-web-3-seed.iso",
        "network": "lvmss-net",
        "mac": "52:54:00:12:01:0d",
        "kernel_path": "/var/lib/libvirt/localvmss/lvmss-img-base-abc-vmlinuz",
        "initrd_path": "/var/lib/libvirt/localvmss/lvmss-img-base-abc-initrd",
        "cmdline": "console=ttyS0 root=/dev/vda rw quiet",
        "serial_log": "/var/log/libvirt/qemu/lvmss-web-3-serial.log",
        "ownership": Ownership(scale_set="web", instance_id=3, model_version=2, fault_domain=1),
    }
    values.update(overrides)
    return InstanceDomain(**values)  # type: ignore[arg-type]


def parse(xml: str) -> etree._Element:
    return etree.fromstring(xml.encode())


SCHEMAS = Path("/usr/share/libvirt/schemas")
_schemas: dict[str, etree.RelaxNG] = {}


def validate_with_libvirt(xml: str, kind: str) -> None:
    """libvirt's own RelaxNG schema accepts the document (skipped where libvirt is not installed)."""
    if kind not in _schemas:
        path = SCHEMAS / f"{kind}.rng"
        if not path.is_file():
            pytest.skip(f"libvirt's schema {path} is not installed")
        _schemas[kind] = etree.RelaxNG(etree.parse(str(path)))
    schema = _schemas[kind]
    assert schema.validate(parse(xml)), f"libvirt's {kind} schema rejects the XML: {schema.error_log}\n{xml}"


def test_the_schema_check_rejects_bad_xml() -> None:
    """The schema check is not vacuous: a wrong NUMA mode is refused."""
    bad = build_domain_xml(instance(numa=NumaPinning(cell=1, cpus=(2, 3)))).replace("strict", "sometimes")
    with pytest.raises(AssertionError, match="rejects"):
        validate_with_libvirt(bad, "domain")


# -- NUMA pinning ------------------------------------------------------------------------------
def test_numa_pinning_to_cell_1_of_a_two_cell_host() -> None:
    xml = build_domain_xml(instance(numa=NumaPinning(cell=1, cpus=(2, 3))))
    root = parse(xml)
    vcpu = root.find("vcpu")
    assert vcpu is not None and vcpu.text == "2" and vcpu.get("placement") == "static"
    assert vcpu.get("cpuset") == "2,3"
    pins = root.findall("cputune/vcpupin")
    assert [(p.get("vcpu"), p.get("cpuset")) for p in pins] == [("0", "2,3"), ("1", "2,3")]
    memory = root.findall("numatune/memory")
    assert len(memory) == 1
    assert memory[0].get("mode") == "strict" and memory[0].get("nodeset") == "1"
    validate_with_libvirt(xml, "domain")


def test_numa_pinning_follows_the_vcpu_count() -> None:
    root = parse(build_domain_xml(instance(vcpus=4, numa=NumaPinning(cell=0, cpus=(0, 1, 2, 3, 4, 5)))))
    pins = root.findall("cputune/vcpupin")
    assert [p.get("vcpu") for p in pins] == ["0", "1", "2", "3"]
    assert {p.get("cpuset") for p in pins} == {"0,1,2,3,4,5"}
    assert root.find("numatune/memory").get("nodeset") == "0"


def test_without_numa_nothing_is_pinned() -> None:
    root = parse(build_domain_xml(instance()))
    assert root.find("vcpu").get("cpuset") is None
    assert root.find("cputune") is None and root.find("numatune") is None


# -- ownership metadata ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "owner",
    [
        Ownership(scale_set="web", instance_id=3, model_version=2, fault_domain=1),
        Ownership(scale_set="a-b-c", instance_id=0, model_version=1, fault_domain=0),
        Ownership(scale_set="flex", instance_id=17, model_version=5, fault_domain=2, kind="vm"),
    ],
)
def test_ownership_round_trips(owner: Ownership) -> None:
    xml = build_domain_xml(instance(ownership=owner))
    assert read_ownership(xml) == owner
    meta = parse(xml).find(f"metadata/{{{METADATA_NS}}}instance")
    assert meta is not None, "ownership lives in <metadata> under the localvmss namespace"


def test_ownership_is_written_with_the_stable_prefix() -> None:
    """``lvmss:`` always (never ElementTree's ``ns0:``), declared once; only where it is used."""
    xml = build_domain_xml(instance())
    assert xml.count(f'xmlns:lvmss="{METADATA_NS}"') == 1 and "<lvmss:instance>" in xml and "ns0" not in xml
    assert "xmlns:lvmss" not in build_domain_xml(instance(ownership=None))


def test_ownership_survives_libvirt_style_reformatting() -> None:
    """libvirt re-serializes metadata with its own prefix and indentation; we still read it."""
    owner = Ownership(scale_set="web", instance_id=9, model_version=4, fault_domain=1)
    root = parse(build_domain_xml(instance(ownership=owner)))
    meta = root.find("metadata")
    assert meta is not None
    text = etree.tostring(root, encoding="unicode").replace("lvmss:", "ns0:").replace("xmlns:lvmss", "xmlns:ns0")
    assert read_ownership(text) == owner


def test_foreign_or_broken_metadata_is_not_ours() -> None:
    assert read_ownership(build_domain_xml(instance(ownership=None))) is None
    assert read_ownership("<domain type='qemu'><name>other</name></domain>") is None
    foreign = "<domain><name>x</name><metadata><i:instance xmlns:i='urn:someone-else'/></metadata></domain>"
    assert read_ownership(foreign) is None
    broken = build_domain_xml(instance()).replace("<lvmss:instanceId>3<", "<lvmss:instanceId>three<")
    assert "three" in broken
    assert read_ownership(broken) is None


def test_macs_are_read_back() -> None:
    assert read_macs(build_domain_xml(instance(mac="52:54:00:AB:01:0D"))) == ["52:54:00:ab:01:0d"]
    assert read_macs("<domain><name>x</name><devices/></domain>") == []


# -- the rest of the domain (golden-ish) -------------------------------------------------------
def test_domain_devices() -> None:
    xml = build_domain_xml(instance())
    root = parse(xml)
    assert root.tag == "domain" and root.get("type") == "qemu"
    assert root.findtext("name") == "lvmss-web-3"
    assert root.find("memory").get("unit") == "MiB" and root.findtext("memory") == "512"
    assert root.findtext("currentMemory") == "512"
    assert root.find("cpu") is None, "TCG guests get QEMU's default CPU model"
    assert root.findtext("on_poweroff") == "destroy" and root.findtext("on_reboot") == "restart"

    os_el = root.find("os")
    assert os_el.find("type").text == "hvm" and os_el.find("type").get("arch") == "x86_64"
    assert os_el.findtext("kernel") == "/var/lib/libvirt/localvmss/lvmss-img-base-abc-vmlinuz"
    assert os_el.findtext("initrd") == "/var/lib/libvirt/localvmss/lvmss-img-base-abc-initrd"
    assert os_el.findtext("cmdline") == "console=ttyS0 root=/dev/vda rw quiet"
    assert os_el.find("boot") is None

    disks = root.findall("devices/disk")
    summary = [
        (
            d.get("type"),
            d.find("driver").get("type"),
            d.find("driver").get("cache"),
            d.find("source").get("pool"),
            d.find("source").get("volume"),
            d.find("target").get("dev"),
            d.find("target").get("bus"),
            d.find("readonly") is not None,
        )
        for d in disks
    ]
    assert summary == [
        ("volume", "qcow2", "writeback", "lvmss-pool", "lvmss-web-3-os.qcow2", "vda", "virtio", False),
        ("volume", "raw", "unsafe", "lvmss-pool", "lvmss-web-3-seed.iso", "vdb", "virtio", True),
    ]

    ifaces = root.findall("devices/interface")
    assert len(ifaces) == 1
    iface = ifaces[0]
    assert iface.get("type") == "network"
    assert iface.find("mac").get("address") == "52:54:00:12:01:0d"
    assert iface.find("source").get("network") == "lvmss-net"
    assert iface.find("model").get("type") == "virtio"

    serial = root.find("devices/serial")
    assert serial.get("type") == "pty" and serial.find("target").get("port") == "0"
    log = serial.find("log")
    assert log.get("file") == "/var/log/libvirt/qemu/lvmss-web-3-serial.log" and log.get("append") == "off"
    console = root.find("devices/console")
    assert console.get("type") == "pty" and console.find("target").get("type") == "serial"
    assert root.find("devices/memballoon").get("model") == "virtio"
    assert root.find("devices/rng/backend").text == "/dev/urandom"
    validate_with_libvirt(xml, "domain")


def test_kvm_domain_and_disk_boot() -> None:
    root = parse(build_domain_xml(instance(domain_type="kvm", kernel_path=None, initrd_path=None, serial_log=None)))
    assert root.get("type") == "kvm"
    assert root.find("cpu").get("mode") == "host-passthrough"
    assert root.find("os/kernel") is None and root.find("os/cmdline") is None
    assert root.find("os/boot").get("dev") == "hd"
    assert root.find("devices/serial/log") is None


def test_names_are_escaped_not_pasted() -> None:
    """Values go through lxml, so markup in them cannot change the document's structure."""
    root = parse(build_domain_xml(instance(cmdline="a=<b> & c='d'")))
    assert root.findtext("os/cmdline") == "a=<b> & c='d'"
    assert len(root.findall("os/*")) == 4


def test_probe_domain() -> None:
    xml = probe_domain_xml("lvmss-probe", "kvm", "/k/vmlinuz")
    root = parse(xml)
    assert root.get("type") == "kvm" and root.findtext("os/kernel") == "/k/vmlinuz"
    assert "panic=-1" in root.findtext("os/cmdline")
    assert root.findtext("on_reboot") == "destroy" and root.find("devices/disk") is None
    validate_with_libvirt(xml, "domain")


# -- networks, pools, volumes ------------------------------------------------------------------
def test_network_xml() -> None:
    xml = network_xml("lvmss-net", "lvbt1h1", "198.18.17.1", "255.255.255.0", "198.18.17.10", "198.18.17.250")
    root = parse(xml)
    assert root.findtext("name") == "lvmss-net"
    assert root.find("forward").get("mode") == "open", "no NAT: nothing a guest sends can leave the lab"
    bridge = root.find("bridge")
    assert (bridge.get("name"), bridge.get("stp"), bridge.get("delay")) == ("lvbt1h1", "off", "0")
    ip = root.find("ip")
    assert (ip.get("address"), ip.get("netmask")) == ("198.18.17.1", "255.255.255.0")
    rng = ip.find("dhcp/range")
    assert (rng.get("start"), rng.get("end")) == ("198.18.17.10", "198.18.17.250")
    assert root.find("ip/dhcp/host") is None
    validate_with_libvirt(xml, "network")


def test_dhcp_host_entry() -> None:
    el = parse(dhcp_host_xml("52:54:00:12:01:0d", "198.18.17.13", "web000003"))
    assert el.tag == "host"
    assert dict(el.attrib) == {"mac": "52:54:00:12:01:0d", "ip": "198.18.17.13", "name": "web000003"}


def test_pool_xml() -> None:
    xml = pool_xml("lvmss-pool", "/var/lib/libvirt/localvmss")
    root = parse(xml)
    assert root.get("type") == "dir" and root.findtext("name") == "lvmss-pool"
    assert root.findtext("target/path") == "/var/lib/libvirt/localvmss"
    validate_with_libvirt(xml, "storagepool")


def test_volume_xml_with_backing_store() -> None:
    xml = volume_xml("lvmss-web-3-os.qcow2", 2 << 30, "qcow2", "/pool/lvmss-img-base-abc-disk.qcow2")
    root = parse(xml)
    assert root.findtext("name") == "lvmss-web-3-os.qcow2"
    cap = root.find("capacity")
    assert cap.text == str(2 << 30) and cap.get("unit") == "bytes"
    assert root.find("target/format").get("type") == "qcow2"
    assert root.findtext("backingStore/path") == "/pool/lvmss-img-base-abc-disk.qcow2"
    assert root.find("backingStore/format").get("type") == "qcow2"
    validate_with_libvirt(xml, "storagevol")


def test_volume_xml_without_backing_store() -> None:
    root = parse(volume_xml("lvmss-web-3-seed.iso", 512, "raw"))
    assert root.find("target/format").get("type") == "raw"
    assert root.find("backingStore") is None
