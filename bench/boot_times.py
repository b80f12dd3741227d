"""Boot times of the base image through libvirt directly: 1 guest, then 4 guests started at once.

Run as root from the repository: ``.venv/bin/python bench/boot_times.py [--image-dir DIR]``.
Makes its own one-host lab (localvmss.lab.testbed.Testbed) and always removes it. Prints figures
only; compare them as ratios within one run (the machines are shared, absolute seconds vary).
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402

from localvmss.lab.hosts import LabHost  # noqa: E402
from localvmss.lab.testbed import Testbed  # noqa: E402
from localvmss.virt.accel import probe_accelerator  # noqa: E402
from localvmss.virt.host import Host  # noqa: E402

POOL = "lvmss-bench"
TIMEOUT_S = 600.0


def boot_batch(
    host: Host, lab_host: LabHost, base: benchlib.BaseVolumes, domain_type: str, count: int
) -> dict[str, float]:
    """Seconds from define+start of ``count`` guests (artifacts made beforehand) to each /healthz 200."""
    guests = benchlib.plain_guests(lab_host, f"bb{uuid.uuid4().hex[:6]}", count)
    try:
        for guest in guests:
            benchlib.prepare(host, lab_host, base, guest)
        watch = benchlib.HealthWatch(time.monotonic(), TIMEOUT_S)
        for guest in guests:
            benchlib.define_and_start(host, lab_host, base, guest, domain_type)
            watch.add(guest.ip)
        return watch.wait()
    finally:
        for guest in guests:
            benchlib.remove(host, lab_host, base, guest)


def main() -> int:
    started = benchlib.start("boot_times", __doc__.splitlines()[0])
    if started is None:
        return 2
    image_dir, manifest = started
    print(f"base image {manifest.get('name')} (kernel {manifest.get('kernel_version')})")
    for line in benchlib.image_sizes(image_dir, manifest):
        print(line)

    testbed = Testbed(tag="benchboot", host_count=1)
    try:
        lab = testbed.up()
        lab_host = lab.hosts[0]
        host = Host(lab_host.name, lab_host.socket_uri)
        try:
            host.ensure_pool(POOL, f"/var/lib/libvirt/{POOL}")
            base = benchlib.upload_image(host, POOL, image_dir, manifest, "bench")
            choice = probe_accelerator(host, base.kernel_path)
            print(f"accelerator: {choice.domain_type} ({choice.reason})")
            one = boot_batch(host, lab_host, base, choice.domain_type, 1)
            print(f"1 guest, domain create to /healthz 200: {benchlib.fmt_times(one, 1)}")
            four = boot_batch(host, lab_host, base, choice.domain_type, 4)
            print(f"4 guests at once, domain create to /healthz 200 (last): {benchlib.fmt_times(four, 4)}")
            if len(one) == 1 and len(four) == 4:
                print(f"ratio 4 guests / 1 guest (last to serve): {max(four.values()) / max(one.values()):.2f}")
        finally:
            host.close()
    finally:
        testbed.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
