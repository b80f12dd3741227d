"""Warm template clones: start an instance by restoring a healthy guest's saved memory.

``make_template`` saves a running, healthy guest (libvirt ``virDomainSave``: the domain is then
off) into a state volume and copies its OS disk into a template disk volume, so the template's
own domain and volumes may go. ``restore_clone`` gives one clone its own copy of the disk,
rewrites the save file's libvirt header XML (in place, or in a copy while another clone of the
template is being restored) to the clone's name, UUID, generation ID, metadata, disks, MAC and
serial log, restores it (running) and defines it persistent; the caller
then re-identifies the guest over the command channel (``reidentify``). Why it is done this way
and what was measured: docs/WARM-CLONES.md. Everything goes through libvirt volumes and calls,
so it works on a remote host (qemu+ssh) as on a local one.
"""

from __future__ import annotations

import copy
import ipaddress
import struct
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import fasteners
import libvirt

from localvmss.addressing import is_gateway_of
from localvmss.errors import GuestAgentError, GuestAgentUnavailable, NotFound, WarmCloneUnavailable
from localvmss.virt import domainxml, guestchannel
from localvmss.virt.host import Host, download_stream

# libvirt src/qemu/qemu_saveimage.h: char magic[16]; uint32 version, data_len, was_running,
# compressed (format), cookieOffset; uint32 unused[14]; then data_len bytes: the domain XML
# (NUL-terminated), the cookie XML from cookieOffset (relative to the XML's start), zero padding.
SAVE_MAGIC = b"LibvirtQemudSave"
SAVE_PARTIAL = b"LibvirtQemudPart"
SAVE_VERSION = 2
HEADER = struct.Struct("<16s5I56x")

# The parts of the saved XML that are the instance's identity, not the machine's ABI.
_ABI_CHECKS = (
    ("domain type", lambda r: r.get("type")),
    ("vCPUs", lambda r: r.findtext("vcpu")),
    ("memory", lambda r: _kib(r.find("memory"))),
    ("kernel", lambda r: r.findtext("os/kernel")),
    ("initrd", lambda r: r.findtext("os/initrd")),
    ("kernel command line", lambda r: r.findtext("os/cmdline")),
    ("disks", lambda r: [t.get("dev") for t in r.iterfind("devices/disk/target")]),
    ("network interfaces", lambda r: len(r.findall("devices/interface"))),
    ("command channel", lambda r: guestchannel.has_agent_channel(ET.tostring(r, encoding="unicode"))),
)


@dataclass(frozen=True)
class SaveImage:
    """A libvirt QEMU save file's header: its XML and cookie, and where the memory stream starts."""

    version: int
    data_len: int
    was_running: int
    compressed: int
    xml: str
    cookie: bytes

    @property
    def stream_offset(self) -> int:
        return HEADER.size + self.data_len


@dataclass(frozen=True)
class Template:
    """What ``restore_clone`` needs: the state and disk volumes in ``pool`` and the saved XML."""

    pool: str
    state_volume: str
    disk_volume: str
    saved_xml: str


def parse_save_header(data: bytes) -> SaveImage:
    """Read the header of a save file from its first bytes (at least HEADER.size + data_len)."""
    if len(data) < HEADER.size:
        raise WarmCloneUnavailable(f"not a libvirt save file: {len(data)} bytes are too short for its header")
    magic, version, data_len, was_running, compressed, cookie_offset = HEADER.unpack_from(data)
    if magic == SAVE_PARTIAL:
        raise WarmCloneUnavailable("the save file is incomplete (libvirt did not finish writing it)")
    if magic != SAVE_MAGIC:
        raise WarmCloneUnavailable("not a libvirt QEMU save file (wrong magic)")
    if version != SAVE_VERSION:
        raise WarmCloneUnavailable(f"save file version {version} is not the version {SAVE_VERSION} this code reads")
    if compressed != 0:
        raise WarmCloneUnavailable("the save file is compressed; templates are saved raw (save_image_format)")
    if len(data) < HEADER.size + data_len or not 0 <= cookie_offset <= data_len:
        raise WarmCloneUnavailable(f"the save file's header is truncated or inconsistent (data_len {data_len})")
    body = data[HEADER.size : HEADER.size + data_len]
    xml_end = cookie_offset or data_len
    xml = body[:xml_end].split(b"\0", 1)[0].decode()
    cookie = body[cookie_offset:].split(b"\0", 1)[0] if cookie_offset else b""
    return SaveImage(version, data_len, was_running, compressed, xml, cookie)


