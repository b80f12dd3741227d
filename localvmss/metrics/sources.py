"""Where the exporter's samples come from: libvirt bulk stats joined with the store's records.

One ``getAllDomainStats`` call per available host per scrape; instances are matched by domain
name, so the labels (set, instance id, host, fault domain) come from our records.
"""

from __future__ import annotations

import logging

from localvmss.errors import LocalVMSSError
from localvmss.inventory import Inventory
from localvmss.metrics.exporter import InstanceSample, ScaleSetSample
from localvmss.metrics.file_sd import write_file_sd
from localvmss.model import ProvisioningState
from localvmss.store import Store
from localvmss.virt.stats import parse_domain_stats

log = logging.getLogger(__name__)


class Sources:
    def __init__(self, store: Store, inventory: Inventory) -> None:
        self.store = store
        self.inv = inventory

    def instance_samples(self) -> list[InstanceSample]:
        by_domain = {i.domain_name: i for i in self.store.instances()}
        samples = []
        for host in self.inv.available():
            try:
                raw = self.inv.host(host).all_domain_stats()
            except LocalVMSSError as exc:
                log.debug("stats of %s: %s", host, exc.message)
                continue
            for name, values in raw:
                inst = by_domain.get(name)
                if inst is None:
                    continue
                samples.append(
                    InstanceSample(
                        inst.scale_set, inst.instance_id, host, inst.fault_domain, parse_domain_stats(name, values)
                    )
                )
        return samples

    def scale_set_samples(self) -> list[ScaleSetSample]:
        out = []
        for row in self.store.scale_sets():
            instances = [
                i for i in self.store.instances(row.name) if i.provisioning_state != ProvisioningState.DELETING.value
            ]
            out.append(
                ScaleSetSample(
                    row.name,
                    desired=row.capacity if row.mode == "Uniform" else len(instances),
                    actual=len(instances),
                    healthy=len([i for i in instances if i.health == "healthy"]),
                )
            )
        return out

    def write_guest_targets(self, path: str) -> None:
        """file_sd for guest metrics: every running instance's /cgi-bin/metrics on port 80."""
        targets = [
            (f"{i.ip}:80", {"scale_set": i.scale_set, "instance_id": str(i.instance_id), "host": i.host})
            for i in self.store.instances()
            if i.desired_power == "running" and i.provisioning_state != ProvisioningState.DELETING.value
        ]
        write_file_sd(path, targets)
