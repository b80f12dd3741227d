"""What the API can ask for: validate, write desired state, wake the reconciler.

Every method checks its input completely before it writes anything, so a rejected request
changes nothing. Long work (booting, deleting) is left to the reconciler; methods return at
once with the provisioning state the caller can poll.
"""

from __future__ import annotations

import logging
import re
import shlex
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from localvmss import armbody, armids, lifecycle, operations, repairs, standby
from localvmss.allocation import Allocator, slot
from localvmss.capacity import CapacityRule
from localvmss.config import DaemonConfig
from localvmss.errors import (
    CapacityError,
    Conflict,
    InvalidSpec,
    LocalVMSSError,
    NotFound,
    NotSupported,
)
from localvmss.hosturi import check_api_host_uri
from localvmss.inventory import SLOW_HOST_S, Inventory, check_guest_metrics, guest_metrics_of
from localvmss.lb.hostports import HostPortReader
from localvmss.lb.spec import check_host_ports, from_json, stored_frontend_ports, validate
from localvmss.model import (
    FLEXIBLE_MAX_VMS,
    VM_SIZES,
    OrchestrationMode,
    PowerState,
    ProvisioningState,
    check_capacity,
    parse_instance_id,
    resolve_size,
    validate_name,
    validate_resource_group,
)
from localvmss.plans import Plan
from localvmss.provision import computer_name
from localvmss.spec import (
    MODEL_FIELDS,
    AzScaleSetBody,
    ScaleSetSpec,
    StandbyState,
    parse_scale_set_body,
    parse_standby_pool,
    spec_to_azure,
)
from localvmss.sshkeys import check_ssh_public_key
from localvmss.store import InstanceRow, OperationRow, ResourceGroupRow, ScaleSetRow, Store
from localvmss.virt.stats import DomainStats, parse_domain_stats

log = logging.getLogger(__name__)

NOT_IN_VM_MODE = "is not supported in VM (Flexible) orchestration mode"
MAX_BOOT_LOG_BYTES = 1 << 20  # the tail of a serial console log the API returns