def build_save_header(image: SaveImage, xml: str) -> bytes:
    """The header bytes (HEADER.size + data_len, as long as the old one) with ``xml`` in it, so
    it can be written over the old header in place: the memory stream after it does not move."""
    xml_bytes = xml.encode() + b"\0"
    cookie = image.cookie + b"\0" if image.cookie else b""
    if len(xml_bytes) + len(cookie) > image.data_len:
        raise WarmCloneUnavailable(
            f"the clone's XML ({len(xml_bytes)} bytes) does not fit the save file's {image.data_len}-byte header"
        )
    cookie_offset = len(xml_bytes) if cookie else 0
    head = HEADER.pack(SAVE_MAGIC, image.version, image.data_len, image.was_running, image.compressed, cookie_offset)
    body = (xml_bytes + cookie).ljust(image.data_len, b"\0")
    return head + body


def _kib(el: ET.Element | None) -> int | None:
    if el is None or not el.text:
        return None
    factor = {"KiB": 1, "k": 1, "MiB": 1024, "M": 1024, "GiB": 1 << 20, "G": 1 << 20, "b": 0, "bytes": 0}
    unit = el.get("unit", "KiB")
    return int(el.text) * factor[unit] if factor.get(unit) else int(el.text) // 1024


def _child(parent: ET.Element, path: str, whose: str) -> ET.Element:
    """``parent.find(path)``, which libvirt's and build_domain_xml's documents always have."""
    el = parent.find(path)
    if el is None:
        raise WarmCloneUnavailable(f"the {whose} XML has no <{path}>")
    return el


def _insert_after(parent: ET.Element, anchor: ET.Element | None, new: ET.Element | None) -> None:
    """Put ``new`` right after ``anchor`` among ``parent``'s children (ElementTree has no
    ``addnext``); after the last child when there is no anchor."""
    if new is None:
        return
    children = list(parent)
    parent.insert(children.index(anchor) + 1 if anchor is not None else len(children), new)


def clone_xml(saved_xml: str, clone_xml_text: str) -> str:
    """The saved (template) XML with the clone's identity: name, UUID, metadata, disk sources,
    MACs and serial/console logs come from ``clone_xml_text`` (what ``build_domain_xml`` makes
    for the clone); everything that is ABI (PCI addresses, CPU model, machine type) stays as
    saved. WarmCloneUnavailable when the two are not the same machine (other image, size or
    devices): such a clone must boot cold."""
    saved = ET.fromstring(saved_xml)
    clone = ET.fromstring(clone_xml_text)
    for what, read in _ABI_CHECKS:
        if read(saved) != read(clone):
            raise WarmCloneUnavailable(
                f"the template differs from this instance in its {what}: {read(saved)} vs {read(clone)}"
            )
    out = ET.fromstring(saved_xml)
    _child(out, "name", "template's").text = clone.findtext("name")
    uuid_el = _child(out, "uuid", "template's")
    uuid_el.text = clone.findtext("uuid") or str(uuid.uuid4())
    genid = out.find("genid")
    if genid is not None:  # a generation ID of its own: the guest kernel reseeds its RNG from it
        genid.text = str(uuid.uuid4())
    old_meta = out.find("metadata")
    if old_meta is not None:
        out.remove(old_meta)
    new_meta = clone.find("metadata")
    if new_meta is not None:
        _insert_after(out, uuid_el, copy.deepcopy(new_meta))
    clone_disks = {_child(d, "target", "clone's disk").get("dev"): d for d in clone.iterfind("devices/disk")}
    for disk in out.iterfind("devices/disk"):
        source = clone_disks[_child(disk, "target", "template's disk").get("dev")]
        disk.set("type", source.get("type", "volume"))
        for tag in ("source", "backingStore"):
            for el in disk.findall(tag):
                disk.remove(el)
        _insert_after(disk, disk.find("driver"), copy.deepcopy(source.find("source")))
    for iface, theirs in zip(out.iterfind("devices/interface"), clone.iterfind("devices/interface"), strict=True):
        _child(iface, "mac", "template's interface").set(
            "address", _child(theirs, "mac", "clone's interface").get("address", "")
        )
    for tag in ("serial", "console"):
        log_file = clone.find(f"devices/{tag}/log")
        for el in out.iterfind(f"devices/{tag}"):
            for old in el.findall("log"):
                el.remove(old)
            if log_file is not None:
                el.insert(0, copy.deepcopy(log_file))
    return domainxml.to_text(out)


