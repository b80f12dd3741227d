"""Warm template clones, as the reconcile loop drives them: for each model version of a set
with ``templateClones`` and each host it places instances on, one hidden *builder* instance is
booted until healthy and saved as a template (``localvmss.virt.template``); a new member on that
host is then restored from the template over its own disk and re-identified through the guest
channel instead of booted. Whatever cannot be cloned safely boots cold. Why and what was
measured: docs/WARM-CLONES.md.

Crash safety: a template's row is written before its volumes are made and marked ready only
once they are whole; rows of templates that are no longer wanted (their set gone, an older model
version, clones turned off, a half-made one whose builder is gone) are removed with their
volumes by ``delete``. A clone's record exists before its domain, like every instance.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from localvmss import lifecycle, terminate
from localvmss.config import DaemonConfig
from localvmss.errors import WarmCloneUnavailable
from localvmss.inventory import Inventory
from localvmss.model import OBJECT_PREFIX, ProvisioningState
from localvmss.provision import Provisioner, computer_name
from localvmss.spec import ScaleSetSpec
from localvmss.store import InstanceRow, ScaleSetRow, Store, TemplateRow
from localvmss.virt import template

log = logging.getLogger(__name__)


def template_name(scale_set: str, model_version: int) -> str:
    """The volumes' stem (``<name>.state``, ``<name>-disk.qcow2``) in each host's pool."""
    return f"{OBJECT_PREFIX}tmpl-{scale_set}-v{model_version}"


class WarmClones:
    def __init__(
        self,
        cfg: DaemonConfig,
        store: Store,
        inventory: Inventory,
        provisioner: Provisioner,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.inv = inventory
        self.prov = provisioner
        self.clock = clock

    # -- decisions (the reconcile pass) -------------------------------------------------------
    def ready_template(self, scale_set: str, model_version: int, host: str) -> TemplateRow | None:
        for row in self.store.templates(scale_set):
            if row.model_version == model_version and row.host == host and row.ready:
                return row
        return None

    def hosts_needing_a_builder(
        self, row: ScaleSetRow, spec: ScaleSetSpec, alive: dict[str, bool], instances: list[InstanceRow]
    ) -> list[str]:
        """Hosts of the set (its zones' hosts, every host for a regional set) that answer and
        have neither a template of the set's model version nor a builder on the way."""
        if not spec.template_clones.enabled or row.deleting:
            return []
        have = {t.host for t in self.store.templates(row.name) if t.model_version == row.model_version}
        building = {
            i.host
            for i in instances
            if i.standby_state == lifecycle.TEMPLATE_BUILDER
            and i.model_version == row.model_version
            and i.provisioning_state != ProvisioningState.DELETING.value
        }
        return [
            h
            for h in self.inv.hosts
            if alive.get(h) and h not in have | building and (not spec.zones or self.inv.zone_of(h) in spec.zones)
        ]

    def stale(self) -> list[TemplateRow]:
        """Templates nobody will clone from again, or half made with no builder left."""
        templates = self.store.templates()
        if not templates:
            return []  # the common case costs one query a pass
        sets = {s.name: s for s in self.store.scale_sets()}
        builders = {
            (i.scale_set, i.instance_id)
            for i in self.store.instances()
            if i.standby_state == lifecycle.TEMPLATE_BUILDER
            and i.provisioning_state != ProvisioningState.DELETING.value
        }
        out = []
        for t in templates:
            owner = sets.get(t.scale_set)
            if (
                owner is None
                or owner.deleting
                or not owner.spec.template_clones.enabled
                or t.model_version != owner.model_version
                or t.host not in self.inv.hosts
                or (not t.ready and (t.scale_set, t.builder) not in builders)
            ):
                out.append(t)
        return out

    # -- work (the reconciler's workers) ---------------------------------------------------
    def make(self, builder: InstanceRow) -> bool:
        """Save a healthy builder as the template of its model version on its host; the builder
        is then deleted (its record first marked, the usual deletion path removes its objects)."""
        name = template_name(builder.scale_set, builder.model_version)
        if self.ready_template(builder.scale_set, builder.model_version, builder.host) is not None:
            # Saved already (the daemon stopped before the builder was marked): only that is left.
            self.store.update_instance(
                builder.scale_set,
                builder.instance_id,
                provisioning_state=ProvisioningState.DELETING.value,
                delete_reason=terminate.STANDBY,
            )
            return True
        row = TemplateRow(
            scale_set=builder.scale_set,
            model_version=builder.model_version,
            host=builder.host,
            pool=self.cfg.pool_name,
            state_volume=f"{name}.state",
            disk_volume=f"{name}-disk.qcow2",
            saved_xml="",
            builder=builder.instance_id,
            ready=False,
            created_at=self.clock(),
        )
        self.store.put_template(row)
        started = time.monotonic()
        made = template.make_template(self.inv.host(builder.host), self.cfg.pool_name, builder.domain_name, name)
        self.store.template_ready(row.scale_set, row.model_version, row.host, made.saved_xml)
        self.store.update_instance(
            builder.scale_set,
            builder.instance_id,
            provisioning_state=ProvisioningState.DELETING.value,
            delete_reason=terminate.STANDBY,
        )
        self.store.log_activity(
            builder.scale_set,
            "template",
            f"warm template of model version {builder.model_version} on {builder.host} saved from instance "
            f"{builder.instance_id} in {time.monotonic() - started:.1f} s "
            f"({self.clock() - lifecycle.boot_started(builder):.1f} s after its boot began); new instances "
            "there are restored from it",
            instances=[builder.instance_id],
        )
        return True

    def delete(self, row: TemplateRow) -> bool:
        """Remove a template's volumes, then its row (volumes already gone count as removed)."""
        if row.host in self.inv.hosts:  # a host removed from the inventory took its volumes along
            saved = template.Template(row.pool, row.state_volume, row.disk_volume, row.saved_xml)
            template.delete_template(self.inv.host(row.host), saved)
        self.store.delete_template_row(row.scale_set, row.model_version, row.host)
        log.info("warm template %s on %s removed", template_name(row.scale_set, row.model_version), row.host)
        return False

    def clone(self, inst: InstanceRow, spec: ScaleSetSpec) -> str:
        """Restore ``inst`` from its host's template of its model version and give it its own
        identity and address; returns what took how long. WarmCloneUnavailable (the domain and
        disk it began are removed) means: boot it cold."""
        tpl = self.ready_template(inst.scale_set, inst.model_version, inst.host)
        host = self.inv.host(inst.host)
        self.prov.ensure_identity(inst, spec)
        plan = self.inv.address_plan(inst.host)
        started = time.monotonic()
        try:
            if tpl is None:  # (a domain restored before a restart is removed too: its identity is unknown)
                raise WarmCloneUnavailable(f"no template of model version {inst.model_version} on {inst.host}")
            if host.domain_exists(inst.domain_name):
                # Restored before the daemon stopped, identity unknown: identity is given again.
                restore = "restored before a daemon restart"
            else:
                saved = template.Template(tpl.pool, tpl.state_volume, tpl.disk_volume, tpl.saved_xml)
                try:
                    took = template.restore_clone(host, saved, self.prov.domain_xml(inst, spec))
                except WarmCloneUnavailable:
                    # A template that cannot be restored (say a save file torn by a crash while
                    # its header was rewritten) is made again rather than tried by every clone.
                    self.delete(tpl)
                    raise
                restore = f"restore {took:.2f} s"
            identity_started = time.monotonic()
            skew = template.reidentify(
                host,
                inst.domain_name,
                inst.domain_name,
                computer_name(spec, inst),
                inst.mac,
                address=plan.interface_address(inst.ip),
                gateway=plan.gateway,
                static=plan.is_static(inst.ip),
            )
        except WarmCloneUnavailable:
            self.prov.remove_compute_and_disk(inst)
            raise
        return (
            f"{restore}, identity and clock {time.monotonic() - identity_started:.2f} s "
            f"(skew after {skew * 1000:+.0f} ms), {time.monotonic() - started:.2f} s in all"
        )
