"""Which accelerator really boots a guest on a host: ``kvm`` where it works, else ``qemu`` (TCG).

A ``/dev/kvm`` that exists is not enough (on nested or paravirtual KVM a Linux guest can hang in
its decompressor), so the probe boots the image's kernel under KVM through libvirt with no root
disk: a working KVM reaches the "no root" panic and reboots within a second or two, which with
``on_reboot=destroy`` ends the domain; a hang means KVM is unusable.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from localvmss.errors import LocalVMSSError
from localvmss.virt import domainxml
from localvmss.virt.host import Host

PROBE_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class AccelChoice:
    domain_type: str  # "kvm" or "qemu"
    reason: str


def probe_accelerator(host: Host, kernel_path: str, timeout_s: float = PROBE_TIMEOUT_S) -> AccelChoice:
    """Boot a probe guest under KVM; return the domain type instances should use on ``host``."""
    if "kvm" not in host.capacity().domain_types:
        return AccelChoice("qemu", f"host {host.name}: libvirt offers no kvm domain type; using QEMU TCG")
    name = f"lvmss-probe-kvm-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    with host.transient_guard(name):
        try:
            host.create_transient(domainxml.probe_domain_xml(name, "kvm", kernel_path))
        except LocalVMSSError as exc:
            detail = exc.message.splitlines()[0].rsplit("error: ", 1)[-1]
            return AccelChoice("qemu", f"host {host.name}: KVM could not run a guest ({detail}); using QEMU TCG")
        while time.monotonic() - started < timeout_s:
            if not host.domain_exists(name):
                took = time.monotonic() - started
                return AccelChoice("kvm", f"host {host.name}: a KVM guest booted its kernel in {took:.1f} s; using KVM")
            time.sleep(0.2)
    return AccelChoice(
        "qemu",
        f"host {host.name}: /dev/kvm is present but a KVM guest did not boot its kernel within "
        f"{timeout_s:.0f} s; using QEMU TCG (software emulation, slower)",
    )
