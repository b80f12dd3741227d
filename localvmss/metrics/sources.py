"""Where the exporter's samples come from: libvirt bulk stats joined with the store's records.

One ``getAllDomainStats`` call per available host per scrape; instances are matched by domain
name, so the labels (set, instance id, host, fault domain) come from our records.
"""

from __future__ import annotations

import logging
from typing import Any

from localvmss import lifecycle
from localvmss.errors import LocalVMSSError
from localvmss.inventory import DIRECTORY_GUEST_METRICS, Inventory, guest_metrics_of
from localvmss.metrics.exporter import InstanceSample, ScaleSetSample
from localvmss.metrics.file_sd import write_file_sd
from localvmss.model import ProvisioningState
from localvmss.spec import ScaleSetSpec
from localvmss.store import InstanceRow, Store
from localvmss.virt.stats import parse_domain_stats

log = logging.getLogger(__name__)


class Sources:
    def __init__(self, store: Store, inventory: Inventory) -> None:
        self.store = store
        self.inv = inventory
        # What the samples take from the store's rows, with the store revision it was made at:
        # made again only after the store changed (``Store.revision``).
        self._members: tuple[int, dict[str, InstanceRow]] | None = None
        self._sets: tuple[int, list[ScaleSetSample]] | None = None

    def _members_by_domain(self) -> dict[str, InstanceRow]:
        """The set members' rows by domain name (standby-pool instances are no part of the
        set's metrics: autoscale must not see them)."""
        revision = self.store.revision()  # before the rows: a change meanwhile makes it again next time
        kept = self._members
        if kept is None or kept[0] != revision:
            kept = (revision, {i.domain_name: i for i in self.store.instances() if not lifecycle.in_pool(i)})
            self._members = kept
        return kept[1]

    def instance_samples(self) -> list[InstanceSample]:
        by_domain = self._members_by_domain()
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
        revision = self.store.revision()
        kept = self._sets
        if kept is None or kept[0] != revision:
            kept = (revision, self._scale_set_samples())
            self._sets = kept
        return list(kept[1])

    def _scale_set_samples(self) -> list[ScaleSetSample]:
        out = []
        for row in self.store.scale_sets():
            every = [
                i for i in self.store.instances(row.name) if i.provisioning_state != ProvisioningState.DELETING.value
            ]
            instances = [i for i in every if not lifecycle.in_pool(i)]
            standing = [i.standby_state for i in every if lifecycle.standing_by(i)]
            states = ("Running", "Paused", "Saved") if row.spec.standby_pool is not None else ()
            out.append(
                ScaleSetSample(
                    row.name,
                    desired=row.capacity if row.mode == "Uniform" else len(instances),
                    actual=len(instances),
                    healthy=len([i for i in instances if i.health == "healthy"]),
                    standby=tuple((state, standing.count(state)) for state in states),
                )
            )
        return out

    def write_guest_targets(self, path: str) -> None:
        """file_sd for guest metrics: every running instance at its image's endpoint."""
        specs = {row.name: row.spec for row in self.store.scale_sets()}
        images = {name: manifest for name, (manifest, _source) in self.store.images().items()}
        members = [i for i in self.store.instances() if not lifecycle.in_pool(i)]
        write_file_sd(path, guest_targets(members, specs, images))


def guest_targets(
    instances: list[InstanceRow], specs: dict[str, ScaleSetSpec], images: dict[str, dict[str, Any]]
) -> list[tuple[str, dict[str, str]]]:
    """(host:port, labels) per running instance. The port and ``__metrics_path__`` come from the
    image the instance runs (its own image for a Flexible VM, else its set's); an image that is
    not recorded (any more) gets the base image's endpoint."""
    targets = []
    for inst in instances:
        if inst.desired_power != "running" or inst.provisioning_state == ProvisioningState.DELETING.value:
            continue
        spec = specs.get(inst.scale_set)
        image = inst.overrides.get("image") or (spec.image if spec is not None else None)
        manifest = images.get(str(image)) if image else None
        metrics = guest_metrics_of(manifest) if manifest is not None else DIRECTORY_GUEST_METRICS
        labels = {
            "scale_set": inst.scale_set,
            "instance_id": str(inst.instance_id),
            "host": inst.host,
            "__metrics_path__": metrics.path,
        }
        targets.append((f"{inst.ip}:{metrics.port}", labels))
    return targets
