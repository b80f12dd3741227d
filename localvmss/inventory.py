"""The hosts localvmss places instances on, and the images it has put on them.

Holds one ``Host`` connection per configured host, prepares each host's storage pool, checks
that each host's network has a DHCP range, chooses the accelerator per host with a real probe,
and uploads base images (disk, kernel, initrd) into every host's pool as libvirt volumes, so
remote hosts need nothing copied by hand.

Images come in two forms: a directory with ``image.json`` (the busybox base image: a disk plus
a kernel and initrd booted directly) or a single disk that boots itself (a cloud image, checked
with ``qemu-img info`` and recorded with a manifest made here). Each records where its guest
serves Prometheus metrics (``guest_metrics``), which the guest scrape targets follow.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localvmss.addressing import AddressPlan, address_plan
from localvmss.config import DaemonConfig, HostConfig
from localvmss.errors import Conflict, HostBusy, HostUnavailable, InvalidSpec, LocalVMSSError, NotFound
from localvmss.hosturi import check_api_host_uri
from localvmss.model import OBJECT_PREFIX, validate_name
from localvmss.store import HostRow, Store
from localvmss.virt.accel import probe_accelerator
from localvmss.virt.host import Host, HostCapacity

log = logging.getLogger(__name__)

MANIFEST = "image.json"
DISK_FORMATS = ("qcow2", "raw")
QEMU_IMG_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class GuestMetrics:
    """Where an image's guests serve Prometheus metrics (scraped as http://IP:port/path)."""

    port: int
    path: str

    def as_json(self) -> dict[str, Any]:
        return {"port": self.port, "path": self.path}


# The base image's busybox CGI (images/README.md), and node_exporter's default, which cloud
# images (imported as a single disk) are taken to run.
DIRECTORY_GUEST_METRICS = GuestMetrics(80, "/cgi-bin/metrics")
DISK_GUEST_METRICS = GuestMetrics(9100, "/metrics")
BOOT_DIR = Path("/boot")  # where the accelerator probe finds a kernel when no image has one


def check_guest_metrics(value: object, what: str = "guestMetrics") -> dict[str, Any]:
    """The fields of a guest-metrics override ({"port"?: int, "path"?: "/..."}); raises InvalidSpec.

    The path goes into Prometheus's ``__metrics_path__``: an absolute URL path of printable ASCII
    without a query, fragment or spaces."""
    usage = f'{what} takes {{"port": 1-65535, "path": "/metrics"}} (either may be left out)'
    if not isinstance(value, dict) or not value or set(value) - {"port", "path"}:
        raise InvalidSpec(usage)
    out: dict[str, Any] = {}
    if "port" in value:
        port = value["port"]
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise InvalidSpec(f"{what}.port {port!r} must be a whole number from 1 to 65535")
        out["port"] = port
    if "path" in value:
        path = value["path"]
        if (
            not isinstance(path, str)
            or not path.startswith("/")
            or len(path) > 256
            or not path.isascii()
            or any(not ch.isprintable() or ch in " ?#\\" for ch in path)
        ):
            raise InvalidSpec(
                f"{what}.path {path!r} must be an absolute URL path such as /metrics (printable ASCII, "
                "no spaces, query or fragment, at most 256 characters)"
            )
        out["path"] = path
    return out


def resolve_guest_metrics(default: GuestMetrics, overrides: dict[str, Any] | None) -> GuestMetrics:
    """``default`` with the fields of a checked override replaced."""
    return GuestMetrics(**{**default.as_json(), **(overrides or {})})


def guest_metrics_of(manifest: dict[str, Any]) -> GuestMetrics:
    """The recorded endpoint of an image; images recorded before there was one are base images."""
    recorded = manifest.get("guest_metrics")
    if isinstance(recorded, dict):
        try:
            return resolve_guest_metrics(DIRECTORY_GUEST_METRICS, check_guest_metrics(recorded))
        except InvalidSpec:
            log.warning("image %s records unusable guest_metrics %r; using the default", manifest.get("name"), recorded)
    return DIRECTORY_GUEST_METRICS


@dataclass(frozen=True)
class DiskInfo:
    """What ``qemu-img info`` says about a disk that is to be imported."""

    format: str  # one of DISK_FORMATS
    virtual_size: int