# ---------------------------------------------------------------------------------------------
# libvirt side


def _pool_dir(pool: libvirt.virStoragePool) -> str:
    path = ET.fromstring(pool.XMLDesc(0)).findtext("target/path")
    if not path:
        raise WarmCloneUnavailable(f"pool {pool.name()} has no directory; templates need a dir pool")
    return path


def _clone_volume(pool: libvirt.virStoragePool, source: str, name: str, fmt: str) -> libvirt.virStorageVol:
    """A full copy of volume ``source`` made on the host (virStorageVolCreateXMLFrom); an existing
    ``name`` is replaced: a clone's disk must be exactly the template's."""
    try:
        pool.storageVolLookupByName(name).delete(0)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
            raise
    src = pool.storageVolLookupByName(source)
    xml = domainxml.volume_xml(name, int(src.info()[1]), fmt)
    return pool.createXMLFrom(xml, src, 0)


def _read_head(conn: libvirt.virConnect, vol: libvirt.virStorageVol, length: int) -> bytes:
    chunks: list[bytes] = []
    download_stream(conn, vol, length, chunks.append)
    return b"".join(chunks)


def _write_head(conn: libvirt.virConnect, vol: libvirt.virStorageVol, data: bytes) -> None:
    """Overwrite the first bytes of a volume in place (an upload with an offset does not truncate)."""
    stream = conn.newStream(0)
    vol.upload(stream, 0, len(data), 0)
    view = memoryview(data)
    sent = 0

    def source(_s: libvirt.virStream, n: int, _o: object) -> bytes:
        nonlocal sent
        chunk = bytes(view[sent : sent + n])
        sent += len(chunk)
        return chunk

    try:
        stream.sendAll(source, None)
        stream.finish()
    except BaseException:
        stream.abort()
        raise


def _header(conn: libvirt.virConnect, vol: libvirt.virStorageVol) -> SaveImage:
    head = _read_head(conn, vol, HEADER.size)
    data_len = HEADER.unpack_from(head)[2] if len(head) >= HEADER.size else 0
    return parse_save_header(_read_head(conn, vol, HEADER.size + data_len))


def make_template(host: Host, pool: str, domain: str, template: str) -> Template:
    """Save the running, healthy ``domain`` as template ``template`` in ``pool``.

    Makes ``<template>.state`` (libvirt's save file: the guest's memory and device state; the
    domain is then off, and stays defined) and ``<template>-disk.qcow2`` (a full copy of the
    domain's OS disk as it was at the save). Existing volumes of those names are replaced.
    The guest must have been ready (serving) when saved: clones resume exactly there.
    """

    def make(conn: libvirt.virConnect) -> Template:
        dom = conn.lookupByName(domain)
        if dom.state()[0] != libvirt.VIR_DOMAIN_RUNNING:
            raise WarmCloneUnavailable(f"{domain} is not running; a template is saved from a running, ready guest")
        root = ET.fromstring(dom.XMLDesc(0))
        os_disk = root.find("devices/disk/target[@dev='vda']/..")
        source = os_disk.find("source") if os_disk is not None else None
        if source is None or source.get("pool") != pool or not source.get("volume"):
            raise WarmCloneUnavailable(f"{domain}'s OS disk is not a volume of pool {pool}")
        p = conn.storagePoolLookupByName(pool)
        state_name = f"{template}.state"
        try:
            p.storageVolLookupByName(state_name).delete(0)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                raise
        dom.save(f"{_pool_dir(p)}/{state_name}")  # flushes the disk; the domain is off afterwards
        p.refresh(0)
        disk_name = f"{template}-disk.qcow2"
        _clone_volume(p, str(source.get("volume")), disk_name, "qcow2")
        image = _header(conn, p.storageVolLookupByName(state_name))
        if not image.was_running:
            raise WarmCloneUnavailable(f"{domain} was not running when saved")
        return Template(pool, state_name, disk_name, image.xml)

    return host._call(
        f"saving {domain} as template {template}", lambda _c: host._on_own_connection(make), idempotent=False
    )


