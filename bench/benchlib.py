"""Shared by the bench scripts: plain libvirt guests of the base image, made with localvmss.virt,
the ``/healthz`` poller for them, and the poller of a scale set's HAProxy frontend.

"Plain" means what a user would do by hand with virsh: upload the image once, then per guest a
qcow2 overlay, a NoCloud seed, a DHCP reservation, define and start. No daemon involved.
Every guest is reached from the host namespace, which routes to the lab's guest network.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localvmss.inventory import read_manifest
from localvmss.lab.hosts import LabHost
from localvmss.lab.testbed import DEFAULT_IMAGE_DIR, DaemonProcess, Testbed
from localvmss.virt.domainxml import InstanceDomain, build_domain_xml
from localvmss.virt.host import Host
from localvmss.virt.seed import build_nocloud_seed

# Never through a proxy from the environment: guests are only reachable directly.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def start(bench: str, description: str) -> tuple[Path, dict[str, Any]] | None:
    """Every bench's start: its --image-dir argument and the root check. Returns (image dir,
    manifest), or None after saying why it cannot run."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--image-dir", type=Path, default=DEFAULT_IMAGE_DIR)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print(f"{bench}: run as root (lab namespaces and libvirtd)", file=sys.stderr)
        return None
    return args.image_dir, read_manifest(args.image_dir)


def load() -> str:
    """The machine's load averages, printed next to every figure (the machine is shared)."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


@contextmanager
def bench_lab(tag: str, **daemon_options: Any) -> Iterator[tuple[LabHost, DaemonProcess, Path]]:
    """A one-host lab, its daemon's process (not started; ``daemon_options`` go to
    ``Testbed.daemon``) and a scratch directory. Afterwards all are gone, the HAProxy and
    Prometheus the daemon started too: they outlive a stopped daemon by design."""
    workdir = Path(tempfile.mkdtemp(prefix="lvmss-bench-"))
    testbed = Testbed(tag=tag, host_count=1)
    daemon = None
    try:
        lab = testbed.up()
        daemon = testbed.daemon(workdir / "daemon", **daemon_options)
        yield lab.hosts[0], daemon, workdir
    finally:
        if daemon is not None:
            daemon.stop()
            daemon.stop_data_plane()
        testbed.down()
        shutil.rmtree(workdir, ignore_errors=True)


def wait(check: Callable[[], bool], what: str, timeout: float, poll_s: float) -> None:
    """Until ``check()`` holds; RuntimeError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(poll_s)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def http_status(url: str, timeout: float = 2.0) -> int:
    try:
        with _OPENER.open(url, timeout=timeout) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return 0


def image_sizes(image_dir: Path, manifest: dict[str, Any]) -> list[str]:
    """Printable lines: the image directory on disk, and its qcow2 disk."""
    du = subprocess.run(["du", "-sb", str(image_dir)], capture_output=True, text=True, check=True)
    dir_bytes = int(du.stdout.split()[0])
    disk = image_dir / manifest["disk"]
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(disk)], capture_output=True, text=True, check=True
        ).stdout
    )
    lines = [f"image directory (du -sb {image_dir}): {dir_bytes} bytes ({dir_bytes / 2**20:.1f} MiB)"]
    for role in ("kernel", "initrd"):
        if manifest.get(role):
            size = (image_dir / manifest[role]).stat().st_size
            lines.append(f"  {role} {manifest[role]}: {size / 2**20:.1f} MiB")
    lines.append(
        f"  disk {manifest['disk']}: file {disk.stat().st_size / 2**20:.1f} MiB, "
        f"allocated {info.get('actual-size', 0) / 2**20:.1f} MiB, virtual {info['virtual-size'] / 2**30:.1f} GiB"
    )
    return lines


@dataclass(frozen=True)
class BaseVolumes:
    pool: str
    disk: str
    kernel_path: str
    initrd_path: str
    cmdline: str


def upload_image(host: Host, pool: str, image_dir: Path, manifest: dict[str, Any], prefix: str) -> BaseVolumes:
    host.upload_file(pool, f"{prefix}-base.qcow2", str(image_dir / manifest["disk"]), "qcow2")
    host.upload_file(pool, f"{prefix}-vmlinux", str(image_dir / manifest["kernel"]), "raw")
    host.upload_file(pool, f"{prefix}-initrd", str(image_dir / manifest["initrd"]), "raw")
    return BaseVolumes(
        pool=pool,
        disk=f"{prefix}-base.qcow2",
        kernel_path=host.volume_path(pool, f"{prefix}-vmlinux"),
        initrd_path=host.volume_path(pool, f"{prefix}-initrd"),
        cmdline=manifest["cmdline"],
    )


@dataclass(frozen=True)
class PlainGuest:
    name: str
    ip: str
    mac: str


