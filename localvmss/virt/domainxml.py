"""Domain XML for instances, built and read back with the standard library's ElementTree
(never by string pasting).

``build_domain_xml`` turns an ``InstanceDomain`` into libvirt domain XML; ``read_ownership``
parses the ``<metadata>`` block back, so which set and instance a domain belongs to can be read
from libvirt itself (the reconciler uses this to find orphans).

ElementTree rather than lxml: lxml cost the daemon about 5 MiB resident for a few dozen
elements a minute. Values are element text or attribute values, escaped by the serializer.
Parsing (here and wherever ``localvmss.virt`` reads libvirt's XML) is expat's: it fetches no
external entity or DTD and refuses entity-expansion bombs (expat 2.4+).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from localvmss.model import METADATA_NS

# The ownership block is written with this prefix (ElementTree declares it on the root element;
# libvirt keeps the namespace, and re-serializes the block with the declaration on it).
METADATA_PREFIX = "lvmss"
ET.register_namespace(METADATA_PREFIX, METADATA_NS)


def to_text(root: ET.Element, pretty: bool = True) -> str:
    """``root`` as an XML document string; ``pretty`` indents it (two spaces, in place)."""
    if pretty:
        ET.indent(root, space="  ")
        return ET.tostring(root, encoding="unicode") + "\n"
    return ET.tostring(root, encoding="unicode")


@dataclass(frozen=True)
class NumaPinning:
    """Pin vCPUs and memory to one NUMA cell (fault domains mapped to cells)."""

    cell: int
    cpus: tuple[int, ...]


@dataclass(frozen=True)
class Ownership:
    scale_set: str
    instance_id: int
    model_version: int
    fault_domain: int = 0
    kind: str = "scaleSetVM"  # or "vm" for Flexible-mode VMs


@dataclass(frozen=True)
class InstanceDomain:
    name: str
    domain_type: str  # "kvm" or "qemu"
    vcpus: int
    memory_mib: int
    pool: str
    os_volume: str
    seed_volume: str
    network: str
    mac: str
    kernel_path: str | None = None
    initrd_path: str | None = None
    cmdline: str | None = None
    serial_log: str | None = None
    numa: NumaPinning | None = None
    ownership: Ownership | None = None
    extra_labels: dict[str, str] = field(default_factory=dict)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k.rstrip("_"): v for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


def _volume_disk(devices: ET.Element, pool: str, volume: str, fmt: str, target: str) -> None:
    disk = _sub(devices, "disk", type="volume", device="disk")
    _sub(disk, "driver", name="qemu", type=fmt, cache="unsafe" if fmt == "raw" else "writeback")
    _sub(disk, "source", pool=pool, volume=volume)
    _sub(disk, "target", dev=target, bus="virtio")
    if fmt == "raw":
        _sub(disk, "readonly")


def build_domain_xml(spec: InstanceDomain) -> str:
    """Render libvirt domain XML for one instance."""
    dom = ET.Element("domain", type=spec.domain_type)
    _sub(dom, "name", spec.name)
    # A VM generation ID (QEMU's vmgenid device; Linux's VMGENID driver reseeds its RNG when it
    # changes): libvirt gives the domain a new one whenever it is restored from saved memory, so
    # a warm clone or a Saved standby instance never continues the random stream of its past.
    _sub(dom, "genid")
    if spec.ownership is not None:
        meta = _sub(dom, "metadata")
        own = ET.SubElement(meta, f"{{{METADATA_NS}}}instance")
        for tag, value in (
            ("scaleSet", spec.ownership.scale_set),
            ("instanceId", str(spec.ownership.instance_id)),
            ("modelVersion", str(spec.ownership.model_version)),
            ("faultDomain", str(spec.ownership.fault_domain)),
            ("kind", spec.ownership.kind),
        ):
            ET.SubElement(own, f"{{{METADATA_NS}}}{tag}").text = value
    _sub(dom, "memory", str(spec.memory_mib), unit="MiB")
    _sub(dom, "currentMemory", str(spec.memory_mib), unit="MiB")
    vcpu = _sub(dom, "vcpu", str(spec.vcpus), placement="static")
    if spec.numa is not None:
        cpuset = ",".join(str(c) for c in spec.numa.cpus)
        vcpu.set("cpuset", cpuset)
        tune = _sub(dom, "cputune")
        for i in range(spec.vcpus):
            _sub(tune, "vcpupin", vcpu=str(i), cpuset=cpuset)
        numatune = _sub(dom, "numatune")
        _sub(numatune, "memory", mode="strict", nodeset=str(spec.numa.cell))
    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine="pc")
    if spec.kernel_path:
        _sub(os_el, "kernel", spec.kernel_path)
        if spec.initrd_path:
            _sub(os_el, "initrd", spec.initrd_path)
        if spec.cmdline:
            _sub(os_el, "cmdline", spec.cmdline)
    else:
        _sub(os_el, "boot", dev="hd")
    features = _sub(dom, "features")
    _sub(features, "acpi")
    if spec.domain_type == "kvm":
        _sub(dom, "cpu", mode="host-passthrough")
    _sub(dom, "clock", offset="utc")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")
    devices = _sub(dom, "devices")
    _volume_disk(devices, spec.pool, spec.os_volume, "qcow2", "vda")
    _volume_disk(devices, spec.pool, spec.seed_volume, "raw", "vdb")
    iface = _sub(devices, "interface", type="network")
    _sub(iface, "mac", address=spec.mac)
    _sub(iface, "source", network=spec.network)
    _sub(iface, "model", type="virtio")
    serial = _sub(devices, "serial", type="pty")
    if spec.serial_log:
        _sub(serial, "log", file=spec.serial_log, append="off")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    balloon = _sub(devices, "memballoon", model="virtio")
    _sub(balloon, "stats", period="5")
    rng = _sub(devices, "rng", model="virtio")
    _sub(rng, "backend", "/dev/urandom", model="random")
    _agent_channel(devices)
    return to_text(dom)


# The virtio-serial port the guest's command service listens on (images/guest/.../channel); the
# host reaches it with virDomainOpenChannel (virt/guestchannel.py), also over qemu+ssh.
AGENT_CHANNEL = "org.localvmss.agent.0"


def _agent_channel(devices: ET.Element) -> None:
    """A unix channel without a path: libvirt makes the socket in its own per-domain directory."""
    channel = _sub(devices, "channel", type="unix")
    _sub(channel, "target", type="virtio", name=AGENT_CHANNEL)


def read_ownership(domain_xml: str) -> Ownership | None:
    """The localvmss ownership block of a domain, or None if the domain is not ours."""
    root = ET.fromstring(domain_xml)
    own = root.find(f"metadata/{{{METADATA_NS}}}instance")
    if own is None:
        return None

    def text(tag: str, default: str = "") -> str:
        el = own.find(f"{{{METADATA_NS}}}{tag}")
        return el.text or default if el is not None else default

    try:
        return Ownership(
            scale_set=text("scaleSet"),
            instance_id=int(text("instanceId", "-1")),
            model_version=int(text("modelVersion", "0")),
            fault_domain=int(text("faultDomain", "0")),
            kind=text("kind", "scaleSetVM"),
        )
    except ValueError:
        return None


def read_macs(domain_xml: str) -> list[str]:
    """MAC addresses of a domain's network interfaces, lower case."""
    root = ET.fromstring(domain_xml)
    return [m.get("address", "").lower() for m in root.iterfind("devices/interface/mac") if m.get("address")]