@dataclass
class _StateUse:
    """How one template's volumes on one host are in use. libvirt refuses to upload into or
    delete a volume while a copy is made from it ("volume ... is still in use"), so the in-place
    header rewrite and the deletion (``io`` write) wait for copies in flight (``io`` read) and
    hold new ones off; copies run side by side. ``in_place`` is held by the one restore that
    uses the save file itself, and by a deletion."""

    in_place: threading.Lock = field(default_factory=threading.Lock)
    io: fasteners.ReaderWriterLock = field(default_factory=fasteners.ReaderWriterLock)


_STATE_USES: dict[tuple[str, str, str], _StateUse] = {}
_STATE_USES_GUARD = threading.Lock()


def _state_use(uri: str, template: Template) -> _StateUse:
    """The use record of one template's save file on one host (shared by all its restores)."""
    with _STATE_USES_GUARD:
        return _STATE_USES.setdefault((uri, template.pool, template.state_volume), _StateUse())


def _rewrite_header(conn: libvirt.virConnect, state: libvirt.virStorageVol, restore_xml: str, name: str) -> None:
    """Make ``state``'s save header describe the clone ``name`` (its XML is ``restore_xml``)."""
    try:
        _write_head(conn, state, build_save_header(_header(conn, state), restore_xml))
    except libvirt.libvirtError as exc:
        raise WarmCloneUnavailable(f"{name} could not be restored from its template: {exc}") from None


def _restore(conn: libvirt.virConnect, state: libvirt.virStorageVol, name: str) -> float:
    """Restore the clone from ``state``, running; the seconds libvirt took."""
    started = time.monotonic()
    try:
        conn.restoreFlags(state.path(), None, libvirt.VIR_DOMAIN_SAVE_RUNNING)
    except libvirt.libvirtError as exc:
        raise WarmCloneUnavailable(f"{name} could not be restored from its template: {exc}") from None
    return time.monotonic() - started


def restore_clone(host: Host, template: Template, clone_domain_xml: str) -> float:
    """Start the clone described by ``clone_domain_xml`` (``build_domain_xml`` of the new
    instance: its name, disks, seed, MAC, metadata) from ``template``, running; returns the
    seconds libvirt took to restore it.

    The clone's OS volume (the XML's vda) becomes a copy of the template disk, replacing any
    volume of that name; its seed volume must exist. One restore at a time uses the template's
    save file itself (its header rewritten); others meanwhile use a copy of it. The domain is made persistent with the
    clone's XML. Afterwards the guest still has the template's identity until ``reidentify``.
    WarmCloneUnavailable when the template does not fit the instance (fall back to a cold boot).
    """
    clone = ET.fromstring(clone_domain_xml)
    name = clone.findtext("name") or ""
    os_source = clone.find("devices/disk/target[@dev='vda']/../source")
    if os_source is None or os_source.get("pool") != template.pool:
        raise WarmCloneUnavailable(f"{name}'s OS disk is not a volume of pool {template.pool}")
    restore_xml = clone_xml(template.saved_xml, clone_domain_xml)

    def restore(conn: libvirt.virConnect) -> float:
        p = conn.storagePoolLookupByName(template.pool)
        use = _state_use(host.uri, template)
        with use.io.read_lock():
            _clone_volume(p, template.disk_volume, str(os_source.get("volume")), "qcow2")
        # The template's own save file, its header XML rewritten in place for this clone (the
        # memory stream after it never moves), saves copying the whole state: while no other
        # clone of this template is being restored (the header is this clone's until libvirt has
        # read it, and QEMU has read the stream once the restore returns). Clones restored
        # meanwhile each get their own copy, so a scale-out by N still restores in parallel.
        if use.in_place.acquire(blocking=False):
            try:
                state = p.storageVolLookupByName(template.state_volume)
                with use.io.write_lock():
                    _rewrite_header(conn, state, restore_xml, name)
                took = _restore(conn, state, name)
            finally:
                use.in_place.release()
        else:
            with use.io.read_lock():
                state = _clone_volume(p, template.state_volume, f"{name}.restore-state", "raw")
            try:
                _rewrite_header(conn, state, restore_xml, name)
                took = _restore(conn, state, name)
            finally:
                state.delete(0)
        # Persistent, like every instance (the next boot is a cold boot of the clone's own XML).
        live = ET.fromstring(conn.lookupByName(name).XMLDesc(0))
        clone_def = ET.fromstring(clone_domain_xml)
        uuid_el = clone_def.find("uuid")
        if uuid_el is None:
            uuid_el = ET.Element("uuid")
            _insert_after(clone_def, clone_def.find("name"), uuid_el)
        uuid_el.text = live.findtext("uuid")
        conn.defineXML(domainxml.to_text(clone_def, pretty=False))
        return took

    return host._call(
        f"restoring {name} from a template", lambda _c: host._on_own_connection(restore), idempotent=False
    )