def parse_disk_info(path: str, info_json: str) -> DiskInfo:
    """Check ``qemu-img info --output=json`` of ``path``: a standalone qcow2 or raw disk. Raises
    InvalidSpec saying what is wrong with the file (one line)."""
    try:
        info = json.loads(info_json)
    except json.JSONDecodeError:
        info = None
    if not isinstance(info, dict):
        raise InvalidSpec(f"{path}: qemu-img info gave no readable answer")
    fmt = info.get("format")
    if fmt not in DISK_FORMATS:
        raise InvalidSpec(
            f"{path} is a {fmt} disk; localvmss imports qcow2 or raw disks "
            f"(convert it: qemu-img convert -O qcow2 {path} disk.qcow2)"
        )
    backing = info.get("backing-filename") or info.get("full-backing-filename")
    if backing:
        raise InvalidSpec(
            f"{path} has a backing file ({backing}); import a standalone disk "
            f"(qemu-img convert -O qcow2 {path} disk.qcow2 flattens the chain)"
        )
    if info.get("encrypted"):
        raise InvalidSpec(f"{path} is encrypted; localvmss cannot boot encrypted base disks")
    specific = info.get("format-specific")
    data = specific.get("data") if isinstance(specific, dict) else None
    if isinstance(data, dict):
        if data.get("corrupt"):
            raise InvalidSpec(f"{path} is marked corrupt; repair it (qemu-img check -r all) or rebuild it")
        if data.get("data-file"):
            raise InvalidSpec(
                f"{path} keeps its data in an external file ({data['data-file']}); import a self-contained qcow2"
            )
    size = info.get("virtual-size")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise InvalidSpec(f"{path} is empty (virtual size {size!r}); it is not a disk")
    if fmt == "raw" and size % 512:
        raise InvalidSpec(f"{path} is not a disk: its size ({size} bytes) is not a whole number of 512-byte sectors")
    return DiskInfo(str(fmt), size)


def check_boot_sector(path: str, first_sector: bytes) -> None:
    """A raw file is taken for a self-booting disk only if it starts with an MBR (the 0x55AA boot
    signature, which GPT disks carry in their protective MBR too): qemu-img calls any file raw."""
    if len(first_sector) < 512 or first_sector[510:512] != b"\x55\xaa":
        raise InvalidSpec(
            f"{path} is not a disk that boots itself: its first sector has no MBR boot signature "
            "(no MBR or GPT partition table)"
        )


def _qemu_img() -> str:
    found = shutil.which("qemu-img", path="/usr/local/bin:/usr/bin:/bin")
    if found is None:
        raise InvalidSpec("qemu-img not found on the daemon's machine; install it: apt-get install qemu-utils")
    return found


