"""Idempotent per-instance actions on libvirt: make, power, reimage and remove an instance.

Each function may be interrupted at any point (daemon killed) and simply called again: every
step checks what already exists. Called by the reconciler's worker threads only.
"""

from __future__ import annotations

import base64
import logging
import time

from localvmss.config import DaemonConfig
from localvmss.errors import NotFound
from localvmss.inventory import Inventory, image_volumes
from localvmss.model import PowerState
from localvmss.spec import ScaleSetSpec
from localvmss.store import InstanceRow
from localvmss.virt.domainxml import InstanceDomain, NumaPinning, Ownership, build_domain_xml
from localvmss.virt.seed import StaticNetwork, build_nocloud_seed

log = logging.getLogger(__name__)


def os_volume(inst: InstanceRow) -> str:
    return f"{inst.domain_name}-os.qcow2"


def seed_volume(inst: InstanceRow) -> str:
    return f"{inst.domain_name}-seed.iso"


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out


def computer_name(spec: ScaleSetSpec, inst: InstanceRow) -> str:
    """Azure-style: the prefix plus the instance id in base 36, six digits (web000003)."""
    if inst.vm_name:
        return inst.vm_name
    return f"{spec.computer_name_prefix}{_base36(inst.instance_id):0>6}"


class Provisioner:
    def __init__(self, cfg: DaemonConfig, inventory: Inventory, management_public_key: str | None = None) -> None:
        self.cfg = cfg
        self.inv = inventory
        self.management_public_key = management_public_key
        # domain -> when its guest was asked to shut down. Only in memory: after a daemon restart
        # the guest is simply asked again.
        self._shutdown_asked: dict[str, float] = {}

    def _image_for(self, spec: ScaleSetSpec, inst: InstanceRow) -> str:
        image = inst.overrides.get("image") or spec.image
        if not image:
            raise ValueError(f"instance {inst.domain_name} has no image")
        return str(image)

    def ensure_artifacts(self, inst: InstanceRow, spec: ScaleSetSpec, defined: bool | None = None) -> None:
        """Overlay disk, NoCloud seed, address reservation and domain definition. ``defined``:
        whether the caller just saw the domain defined (None: look)."""
        host = self.inv.host(inst.host)
        pool = self.cfg.pool_name
        vols = self.inv.ready_image(inst.host, self._image_for(spec, inst))
        try:
            host.create_overlay(pool, os_volume(inst), vols.disk)
        except NotFound:
            # The base volume went away behind our back: the next look checks (and uploads) it.
            self.inv.forget_image_volumes(inst.host)
            raise
        self._seed_and_address(inst, spec)
        if defined is None:
            defined = host.domain_exists(inst.domain_name)
        if not defined:
            host.define_domain(self.domain_xml(inst, spec))

    def ensure_identity(self, inst: InstanceRow, spec: ScaleSetSpec) -> None:
        """What gives an instance its identity whether it boots or is restored from a warm
        template: its NoCloud seed (read at every boot) and its DHCP reservation (none for a static
        address: the seed tells it, ``localvmss.addressing``). The image's
        volumes too: a domain XML names the kernel and initrd volumes."""
        self.inv.ready_image(inst.host, self._image_for(spec, inst))
        self._seed_and_address(inst, spec)

    def _seed_and_address(self, inst: InstanceRow, spec: ScaleSetSpec) -> None:
        """``ensure_identity`` once the image's volumes are known to be there."""
        if not self.inv.volume_ready(inst.host, seed_volume(inst)):
            # Also when a seed exists but its upload never finished (a crash): it is made again.
            user_data = base64.b64decode(spec.custom_data) if spec.custom_data else None
            keys = list(inst.overrides.get("ssh_public_keys") or spec.ssh_public_keys)
            if self.management_public_key:
                keys.append(self.management_public_key)
            plan = self.inv.address_plan(inst.host)
            static = plan.is_static(inst.ip)
            network = StaticNetwork(plan.interface_address(inst.ip), plan.gateway, inst.mac.lower()) if static else None
            seed = build_nocloud_seed(
                inst.domain_name,
                computer_name(spec, inst),
                keys,
                user_data,
                self.cfg.metadata_port,
                admin_username=spec.admin_username,
                network=network,
            )
            self.inv.upload_bytes(inst.host, seed_volume(inst), seed)
        self.inv.reserve(inst.host, inst.mac, inst.ip, computer_name(spec, inst))  # none for a static address

    def domain_xml(self, inst: InstanceRow, spec: ScaleSetSpec) -> str:
        pool = self.cfg.pool_name
        image = self._image_for(spec, inst)
        manifest, _ = self.inv.image(image)
        vols = image_volumes(image, manifest)
        numa = None
        if spec.fault_domain_mapping.value == "numa":
            cells = self.inv.capacity(inst.host).cells
            cell = cells[inst.fault_domain % len(cells)]
            numa = NumaPinning(cell.cell_id, cell.cpus)
        vcpus = int(inst.overrides.get("vcpus") or spec.vcpus)
        memory = int(inst.overrides.get("memory_mib") or spec.memory_mib)
        return build_domain_xml(
            InstanceDomain(
                name=inst.domain_name,
                domain_type=self.inv.domain_type(inst.host),
                vcpus=vcpus,
                memory_mib=memory,
                pool=pool,
                os_volume=os_volume(inst),
                seed_volume=seed_volume(inst),
                network=self.inv.network(inst.host),
                mac=inst.mac,
                kernel_path=self.inv.image_volume_path(inst.host, vols.kernel) if vols.kernel else None,
                initrd_path=self.inv.image_volume_path(inst.host, vols.initrd) if vols.initrd else None,
                cmdline=vols.cmdline,
                serial_log=self.inv.serial_log(inst.host, inst.domain_name),
                numa=numa,
                ownership=Ownership(
                    scale_set=inst.scale_set,
                    instance_id=inst.instance_id,
                    model_version=inst.model_version,
                    fault_domain=inst.fault_domain,
                    kind="vm" if inst.vm_name else "scaleSetVM",
                ),
            )
        )

    def converge_power(self, inst: InstanceRow) -> str | None:
        """One step toward the power state the record asks for: None while a graceful power-off is
        still under way (see ``power_off``), else what happened ("" when nothing worth telling)."""
        host = self.inv.host(inst.host)
        if inst.desired_power == "running":
            host.start(inst.domain_name)
            return ""
        outcome = self.power_off(inst)
        if outcome is not None and inst.desired_power == "deallocated":
            # Compute released (no domain), disk and address kept.
            host.undefine(inst.domain_name)
        return outcome

    def power_off(self, inst: InstanceRow) -> str | None:
        """Azure's power-off, without blocking a worker: the first call presses the guest's ACPI
        power button; later calls look whether it is off, and once ``shutdown_timeout_s`` has
        passed (or at once with skipShutdown) the domain is powered off hard. None while waiting;
        once off, how it went ("" if it was already off)."""
        host = self.inv.host(inst.host)
        name = inst.domain_name
        try:
            running = host.power_state(name).active
        except NotFound:
            running = False
        asked = self._shutdown_asked.pop(name, None)
        if not running:
            return f"the guest shut down in {time.monotonic() - asked:.1f} s" if asked is not None else ""
        timeout = self.cfg.shutdown_timeout_s
        if inst.skip_shutdown or timeout <= 0:
            host.destroy(name)
            return "powered off without a guest shutdown"
        if asked is None:
            host.shutdown(name)
            self._shutdown_asked[name] = time.monotonic()
            return None
        if time.monotonic() - asked < timeout:
            self._shutdown_asked[name] = asked
            return None
        log.warning("%s did not shut down within %.0f s; powering it off", name, timeout)
        host.destroy(name)
        return f"the guest did not shut down within {timeout:.0f} s: powered off hard"

    def shutdown_pending(self, inst: InstanceRow) -> bool:
        """True while a guest has been asked to shut down and has not yet."""
        return inst.domain_name in self._shutdown_asked

    def power_state(self, inst: InstanceRow) -> PowerState:
        """The domain's power state; DEALLOCATED when it is not defined (one look, not two)."""
        try:
            return self.inv.host(inst.host).power_state(inst.domain_name)
        except NotFound:
            return PowerState.DEALLOCATED

    def reimage(self, inst: InstanceRow, spec: ScaleSetSpec) -> None:
        """Fresh overlay and seed from the base image; same id, address and name."""
        host = self.inv.host(inst.host)
        host.undefine(inst.domain_name)
        self.inv.delete_volume(inst.host, os_volume(inst))
        self.inv.delete_volume(inst.host, seed_volume(inst))
        self.ensure_artifacts(inst, spec, defined=False)

    def remove_compute_and_disk(self, inst: InstanceRow) -> None:
        """Domain and OS disk (a warm clone that could not be made): seed and address stay, so
        the instance boots cold with the identity it has."""
        self.inv.host(inst.host).undefine(inst.domain_name)
        self.inv.delete_volume(inst.host, os_volume(inst))

    def remove(self, inst: InstanceRow) -> None:
        """Domain, disks, seed and address reservation; anything already gone counts as removed."""
        host = self.inv.host(inst.host)
        host.undefine(inst.domain_name)
        self.inv.delete_volume(inst.host, os_volume(inst))
        self.inv.delete_volume(inst.host, seed_volume(inst))
        self.inv.release(inst.host, inst.mac)
