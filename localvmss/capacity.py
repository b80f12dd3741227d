"""The one rule for how many instances a set may have: admission against the hosts' memory and the
load balancer's NAT pool. ``scale`` (API and CLI), autoscale decisions and ``delete-instances``
all change capacity through ``CapacityRule.check``, so none of them can ask for instances the
hosts cannot hold or the NAT pool cannot number.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psutil

from localvmss import lifecycle, standby
from localvmss.config import DaemonConfig
from localvmss.errors import CapacityError, LocalVMSSError
from localvmss.inventory import Inventory
from localvmss.model import ProvisioningState
from localvmss.spec import ScaleSetSpec
from localvmss.store import Store

MiB = 1024 * 1024


class CapacityRule:
    def __init__(self, cfg: DaemonConfig, store: Store, inventory: Inventory) -> None:
        self.cfg = cfg
        self.store = store
        self.inv = inventory
        # name, spec, capacity -> raises InvalidSpec; set by the daemon when HAProxy is enabled.
        self.lb_check: Callable[[str, ScaleSetSpec, int], Any] | None = None

    def check(self, name: str, spec: ScaleSetSpec, current: int, new: int) -> None:
        """Raise if ``name`` may not go from ``current`` to ``new`` instances (nothing changes).
        Members a standby pool already holds in memory (Running, Paused) need no more of it;
        the NAT pool must number the standby pool too (its instances keep their ports)."""
        if spec.load_balancer is not None and self.lb_check is not None:
            # e.g. a NAT pool too small for the new capacity
            self.lb_check(name, spec, new + standby.target_size(spec.standby_pool, new))
        if new > current:
            self.admit(spec, new - current - min(new - current, self.pool_in_memory(name)))

    def pool_in_memory(self, name: str) -> int:
        """The set's standby-pool instances a scale-out can take that already hold their memory."""
        try:
            row = self.store.scale_set(name)
        except LocalVMSSError:
            return 0
        return sum(
            1
            for i in self.store.instances(name)
            if lifecycle.usable_from_pool(i, row.model_version) and i.standby_state != "Saved"
        )

    def admit_pool(self, spec: ScaleSetSpec, new_members: int, capacity: int, pool_now: int = 0) -> None:
        """Admission of a set with a standby pool (create or update): the new members plus the
        pool instances still to be made; Saved ones count too, as each boots before it is saved
        (then it holds disk, not memory). The error names the pool's share."""
        more = max(0, standby.target_size(spec.standby_pool, capacity) - pool_now)
        try:
            self.admit(spec, new_members + more)
        except CapacityError as exc:
            if not more:
                raise
            raise CapacityError(
                f"standbyPool of {more} more instance(s) (maxReadyCapacity "
                f"{spec.standby_pool.max_ready_capacity if spec.standby_pool else 0}) with {new_members} new "
                f"member(s): {exc.message}"
            ) from None

    def admit(self, spec: ScaleSetSpec, new_instances: int, memory_mib: int | None = None) -> None:
        """Refuse work the hosts cannot hold: free memory x overcommit, minus what is still
        booting (each instance at its own size). The message carries the numbers."""
        if new_instances <= 0:
            return
        need = new_instances * (memory_mib or spec.memory_mib) * MiB
        available = self.inv.available()
        if not available:
            raise CapacityError("no host is available to place instances on; nothing was changed")
        free = 0
        for host in available:
            try:
                free += self.inv.capacity(host).free_memory_bytes
            except LocalVMSSError:
                continue
        if any(self.inv.hosts[h].uri.startswith(("qemu:///", "qemu+unix")) for h in available):
            # Local hosts share this machine's memory: libvirt's figure per host counts it once each.
            free = min(free, psutil.virtual_memory().available * len(available))
        limit = int(free * self.cfg.memory_overcommit) - self.booting_bytes()
        if need > limit:
            raise CapacityError(
                f"not enough memory: {new_instances} more instance(s) need {need // MiB} MiB but the hosts can "
                f"take {max(limit, 0) // MiB} MiB (free memory x overcommit {self.cfg.memory_overcommit}); "
                "nothing was changed"
            )

    def booting_bytes(self) -> int:
        """Memory of instances still being created: not yet in the hosts' free-memory figure."""
        specs: dict[str, ScaleSetSpec] = {}
        total = 0
        for inst in self.store.instances():
            if inst.provisioning_state != ProvisioningState.CREATING.value:
                continue
            if inst.scale_set not in specs:
                specs[inst.scale_set] = self.store.scale_set(inst.scale_set).spec
            total += lifecycle.memory_mib(inst, specs[inst.scale_set]) * MiB
        return total