def network_xml(name: str, bridge: str, gateway: str, netmask: str, dhcp_start: str, dhcp_end: str) -> str:
    """A routed-to-nowhere network: bridge + dnsmasq DHCP, no NAT (``forward mode='open'``).

    'open' adds no firewall rules, so traffic from the rack reaches guests, and with no default
    route in a lab namespace nothing a guest sends can leave it.
    """
    net = ET.Element("network")
    _sub(net, "name", name)
    _sub(net, "forward", mode="open")
    _sub(net, "bridge", name=bridge, stp="off", delay="0")
    ip = _sub(net, "ip", address=gateway, netmask=netmask)
    dhcp = _sub(ip, "dhcp")
    _sub(dhcp, "range", start=dhcp_start, end=dhcp_end)
    return to_text(net)


def dhcp_host_xml(mac: str, ip: str, name: str) -> str:
    return to_text(ET.Element("host", mac=mac, ip=ip, name=name), pretty=False)


def pool_xml(name: str, path: str) -> str:
    pool = ET.Element("pool", type="dir")
    _sub(pool, "name", name)
    target = _sub(pool, "target")
    _sub(target, "path", path)
    return to_text(pool)


def volume_xml(name: str, capacity_bytes: int, fmt: str, backing_path: str | None = None) -> str:
    """A volume; with ``backing_path`` a qcow2 overlay whose backing store is that volume (no copy)."""
    vol = ET.Element("volume")
    _sub(vol, "name", name)
    _sub(vol, "capacity", str(capacity_bytes), unit="bytes")
    target = _sub(vol, "target")
    _sub(target, "format", type=fmt)
    if backing_path is not None:
        backing = _sub(vol, "backingStore")
        _sub(backing, "path", backing_path)
        _sub(backing, "format", type="qcow2")
    return to_text(vol)


def probe_domain_xml(name: str, domain_type: str, kernel_path: str) -> str:
    """A disk-less guest whose kernel panics (no root) and reboots, which ends the domain.

    Reaching that panic proves the accelerator runs a real Linux kernel; a hang proves it does not.
    """
    dom = ET.Element("domain", type=domain_type)
    _sub(dom, "name", name)
    _sub(dom, "memory", "128", unit="MiB")
    _sub(dom, "vcpu", "1")
    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine="pc")
    _sub(os_el, "kernel", kernel_path)
    _sub(os_el, "cmdline", "console=ttyS0 panic=-1 quiet")
    if domain_type == "kvm":
        _sub(dom, "cpu", mode="host-passthrough")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "destroy")
    _sub(dom, "on_crash", "destroy")
    devices = _sub(dom, "devices")
    serial = _sub(devices, "serial", type="null")
    _sub(serial, "target", port="0")
    _sub(devices, "memballoon", model="none")
    return to_text(dom)
