"""Scale-out time of a Uniform scale set against plain libvirt, and overlay (clone) time.

Run as root from the repository: ``.venv/bin/python bench/scale_out.py [--image-dir DIR]``.
In one run, with its own one-host lab and its own daemon (both always removed at the end):

- localvmss: ``scale 0 -> N`` (PATCH sku.capacity) until every instance's ``/healthz`` answers 200,
  for N=1 and N=4, then back to 0;
- plain: the same image through localvmss.virt directly (overlay + seed + reservation + define +
  start per guest) until every guest's ``/healthz`` answers 200, for N=1 and N=4;
- the ratio localvmss / plain for each N (the figure to compare: the machines are shared, so
  absolute seconds vary from run to run);
- Host.create_overlay on a 64 MiB base (64 MiB of data) and on a 20 GiB base (virtual, sparse).

Prints figures only.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402

from localvmss.cli.client import ApiClient  # noqa: E402
from localvmss.lab.hosts import LabHost  # noqa: E402
from localvmss.lab.testbed import Testbed  # noqa: E402
from localvmss.virt.host import Host  # noqa: E402

PLAIN_POOL = "lvmss-plain"
TIMEOUT_S = 600.0
CLONE_REPEATS = 5


def uniform_body(capacity: int) -> dict[str, Any]:
    return {
        "sku": {"name": "Standard_B1ls", "capacity": capacity},  # 1 vCPU, 256 MiB, like the plain guests
        "properties": {
            "orchestrationMode": "Uniform",
            "virtualMachineProfile": {"storageProfile": {"imageReference": {"id": "base"}}, "osProfile": {}},
        },
    }


def wait(check: Any, what: str, timeout: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def localvmss_scale_out(api: ApiClient, host: Host, set_name: str, count: int) -> dict[str, float]:
    """Seconds from PATCH capacity 0 -> count to each instance's /healthz 200; scales back to 0 after."""
    t0 = time.monotonic()
    api.patch(f"/scaleSets/{set_name}", {"sku": {"capacity": count}})
    watch = benchlib.HealthWatch(t0, TIMEOUT_S)
    seen: set[str] = set()
    while len(seen) < count and time.monotonic() < t0 + TIMEOUT_S:
        for vm in api.get(f"/scaleSets/{set_name}/virtualMachines")["value"]:
            ip = vm.get("properties", {}).get("networkProfile", {}).get("privateIpAddress")
            if ip and ip not in seen:
                seen.add(ip)
                watch.add(ip)
        time.sleep(0.1)
    ready = watch.wait()
    api.patch(f"/scaleSets/{set_name}", {"sku": {"capacity": 0}})
    wait(
        lambda: (
            not api.get(f"/scaleSets/{set_name}/virtualMachines")["value"]
            and not host.owned_domains(f"lvmss-{set_name}-")
        ),
        f"{set_name} to scale back to 0",
    )
    return ready


def plain_create(
    host: Host, lab_host: LabHost, base: benchlib.BaseVolumes, domain_type: str, count: int
) -> dict[str, float]:
    """Seconds from the first overlay to each plain guest's /healthz 200; removes the guests after."""
    guests = benchlib.plain_guests(lab_host, f"plain{uuid.uuid4().hex[:6]}", count)
    try:
        t0 = time.monotonic()
        watch = benchlib.HealthWatch(t0, TIMEOUT_S)
        for guest in guests:
            benchlib.prepare(host, lab_host, base, guest)
            benchlib.define_and_start(host, lab_host, base, guest, domain_type)
            watch.add(guest.ip)
        return watch.wait()
    finally:
        for guest in guests:
            benchlib.remove(host, lab_host, base, guest)


def clone_times(host: Host, workdir: Path) -> list[str]:
    """Host.create_overlay on a 64 MiB base (full of data) and a 20 GiB sparse base."""
    small_raw = workdir / "base64m.raw"
    with open(small_raw, "wb") as fh:
        for _ in range(64):
            fh.write(os.urandom(1 << 20))
    small = workdir / "base64m.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(small_raw), str(small)], check=True)
    small_raw.unlink()
    big = workdir / "base20g.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(big), "20G"], check=True)
    lines = []
    for label, path in (("64 MiB base (64 MiB of data)", small), ("20 GiB base (virtual, sparse)", big)):
        vol = f"clone-{path.stem}.qcow2"
        host.upload_file(PLAIN_POOL, vol, str(path), "qcow2")
        took = []
        for k in range(CLONE_REPEATS):
            name = f"clone-{path.stem}-{k}.qcow2"
            t0 = time.monotonic()
            host.create_overlay(PLAIN_POOL, name, vol)
            took.append(time.monotonic() - t0)
            host.delete_volume(PLAIN_POOL, name)
        host.delete_volume(PLAIN_POOL, vol)
        each = ", ".join(f"{t:.3f}" for t in took)
        lines.append(
            f"clone (Host.create_overlay) on a {label}, file {path.stat().st_size / 2**20:.1f} MiB: "
            f"median {statistics.median(took):.3f} s (each: {each})"
        )
    return lines


def ratio(a: dict[str, float], b: dict[str, float], count: int) -> str:
    if len(a) < count or len(b) < count:
        return "n/a (not every guest answered)"
    return f"{max(a.values()) / max(b.values()):.2f}"


def main() -> int:
    started = benchlib.start("scale_out", __doc__.splitlines()[0])
    if started is None:
        return 2
    image_dir, manifest = started
    workdir = Path(tempfile.mkdtemp(prefix="lvmss-bench-"))
    testbed = Testbed(tag="benchscale", host_count=1)
    daemon = None
    try:
        lab = testbed.up()
        lab_host = lab.hosts[0]
        daemon = testbed.daemon(workdir / "daemon")
        daemon.start()
        api = ApiClient(str(daemon.socket_path), timeout=600)
        host = Host(lab_host.name, lab_host.socket_uri)
        try:
            api.put("/images/base", {"sourceDirectory": str(image_dir)})
            h = next(x for x in api.get("/hosts")["value"] if x["name"] == lab_host.name)
            domain_type = h["domainType"] or "qemu"
            print(f"accelerator: {domain_type} ({h['accelerator']})")

            host.ensure_pool(PLAIN_POOL, f"/var/lib/libvirt/{PLAIN_POOL}")
            base = benchlib.upload_image(host, PLAIN_POOL, image_dir, manifest, "plainbase")

            set_name = f"bench{uuid.uuid4().hex[:6]}"
            api.put(f"/scaleSets/{set_name}", uniform_body(0))
            wait(
                lambda: api.get(f"/scaleSets/{set_name}")["properties"]["provisioningState"] == "Succeeded",
                "the empty scale set",
            )
            results = {}
            for count in (1, 4):
                lv = localvmss_scale_out(api, host, set_name, count)
                print(f"localvmss scale 0->{count} until every instance serves: {benchlib.fmt_times(lv, count)}")
                pl = plain_create(host, lab_host, base, domain_type, count)
                print(f"plain libvirt create of {count} until every guest serves: {benchlib.fmt_times(pl, count)}")
                results[count] = (lv, pl)
            for count, (lv, pl) in results.items():
                print(f"ratio localvmss/plain, N={count}: {ratio(lv, pl, count)}")
            api.delete(f"/scaleSets/{set_name}")

            for line in clone_times(host, workdir):
                print(line)
        finally:
            host.close()
            api.close()
    finally:
        if daemon is not None:
            daemon.stop()
            daemon.stop_data_plane()  # HAProxy and Prometheus outlive a stopped daemon by design
        testbed.down()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