def plain_guests(lab_host: LabHost, prefix: str, count: int) -> list[PlainGuest]:
    """Names and addresses from the top of the DHCP range (the daemon allocates from the bottom)."""
    net = ipaddress.ip_network(lab_host.guest_network)
    out = []
    for k in range(count):
        ip = ipaddress.IPv4Address(int(net.network_address) + 249 - k)
        mac = "52:54:00:" + ":".join(f"{b:02x}" for b in ip.packed[1:])
        out.append(PlainGuest(f"{prefix}-{k}", str(ip), mac))
    return out


def prepare(host: Host, lab_host: LabHost, base: BaseVolumes, guest: PlainGuest) -> None:
    """Overlay, seed and address reservation of one guest."""
    host.create_overlay(base.pool, f"{guest.name}-os.qcow2", base.disk)
    seed = build_nocloud_seed(guest.name, guest.name, [], None)
    host.upload_bytes(base.pool, f"{guest.name}-seed.iso", seed, "raw")
    host.reserve_address(lab_host.network_name, guest.mac, guest.ip, guest.name)


def define_and_start(host: Host, lab_host: LabHost, base: BaseVolumes, guest: PlainGuest, domain_type: str) -> None:
    xml = build_domain_xml(
        InstanceDomain(
            name=guest.name,
            domain_type=domain_type,
            vcpus=1,
            memory_mib=256,
            pool=base.pool,
            os_volume=f"{guest.name}-os.qcow2",
            seed_volume=f"{guest.name}-seed.iso",
            network=lab_host.network_name,
            mac=guest.mac,
            kernel_path=base.kernel_path,
            initrd_path=base.initrd_path,
            cmdline=base.cmdline,
            serial_log=f"/var/log/libvirt/qemu/{guest.name}-serial.log",
        )
    )
    host.define_domain(xml)
    host.start(guest.name)


def remove(host: Host, lab_host: LabHost, base: BaseVolumes, guest: PlainGuest) -> None:
    host.undefine(guest.name)
    host.delete_volume(base.pool, f"{guest.name}-os.qcow2")
    host.delete_volume(base.pool, f"{guest.name}-seed.iso")
    host.release_address(lab_host.network_name, guest.mac)


class HealthWatch:
    """Polls ``http://IP/healthz`` of every added address on its own thread; records when each hit 200."""

    def __init__(self, t0: float, timeout_s: float = 600.0) -> None:
        self.t0 = t0
        self.deadline = t0 + timeout_s
        self.ready: dict[str, float] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def add(self, ip: str) -> None:
        thread = threading.Thread(target=self._poll, args=(ip,), daemon=True)
        thread.start()
        self._threads.append(thread)

    def _poll(self, ip: str) -> None:
        while time.monotonic() < self.deadline:
            if http_status(f"http://{ip}/healthz") == 200:
                with self._lock:
                    self.ready[ip] = time.monotonic() - self.t0
                return
            time.sleep(0.2)

    def wait(self) -> dict[str, float]:
        for thread in self._threads:
            thread.join(max(0.0, self.deadline - time.monotonic()) + 1)
        return dict(self.ready)


def fmt_times(ready: dict[str, float], expected: int) -> str:
    times = sorted(ready.values())
    if len(times) < expected:
        return f"only {len(times)} of {expected} answered ({', '.join(f'{t:.1f}' for t in times)} s)"
    each = ", ".join(f"{t:.1f}" for t in times)
    return f"{times[-1]:.1f} s (each: {each})"


class FrontendWatch:
    """Asks a load-balancer frontend ``GET /`` on its own threads, each request on a fresh
    connection (``Connection: close``, so HAProxy picks a server anew every time), and records
    when each distinct answer (a guest serves its computer name at ``/``) came first, in seconds
    since ``t0``. A few requests a second per thread: enough to reach every server of a
    round-robin backend soon, little enough not to slow the emulated guests it measures."""

    def __init__(self, port: int, t0: float, threads: int = 3, pause_s: float = 0.03, address: str = "127.0.0.1"):
        self.port = port
        self.address = address
        self.t0 = t0
        self.pause_s = pause_s
        self.first: dict[str, float] = {}
        self.requests = 0  # asked, and of them answered by a guest (200): the watch's own load
        self.served = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> FrontendWatch:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def answered(self) -> dict[str, float]:
        with self._lock:
            return dict(self.first)

    def _one(self) -> str | None:
        conn = http.client.HTTPConnection(self.address, self.port, timeout=5)
        try:
            conn.request("GET", "/", headers={"Connection": "close"})
            resp = conn.getresponse()
            body = resp.read().decode(errors="replace").strip()
            return body if resp.status == 200 else None
        except (OSError, http.client.HTTPException):
            return None
        finally:
            conn.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            body = self._one()
            now = time.monotonic() - self.t0
            with self._lock:
                self.requests += 1
                if body:
                    self.served += 1
                    self.first.setdefault(body, now)
            self._stop.wait(self.pause_s)
