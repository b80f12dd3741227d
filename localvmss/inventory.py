"""The hosts localvmss places instances on, and the images it has put on them.

Holds one ``Host`` connection per configured host, prepares each host's storage pool, checks
that each host's network has a DHCP range, chooses the accelerator per host with a real probe,
and uploads base images (disk, kernel, initrd) into every host's pool as libvirt volumes, so
remote hosts need nothing copied by hand.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from localvmss.config import DaemonConfig, HostConfig
from localvmss.errors import Conflict, HostUnavailable, InvalidSpec, LocalVMSSError, NotFound
from localvmss.model import OBJECT_PREFIX, validate_name
from localvmss.store import HostRow, Store
from localvmss.virt.accel import probe_accelerator
from localvmss.virt.host import Host, HostCapacity

log = logging.getLogger(__name__)

MANIFEST = "image.json"


@dataclass(frozen=True)
class ImageVolumes:
    disk: str
    kernel: str | None
    initrd: str | None
    cmdline: str | None


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
    """Read and verify an image directory (files present, checksums match); raises InvalidSpec."""
    path = directory / MANIFEST
    if not path.is_file():
        raise InvalidSpec(f"{directory} is not an image directory: {MANIFEST} is missing (build one with 'make image')")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InvalidSpec(f"{path} is not valid JSON: {exc}") from None
    for key in ("disk", "format"):
        if key not in manifest:
            raise InvalidSpec(f"{path} has no {key!r}")
    if manifest["format"] != "qcow2":
        raise InvalidSpec(f"image format {manifest['format']!r} is not supported; localvmss needs qcow2 base images")
    for role in ("disk", "kernel", "initrd"):
        file = manifest.get(role)
        if file and not (directory / file).is_file():
            raise InvalidSpec(f"image {directory}: {role} file {file} is missing")
    for file, digest in manifest.get("files", {}).items():
        h = hashlib.sha256()
        with open(directory / file, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        if h.hexdigest() != digest:
            raise InvalidSpec(f"image {directory}: {file} does not match its checksum (corrupt); rebuild the image")
    return manifest


class Inventory:
    """Hosts by name, their capacity and accelerator, and images on them."""

    def __init__(self, cfg: DaemonConfig, store: Store) -> None:
        self.cfg = cfg
        self.store = store
        self.configs: dict[str, HostConfig] = {h.name: h for h in cfg.hosts}
        for added in store.added_hosts():
            self.configs.setdefault(added["name"], HostConfig(**added))
        self.hosts: dict[str, Host] = {name: Host(name, h.uri) for name, h in self.configs.items()}
        self._domain_types: dict[str, str] = {}
        self._networks: dict[str, tuple[str, str, str, str]] = {}
        self._image_lock = threading.Lock()

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
        host.ensure_pool(self.cfg.pool_name, self.cfg.pool_path)
        gateway, netmask, start, end, _ = host.network_layout(cfg.network)
        self._networks[name] = (gateway, netmask, start, end)
        for image_name, (manifest, source) in self.store.images().items():
            self.ensure_image(name, image_name, manifest, source)
        self._choose_accelerator(name)
        self._record(name, available=True, message="")

    def _choose_accelerator(self, name: str) -> None:
        known = {h.name: h for h in self.store.hosts()}.get(name)
        if known and known.domain_type and known.uri == self.configs[name].uri:
            self._domain_types[name] = known.domain_type
            return
        kernel = self._any_kernel_path(name)
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
        """Ping every host; prepare hosts that came back. Returns name -> available."""
        result = {}
        rows = {h.name: h for h in self.store.hosts()}
        for name, host in list(self.hosts.items()):
            alive = host.ping()
            was = rows.get(name)
            if alive and (was is None or not was.available or name not in self._networks):
                try:
                    self.prepare(name)
                except LocalVMSSError as exc:
                    alive = False
                    self._record(name, available=False, message=exc.message)
            elif not alive and (was is None or was.available):
                self._record(name, available=False, message=f"host {name} ({host.uri}) does not answer")
            result[name] = alive
        return result

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
        self.store.put_added_host(host_cfg.name, asdict(host_cfg))

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

    def network_range(self, name: str) -> tuple[str, str, str, str]:
        if name not in self._networks:
            raise HostUnavailable(f"host {name} is not prepared (network unknown)")
        return self._networks[name]

    def domain_type(self, name: str) -> str:
        return self._domain_types.get(name, "qemu")

    def capacity(self, name: str) -> HostCapacity:
        return self.hosts[name].capacity()

    def serial_log(self, host: str, domain: str) -> str:
        """Where libvirt on ``host`` logs the domain's serial console."""
        return f"{self.configs[host].serial_log_dir}/{domain}-serial.log"

    def readable_serial_log(self, host: str, domain: str) -> Path | None:
        """The same log as the daemon can read it, if it can."""
        directory = self.configs[host].serial_log_read_dir
        return Path(directory) / f"{domain}-serial.log" if directory else None

    # -- images -----------------------------------------------------------------------------
    def import_image(self, name: str, directory: Path) -> dict[str, Any]:
        """Verify an image directory, record it and upload it to every available host."""
        validate_name(name, "image name")
        manifest = read_manifest(directory)
        self.store.put_image(name, manifest, str(directory))
        for host in self.available():
            self.ensure_image(host, name, manifest, str(directory))
            if host not in self._domain_types:
                self._choose_accelerator(host)
        return manifest

    def ensure_image(self, host_name: str, image: str, manifest: dict[str, Any], source: str) -> ImageVolumes:
        """Upload the image's volumes to a host if they are not there yet."""
        vols = image_volumes(image, manifest)
        host = self.hosts[host_name]
        with self._image_lock:
            for vol, role, fmt in (
                (vols.disk, "disk", "qcow2"),
                (vols.kernel, "kernel", "raw"),
                (vols.initrd, "initrd", "raw"),
            ):
                if vol is None or host.volume_exists(self.cfg.pool_name, vol):
                    continue
                path = Path(source) / manifest[role]
                if not path.is_file():
                    raise InvalidSpec(f"image {image}: {path} is gone; import the image again")
                log.info("uploading %s of image %s to host %s", role, image, host_name)
                host.upload_file(self.cfg.pool_name, vol, str(path), fmt)
        return vols

    def image(self, name: str) -> tuple[dict[str, Any], str]:
        images = self.store.images()
        if name not in images:
            raise NotFound(f"image {name!r} is not imported")
        return images[name]