class Service:
    def __init__(
        self,
        cfg: DaemonConfig,
        store: Store,
        inventory: Inventory,
        *,
        wake: Callable[[], None],
        allocator: Allocator,
        capacity: CapacityRule,
        host_ports: HostPortReader | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.inv = inventory
        self.wake = wake  # the reconciler's: intent was written, converge it
        self.alloc = allocator
        self.capacity = capacity
        # What the host's TCP ports are used for (read before a load balancer is accepted).
        self.host_ports = host_ports or HostPortReader()
        self.lb_validator: Any = None  # set by the daemon when HAProxy is enabled
        self.autoscaler: Any = None  # set by the daemon once Prometheus is known
        self.balancer: Any = None
        self.management_key: Any = None
        self.upgrades: Any = None  # the reconciler's Upgrades (rolling-upgrade start/cancel)
        # Reconciler.scale_plan, set by the daemon: what-if shows the plan a pass would carry out.
        self.scale_planner: Callable[..., Plan] | None = None
        store.ensure_resource_group(cfg.default_resource_group, cfg.location)

    def _accepted(
        self,
        action: str,
        reason: str,
        scale_set: str | None = None,
        instances: list[int] | None = None,
        *,
        record: bool = True,
    ) -> None:
        """An accepted request, logged once at INFO with its reason (the API logs refusals);
        ``record``: also the set's activity-log entry (the caller writes its own otherwise)."""
        if record and scale_set is not None:
            self.store.log_activity(scale_set, action, reason, instances=instances or ())
        fields: dict[str, Any] = {"action": action, "reason": reason}
        if scale_set is not None:
            fields["scale_set"] = scale_set
        if instances is not None:
            fields["instance"] = instances
        log.info("%s%s: %s", f"{scale_set}: " if scale_set else "", action, reason, extra=fields)

    # -- scale sets -------------------------------------------------------------------------
    def list_sets(self) -> list[dict[str, Any]]:
        return [self._set_view(r) for r in self.store.scale_sets()]

    def get_set(self, name: str) -> dict[str, Any]:
        return self._set_view(self.store.scale_set(name))

    def _set_view(self, row: ScaleSetRow) -> dict[str, Any]:
        spec = row.spec
        instances = self.store.instances(row.name)
        state = ProvisioningState.DELETING.value if row.deleting else row.provisioning_state
        pool = [i for i in instances if lifecycle.kept_in_pool(i)]
        instances = [i for i in instances if not lifecycle.in_pool(i)]  # members: the pool is shown apart
        live = [i for i in instances if i.provisioning_state != ProvisioningState.DELETING.value]
        settling = any(i.provisioning_state != ProvisioningState.SUCCEEDED.value for i in instances) or (
            row.mode == OrchestrationMode.UNIFORM.value and len(live) != row.capacity
        )
        if state == ProvisioningState.SUCCEEDED.value and settling:
            # The reconciler has not recorded it yet, but the set is not converged: say so.
            state = ProvisioningState.UPDATING.value
        extra = {
            "provisioningState": state,
            "message": row.message,
            "modelVersion": row.model_version,
            "instanceCount": len([i for i in instances if i.provisioning_state != ProvisioningState.DELETING.value]),
            "readyCount": len([i for i in instances if i.provisioning_state == ProvisioningState.SUCCEEDED.value]),
        }
        if spec.standby_pool is not None or pool:
            extra["standbyPoolCount"] = len(pool)
            extra["standbyPoolStandingBy"] = sum(1 for i in pool if lifecycle.standing_by(i))
        view = spec_to_azure(row.name, spec, row.capacity, extra)
        view["id"] = armids.scale_set_id(self.cfg.subscription_id, row.resource_group, row.name)
        view["resourceGroup"] = row.resource_group
        view["location"] = row.arm.get("location") or self.cfg.location
        view["tags"] = row.arm.get("tags") or {}
        return armbody.merge_kept(view, row.arm.get("kept") or {})

    def put_set(
        self,
        name: str,
        body: Any,
        create_only: bool = False,
        actor: str = "",
        *,
        group: str | None = None,
        keep_unknown: bool = False,
    ) -> tuple[dict[str, Any], bool]:
        """Create or update; returns (view, created). ``create_only``: an existing set is a Conflict.
        ``group``: the resource group it is made in (or must be in); default the daemon's.
        ``keep_unknown`` (ARM's routes): fields with no local meaning are kept and echoed, not
        refused; the answer's ``localvmss.ignoredProperties`` names them."""
        validate_name(name, "scale set name")
        if group is not None:
            validate_resource_group(group)
            self.store.resource_group(group)
        try:
            existing: ScaleSetRow | None = self.store.scale_set(name)
        except NotFound:
            existing = None
        if existing is not None and group is not None and existing.resource_group.lower() != group.lower():
            raise Conflict(
                f"scale set {name!r} already exists in resource group {existing.resource_group!r}: set names are "
                "unique on a localvmss daemon"
            )
        if create_only and existing is not None:
            raise Conflict(f"scale set {name!r} already exists; use 'scale' or 'update' to change it")
        if not isinstance(body, dict):
            raise InvalidSpec("request body must be a JSON object")
        body, notes = self._local_image(body)
        kept: dict[str, Any] = {}
        ignored: list[str] = []
        if keep_unknown:
            body, kept, ignored = armbody.split_body(AzScaleSetBody, body)
            if existing is not None:
                body = _custom_data_kept(body, existing.spec.custom_data)
        arm = self._arm_fields(existing, body, kept)
        self._check_mode_unchanged(name, body)
        spec, capacity = parse_scale_set_body(name, body, set(self.store.images()))
        if spec.load_balancer is not None:
            # An update without sku.capacity keeps the current capacity: the NAT pool must cover it.
            lb_capacity = capacity if existing is None or _sku_capacity_given(body) else existing.capacity
            # Standby-pool instances keep their NAT ports: the NAT pool numbers them too.
            lb_capacity += standby.target_size(spec.standby_pool, lb_capacity)
            spec.load_balancer = self._check_load_balancer(name, spec, lb_capacity)
        if existing is None:
            self._check_zones(spec)
            self.capacity.admit_pool(spec, capacity, capacity)
            self.store.insert_scale_set(
                name,
                spec.mode.value,
                spec.model_dump(mode="json"),
                capacity,
                "Creating",
                actor=actor,
                resource_group=group or self.cfg.default_resource_group,
                arm=arm,
            )
            self._accepted("create", f"scale set created ({spec.mode.value}, capacity {capacity})", name)
            self.wake()
            return _noted(self.get_set(name), ignored, notes), True
        view = self._update_set(existing, spec, capacity, body, actor)
        if arm != existing.arm:
            self.store.set_arm(name, arm)
            view = self.get_set(name)
        return _noted(view, ignored, notes), False

    def _local_image(self, body: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """The body with a marketplace image reference (or az's alias) turned into the local image
        that stands in for it, and a note saying so (``armbody.local_image``)."""
        try:
            ref = body["properties"]["virtualMachineProfile"]["storageProfile"]["imageReference"]
        except (KeyError, TypeError):
            return body, []
        found = armbody.local_image(ref, set(self.store.images()))
        if found is None or (found[1] is None and set(ref) == {"id"}):
            return body, []
        local, note = found
        props = dict(body["properties"])
        vmp = dict(props["virtualMachineProfile"])
        storage = dict(vmp["storageProfile"])
        storage["imageReference"] = {"id": local}
        vmp["storageProfile"], props["virtualMachineProfile"] = storage, vmp
        return {**body, "properties": props}, [note] if note else []

    def _arm_fields(self, existing: ScaleSetRow | None, body: dict[str, Any], kept: dict[str, Any]) -> dict[str, Any]:
        """Location (fixed once made, as in Azure), tags (a PUT that gives them replaces them) and
        the kept fields, checked before anything is written."""
        arm = dict(existing.arm) if existing is not None else {}
        location = body.get("location")
        if location is not None:
            if not isinstance(location, str) or not location.strip() or len(location) > 90:
                raise InvalidSpec(f"location {location!r} must be a location name such as eastus")
            if existing is not None and (arm.get("location") or self.cfg.location).lower() != location.lower():
                raise Conflict(
                    f"the location of a scale set cannot change (it is {arm.get('location') or self.cfg.location!r})"
                )
            arm["location"] = location
        if "tags" in body:
            arm["tags"] = check_tags(body["tags"])
        if kept or "kept" in arm:
            arm["kept"] = kept
        return arm

    def update_tags(self, name: str, tags: Any) -> dict[str, Any]:
        """ARM's PATCH of a resource's tags (``az vmss update --set tags.k=v`` sends the whole set)."""
        row = self.store.scale_set(name)
        self.store.set_arm(name, {**row.arm, "tags": check_tags(tags)})
        return self.get_set(name)

    # -- resource groups ------------------------------------------------------------------------
    def check_group(self, name: str, group: str | None) -> None:
        """A set named under a resource group must be in it, as ARM paths require (unknown
        group: ResourceGroupNotFound; set elsewhere: ResourceNotFound, ARM's own words)."""
        if group is None:
            return
        validate_resource_group(group)
        self.store.resource_group(group)
        try:
            row = self.store.scale_set(name)
        except NotFound:
            row = None
        if row is None or row.resource_group.lower() != group.lower():
            raise NotFound(
                f"The Resource 'Microsoft.Compute/virtualMachineScaleSets/{name}' under resource group "
                f"'{group}' was not found."
            )

    def group_of_vm(self, vm_name: str) -> str:
        return self.store.scale_set(self.store.instance_by_vm_name(vm_name).scale_set).resource_group

    def _group_view(self, row: ResourceGroupRow) -> dict[str, Any]:
        return {
            "id": armids.group_id(self.cfg.subscription_id, row.name),
            "name": row.name,
            "type": "Microsoft.Resources/resourceGroups",
            "location": row.location,
            "tags": row.tags,
            "properties": {"provisioningState": "Succeeded"},
        }

    def list_groups(self) -> list[dict[str, Any]]:
        return [self._group_view(g) for g in self.store.resource_groups()]

    def get_group(self, name: str) -> dict[str, Any]:
        return self._group_view(self.store.resource_group(validate_resource_group(name)))

    def put_group(self, name: str, body: Any) -> tuple[dict[str, Any], bool]:
        validate_resource_group(name)
        if not isinstance(body, dict):
            raise InvalidSpec('request body must be a JSON object: {"location": ..., "tags": {...}}')
        unknown = set(body) - {"location", "tags", "name", "id", "type", "properties", "managedBy"}
        if unknown:
            raise InvalidSpec(f"unknown field(s) in resource group body: {sorted(unknown)}")
        location = body.get("location") or self.cfg.location
        if not isinstance(location, str) or len(location) > 90:
            raise InvalidSpec(f"location {location!r} must be a location name such as eastus")
        tags = check_tags(body.get("tags") or {})
        created = self.store.put_resource_group(name, location, tags)
        self._accepted("group", f"resource group {name} {'created' if created else 'updated'}", record=False)
        return self.get_group(name), created

    def delete_group(self, name: str) -> None:
        validate_resource_group(name)
        if name.lower() == self.cfg.default_resource_group.lower():
            raise Conflict(f"resource group {name!r} is the daemon's default group (default_resource_group)")
        self.store.delete_resource_group(name)
        self._accepted("group", f"resource group {name} deleted", record=False)

    def list_skus(self) -> list[dict[str, Any]]:
        """The VM sizes, in the shape of Azure's resource SKUs."""
        return [
            {
                "resourceType": "virtualMachineScaleSets",
                "name": size.name,
                "tier": "Standard",
                "size": size.name.removeprefix("Standard_"),
                "locations": [self.cfg.location],
                "capabilities": [
                    {"name": "vCPUs", "value": str(size.vcpus)},
                    {"name": "MemoryGB", "value": f"{size.memory_mib / 1024:g}"},
                ],
                "restrictions": [],
            }
            for size in VM_SIZES.values()
        ]

    # -- long-running operations --------------------------------------------------------------
    def begin_operation(self, kind: operations.OpKind, scale_set: str, **target: Any) -> OperationRow:
        """Record an accepted long-running request; ARM's answer points at it (``operation``)."""
        op = OperationRow(
            str(uuid.uuid4()),
            kind.value,
            scale_set,
            target,
            operations.OpStatus.IN_PROGRESS.value,
            None,
            time.time(),
            None,
        )
        self.store.insert_operation(op)
        return op

    def operation(self, op_id: str) -> dict[str, Any]:
        """ARM's operation status: ``{name, status, startTime, endTime?, error?}``; worked out from
        the state it waits for, and recorded once it ended."""
        op = self.store.operation(op_id)
        status, error, ended = op.status, op.error, op.ended_at
        if ended is None:
            try:
                row: ScaleSetRow | None = self.store.scale_set(op.scale_set)
            except NotFound:
                row = None
            instances = self.store.instances(op.scale_set) if row is not None else []
            kind = operations.OpKind(op.kind)
            watched = self._watched(kind, op.target, instances)
            observed = {i.instance_id: self._power(i) for i in watched}
            outcome = operations.status(kind, op.target, row, instances, observed)
            status, error = outcome.status.value, outcome.error
            if outcome.status.ended:
                ended = time.time()
                self.store.end_operation(op.id, status, error, ended)
        view: dict[str, Any] = {"name": op.id, "status": status, "startTime": _iso(op.started_at)}
        if ended is not None:
            view["endTime"] = _iso(ended)
        if error is not None:
            view["error"] = error
        return view

    @staticmethod
    def _watched(kind: operations.OpKind, target: dict[str, Any], instances: list[InstanceRow]) -> list[InstanceRow]:
        """The instances whose power state the operation's status depends on."""
        if kind is operations.OpKind.INSTANCES:
            ids = {int(i) for i in target.get("instanceIds", [])}
            return [i for i in instances if i.instance_id in ids]
        if kind is operations.OpKind.VM_PUT:
            return [i for i in instances if i.vm_name == target.get("vmName")]
        return []

    def _check_load_balancer(self, name: str, spec: ScaleSetSpec, capacity: int) -> dict[str, Any]:
        """The set's load balancer checked whole before anything is written: its shape (probe
        path included), the NAT pool against ``capacity``, other sets' ports, and the ports the
        host already uses (the daemon's own listeners, the ephemeral range, other listeners).
        Returns what to store; InvalidSpec names the port and who holds it."""
        lb = from_json(spec.load_balancer)
        holders = self.cfg.own_ports()
        own: set[int] = set()
        others: set[int] = set()
        for row in self.store.scale_sets():
            ports = stored_frontend_ports(row.model.get("load_balancer"))
            if row.name == name:
                own = ports  # HAProxy holds them for this very set: an update keeps them
                continue
            others |= ports
            for port in ports:
                holders.setdefault(port, f"scale set {row.name!r}")
        check_host_ports(lb, self.host_ports.read(holders), own=own)
        if self.lb_validator is not None:
            return dict(self.lb_validator(name, spec, capacity))
        need = capacity if spec.mode is OrchestrationMode.UNIFORM else 1
        validate(lb, max_capacity=max(need, 1), other_sets_ports=others)
        return dict(spec.load_balancer or {})

    def _check_mode_unchanged(self, name: str, body: Any) -> None:
        """The mode is fixed at creation: say so before any check that depends on the mode
        (otherwise Uniform->Flexible is refused for its sku.capacity, Flexible->Uniform for its
        missing model, and the user never learns the real reason)."""
        props = body.get("properties") if isinstance(body, dict) else None
        try:
            row = self.store.scale_set(name)
            requested = OrchestrationMode.parse((props or {}).get("orchestrationMode", "Uniform"))
        except (NotFound, InvalidSpec, AttributeError):
            return  # a new set, or a body the parser reports on
        if requested.value != row.mode:
            raise Conflict(
                f"orchestrationMode of {name!r} is {row.mode} and cannot be changed "
                "(it is fixed when the scale set is created)"
            )

    def _update_set(
        self, row: ScaleSetRow, spec: ScaleSetSpec, capacity: int, body: Any, actor: str = ""
    ) -> dict[str, Any]:
        if row.deleting:
            raise Conflict(f"scale set {row.name!r} is being deleted")
        old = row.spec
        if spec.mode is not old.mode:
            raise Conflict(
                f"orchestrationMode of {row.name!r} is {old.mode.value} and cannot be changed "
                "(it is fixed when the scale set is created)"
            )
        if (
            old.fault_domain_mapping != spec.fault_domain_mapping
            or old.platform_fault_domain_count != spec.platform_fault_domain_count
        ):
            raise Conflict("platformFaultDomainCount and faultDomainMapping cannot be changed after creation")
        if old.zones != spec.zones:
            raise Conflict("zones cannot be changed after creation")
        model_fields = spec.model_fields_for_update()
        model_changed = any(getattr(old, f) != getattr(spec, f) for f in model_fields)
        if spec.mode is OrchestrationMode.FLEXIBLE and model_changed:
            raise NotSupported(f"model updates {NOT_IN_VM_MODE}")
        new_capacity = capacity if _sku_capacity_given(body) else row.capacity
        pool_now = sum(1 for i in self.store.instances(row.name) if lifecycle.kept_in_pool(i))
        self.capacity.admit_pool(spec, max(0, new_capacity - row.capacity), new_capacity, pool_now)
        described = describe_model_change(old, spec)
        version = self.store.update_model(
            row.name,
            spec.model_dump(mode="json"),
            new_capacity,
            new_version=model_changed,
            actor=actor,
            changes=described,
        )
        what = f"; {', '.join(described)}" if model_changed else ""
        self._accepted("update", f"model updated (version {version}{what}), capacity {new_capacity}", row.name)
        self.wake()
        return self.get_set(row.name)

    def set_capacity(self, name: str, capacity: Any) -> dict[str, Any]:
        row, capacity = self._check_scale(name, capacity)
        self.store.update_scale_set(name, capacity=capacity, provisioning_state=ProvisioningState.UPDATING.value)
        self._accepted("scale", f"capacity {row.capacity} -> {capacity} (requested)", name)
        self.wake()
        return self.get_set(name)

    def _check_scale(self, name: str, capacity: Any) -> tuple[ScaleSetRow, int]:
        """Everything a scale is refused for, checked before anything is written (a what-if
        asks the same, so it fails with the same one-line errors)."""
        row = self.store.scale_set(name)
        mode = OrchestrationMode(row.mode)
        if mode is OrchestrationMode.FLEXIBLE:
            raise NotSupported(
                f"changing sku.capacity {NOT_IN_VM_MODE}: add VMs with 'localvmss vm create', delete them one by one"
            )
        capacity = check_capacity(capacity, mode)
        if row.deleting:
            raise Conflict(f"scale set {name!r} is being deleted")
        self.capacity.check(name, row.spec, row.capacity, capacity)  # the rule autoscale uses too
        return row, capacity

    def what_if_scale(self, name: str, capacity: Any) -> dict[str, Any]:
        """The plan a scale to ``capacity`` would carry out (the reconciler's own ``scale_plan``,
        the object its next pass applies), as JSON; writes nothing."""
        row, capacity = self._check_scale(name, capacity)
        if self.scale_planner is None:
            raise NotSupported("what-if needs the daemon's reconciler, which is not running here")
        plan: Plan = self.scale_planner(row, capacity=capacity)
        return plan.to_json()

    def put_standby_pool(self, name: str, body: Any) -> dict[str, Any]:
        """Attach or change the set's standby pool (Azure: a standbyVirtualMachinePool attached
        to the set). Checked whole first: the mode (the seed's table gives a Flexible set no
        model to make pool instances from), the policy, the NAT pool and host memory for the pool
        instances still to be made; a refusal changes nothing."""
        row = self.store.scale_set(name)
        if row.mode != OrchestrationMode.UNIFORM.value:
            raise InvalidSpec(
                "standbyPool is not supported in VM (Flexible) orchestration mode: pool instances are made from "
                "the set's VM model, and a Flexible set has none (its VMs are created and attached one by one)"
            )
        if row.deleting:
            raise Conflict(f"scale set {name!r} is being deleted")
        policy = parse_standby_pool(body)
        spec = row.spec.model_copy(update={"standby_pool": policy})
        if spec.load_balancer is not None:
            self._check_load_balancer(name, spec, row.capacity + standby.target_size(policy, row.capacity))
        pool_now = sum(1 for i in self.store.instances(name) if lifecycle.kept_in_pool(i))
        self.capacity.admit_pool(spec, 0, row.capacity, pool_now)
        self.store.update_set_policy(name, spec.model_dump(mode="json"))
        size = standby.target_size(policy, row.capacity)
        states = ", ".join(f"{state.value} {n}" for state, n in standby.desired_counts(policy, size).items() if n)
        self._accepted("standby-pool", f"standby pool set: size {size} ({states or 'empty'})", name)
        self.wake()
        return self.standby_pool(name)

    def delete_standby_pool(self, name: str) -> None:
        """Detach the pool: its instances are removed in the background (they serve nothing)."""
        row = self.store.scale_set(name)
        if row.spec.standby_pool is None:
            raise NotFound(f"scale set {name!r} has no standby pool")
        self.store.update_set_policy(name, row.spec.model_copy(update={"standby_pool": None}).model_dump(mode="json"))
        self._accepted("standby-pool", "standby pool removed; its instances are deleted", name)
        self.wake()

    def delete_set(self, name: str) -> None:
        row = self.store.scale_set(name)
        if row.mode == OrchestrationMode.FLEXIBLE.value:
            vms = [i.vm_name or str(i.instance_id) for i in self.store.instances(name)]
            if vms:
                raise Conflict(
                    f"scale set {name!r} (VM orchestration mode) still holds VMs {', '.join(vms)}: "
                    "delete them one by one first"
                )
        self.store.update_scale_set(name, deleting=1, provisioning_state=ProvisioningState.DELETING.value)
        self._accepted("delete", "scale set deletion requested", name, record=False)
        self.wake()

    def _check_zones(self, spec: ScaleSetSpec) -> None:
        if not spec.zones:
            return
        host_zones = {self.inv.zone_of(h) for h in self.inv.hosts}
        missing = [z for z in spec.zones if z not in host_zones]
        if missing:
            raise InvalidSpec(
                f"zones {missing} have no hosts; host zones are {sorted(str(z) for z in host_zones if z)}"
            )

    def _admit(self, spec: ScaleSetSpec, new_instances: int, memory_mib: int | None = None) -> None:
        self.capacity.admit(spec, new_instances, memory_mib)

    # -- rolling upgrades and model versions -------------------------------------------------
    def _rollouts(self) -> Any:
        if self.upgrades is None:
            raise NotSupported("rolling upgrades need the daemon's reconcile loop")
        return self.upgrades

    def start_rolling_upgrade(self, name: str, actor: str = "", what_if: bool = False) -> dict[str, Any]:
        """``rolling-upgrade start``: every outdated instance to the set's model version, batch
        by batch under the set's rollingUpgradePolicy (whatever its upgrade mode). With
        ``what_if`` the plan it would carry out, and nothing is written."""
        if what_if:
            return dict(self._rollouts().preview(name).to_json())
        ro = self._rollouts().start(name, actor or "user")
        log.info("%s: rolling-upgrade start: to model version %s (rollout %s)", name, ro.to_version, ro.id)
        self.wake()
        return self._rollout_view(ro)

    def cancel_rolling_upgrade(self, name: str, actor: str = "") -> dict[str, Any]:
        ro = self._rollouts().cancel(name, actor or "user")
        log.info("%s: rolling-upgrade cancel (rollout %s)", name, ro.id)
        self.wake()
        return self._rollout_view(ro)

    def latest_rolling_upgrade(self, name: str) -> dict[str, Any]:
        self.store.scale_set(name)
        ro = self.store.latest_rollout(name)
        if ro is None:
            raise NotFound(f"scale set {name!r} has had no rolling upgrade")
        return self._rollout_view(ro)

    def _rollout_view(self, ro: Any) -> dict[str, Any]:
        row = self.store.scale_set(ro.scale_set)
        return dict(self._rollouts().view(ro, self.store.instances(ro.scale_set), row.spec))

    def os_upgrade_history(self, name: str) -> dict[str, Any]:
        """Every model version with who made it and what changed, newest first, each with the
        rollouts that took the set to it (Azure's UpgradeOperationHistoricalStatusInfo shape)."""
        row = self.store.scale_set(name)
        rollouts = self.store.rollouts(name)
        instances = self.store.instances(name)
        running: dict[int, list[str]] = {}
        for i in instances:
            running.setdefault(i.model_version, []).append(str(i.instance_id))
        value = []
        for version in reversed(self.store.model_versions(name)):
            value.append(
                {
                    "type": "Microsoft.Compute/virtualMachineScaleSets/modelVersions",
                    "properties": {
                        "modelVersion": version.version,
                        "createdTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(version.created_at)),
                        "changedBy": version.actor or "unknown",
                        "changes": version.changes,
                        "image": version.model.get("image"),
                        "current": version.version == row.model_version,
                        "instanceIds": running.get(version.version, []),
                        "rollingUpgrades": [
                            self._rollouts().view(ro, instances, row.spec)["properties"]
                            for ro in rollouts
                            if ro.to_version == version.version
                        ],
                    },
                }
            )
        return {"value": value}

    # -- instances --------------------------------------------------------------------------
    def list_instances(self, name: str, standby_pool: bool = False) -> list[dict[str, Any]]:
        """The set's members, or with ``standby_pool`` its standby-pool instances (shown apart:
        they are no members until a scale-out takes them)."""
        row = self.store.scale_set(name)
        return [
            self._instance_view(row, i, live=False)
            for i in self.store.instances(name)
            if lifecycle.in_pool(i) == standby_pool
        ]

    def standby_pool(self, name: str) -> dict[str, Any]:
        """The set's standby pool: its policy, its size now and its target, how many instances
        stand by in each state (Azure's standby pool runtime view), and the instances."""
        row = self.store.scale_set(name)
        policy = row.spec.standby_pool
        pool = [i for i in self.store.instances(name) if lifecycle.kept_in_pool(i)]
        summary = [
            {
                "state": state.value,
                "standingBy": sum(1 for i in pool if i.standby_state == state.value and lifecycle.standing_by(i)),
                "preparing": sum(1 for i in pool if i.standby_state == state.value and not lifecycle.standing_by(i)),
            }
            for state in StandbyState
        ]
        return {
            "name": name,
            "type": "Microsoft.StandbyPool/standbyVirtualMachinePools",
            "properties": {
                "policy": policy.model_dump(by_alias=True, mode="json") if policy else None,
                "targetSize": standby.target_size(policy, row.capacity),
                "size": len(pool),
                "instanceCountSummary": summary,
                "outdated": sum(1 for i in pool if lifecycle.outdated(i, row.model_version)),
            },
            "value": [self._instance_view(row, i, live=False) for i in pool],
        }

    def get_instance(self, name: str, instance_id: str) -> dict[str, Any]:
        row = self.store.scale_set(name)
        return self._instance_view(row, self.store.instance(name, _iid(instance_id)), live=False)

    def instance_view(self, name: str, instance_id: str) -> dict[str, Any]:
        row = self.store.scale_set(name)
        return self._instance_view(row, self.store.instance(name, _iid(instance_id)), live=True)["properties"][
            "instanceView"
        ]

    def set_instance_view(self, name: str) -> dict[str, Any]:
        """Azure's instance view of a scale set: its statuses, a summary of its instances'
        states, and its orchestration services (AutomaticRepairs: Running/Suspended/NotRunning)."""
        row = self.store.scale_set(name)
        state = repairs.RepairsState.from_json(row.repairs_state)
        service: dict[str, Any] = {
            "serviceName": repairs.SERVICE_NAME,
            "serviceState": repairs.service_state(row.spec, state),
        }
        if service["serviceState"] == repairs.SUSPENDED:
            service["reason"] = state.reason
            if state.since is not None:
                service["since"] = datetime.fromtimestamp(state.since, UTC).isoformat()
        counts: dict[str, int] = {}
        for inst in self.store.instances(name):
            code = f"ProvisioningState/{inst.provisioning_state.lower()}"
            counts[code] = counts.get(code, 0) + 1
        shown = self._set_view(row)["properties"]["provisioningState"]
        return {
            "statuses": [
                {"code": f"ProvisioningState/{shown.lower()}", "displayStatus": f"Provisioning {shown.lower()}"}
            ],
            "virtualMachine": {"statusesSummary": [{"code": c, "count": n} for c, n in sorted(counts.items())]},
            "orchestrationServices": [service],
        }

    def set_orchestration_service_state(self, name: str, body: Any) -> dict[str, Any]:
        """Azure's setOrchestrationServiceState: suspend or resume the set's automatic repairs.
        Checked whole first (a bad service name or action changes nothing)."""
        body = _obj(body, "request body")
        service = body.get("serviceName")
        action = body.get("action")
        if not isinstance(service, str) or service.strip().lower() != repairs.SERVICE_NAME.lower():
            raise InvalidSpec(f"serviceName {service!r} is not known; the orchestration service is AutomaticRepairs")
        if not isinstance(action, str) or action.strip().lower() not in ("suspend", "resume"):
            raise InvalidSpec(f"action {action!r} is not known; actions are Suspend, Resume")
        unknown = sorted(set(body) - {"serviceName", "action"})
        if unknown:
            raise InvalidSpec(f"unknown fields {unknown}; the body is {{serviceName, action}}")
        row = self.store.scale_set(name)
        if row.deleting:
            raise Conflict(f"scale set {name!r} is being deleted")
        if not repairs.applies(row.spec):
            raise Conflict(
                f"scale set {name!r} has no automatic repairs to {action.strip().lower()}: "
                + (
                    "they exist in Uniform mode only"
                    if row.spec.mode is not OrchestrationMode.UNIFORM
                    else "enable automaticRepairsPolicy first"
                )
            )
        suspend = action.strip().lower() == "suspend"
        now = time.time()

        def change(stored: dict[str, Any]) -> tuple[dict[str, Any], str | None] | None:
            current = repairs.RepairsState.from_json(stored)
            if suspend:
                if current.state == repairs.SUSPENDED:
                    return None
                new = repairs.suspended(current, "by request (setOrchestrationServiceState)", now)
                return new.to_json(), "automatic repairs suspended by request"
            if current.state == repairs.RUNNING and current.failed_in_row == 0:
                return None
            was = f" (suspended: {current.reason})" if current.reason else ""
            return repairs.resumed(current, now).to_json(), f"automatic repairs resumed by request{was}"

        if self.store.change_repairs_state(name, change) is not None:
            log.info("%s: automatic repairs %s by request", name, "suspended" if suspend else "resumed")
        return self.set_instance_view(name)

    def _power(self, inst: InstanceRow) -> PowerState:
        try:
            host = self.inv.host(inst.host)
            if not host.domain_exists(inst.domain_name):
                return PowerState.DEALLOCATED
            return host.power_state(inst.domain_name)
        except LocalVMSSError:
            return PowerState.UNKNOWN

    def _instance_view(self, row: ScaleSetRow, inst: InstanceRow, live: bool) -> dict[str, Any]:
        spec = row.spec
        power = _shown_power(inst, self._power(inst)) if live else _intended_power(inst)
        view: dict[str, Any] = {
            "platformFaultDomain": inst.fault_domain,
            "platformUpdateDomain": inst.update_domain,
            "zone": inst.zone,
            "host": inst.host,
            "computerName": computer_name(spec, inst),
            "domainName": inst.domain_name,
            "domainType": self.inv.domain_type(inst.host),
            "statuses": [
                {
                    "code": f"ProvisioningState/{inst.provisioning_state.lower()}",
                    "displayStatus": f"Provisioning {inst.provisioning_state.lower()}",
                    "message": inst.message or None,
                },
                {"code": f"PowerState/{power.value}", "displayStatus": f"VM {power.value}"},
            ],
            "vmHealth": {"status": {"code": f"HealthState/{inst.health}"}},
        }
        props: dict[str, Any] = {
            "provisioningState": inst.provisioning_state,
            "latestModelApplied": not lifecycle.outdated(inst, row.model_version),
            "modelVersion": inst.model_version,
            "osProfile": {"computerName": computer_name(spec, inst), "adminUsername": spec.admin_username},
            "networkProfile": {"privateIpAddress": inst.ip, "macAddress": inst.mac, "natPort": inst.nat_port},
            "protectionPolicy": {
                "protectFromScaleIn": inst.protect_scale_in,
                "protectFromScaleSetActions": inst.protect_actions,
            },
            "instanceView": view,
        }
        sub, group = self.cfg.subscription_id, row.resource_group
        if inst.vm_name:
            props["virtualMachineScaleSet"] = {"id": armids.scale_set_id(sub, group, row.name)}
        if inst.origin:
            props["origin"] = inst.origin  # how it came to serve: cold boot, standby pool (Paused), ...
        if lifecycle.in_pool(inst):
            props["standbyPool"] = {"state": inst.standby_state, "standingBy": lifecycle.standing_by(inst)}
        return {
            "instanceId": str(inst.instance_id),
            "name": inst.vm_name or f"{row.name}_{inst.instance_id}",
            "id": armids.vm_id(sub, group, inst.vm_name)
            if inst.vm_name
            else armids.scale_set_vm_id(sub, group, row.name, inst.instance_id),
            "zones": [inst.zone] if inst.zone else [],
            "properties": props,
        }

    def instance_action(
        self, name: str, action: str, instance_ids: list[str] | None, skip_shutdown: bool = False
    ) -> dict[str, Any]:
        """start/powerOff/deallocate/restart/reimage/delete on some (or all) instances of a Uniform set."""
        _check_action_options(action, skip_shutdown)
        row = self.store.scale_set(name)
        if row.mode == OrchestrationMode.FLEXIBLE.value:
            raise NotSupported(
                f"scale-set instance actions {NOT_IN_VM_MODE}: manage each VM through /virtualMachines/{{name}}"
            )
        if action == "delete" and not instance_ids:
            raise InvalidSpec(
                'delete needs "instanceIds": the ids of the instances to delete, or ["*"] for every one '
                "(nothing was deleted)"
            )
        targets = self._targets(name, instance_ids)
        if action == "delete":
            if not targets:  # ["*"] on a set with no live instance
                return {"status": "Accepted", "instanceIds": []}
            return self.delete_instances(name, [str(i.instance_id) for i in targets])
        self._apply_actions(targets, action, skip_shutdown)
        return {"status": "Accepted", "instanceIds": [str(i.instance_id) for i in targets]}

    def _targets(self, name: str, instance_ids: list[str] | None) -> list[InstanceRow]:
        """The instances an action names (none or ["*"]: every live instance), each existing."""
        if not instance_ids or instance_ids == ["*"]:
            return [
                i
                for i in self.store.instances(name)
                if i.provisioning_state != ProvisioningState.DELETING.value and not lifecycle.in_pool(i)
            ]
        return _members_only([self.store.instance(name, i) for i in _instance_id_list(instance_ids)])

    def _apply_actions(self, targets: list[InstanceRow], action: str, skip_shutdown: bool = False) -> None:
        """Check the action on every instance first (lifecycle.request raises Conflict for one
        that is protected, being deleted or not running), then change them all in one store
        transaction: a refused instance leaves every other one as it was."""
        verb = lifecycle.find_action(action)
        versions: dict[str, int] = {}
        changes = []
        now = time.time()
        for t in targets:
            if t.scale_set not in versions:
                versions[t.scale_set] = self.store.scale_set(t.scale_set).model_version
            asked = lifecycle.request(
                verb, t, model_version=versions[t.scale_set], now=now, skip_shutdown=skip_shutdown
            )
            changes.append((t.scale_set, t.instance_id, asked))
        self.store.update_instances(changes)
        for t in targets:
            self.store.log_activity(
                t.scale_set, action, f"{action} requested for instance {t.instance_id}", instances=[t.instance_id]
            )
        for set_name in versions:
            ids = [t.instance_id for t in targets if t.scale_set == set_name]
            self._accepted(action, f"{action} requested for instances {ids}", set_name, ids, record=False)
        self.wake()

    def delete_instances(self, name: str, instance_ids: list[str]) -> dict[str, Any]:
        """Delete specific instances; the capacity drops by as many (Azure's delete-instances).

        Every id must exist and no instance be protected, or nothing is deleted; the capacity is
        read and lowered in the same store transaction that marks the instances."""
        row = self.store.scale_set(name)
        if not instance_ids:
            raise InvalidSpec("give the instance ids to delete")
        ids = _instance_id_list(instance_ids)
        # NotFound names the first missing id; a pool instance is no member to delete.
        _members_only([self.store.instance(name, iid) for iid in ids])
        marked = self.store.mark_instances_deleting(
            name,
            ids,
            state=ProvisioningState.DELETING.value,
            lower_capacity=row.mode == OrchestrationMode.UNIFORM.value,
        )
        self._accepted("delete-instances", f"deleting instances {marked}", name, list(marked))
        self.wake()
        return {"status": "Accepted", "instanceIds": [str(i) for i in marked]}

    def set_protection(
        self, name: str, instance_id: str, scale_in: bool | None, actions: bool | None
    ) -> dict[str, Any]:
        inst = _members_only([self.store.instance(name, _iid(instance_id))])[0]
        changes: dict[str, Any] = {}
        if scale_in is not None:
            changes["protect_scale_in"] = int(scale_in)
        if actions is not None:
            changes["protect_actions"] = int(actions)
            if actions:
                changes["protect_scale_in"] = 1  # Azure: scale-set-actions protection implies scale-in protection
        if changes:
            self.store.update_instance(name, inst.instance_id, **changes)
            said = ", ".join(f"{k.removeprefix('protect_')}={bool(v)}" for k, v in changes.items())
            self._accepted("protection", f"instance {inst.instance_id} protection {said}", name, [inst.instance_id])
        return self.get_instance(name, instance_id)

    def update_instances(self, name: str, instance_ids: list[str] | None) -> dict[str, Any]:
        """Manual upgrade policy: bring instances to the latest model (reimage with the new model)."""
        row = self.store.scale_set(name)
        if row.mode == OrchestrationMode.FLEXIBLE.value:
            raise NotSupported(f"OS upgrade and model updates {NOT_IN_VM_MODE}")
        targets = [t for t in self._targets(name, instance_ids) if lifecycle.outdated(t, row.model_version)]
        self._apply_actions(targets, "reimage")
        return {"status": "Accepted", "instanceIds": [str(t.instance_id) for t in targets]}

    def run_command(self, name: str, instance_id: str, body: Any) -> dict[str, Any]:
        from localvmss.runcommand import run_script

        script = run_command_script(body)
        inst = _members_only([self.store.instance(name, _iid(instance_id))])[0]
        if inst.desired_power != "running" or inst.provisioning_state != ProvisioningState.SUCCEEDED.value:
            raise Conflict(f"instance {inst.instance_id} is not running and ready")
        said = f"run-command on instance {inst.instance_id} ({len(script)} characters of script)"
        self._accepted("run-command", said, name, [inst.instance_id], record=False)
        result = run_script(inst.ip, self.management_key.private, script)
        return {**result, "value": _run_command_statuses(result)}

    # -- autoscale ----------------------------------------------------------------------------
    def _autoscaler(self) -> Any:
        if self.autoscaler is None:
            raise LocalVMSSError("autoscale is not available: the daemon has no Prometheus")
        return self.autoscaler

    def put_autoscale(self, name: str, body: Any) -> dict[str, Any]:
        self._autoscaler().put_setting(name, body)
        self._accepted("autoscale-setting", "autoscale setting saved", name, record=False)
        return self.get_autoscale(name)

    def get_autoscale(self, name: str) -> dict[str, Any]:
        self.store.scale_set(name)
        return dict(self._autoscaler().get_setting(name))

    def delete_autoscale(self, name: str) -> None:
        self._autoscaler().get_setting(name)
        self.store.delete_autoscale(name)
        self._accepted("autoscale-setting", "autoscale setting deleted", name)

    # -- autoscale settings as ARM resources (Microsoft.Insights/autoscalesettings) --------------
    def _autoscale_resource(self, set_name: str) -> dict[str, Any]:
        """The set's autoscale setting as ARM shows it: named (az's default name is the set's),
        in the set's resource group, targeting the set by its id."""
        setting = self.get_autoscale(set_name)
        row = self.store.scale_set(set_name)
        name = setting.get("name") or set_name
        arm = self.store.autoscale_arm(set_name)
        props = {k: v for k, v in setting.items() if k not in ("name", "targetResourceName")}
        props["targetResourceUri"] = armids.scale_set_id(self.cfg.subscription_id, row.resource_group, set_name)
        props.setdefault("targetResourceLocation", row.arm.get("location") or self.cfg.location)
        view = {
            "id": armids.autoscale_id(self.cfg.subscription_id, row.resource_group, name),
            "name": name,
            "type": "Microsoft.Insights/autoscaleSettings",
            "location": arm.get("location") or self.cfg.location,
            "tags": arm.get("tags") or {},
            "properties": {**props, "name": name},
        }
        return armbody.merge_kept(view, arm.get("kept") or {})

    def _autoscale_set(self, group: str, name: str) -> str:
        """The scale set whose autoscale setting is ``name`` in ``group`` (ResourceNotFound if none)."""
        for set_name in self.store.autoscale_sets():
            found = self.store.autoscale(set_name)
            row = self.store.scale_set(set_name)
            if found and (found[0].get("name") or set_name).lower() == name.lower():
                if row.resource_group.lower() == group.lower():
                    return set_name
        raise NotFound(
            f"The Resource 'Microsoft.Insights/autoscalesettings/{name}' under resource group '{group}' was not found."
        )

    def list_autoscale_resources(self, group: str) -> list[dict[str, Any]]:
        return [
            self._autoscale_resource(s)
            for s in self.store.autoscale_sets()
            if self.store.scale_set(s).resource_group.lower() == group.lower()
        ]

    def get_autoscale_resource(self, group: str, name: str) -> dict[str, Any]:
        return self._autoscale_resource(self._autoscale_set(group, name))

    def put_autoscale_resource(self, group: str, name: str, body: Any) -> tuple[dict[str, Any], bool]:
        """Create or replace the setting ``name``: its target (``targetResourceUri``, a set in the
        same group) gets it; a set has one setting, so another name for the same set is a Conflict."""
        from localvmss.autoscale.settings import AutoscaleSetting

        validate_autoscale_name(name)
        body = _obj(body, "request body")
        props = _obj(body.get("properties"), "properties")
        target = props.get("targetResourceUri") or props.get("targetResourceName")
        set_name = armids.last_segment(target, armids.SCALE_SETS) if isinstance(target, str) else None
        if set_name is None and isinstance(target, str) and "/" not in target:
            set_name = target
        if set_name is None:
            raise InvalidSpec(
                "properties.targetResourceUri must be the id of a scale set "
                "(/subscriptions/.../providers/Microsoft.Compute/virtualMachineScaleSets/NAME)"
            )
        self.check_group(set_name, group)
        try:
            existing: str | None = self._autoscale_set(group, name)
        except NotFound:
            existing = None
        if existing is not None and existing != set_name:
            raise Conflict(f"autoscale setting {name!r} targets scale set {existing!r}; delete it to target another")
        held = self.store.autoscale(set_name)
        if existing is None and held is not None:
            raise Conflict(
                f"scale set {set_name!r} already has autoscale setting {held[0].get('name') or set_name!r}; "
                "a scale set takes one"
            )
        known, kept, ignored = armbody.split_body(AutoscaleSetting, props, "properties")
        known = {k: v for k, v in known.items() if k not in ("targetResourceUri", "targetResourceName")}
        tags = check_tags(body.get("tags") or {})
        location = body.get("location")
        if location is not None and not isinstance(location, str):
            raise InvalidSpec("location must be a string")
        self.put_autoscale(set_name, {**known, "name": name, "targetResourceName": set_name})
        self.store.set_autoscale_arm(set_name, {"location": location, "tags": tags, "kept": kept})
        view = self._autoscale_resource(set_name)
        return _noted(view, ignored, []), existing is None

    def patch_autoscale_resource(self, group: str, name: str, body: Any) -> dict[str, Any]:
        """ARM's update of a setting: tags, and properties laid over the stored ones."""
        set_name = self._autoscale_set(group, name)
        body = _obj(body, "request body")
        current = self._autoscale_resource(set_name)
        props = {**current["properties"], **_obj(body.get("properties"), "properties")}
        merged = {"location": current["location"], "tags": body.get("tags", current["tags"]), "properties": props}
        return self.put_autoscale_resource(group, name, merged)[0]

    def delete_autoscale_resource(self, group: str, name: str) -> None:
        self.delete_autoscale(self._autoscale_set(group, name))

    def scale_set_named_by_vm_body(self, body: Any) -> str:
        """The set a VM body attaches the VM to (properties.virtualMachineScaleSet.id)."""
        props = _obj(_obj(body, "request body").get("properties"), "properties")
        ref = _obj(props.get("virtualMachineScaleSet"), "properties.virtualMachineScaleSet").get("id", "")
        name = _scale_set_of(ref)
        if not name:
            raise InvalidSpec("properties.virtualMachineScaleSet.id is required: a VM joins its set when it is made")
        return name

    def simulate_autoscale(self, name: str, body: Any) -> list[dict[str, Any]]:
        from datetime import datetime

        if not isinstance(body, dict) or set(body) - {"start", "end", "step", "setting"}:
            raise InvalidSpec('simulate takes {"start", "end", "step"?, "setting"?}')
        try:
            start = datetime.fromisoformat(str(body["start"]))
            end = datetime.fromisoformat(str(body["end"]))
        except (KeyError, ValueError):
            raise InvalidSpec("start and end must be ISO-8601 date-times, e.g. 2026-11-21T10:00:00+00:00") from None
        step = body.get("step")
        if step is not None and (not isinstance(step, int | float) or step <= 0):
            raise InvalidSpec("step must be a positive number of seconds")
        return list(self._autoscaler().simulate(name, start, end, step, body.get("setting")))

    # -- Flexible mode: standalone VM resources -----------------------------------------------
    def put_vm(self, vm_name: str, body: Any) -> dict[str, Any]:
        validate_name(vm_name, "virtual machine name")
        if not isinstance(body, dict):
            raise InvalidSpec("request body must be a JSON object")
        props = _obj(body.get("properties"), "properties")
        unknown = set(body) - {"properties", "zones", "location", "tags"}
        unknown |= set(props) - {
            "virtualMachineScaleSet",
            "storageProfile",
            "hardwareProfile",
            "osProfile",
            "platformFaultDomain",
            "initialPowerState",
        }
        if unknown:
            raise InvalidSpec(f"unknown field(s) in virtual machine body: {sorted(unknown)}")
        try:
            existing = self.store.instance_by_vm_name(vm_name)
        except NotFound:
            existing = None
        set_ref = _obj(props.get("virtualMachineScaleSet"), "properties.virtualMachineScaleSet").get("id", "")
        set_name = _scale_set_of(set_ref)
        if existing is not None:
            if set_name and set_name != existing.scale_set:
                raise NotSupported(
                    "moving a VM to another scale set (attach/detach) is not supported in either orchestration mode"
                )
            raise Conflict(f"virtual machine {vm_name!r} already exists; VM updates are not supported")
        if not set_name:
            raise InvalidSpec(
                "properties.virtualMachineScaleSet.id is required: a VM is added to a scale set when it is created"
            )
        row = self.store.scale_set(set_name)
        if row.mode != OrchestrationMode.FLEXIBLE.value:
            raise NotSupported(
                f"scale set {set_name!r} is in Uniform (ScaleSetVM) mode: its instances are made from its model; "
                f"use PUT /scaleSets/{set_name} with sku.capacity instead"
            )
        if row.deleting:
            raise Conflict(f"scale set {set_name!r} is being deleted")
        spec = row.spec
        current = self.store.instances(set_name)
        if len(current) >= FLEXIBLE_MAX_VMS:
            raise CapacityError(
                f"scale set {set_name!r} already holds {len(current)} VMs; VM orchestration mode allows at most "
                f"{FLEXIBLE_MAX_VMS}"
            )
        storage = _obj(props.get("storageProfile"), "properties.storageProfile")
        image = _obj(storage.get("imageReference"), "storageProfile.imageReference").get("id") or spec.image
        if not isinstance(image, str) or image not in self.store.images():
            raise InvalidSpec(f"image {image!r} is unknown; known images: {', '.join(self.store.images()) or 'none'}")
        hardware = _obj(props.get("hardwareProfile"), "properties.hardwareProfile")
        size_name = hardware.get("vmSize")
        size_props = _obj(hardware.get("vmSizeProperties"), "hardwareProfile.vmSizeProperties")
        if size_name is not None and not isinstance(size_name, str):
            raise InvalidSpec(f"hardwareProfile.vmSize {size_name!r} must be a string")
        size = resolve_size(size_name or spec.vm_size, size_props.get("vCPUsAvailable"), size_props.get("memoryMiB"))
        keys = _vm_ssh_keys(props) or spec.ssh_public_keys
        fd = props.get("platformFaultDomain")
        if fd is not None and (
            isinstance(fd, bool) or not isinstance(fd, int) or not 0 <= fd < spec.platform_fault_domain_count
        ):
            raise InvalidSpec(
                f"platformFaultDomain {fd!r} must be from 0 to {spec.platform_fault_domain_count - 1} for this set"
            )
        zones = body.get("zones") or []
        if not isinstance(zones, list):
            raise InvalidSpec("zones must be a JSON array")
        zone = str(zones[0]) if zones else (spec.zones[0] if spec.zones else None)
        if spec.zones and zone not in spec.zones:
            raise InvalidSpec(f"zone {zone!r} is not the scale set's zone {spec.zones[0]!r}")
        if fd is None:
            from localvmss import planner

            fd = planner.place_new(
                [slot(i) for i in current],
                1,
                zones=[zone] if zone else [],
                fault_domain_count=spec.platform_fault_domain_count,
            )[0].fault_domain
        initial = props.get("initialPowerState", "running")
        if initial not in ("running", "stopped"):
            raise InvalidSpec(f"initialPowerState {initial!r} must be 'running' or 'stopped' (defined, not started)")
        if initial == "running":
            self._admit(spec, 1, memory_mib=size.memory_mib)
        alive = {h: True for h in self.inv.available()}
        host = self.alloc.host_for(spec, zone, fd, alive)
        if host is None:
            raise CapacityError(f"no available host for zone {zone!r}")
        overrides = {"image": image, "vcpus": size.vcpus, "memory_mib": size.memory_mib, "ssh_public_keys": keys}
        with self.store.transaction() as db:
            # Checked again where it is atomic: concurrent PUTs must not take the set past the limit.
            held = self.store.instance_count(db, set_name)
            if held >= FLEXIBLE_MAX_VMS:
                raise CapacityError(
                    f"scale set {set_name!r} already holds {held} VMs; VM orchestration mode allows at most "
                    f"{FLEXIBLE_MAX_VMS}"
                )
            if self.store.vm_name_taken(db, vm_name):
                raise Conflict(f"virtual machine {vm_name!r} already exists; VM updates are not supported")
            iid = self.store.allocate_instance_id(db, set_name)
            inst = self.alloc.new_instance_row(
                db, row, spec, iid, host, zone, fd, index=len(current), vm_name=vm_name, overrides=overrides
            )
            inst.desired_power = PowerState(initial)
            self.store.insert_instance(db, inst)
        self._accepted("vm-create", f"VM {vm_name} created in fault domain {fd} on {host}", set_name, [iid])
        self.wake()
        return self.get_vm(vm_name)

    def get_vm(self, vm_name: str) -> dict[str, Any]:
        inst = self.store.instance_by_vm_name(vm_name)
        return self._instance_view(self.store.scale_set(inst.scale_set), inst, live=True)

    def list_vms(self) -> list[dict[str, Any]]:
        out = []
        for inst in self.store.instances():
            if inst.vm_name:
                out.append(self._instance_view(self.store.scale_set(inst.scale_set), inst, live=False))
        return out

    def vm_action(self, vm_name: str, action: str, skip_shutdown: bool = False) -> dict[str, Any]:
        _check_action_options(action, skip_shutdown)
        inst = self.store.instance_by_vm_name(vm_name)
        if action == "delete":
            return self.delete_instances(inst.scale_set, [str(inst.instance_id)])
        self._apply_actions([inst], action, skip_shutdown)
        return {"status": "Accepted", "name": vm_name}

    def check_uniform_instance_via_vm_api(self, vm_name: str) -> None:
        """A standalone-VM call on something that is not a VM resource gets a pointer to the set API."""
        for row in self.store.scale_sets():
            if row.mode == OrchestrationMode.UNIFORM.value and vm_name.startswith(f"{row.name}_"):
                raise NotSupported(
                    f"{vm_name!r} is an instance of Uniform scale set {row.name!r}: instances are managed only "
                    f"through the scale set (/scaleSets/{row.name}/virtualMachines/...)"
                )

    def reload_load_balancer(self) -> dict[str, Any]:
        if self.balancer is None:
            raise NotSupported("the load balancer is disabled in this daemon's configuration")
        self._accepted("load-balancer-reload", "HAProxy reload requested")
        self.balancer.reload()
        return {"status": "Reloaded"}

    # -- images, hosts, log -------------------------------------------------------------------
    def list_images(self) -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "source": manifest.get("source_file") or source,
                "boot": "kernel" if manifest.get("kernel") else "disk",
                "kernel": manifest.get("kernel_version"),
                "virtualSizeBytes": manifest.get("virtual_size_bytes"),
                "builtAt": manifest.get("built_at"),
                "guestMetrics": guest_metrics_of(manifest).as_json(),
            }
            for name, (manifest, source) in self.store.images().items()
        ]

    def import_image_body(self, name: str, body: Any) -> dict[str, Any]:
        """PUT /images/{name}: an image directory or a self-booting disk file (see parse_image_body)."""
        source, path, metrics = parse_image_body(body)
        if source == "sourceFile":
            return self.import_disk(name, path, metrics)
        return self.import_image(name, path, metrics)

    def import_image(self, name: str, directory: str, guest_metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        if not isinstance(directory, str) or "\0" in directory or not Path(directory).is_absolute():
            raise InvalidSpec(f"image directory {directory!r} must be an absolute path on the daemon's machine")
        validate_name(name, "image name")
        # The real directory is recorded, so a symlink swapped later cannot move the image.
        path = Path(directory).resolve()
        if guest_metrics:
            manifest = self.inv.import_image(name, path, guest_metrics=guest_metrics)
        else:
            manifest = self.inv.import_image(name, path)
        return {"name": name, "source": str(path), "guestMetrics": guest_metrics_of(manifest).as_json()}

    def import_disk(self, name: str, file: str, guest_metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        if not isinstance(file, str) or "\0" in file or not Path(file).is_absolute():
            raise InvalidSpec(f"disk file {file!r} must be an absolute path on the daemon's machine")
        validate_name(name, "image name")
        path = Path(file).resolve()
        manifest = self.inv.import_disk(name, path, guest_metrics=guest_metrics)
        return {
            "name": name,
            "source": str(path),
            "format": manifest["source_format"],
            "boot": "disk",
            "virtualSizeBytes": manifest["virtual_size_bytes"],
            "guestMetrics": guest_metrics_of(manifest).as_json(),
        }

    def add_host(self, name: str, body: Any) -> dict[str, Any]:
        from localvmss.config import HostConfig

        keys = {"uri", "zone", "network", "staticAddresses"}
        if not isinstance(body, dict) or set(body) - keys or not isinstance(body.get("uri"), str):
            raise InvalidSpec(
                'PUT /hosts/{name} takes {"uri": "qemu+ssh://...", "zone"?: "1", "network"?: "default", '
                '"staticAddresses"?: "FIRST-LAST"}'
            )
        validate_name(name, "host name")
        uri = check_api_host_uri(body["uri"])
        zone = body.get("zone")
        if zone is not None and (not isinstance(zone, str) or not zone):
            raise InvalidSpec("zone must be a non-empty string")
        network = body.get("network", "default")
        if not isinstance(network, str) or not network.isascii() or not network.isprintable() or not network:
            raise InvalidSpec(f"network {network!r} must be the name of a libvirt network on that host")
        if "/" in network or " " in network or len(network) > 64:
            raise InvalidSpec(f"network {network!r} must be a libvirt network name (no '/' or spaces, at most 64)")
        static = body.get("staticAddresses")
        if static is not None and not isinstance(static, str):
            raise InvalidSpec("staticAddresses must be a string FIRST-LAST, e.g. 198.18.0.2-198.18.0.9")
        self.inv.add_host(
            HostConfig(
                name=name, uri=uri, zone=zone, network=network, serial_log_read_dir=None, static_addresses=static
            )
        )
        self._accepted("host-add", f"host {name} ({uri}, zone {zone}) added")
        self.wake()
        return next(h for h in self.list_hosts() if h["name"] == name)

    def remove_host(self, name: str) -> None:
        in_use = any(i.host == name for i in self.store.instances())
        self.inv.remove_host(name, in_use)
        self._accepted("host-remove", f"host {name} removed")

    def list_hosts(self) -> list[dict[str, Any]]:
        out = []
        for h in self.store.hosts():
            entry: dict[str, Any] = {
                "name": h.name,
                "uri": h.uri,
                "zone": h.zone,
                "available": h.available,
                "domainType": h.domain_type,
                "staticAddresses": self.inv.configs[h.name].static_addresses if h.name in self.inv.configs else None,
                "accelerator": h.accel_reason,
                "message": h.message,
            }
            waiting = self.inv.unanswered_for(h.name) if h.name in self.inv.hosts else 0.0
            entry["unansweredSeconds"] = round(waiting, 1)
            entry["slow"] = h.available and waiting >= SLOW_HOST_S
            if entry["slow"]:
                entry["message"] = (
                    f"slow: host {h.name} has not answered for {waiting:.0f} s (its libvirtd stopped or "
                    "overloaded?); it counts as lost only once its connection gives up"
                )
            if h.available:
                try:
                    cap = self.inv.capacity(h.name)
                    age = self.inv.capacity_age(h.name)
                    entry.update(
                        cpus=cap.cpus,
                        memoryBytes=cap.memory_bytes,
                        freeMemoryBytes=cap.free_memory_bytes,
                        numaCells=len(cap.cells),
                        capacityAgeSeconds=None if age is None else round(age, 1),
                    )
                except LocalVMSSError:
                    pass
            out.append(entry)
        return out

    def activity(
        self,
        name: str,
        start_time: str | None = None,
        end_time: str | None = None,
        max_events: str | None = None,
        instance_id: str | None = None,
        kind: str | None = None,
    ) -> list[dict[str, Any]]:
        """The set's activity log, oldest first: the newest ``max_events`` (200) entries from
        ``start_time`` to ``end_time`` (ISO-8601; UTC if no offset), naming ``instance_id``, of
        the comma-separated ``kind``s. ``at`` is epoch seconds, ``eventTimestamp`` ISO-8601 UTC."""
        self.store.scale_set(name)
        since = _when(start_time, "startTime")
        until = _when(end_time, "endTime")
        if since is not None and until is not None and since > until:
            raise InvalidSpec(f"startTime {start_time} is after endTime {end_time}")
        limit = 200
        if max_events is not None:
            if not max_events.isascii() or not max_events.isdigit() or not 1 <= int(max_events) <= 10000:
                raise InvalidSpec(f"maxEvents {max_events!r} must be a number from 1 to 10000")
            limit = int(max_events)
        kinds = [k.strip() for k in kind.split(",") if k.strip()] if kind is not None else None
        rows = self.store.activity(
            name,
            limit,
            since=since,
            until=until,
            kinds=kinds or None,
            instance_id=None if instance_id is None else _iid(instance_id),
        )
        return [
            {
                "at": a.at,
                "eventTimestamp": datetime.fromtimestamp(a.at, UTC).isoformat(timespec="milliseconds"),
                "kind": a.kind,
                "message": a.message,
                "details": a.details,
                "instanceIds": [str(i) for i in a.instance_ids],
            }
            for a in rows
        ]

    def instance_metrics(self, name: str) -> dict[str, Any]:
        """What ``localvmss watch`` shows of each instance: host, power (libvirt's, as the instance
        view shows it), provisioning, health, libvirt's CPU and memory counters and the current
        sessions of its HAProxy servers. One listing and one bulk-statistics call per host; a host
        that does not answer shows its instances' power as Unknown. CPU is cumulative seconds:
        a percentage needs two samples (``sampledAt`` says when this one was taken)."""
        row = self.store.scale_set(name)
        instances = self.store.instances(name)
        alive = set(self.inv.available())
        power: dict[str, PowerState] = {}
        stats: dict[str, DomainStats] = {}
        answered: set[str] = set()
        for host in sorted({i.host for i in instances} & alive):
            try:
                libvirt_host = self.inv.host(host)
                power.update({d.name: d.power_state for d in libvirt_host.owned_domains()})
                stats.update({n: parse_domain_stats(n, raw) for n, raw in libvirt_host.all_domain_stats()})
                answered.add(host)
            except LocalVMSSError as exc:
                log.info("metrics of host %s for %s: %s", host, name, exc.message)
        sessions: dict[int, Any] = {}
        if self.balancer is not None and row.spec.load_balancer is not None:
            try:
                sessions = dict(self.balancer.server_states(name))
            except LocalVMSSError as exc:
                log.info("load-balancer sessions of %s: %s", name, exc.message)
        out = []
        for inst in instances:
            seen = power.get(inst.domain_name, PowerState.DEALLOCATED) if inst.host in answered else None
            st = stats.get(inst.domain_name)
            server = sessions.get(inst.instance_id)
            used = None
            if st is not None and st.available_bytes is not None and st.usable_bytes is not None:
                used = max(0, st.available_bytes - st.usable_bytes)
            out.append(
                {
                    "instanceId": str(inst.instance_id),
                    "host": inst.host,
                    "powerState": (PowerState.UNKNOWN if seen is None else _shown_power(inst, seen)).value,
                    "provisioningState": inst.provisioning_state,
                    "health": inst.health,
                    "cpuSeconds": st.cpu_seconds if st is not None else None,
                    "vcpus": st.vcpus if st is not None else None,
                    "memoryBytes": st.memory_bytes if st is not None else None,
                    "memoryUsedBytes": used,
                    "lbSessions": server.current_sessions if server is not None else None,
                    "lbStatus": server.status if server is not None else None,
                }
            )
        return {"sampledAt": time.time(), "value": out}

    def boot_log(self, name: str, instance_id: str) -> dict[str, Any]:
        """The instance's serial console since its last start (libvirt truncates the file then),
        at most the last MAX_BOOT_LOG_BYTES. Readable only where the daemon sees the host's
        libvirt log directory (``serial_log_read_dir``); NotSupported names the setting otherwise."""
        self.store.scale_set(name)
        inst = self.store.instance(name, _iid(instance_id))
        host_cfg = self.inv.configs.get(inst.host)
        read_dir = host_cfg.serial_log_read_dir if host_cfg is not None else None
        if not read_dir:
            where = f"{host_cfg.serial_log_dir} " if host_cfg is not None else ""
            raise NotSupported(
                f"the serial console log of instance {inst.instance_id} is in {where}on host {inst.host}, which the "
                f"daemon cannot read: set serial_log_read_dir of host {inst.host} in its configuration to a directory "
                "where that log directory is visible (hosts added through the API have none)"
            )
        path = Path(read_dir) / f"{inst.domain_name}-serial.log"
        try:
            with path.open("rb") as f:
                size = f.seek(0, 2)
                f.seek(max(0, size - MAX_BOOT_LOG_BYTES))
                data = f.read()
        except FileNotFoundError:
            raise NotFound(
                f"instance {inst.instance_id} has no serial console log at {path} (not started on {inst.host} yet?)"
            ) from None
        except OSError as exc:
            raise LocalVMSSError(f"reading the serial console log {path}: {exc.strerror or exc}") from None
        return {
            "instanceId": str(inst.instance_id),
            "host": inst.host,
            "path": str(path),
            "truncated": size > MAX_BOOT_LOG_BYTES,
            "serialConsoleLog": data.decode("utf-8", errors="replace"),
        }


IMAGE_BODY_USAGE = (
    'PUT /images/{name} takes {"sourceDirectory": "/absolute/dir"} (image.json and its files) or '
    '{"sourceFile": "/absolute/disk.qcow2"} (a qcow2 or raw disk that boots itself), '
    'optionally with "guestMetrics": {"port": 9100, "path": "/metrics"}'
)


def describe_model_change(old: ScaleSetSpec, new: ScaleSetSpec) -> list[str]:
    """What changed in the VM model, in words for the upgrade history (secrets not shown)."""
    out: list[str] = []
    for field in sorted(MODEL_FIELDS):
        before, after = getattr(old, field), getattr(new, field)
        if before == after:
            continue
        label = _MODEL_FIELD_LABELS.get(field, field)
        if field in ("custom_data", "ssh_public_keys"):
            out.append(f"{label} changed")
        else:
            out.append(f"{label} {before} -> {after}")
    return out


_MODEL_FIELD_LABELS = {
    "image": "image",
    "vm_size": "vmSize",
    "vcpus": "vCPUs",
    "memory_mib": "memoryMiB",
    "ssh_public_keys": "SSH public keys",
    "custom_data": "customData",
}


def parse_image_body(body: Any) -> tuple[str, str, dict[str, Any] | None]:
    """(which source key, its path, checked guest-metrics fields or None); raises InvalidSpec.

    Exactly one of sourceDirectory and sourceFile; paths are checked further by the import."""
    if not isinstance(body, dict) or set(body) - {"sourceDirectory", "sourceFile", "guestMetrics"}:
        raise InvalidSpec(IMAGE_BODY_USAGE)
    given = [key for key in ("sourceDirectory", "sourceFile") if key in body]
    if len(given) != 1:
        raise InvalidSpec(f"give exactly one of sourceDirectory and sourceFile; {IMAGE_BODY_USAGE}")
    path = body[given[0]]
    if not isinstance(path, str):
        raise InvalidSpec(f"{given[0]} must be a string (an absolute path on the daemon's machine)")
    metrics = check_guest_metrics(body["guestMetrics"]) if "guestMetrics" in body else None
    return given[0], path, metrics


def _iid(value: str | int) -> int:
    return parse_instance_id(value)


def _when(value: str | None, what: str) -> float | None:
    """An ISO-8601 date-time query parameter as epoch seconds (UTC when it has no offset)."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise InvalidSpec(f"{what} {value!r} must be an ISO-8601 date-time, e.g. 2026-11-21T10:00:00Z") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


def _instance_id_list(values: list[str]) -> list[int]:
    """Instance ids of one request, each once: a repeated id would be acted on (or counted off
    the capacity) twice."""
    if "*" in values:
        raise InvalidSpec('"*" stands for every instance and goes alone in instanceIds')
    ids: list[int] = []
    for value in values:
        iid = parse_instance_id(value)
        if iid in ids:
            raise InvalidSpec(f"instance id {iid} is listed more than once in instanceIds")
        ids.append(iid)
    return ids


def _obj(value: Any, what: str) -> dict[str, Any]:
    """An optional JSON object of a request body ({} if absent); InvalidSpec for anything else."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidSpec(f"{what} must be a JSON object")
    return value


def _vm_ssh_keys(props: dict[str, Any]) -> list[str]:
    """The SSH keys of a VM body (osProfile.linuxConfiguration.ssh.publicKeys), each checked."""
    linux = _obj(_obj(props.get("osProfile"), "osProfile").get("linuxConfiguration"), "linuxConfiguration")
    ssh = _obj(linux.get("ssh"), "linuxConfiguration.ssh")
    entries = ssh.get("publicKeys") or []
    if not isinstance(entries, list):
        raise InvalidSpec("linuxConfiguration.ssh.publicKeys must be a JSON array")
    keys = []
    for i, entry in enumerate(entries):
        item = _obj(entry, f"ssh.publicKeys[{i}]")
        unknown = sorted(set(item) - {"keyData", "path"})
        if unknown:
            raise InvalidSpec(f"ssh.publicKeys[{i}] takes keyData and path, not {unknown}")
        keys.append(check_ssh_public_key(item.get("keyData")))
    return keys


def _scale_set_of(ref: Any) -> str:
    """The set a VM body names: "/scaleSets/NAME" or an Azure id ending in
    "/virtualMachineScaleSets/NAME" ("" if none). Only the last segment is the name, so anything
    else before it ("/scaleSets/other/web") is refused rather than read as "web"."""
    if ref in (None, ""):
        return ""
    if not isinstance(ref, str):
        raise InvalidSpec("properties.virtualMachineScaleSet.id must be a string such as /scaleSets/NAME")
    head, _, name = ref.rpartition("/")
    if head != "/scaleSets" and not head.endswith("/virtualMachineScaleSets"):
        raise InvalidSpec(f"properties.virtualMachineScaleSet.id {ref!r} must look like /scaleSets/NAME")
    return validate_name(name, "scale set name")


RUN_SHELL_SCRIPT = "RunShellScript"
PARAMETER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def run_command_script(body: Any) -> str:
    """The shell script a runCommand body asks for: ours ``{"script": "text"}``, or Azure's
    ``{"commandId": "RunShellScript", "script": [lines], "parameters": [{name, value}]}``, whose
    parameters reach the script as environment variables (as Azure's Linux agent sets them),
    each value quoted for the shell so that it stays data."""
    if not isinstance(body, dict) or set(body) - {"script", "commandId", "parameters"}:
        raise InvalidSpec('runCommand takes {"commandId": "RunShellScript", "script": [lines], "parameters": [...]}')
    command = body.get("commandId", RUN_SHELL_SCRIPT)
    if not isinstance(command, str) or command.lower() != RUN_SHELL_SCRIPT.lower():
        raise InvalidSpec(f"commandId {command!r} is not available here; Linux guests take {RUN_SHELL_SCRIPT!r}")
    script = body.get("script", "")
    if isinstance(script, list) and all(isinstance(line, str) for line in script):
        script = "\n".join(script)
    if not isinstance(script, str):
        raise InvalidSpec("script must be a string or a list of lines")
    params = body.get("parameters") or []
    if not isinstance(params, list):
        raise InvalidSpec("parameters must be a list of {name, value}")
    exports = []
    for p in params:
        if not isinstance(p, dict) or set(p) - {"name", "value"} or not isinstance(p.get("value", ""), str):
            raise InvalidSpec("each parameter is {name, value} with a string value")
        pname = p.get("name")
        if not isinstance(pname, str) or not PARAMETER_NAME.fullmatch(pname):
            raise InvalidSpec(f"parameter name {pname!r} must be a shell variable name (letters, digits, _)")
        exports.append(f"export {pname}={shlex.quote(p.get('value', ''))}")
    return "\n".join([*exports, script]) if exports else script


def _run_command_statuses(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Azure's RunCommandResult.value: the outcome and the output, as its Linux agent reports it."""
    code = result.get("exitCode")
    message = f"Enable succeeded: \n[stdout]\n{result.get('stdout', '')}\n[stderr]\n{result.get('stderr', '')}"
    return [
        {
            "code": "ProvisioningState/succeeded" if code == 0 else "ProvisioningState/failed",
            "level": "Info" if code == 0 else "Error",
            "displayStatus": "Provisioning succeeded" if code == 0 else "Provisioning failed",
            "message": message,
        }
    ]


CUSTOM_DATA_SHOWN = "(set)"  # what views show for custom data: Azure never returns it


def _custom_data_kept(body: dict[str, Any], current: str | None) -> dict[str, Any]:
    """An ARM PUT of a set with custom data, sent back as read (customData absent, or the
    placeholder views show), keeps it: SDK callers read, change and PUT the whole resource."""
    try:
        os_profile = body["properties"]["virtualMachineProfile"]["osProfile"]
    except (KeyError, TypeError):
        return body
    if not isinstance(os_profile, dict) or current is None:
        return body
    if os_profile.get("customData") in (None, CUSTOM_DATA_SHOWN):
        os_profile = {**os_profile, "customData": current}
        vmp = {**body["properties"]["virtualMachineProfile"], "osProfile": os_profile}
        return {**body, "properties": {**body["properties"], "virtualMachineProfile": vmp}}
    return body


def _noted(view: dict[str, Any], ignored: list[str], notes: list[str]) -> dict[str, Any]:
    """A PUT's answer, naming what was kept without effect and what stood in for what."""
    if ignored or notes:
        view = {**view, "localvmss": {"ignoredProperties": ignored, "notes": notes}}
    return view


MAX_TAGS = 50  # Azure's limit per resource
AUTOSCALE_NAME = re.compile(r"[^<>%&#.,?+*\\/:]{1,260}")


def validate_autoscale_name(name: str) -> str:
    """Azure's rule for autoscale setting names: 1-260 characters, none of < > % & # . , ? + * \\ / :."""
    if not AUTOSCALE_NAME.fullmatch(name) or not name.isprintable() or name != name.strip():
        raise InvalidSpec(
            f"autoscale setting name {name!r} is invalid: 1-260 characters without < > % & # . , ? + * \\ / :"
        )
    return name


def check_tags(tags: Any) -> dict[str, str]:
    """Azure's tag rules: an object of at most 50 string values; names up to 512 characters,
    values up to 256, names without < > % & \\ ? /."""
    if not isinstance(tags, dict):
        raise InvalidSpec("tags must be a JSON object of name: value strings")
    if len(tags) > MAX_TAGS:
        raise InvalidSpec(f"{len(tags)} tags given; a resource takes at most {MAX_TAGS}")
    for key, value in tags.items():
        if not isinstance(key, str) or not key or len(key) > 512 or any(c in key for c in "<>%&\\?/"):
            raise InvalidSpec(f"tag name {key!r} must be 1-512 characters without < > % & \\ ? /")
        if not isinstance(value, str) or len(value) > 256 or not value.isprintable():
            raise InvalidSpec(f"tag {key!r}: its value must be a string of at most 256 printable characters")
    return dict(tags)


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")


def _sku_capacity_given(body: Any) -> bool:
    sku = body.get("sku") if isinstance(body, dict) else None
    return isinstance(sku, dict) and sku.get("capacity") is not None


def _check_action_options(action: str, skip_shutdown: bool) -> None:
    lifecycle.check_options(lifecycle.find_action(action), skip_shutdown)


def _shown_power(inst: InstanceRow, actual: PowerState) -> PowerState:
    """Azure's transitional states: a running guest asked to stop is 'stopping' (or
    'deallocating') until it is off."""
    if actual is PowerState.RUNNING and inst.desired_power == "stopped":
        return PowerState.STOPPING
    if actual is PowerState.RUNNING and inst.desired_power == "deallocated":
        return PowerState.DEALLOCATING
    return actual


def _members_only(instances: list[InstanceRow]) -> list[InstanceRow]:
    """The instances a request names, refused whole (Conflict) if any is a standby-pool instance:
    the pool manages those (a scale-out takes them), no action, protection or command reaches them."""
    pooled = [i.instance_id for i in instances if lifecycle.in_pool(i)]
    if pooled:
        raise Conflict(
            f"instances {pooled} are in the standby pool, not members of the set: the pool manages them "
            "(a scale-out takes them; change standbyPool to resize it); nothing was changed"
        )
    return instances


def _intended_power(inst: InstanceRow) -> PowerState:
    if lifecycle.standing_by(inst) and inst.standby_state != StandbyState.RUNNING.value:
        return PowerState.PAUSED if inst.standby_state == StandbyState.PAUSED.value else PowerState.STOPPED
    return {"running": PowerState.RUNNING, "stopped": PowerState.STOPPED, "deallocated": PowerState.DEALLOCATED}[
        inst.desired_power
    ]