def inspect_disk(path: Path) -> DiskInfo:
    """Check a disk file before import (qemu-img runs without a shell); raises InvalidSpec."""
    if not path.exists():
        raise InvalidSpec(f"disk file {path} does not exist")
    if path.is_dir():
        raise InvalidSpec(f"{path} is a directory; import an image directory as sourceDirectory, not sourceFile")
    if not path.is_file():
        raise InvalidSpec(f"{path} is not a regular file")
    try:
        done = subprocess.run(
            [_qemu_img(), "info", "--output=json", str(path)],
            capture_output=True,
            text=True,
            timeout=QEMU_IMG_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise InvalidSpec(f"{path}: qemu-img info did not answer within {QEMU_IMG_TIMEOUT_S:.0f} s") from None
    if done.returncode != 0:
        lines = (done.stderr.strip() or done.stdout.strip()).splitlines()
        reason = lines[-1] if lines else f"exit status {done.returncode}"
        raise InvalidSpec(f"{path} cannot be read as a disk image: {reason}")
    info = parse_disk_info(str(path), done.stdout)
    if info.format == "raw":
        with open(path, "rb") as fh:
            check_boot_sector(str(path), fh.read(512))
    return info


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def disk_manifest(
    name: str, disk: Path, digest: str, info: DiskInfo, source: Path, metrics: GuestMetrics
) -> dict[str, Any]:
    """The manifest recorded for a self-booting disk: no kernel, so the domain boots from the disk
    through its firmware (``<boot dev='hd'/>``)."""
    return {
        "name": name,
        "format": "qcow2",
        "disk": disk.name,
        "files": {disk.name: digest},
        "virtual_size_bytes": info.virtual_size,
        "boot": "disk",
        "source_file": str(source),
        "source_format": info.format,
        "guest_metrics": metrics.as_json(),
    }


@dataclass(frozen=True)
class ImageVolumes:
    disk: str
    kernel: str | None
    initrd: str | None
    cmdline: str | None


def newest_kernel(boot: Path) -> Path | None:
    """The newest readable ``vmlinuz-*`` in ``boot`` (by version order of the file names)."""

    def key(path: Path) -> list[tuple[int, int, str]]:
        return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", path.name)]

    try:
        candidates = sorted((p for p in boot.glob("vmlinuz-*") if p.is_file()), key=key, reverse=True)
    except OSError:
        return None
    for path in candidates:
        try:
            with path.open("rb"):
                return path
        except OSError:
            continue
    return None


def image_volumes(name: str, manifest: dict[str, Any]) -> ImageVolumes:
    """Volume names of an image; the content hash is in the name so a rebuilt image is a new volume."""
    tag = hashlib.sha256(json.dumps(manifest.get("files", {}), sort_keys=True).encode()).hexdigest()[:10]
    base = f"{OBJECT_PREFIX}img-{name}-{tag}"
    has_kernel = bool(manifest.get("kernel"))
    return ImageVolumes(
        disk=f"{base}-disk.qcow2",
        kernel=f"{base}-vmlinuz" if has_kernel else None,
        initrd=f"{base}-initrd" if manifest.get("initrd") else None,
        cmdline=manifest.get("cmdline"),
    )


def read_manifest(directory: Path) -> dict[str, Any]:
    """Read and verify an image directory; raises InvalidSpec.

    Every file the manifest names (disk, kernel, initrd and the keys of "files") must be a plain
    relative name that stays inside the directory (no absolute path, '..', hidden part or symlink
    leading out): otherwise an import would upload any file the daemon (root) can read into a
    volume guests can read. Every file that is used (disk, kernel, initrd) must have its sha256
    in "files" and match it, so a file's content must be known in advance to be imported at all.
    """
    root = directory.resolve()

    def inside(name: object, what: str) -> Path:
        parts = name.split("/") if isinstance(name, str) else []
        plain = (
            isinstance(name, str)
            and name.isascii()
            and all(ch.isalnum() or ch in "_.+-/" for ch in name)
            and 0 < len(name) <= 255
            and all(part and not part.startswith(".") for part in parts)
        )
        if not plain:
            raise InvalidSpec(
                f"image {directory}: {what} {name!r} must be a relative file name inside the directory "
                "(letters, digits and _.+-/, no absolute path, '..' or hidden parts)"
            )
        resolved = (root / str(name)).resolve()
        if not resolved.is_relative_to(root):
            raise InvalidSpec(f"image {directory}: {what} {name} leads outside the image directory (a symlink?)")
        if not resolved.is_file():
            raise InvalidSpec(f"image {directory}: {what} file {name} is missing")
        return resolved

    path = directory / MANIFEST
    if not path.is_file():
        raise InvalidSpec(f"{directory} is not an image directory: {MANIFEST} is missing (build one with 'make image')")
    if not path.resolve().is_relative_to(root):
        raise InvalidSpec(f"image {directory}: {MANIFEST} leads outside the image directory (a symlink?)")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidSpec(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict):
        raise InvalidSpec(f"{path} must hold a JSON object")
    for key in ("disk", "format"):
        if key not in manifest:
            raise InvalidSpec(f"{path} has no {key!r}")
    if manifest["format"] != "qcow2":
        raise InvalidSpec(f"image format {manifest['format']!r} is not supported; localvmss needs qcow2 base images")
    files = manifest.get("files", {})
    if not isinstance(files, dict):
        raise InvalidSpec(f"{path}: 'files' must map file names to sha256 checksums")
    for role in ("disk", "kernel", "initrd"):
        file = manifest.get(role)
        if role != "disk" and not file:
            continue  # no kernel or initrd: the disk boots itself (image_volumes reads it so too)
        inside(file, role)
        if file not in files:
            raise InvalidSpec(f"image {directory}: {role} file {file} has no sha256 in 'files'; rebuild the image")
    for file, digest in files.items():
        resolved = inside(file, "file")
        if not isinstance(digest, str) or len(digest) != 64 or any(ch not in "0123456789abcdef" for ch in digest):
            raise InvalidSpec(f"image {directory}: the checksum of {file} is not a sha256 (64 lowercase hex digits)")
        if _sha256(resolved) != digest:
            raise InvalidSpec(f"image {directory}: {file} does not match its checksum (corrupt); rebuild the image")
    if "guest_metrics" in manifest:
        overrides = check_guest_metrics(manifest["guest_metrics"], f"{path}: guest_metrics")
        manifest["guest_metrics"] = resolve_guest_metrics(DIRECTORY_GUEST_METRICS, overrides).as_json()
    return manifest


def _check_source_file(image: str, directory: Path, path: Path, digest: str) -> None:
    """The file about to be uploaded is still the one the manifest named and checksummed (it may
    have changed on disk since the import)."""
    if not path.is_file():
        raise InvalidSpec(f"image {image}: {path} is gone; import the image again")
    if directory.resolve() not in path.resolve().parents:
        raise InvalidSpec(f"image {image}: {path} is outside its directory {directory}; import the image again")
    if not digest or _sha256(path) != digest:
        raise InvalidSpec(f"image {image}: {path} does not match its checksum any more; rebuild or import it again")


# How old a host's capacity figure may grow before the reconcile pass reads it again: free memory
# moves as instances come and go, and admission adds what is still booting on top.
CAPACITY_REFRESH_S = 5.0
# A host whose ping has waited this long is shown as slow (it still counts as available: a host
# is lost only once its connection's keepalive gives up, about 30 s without an answer).
SLOW_HOST_S = 5.0


class Inventory:
    """Hosts by name, their capacity and accelerator, and images on them."""

    def __init__(self, cfg: DaemonConfig, store: Store) -> None:
        self.cfg = cfg
        self.store = store
        self.configs: dict[str, HostConfig] = {h.name: h for h in cfg.hosts}
        for added in store.added_hosts():
            try:
                # Hosts added through the API before URIs were checked there get the same check.
                check_api_host_uri(str(added.get("uri", "")))
            except InvalidSpec as exc:
                log.warning("host %s added through the API is ignored: %s", added.get("name"), exc.message)
                continue
            self.configs.setdefault(added["name"], HostConfig(**added))
        self.hosts: dict[str, Host] = {name: Host(name, h.uri) for name, h in self.configs.items()}
        self._domain_types: dict[str, str] = {}
        self._networks: dict[str, AddressPlan] = {}  # host -> where its instances' addresses come from
        # host -> its network's DHCP entries {lowercase mac: (mac, ip)}, and how often they changed
        self._reservations: dict[str, dict[str, tuple[str, str]]] = {}
        self._reservations_changed: dict[str, int] = {}
        self._reservations_lock = threading.Lock()
        self._image_lock = threading.Lock()
        # host -> {image volume: its path} known whole there (found or made by ``ensure_image``),
        # so a worker making an instance costs no look at them (``ready_image``). Forgotten
        # when a pass's listing of the pool lacks one (``volumes_listed``), when the host is
        # prepared again, or when a worker finds its base volume gone (``forget_image_volumes``).
        self._image_volumes: dict[str, dict[str, str]] = {}
        # host -> (its capacity as last read, monotonic time of the read)
        self._capacities: dict[str, tuple[HostCapacity, float]] = {}

    # -- hosts ------------------------------------------------------------------------------
    def prepare_all(self) -> None:
        """Connect to every host; a host that does not answer is recorded as unavailable."""
        for name in self.hosts:
            try:
                self.prepare(name)
            except LocalVMSSError as exc:
                log.warning("host %s: %s", name, exc.message)
                self._record(name, available=False, message=exc.message)

    def prepare(self, name: str) -> None:
        host = self.hosts[name]
        cfg = self.configs[name]
        self.forget_image_volumes(name)
        host.ensure_pool(self.cfg.pool_name, self.cfg.pool_path)
        gateway, netmask, start, end, reserved = host.network_layout(cfg.network)
        self._networks[name] = address_plan(cfg.network, gateway, netmask, start, end, cfg.static_addresses)
        self._set_reservations(name, reserved)
        for image_name, (manifest, source) in self.store.images().items():
            self.ensure_image(name, image_name, manifest, source)
        self._choose_accelerator(name)
        self._record(name, available=True, message="")

    def _choose_accelerator(self, name: str) -> None:
        known = {h.name: h for h in self.store.hosts()}.get(name)
        if known and known.domain_type and known.uri == self.configs[name].uri:
            self._domain_types[name] = known.domain_type
            return
        kernel = self._any_kernel_path(name) or self._probe_kernel_path(name)
        if kernel is None:
            return  # probed once an image with a kernel is imported
        choice = probe_accelerator(self.hosts[name], kernel) if self.cfg.kvm_probe else None
        domain_type = choice.domain_type if choice else "qemu"
        reason = choice.reason if choice else f"host {name}: KVM probe disabled by configuration; using QEMU TCG"
        log.info("%s", reason)
        self._domain_types[name] = domain_type
        self._record(name, available=True, message="", domain_type=domain_type, accel_reason=reason)

    def _any_kernel_path(self, name: str) -> str | None:
        for image_name, (manifest, _) in self.store.images().items():
            vols = image_volumes(image_name, manifest)
            if vols.kernel:
                return self.hosts[name].volume_path(self.cfg.pool_name, vols.kernel)
        return None

    def _probe_kernel_path(self, name: str) -> str | None:
        """No image has a kernel (only self-booting disks): the probe boots this machine's own
        newest kernel instead, uploaded once as a volume, so such a host still gets KVM where KVM
        works. None when there is no readable kernel here (then instances use TCG until an
        image with a kernel is imported, and the host list says why)."""
        kernel = newest_kernel(BOOT_DIR)
        if kernel is None:
            return None
        digest = _sha256(kernel)
        vol = f"{OBJECT_PREFIX}probe-kernel-{digest[:12]}"
        host = self.hosts[name]
        with self._image_lock:
            at = self._volume_complete(name, vol, kernel, digest)
            if at is not None:
                return at
            log.info("uploading this machine's kernel %s to host %s for the KVM probe", kernel.name, name)
            self.store.forget_upload(name, vol)
            host.upload_file(self.cfg.pool_name, vol, str(kernel), "raw")
            self.store.record_upload(name, vol, digest)
        return host.volume_path(self.cfg.pool_name, vol)

    def _record(self, name: str, *, available: bool, message: str, **extra: Any) -> None:
        old = {h.name: h for h in self.store.hosts()}.get(name)
        cfg = self.configs[name]
        row = HostRow(
            name=name,
            uri=cfg.uri,
            zone=cfg.zone,
            domain_type=extra.get("domain_type", old.domain_type if old else None),
            accel_reason=extra.get("accel_reason", old.accel_reason if old else ""),
            available=available,
            message=message,
        )
        if old is None or old != row:
            self.store.put_host(row)

    def refresh_availability(self) -> dict[str, bool]:
        """Ping every host; prepare hosts that came back. Returns name -> available.

        Only a host that does not answer is unavailable. One that answers but is busy (its pool
        has a job running) stays available if it was prepared before; a host never prepared
        waits for a pass in which preparing it succeeds."""
        result = {}
        rows = {h.name: h for h in self.store.hosts()}
        for name, host in list(self.hosts.items()):
            alive = host.ping()
            was = rows.get(name)
            if alive and (was is None or not was.available or name not in self._networks):
                try:
                    self.prepare(name)
                except HostBusy as exc:
                    alive = name in self._networks
                    log.info("host %s is busy while being prepared (%s); trying again next pass", name, exc.message)
                    if alive and was is not None and not was.available:
                        self._record(name, available=True, message="")
                except LocalVMSSError as exc:
                    alive = False
                    self._record(name, available=False, message=exc.message)
            elif not alive and (was is None or was.available):
                self._record(name, available=False, message=f"host {name} ({host.uri}) does not answer")
            age = self.capacity_age(name)
            if alive and (age is None or age >= CAPACITY_REFRESH_S):
                try:
                    self.refresh_capacity(name)
                except LocalVMSSError as exc:  # the last known figure stays; the next pass tries again
                    log.info("host %s: capacity not read this pass: %s", name, exc.message)
            result[name] = alive
        return result

    def refresh_reservations(self, name: str) -> None:
        """Re-read the host network's DHCP reservations (outside any store transaction): once
        a pass, to see entries made behind localvmss's back; its own go through ``reserve`` and
        ``release``, which keep this copy current without reading the network again."""
        self._set_reservations(name, self.host(name).network_layout(self.network(name))[4])

    def _set_reservations(self, name: str, entries: list[tuple[str, str]]) -> None:
        fresh = {mac.lower(): (mac, ip) for mac, ip in entries}
        with self._reservations_lock:
            if fresh != self._reservations.get(name):
                self._reservations[name] = fresh
                self._reservations_changed[name] = self._reservations_changed.get(name, 0) + 1

    def reservations(self, name: str) -> list[tuple[str, str]]:
        """The host network's DHCP (mac, ip) reservations as last read or changed: no libvirt
        call, so it is safe inside a store transaction."""
        with self._reservations_lock:
            return list(self._reservations.get(name, {}).values())

    def reservations_changed(self, name: str) -> int:
        """A number that changes whenever the host's reservations do (the allocator's cue to
        rebuild what it keeps of them)."""
        return self._reservations_changed.get(name, 0)

    def reserve(self, name: str, mac: str, ip: str, hostname: str) -> None:
        """The DHCP reservation of an instance on host ``name`` (an identical one is fine); none
        for an address the host hands out statically."""
        if self._static_address(name, ip):
            return
        self.host(name).reserve_address(self.network(name), mac, ip, hostname)
        with self._reservations_lock:
            entries = self._reservations.setdefault(name, {})
            if entries.get(mac.lower()) != (mac, ip):
                entries[mac.lower()] = (mac, ip)
                self._reservations_changed[name] = self._reservations_changed.get(name, 0) + 1

    def release(self, name: str, mac: str) -> None:
        """Remove the DHCP reservation of ``mac`` on host ``name`` (already gone counts as removed).
        A host with static addresses is asked only when this pass's copy of its entries holds
        ``mac`` (one made before the host had them): reading the network per release of a
        static address would make a scale-in quadratic."""
        plan = self._networks.get(name)
        if plan is not None and plan.static:
            with self._reservations_lock:
                if mac.lower() not in self._reservations.get(name, {}):
                    return
        self.host(name).release_address(self.network(name), mac)
        with self._reservations_lock:
            if self._reservations.get(name, {}).pop(mac.lower(), None) is not None:
                self._reservations_changed[name] = self._reservations_changed.get(name, 0) + 1

    def _static_address(self, name: str, ip: str) -> bool:
        plan = self._networks.get(name)
        return plan is not None and plan.is_static(ip)

    def add_host(self, host_cfg: HostConfig, timeout_s: float = 15.0) -> None:
        """Join a host: it must answer, have the network and take the images, or nothing changes."""
        validate_name(host_cfg.name, "host name")
        if host_cfg.name in self.hosts:
            raise Conflict(f"host {host_cfg.name!r} is already in the inventory")
        host = Host(host_cfg.name, host_cfg.uri)
        failure: list[str] = []

        def connect() -> None:
            try:
                host.connect()
            except LocalVMSSError as exc:
                failure.append(exc.message)

        probe = threading.Thread(target=connect, daemon=True)
        probe.start()
        probe.join(timeout_s)
        if probe.is_alive() or failure:
            host.close()
            # Host.connect's message already names the host and says it does not answer.
            why = (
                failure[0]
                if failure
                else f"host {host_cfg.name} ({host_cfg.uri}) does not answer within {timeout_s:.0f} s"
            )
            raise InvalidSpec(f"{why}; nothing was added")
        self.configs[host_cfg.name] = host_cfg
        self.hosts[host_cfg.name] = host
        try:
            self.prepare(host_cfg.name)
        except LocalVMSSError as exc:
            self.configs.pop(host_cfg.name, None)
            self.hosts.pop(host_cfg.name, None)
            self.store.delete_host(host_cfg.name)
            host.close()
            raise InvalidSpec(f"host {host_cfg.name} cannot be used: {exc.message}; nothing was added") from None
        self.store.put_added_host(host_cfg.name, host_cfg.model_dump())

    def remove_host(self, name: str, in_use: bool) -> None:
        if name not in self.hosts:
            raise NotFound(f"host {name!r} is not in the inventory")
        if name in {h.name for h in self.cfg.hosts}:
            raise Conflict(f"host {name!r} is defined in the configuration file; remove it there")
        if in_use:
            raise Conflict(f"host {name!r} still holds instances; delete or move them first")
        self.hosts.pop(name).close()
        self.configs.pop(name, None)
        self.store.delete_host(name)

    def available(self) -> list[str]:
        return [h.name for h in self.store.hosts() if h.available and h.name in self.hosts]

    def zone_of(self, name: str) -> str | None:
        return self.configs[name].zone

    def host(self, name: str) -> Host:
        try:
            return self.hosts[name]
        except KeyError:
            raise NotFound(f"host {name!r} is not in the inventory") from None

    def network(self, name: str) -> str:
        return self.configs[name].network

    def address_plan(self, name: str) -> AddressPlan:
        """Where the host's instances get their addresses (its network as read when prepared)."""
        if name not in self._networks:
            raise HostUnavailable(f"host {name} is not prepared (network unknown)")
        return self._networks[name]

    def domain_type(self, name: str) -> str:
        return self._domain_types.get(name, "qemu")

    def capacity(self, name: str) -> HostCapacity:
        """The host's capacity as last read. Read from libvirt only when never read before:
        the reconcile pass keeps it current (``refresh_capacity``), so an API request that
        admits work or lists hosts never waits on a host that is slow to answer."""
        known = self._capacities.get(name)
        return known[0] if known else self.refresh_capacity(name)

    def unanswered_for(self, name: str) -> float:
        """Seconds the host's oldest ping in flight has waited (0 when none waits)."""
        return self.hosts[name].unanswered_for()

    def capacity_age(self, name: str) -> float | None:
        """Seconds since the host's capacity was read; None if never."""
        known = self._capacities.get(name)
        return None if known is None else time.monotonic() - known[1]

    def refresh_capacity(self, name: str) -> HostCapacity:
        """Read the host's capacity from libvirt now (and keep it as its last known)."""
        cap = self.hosts[name].capacity()
        self._capacities[name] = (cap, time.monotonic())
        return cap

    def serial_log(self, host: str, domain: str) -> str:
        """Where libvirt on ``host`` logs the domain's serial console."""
        return f"{self.configs[host].serial_log_dir}/{domain}-serial.log"

    # -- images -----------------------------------------------------------------------------
    def import_image(self, name: str, directory: Path, guest_metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        """Verify an image directory, record it and upload it to every available host.

        ``guest_metrics`` (checked fields) overrides the endpoint image.json gives, if any."""
        validate_name(name, "image name")
        manifest = read_manifest(directory)
        if guest_metrics:
            manifest["guest_metrics"] = resolve_guest_metrics(guest_metrics_of(manifest), guest_metrics).as_json()
        self._record_image(name, manifest, directory)
        return manifest

    def import_disk(self, name: str, file: Path, guest_metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        """Verify a self-booting disk (qcow2 or raw), record it and upload it to every available host.

        A qcow2 disk is used where it is (its directory is the image's source, and it is checked
        against its sha256 before every upload, like a directory image's files). A raw disk is
        converted once into the state directory: every instance disk is a qcow2 overlay on a qcow2
        base, and a qcow2 base uploads only the blocks it uses. Raises InvalidSpec."""
        validate_name(name, "image name")
        info = inspect_disk(file)
        metrics = resolve_guest_metrics(DISK_GUEST_METRICS, guest_metrics)
        disk = file if info.format == "qcow2" else self._converted(name, file)
        manifest = disk_manifest(name, disk, _sha256(disk), info, file, metrics)
        self._record_image(name, manifest, disk.parent)
        return manifest

    def _converted(self, name: str, raw: Path) -> Path:
        """``raw`` as qcow2 in ``<state_dir>/images/<name>-<sha256 prefix>/disk.qcow2``."""
        images = self.cfg.state_dir / "images"
        images.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=images))
        try:
            work.chmod(0o755)
            qcow2 = work / "disk.qcow2"
            done = subprocess.run(
                [_qemu_img(), "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                lines = done.stderr.strip().splitlines()
                raise InvalidSpec(f"converting {raw} to qcow2 failed: {lines[-1] if lines else done.returncode}")
            final = images / f"{name}-{_sha256(qcow2)[:12]}"
            if final.exists():
                shutil.rmtree(work)  # the same disk converted before: keep that copy
            else:
                work.rename(final)
            return final / "disk.qcow2"
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise

    def _record_image(self, name: str, manifest: dict[str, Any], source: Path) -> None:
        self.store.put_image(name, manifest, str(source))
        for host in self.available():
            self.ensure_image(host, name, manifest, str(source))
            if host not in self._domain_types:
                self._choose_accelerator(host)

    def ready_image(self, host_name: str, image: str) -> ImageVolumes:
        """The image's volumes on a host, made whole there first if need be (``ensure_image``):
        no libvirt call while they are known whole. Raises NotFound for an image not imported."""
        manifest, source = self.image(image)
        vols = image_volumes(image, manifest)
        known = self._image_volumes.get(host_name, {})
        if all(vol in known for vol in (vols.disk, vols.kernel, vols.initrd) if vol is not None):
            return vols
        return self.ensure_image(host_name, image, manifest, source)

    def image_volume_path(self, host_name: str, vol: str) -> str:
        """Where an image volume is on the host (as known from ``ensure_image``, else looked up)."""
        known = self._image_volumes.get(host_name, {}).get(vol)
        return known if known is not None else self.hosts[host_name].volume_path(self.cfg.pool_name, vol)

    def volumes_listed(self, host_name: str, names: list[str]) -> None:
        """A pass listed the host's pool: image volumes no longer in it are no longer known whole."""
        with self._image_lock:
            known = self._image_volumes.get(host_name)
            if known and not known.keys() <= set(names):
                self._image_volumes[host_name] = {vol: path for vol, path in known.items() if vol in names}

    def forget_image_volumes(self, host_name: str) -> None:
        """The next use of an image on the host checks its volumes again (``ensure_image``)."""
        with self._image_lock:
            self._image_volumes.pop(host_name, None)

    def ensure_image(self, host_name: str, image: str, manifest: dict[str, Any], source: str) -> ImageVolumes:
        """Upload the image's volumes to a host if they are not there yet (always looked at)."""
        vols = image_volumes(image, manifest)
        host = self.hosts[host_name]
        with self._image_lock:
            for vol, role, fmt in (
                (vols.disk, "disk", "qcow2"),
                (vols.kernel, "kernel", "raw"),
                (vols.initrd, "initrd", "raw"),
            ):
                if vol is None:
                    continue
                path = Path(source) / manifest[role]
                digest = str(manifest.get("files", {}).get(manifest[role], ""))
                known = self._image_volumes.setdefault(host_name, {})
                known.pop(vol, None)
                at = self._volume_complete(host_name, vol, path, digest)
                if at is None:
                    _check_source_file(image, Path(source), path, digest)
                    log.info("uploading %s of image %s to host %s", role, image, host_name)
                    self.store.forget_upload(host_name, vol)
                    host.upload_file(self.cfg.pool_name, vol, str(path), fmt)
                    self.store.record_upload(host_name, vol, digest)
                    at = host.volume_path(self.cfg.pool_name, vol)
                known[vol] = at
        return vols

    def _volume_complete(self, host_name: str, vol: str, path: Path, digest: str) -> str | None:
        """An image volume is used only once its upload is known to have finished: recorded
        when it did, or (a volume from before such records, or cut short by a crash) read back
        and matched against the manifest's checksum. Its path when it is whole; None when it
        is missing or fails (it is uploaded again)."""
        host = self.hosts[host_name]
        try:
            at = host.volume_path(self.cfg.pool_name, vol)
        except NotFound:
            return None
        if self.store.upload_done(host_name, vol) is not None:
            return at
        if digest and path.is_file():
            if host.volume_sha256(self.cfg.pool_name, vol, path.stat().st_size) == digest:
                self.store.record_upload(host_name, vol, digest)
                return at
        log.warning(
            "volume %s on host %s is incomplete or does not match its checksum; uploading it again", vol, host_name
        )
        return None

    def upload_bytes(self, host_name: str, vol: str, data: bytes) -> None:
        """A small raw volume (a NoCloud seed), recorded complete only after the upload finished."""
        self.store.forget_upload(host_name, vol)
        self.host(host_name).upload_bytes(self.cfg.pool_name, vol, data, "raw")
        self.store.record_upload(host_name, vol, hashlib.sha256(data).hexdigest())

    def volume_ready(self, host_name: str, vol: str) -> bool:
        """The volume exists and its upload finished (a partial one counts as missing)."""
        return self.store.upload_done(host_name, vol) is not None and self.host(host_name).volume_exists(
            self.cfg.pool_name, vol
        )

    def delete_volume(self, host_name: str, vol: str) -> None:
        """Delete a volume (already gone counts as deleted) and forget its upload record."""
        with self._image_lock:
            self._image_volumes.get(host_name, {}).pop(vol, None)
        self.host(host_name).delete_volume(self.cfg.pool_name, vol)
        self.store.forget_upload(host_name, vol)

    def image(self, name: str) -> tuple[dict[str, Any], str]:
        images = self.store.images()
        if name not in images:
            raise NotFound(f"image {name!r} is not imported")
        return images[name]