def identity_line(
    instance_id: str,
    hostname: str,
    mac: str,
    address: str | None = None,
    gateway: str | None = None,
    static: bool = False,
) -> str:
    """The ``identity`` command; with ``address`` ("ip/prefix") and ``gateway`` the guest sets
    its address at once instead of waiting for a DHCP lease; ``static``: and keeps it, asking
    DHCP for nothing (the host's static addresses, ``localvmss.addressing``). ValueError for a
    bad address."""
    words = ["identity", instance_id, hostname, mac.lower()]
    if (address is None) != (gateway is None):
        raise ValueError("a clone's address and gateway go together: give both or neither")
    if static and address is None:
        raise ValueError("a static clone address needs the address and gateway")
    if address is not None and gateway is not None:
        if "/" not in address:
            raise ValueError(f"a clone's address needs its prefix length (a.b.c.d/nn), not {address!r}")
        try:
            iface = ipaddress.IPv4Interface(address)
            gw = ipaddress.IPv4Address(gateway)
        except ValueError as exc:
            raise ValueError(f"invalid clone address or gateway: {exc}") from None
        if not is_gateway_of(iface, gw):
            raise ValueError(f"gateway {gw} is not another address of {iface.network}")
        words += [iface.with_prefixlen, str(gw)] + (["static"] if static else [])
    return " ".join(words)


def reidentify(
    host: Host,
    name: str,
    instance_id: str,
    hostname: str,
    mac: str,
    timeout_s: float = 10.0,
    *,
    address: str | None = None,
    gateway: str | None = None,
    static: bool = False,
) -> float:
    """Give a restored clone its own identity (``identity`` over the channel), then set its
    clock (the template's clock stood still since the save); returns the clock skew left.

    ``address`` ("ip/prefix", the clone's DHCP reservation or static address) and ``gateway``: the guest takes
    that address at once and lets DHCP confirm it in the background, so it serves on it without
    waiting for a lease (``static``: and asks DHCP for nothing). WarmCloneUnavailable if the
    guest cannot be re-identified: destroy it and boot cold."""
    line = identity_line(instance_id, hostname, mac, address, gateway, static)
    try:
        # One stream for both: the identity, then the clock stamped the moment it is sent.
        identity, clock = host.guest_conversation(name, [line, lambda: f"clock {time.time():.6f}"], timeout_s)
        guestchannel.check_reply("identity", identity)
        return guestchannel.parse_clock_reply(guestchannel.check_reply("clock", clock)) - time.time()
    except (GuestAgentError, GuestAgentUnavailable) as exc:
        raise WarmCloneUnavailable(f"{name} could not take its own identity: {exc.message}") from None


def delete_template(host: Host, template: Template) -> None:
    """Remove a template's volumes; ones already gone count as removed. Waits for restores
    from it in flight (libvirt refuses to delete a volume being copied)."""
    use = _state_use(host.uri, template)
    with use.in_place, use.io.write_lock():
        for volume in (template.state_volume, template.disk_volume):
            try:
                host.delete_volume(template.pool, volume)
            except NotFound:
                pass
