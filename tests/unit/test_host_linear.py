"""A steady host costs the reconciler no per-domain libvirt call, and a DHCP reservation is
one update call, not a read and parse of the whole network: ``Host`` on libvirt's in-process
test driver (real libvirt, no guests), with libvirt's calls counted."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from typing import Any

import libvirt
import pytest

from localvmss.model import OBJECT_PREFIX, PowerState
from localvmss.virt import domainxml
from localvmss.virt.domainxml import InstanceDomain, Ownership
from localvmss.virt.host import Host

NETWORK = "lvmss-linear"


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every call of a domain's or network's method, counted (names and UUIDs are local)."""
    counted: Counter[str] = Counter()
    for cls in (libvirt.virDomain, libvirt.virNetwork):
        for name, fn in list(vars(cls).items()):
            if name.startswith("_") or name in ("name", "UUIDString", "UUID", "connect") or not callable(fn):
                continue

            def wrapper(*args: Any, __fn: Any = fn, __name: str = f"{cls.__name__}.{name}", **kw: Any) -> Any:
                counted[__name] += 1
                return __fn(*args, **kw)

            monkeypatch.setattr(cls, name, wrapper)
    return counted


@pytest.fixture
def host() -> Iterator[Host]:
    keep = libvirt.open("test:///default")  # the test driver's state lives while a connection does
    net = keep.networkDefineXML(
        domainxml.network_xml(NETWORK, "lvlin0", "198.18.0.1", "255.255.255.0", "198.18.0.10", "198.18.0.250")
    )
    net.create()
    h = Host("t", "test:///default")
    yield h
    for dom in keep.listAllDomains(0):
        if dom.name().startswith(OBJECT_PREFIX):
            if dom.isActive():
                dom.destroy()
            dom.undefine()
    net.destroy()
    net.undefine()
    h.close()
    keep.close()


def define(host: Host, name: str, instance_id: int, model_version: int = 1, uuid: str | None = None) -> None:
    xml = domainxml.build_domain_xml(
        InstanceDomain(
            name=name,
            domain_type="test",
            vcpus=1,
            memory_mib=64,
            pool="default-pool",
            os_volume=f"{name}-os.qcow2",
            seed_volume=f"{name}-seed.iso",
            network=NETWORK,
            mac="52:54:00:00:00:01",
            ownership=Ownership("web", instance_id, model_version, 0, "scaleSetVM"),
        )
    )
    if uuid is not None:  # a redefinition of the same domain
        root = ET.fromstring(xml)
        el = root.find("uuid")
        (el if el is not None else ET.SubElement(root, "uuid")).text = uuid
        xml = ET.tostring(root, encoding="unicode")
    host.define_domain(xml)


def undefine(name: str) -> None:
    """(The test driver refuses ``Host.undefine``'s NVRAM flag.)"""
    conn = libvirt.open("test:///default")
    try:
        conn.lookupByName(name).undefine()
    finally:
        conn.close()


def test_listing_a_steady_host_reads_no_domain_one_by_one(host: Host, calls: Counter[str]) -> None:
    for i in range(5):
        define(host, f"{OBJECT_PREFIX}web-{i}", i)
    host.start(f"{OBJECT_PREFIX}web-0")
    first = {d.name: d for d in host.owned_domains()}
    assert calls["virDomain.XMLDesc"] == 5, "each new definition is read once"
    assert first[f"{OBJECT_PREFIX}web-0"].power_state is PowerState.RUNNING
    assert first[f"{OBJECT_PREFIX}web-1"].power_state is PowerState.STOPPED
    calls.clear()
    again = {d.name: d for d in host.owned_domains()}
    assert dict(calls) == {}, "a steady host: the bulk listing only"
    assert again == first


def test_a_redefined_domain_is_read_again(host: Host, calls: Counter[str]) -> None:
    name = f"{OBJECT_PREFIX}web-7"
    define(host, name, 7, model_version=1)
    assert [d.ownership.model_version for d in host.owned_domains()] == [1]
    uuid = ET.fromstring(host.domain_xml(name)).findtext("uuid")
    define(host, name, 7, model_version=2, uuid=uuid)  # same name and UUID, new metadata
    assert [d.ownership.model_version for d in host.owned_domains()] == [2]
    undefine(name)
    define(host, name, 7, model_version=3)  # a new definition (a new UUID)
    assert [d.ownership.model_version for d in host.owned_domains()] == [3]
    undefine(name)
    assert host.owned_domains() == []


def test_reservations_are_one_update_each_and_match_the_network(host: Host, calls: Counter[str]) -> None:
    host.network_layout(NETWORK)
    calls.clear()
    for n in range(10, 20):
        host.reserve_address(NETWORK, f"52:54:00:00:00:{n:02x}", f"198.18.0.{n}", f"web{n}")
    host.reserve_address(NETWORK, "52:54:00:00:00:0a", "198.18.0.10", "web10")  # the same again: nothing
    host.release_address(NETWORK, "52:54:00:00:00:0B")  # MACs compare case-insensitively
    host.release_address(NETWORK, "52:54:00:00:00:ff")  # never reserved: released already
    assert calls == Counter({"virNetwork.update": 11, "virNetwork.XMLDesc": 1}), "a miss is looked for once"
    reserved = host.network_layout(NETWORK)[4]
    assert sorted(reserved) == sorted((f"52:54:00:00:00:{n:02x}", f"198.18.0.{n}") for n in range(10, 20) if n != 11)


def test_an_entry_made_behind_its_back_is_found_and_released(host: Host) -> None:
    host.network_layout(NETWORK)
    other = libvirt.open("test:///default")
    try:
        other.networkLookupByName(NETWORK).update(
            libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
            libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST,
            -1,
            domainxml.dhcp_host_xml("52:54:00:00:00:30", "198.18.0.48", "elsewhere"),
            libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG,
        )
    finally:
        other.close()
    host.reserve_address(NETWORK, "52:54:00:00:00:30", "198.18.0.48", "elsewhere")  # identical: fine
    host.release_address(NETWORK, "52:54:00:00:00:30")
    assert host.network_layout(NETWORK)[4] == []
