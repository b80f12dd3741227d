"""The instance lifecycle in one place: which actions exist, what each one asks of an instance,
and the predicates every other module uses (busy, in rotation, to be probed, effective size).

Pure: no I/O, no clock of its own (callers pass ``now``). The API, the CLI, the service, the
reconciler, the health monitor and the load-balancer adapter ask this module instead of keeping
their own copies of these rules, so adding an action means adding one row to ``ACTIONS`` and one
branch to ``request``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from localvmss.errors import Conflict, InvalidSpec, NotFound
from localvmss.model import OrchestrationMode, PowerState, ProvisioningState

if TYPE_CHECKING:  # only for types: the store's rows are data, this module stays pure
    from localvmss.spec import ScaleSetSpec
    from localvmss.store import InstanceRow


@dataclass(frozen=True)
class InstanceAction:
    """One per-instance action as users know it from ``az vmss``."""

    api_name: str  # REST path segment (matched case-insensitively, as ARM does)
    cli_name: str  # localvmss / az vmss verb
    protected: bool  # refused while the instance is protected from scale-set actions
    reaches: PowerState | None  # the power state the CLI waits for (None: the set settling)
    summary: str


ACTIONS: tuple[InstanceAction, ...] = (
    InstanceAction("start", "start", False, PowerState.RUNNING, "Start the instances."),
    InstanceAction(
        "powerOff",
        "stop",
        True,
        PowerState.STOPPED,
        "Power off: the guest shuts down (ACPI), then off; --skip-shutdown powers off at once.",
    ),
    InstanceAction(
        "deallocate", "deallocate", True, PowerState.DEALLOCATED, "Stop and release compute (disk and address kept)."
    ),
    InstanceAction("restart", "restart", True, PowerState.RUNNING, "Restart: the guest shuts down, then starts."),
    InstanceAction("reimage", "reimage", True, PowerState.RUNNING, "A fresh disk from the image; same id and address."),
    InstanceAction(
        "redeploy",
        "redeploy",
        True,
        None,
        "Shut down and start again on another host of the same zone (the same host if none has room); "
        "id, name and NAT port stay, the disk moves with it.",
    ),
    InstanceAction("delete", "delete-instances", True, None, "Delete the instances; the capacity drops by as many."),
)
_BY_API = {a.api_name.lower(): a for a in ACTIONS}


def find_action(name: str) -> InstanceAction:
    """The action named ``name`` in a REST path (case-insensitive); NotFound lists the known ones."""
    found = _BY_API.get(str(name).lower())
    if found is None:
        raise NotFound(f"no action {name!r}; actions are {', '.join(a.api_name for a in ACTIONS)}")
    return found


def check_options(action: InstanceAction, skip_shutdown: bool) -> None:
    if skip_shutdown and action.api_name != "powerOff":
        raise InvalidSpec(f"skipShutdown applies only to powerOff, not to {action.api_name}")


def request(
    action: InstanceAction, inst: InstanceRow, *, model_version: int, now: float, skip_shutdown: bool = False
) -> dict[str, Any]:
    """The column changes that ask ``inst`` for ``action`` (intent: written with the store's
    ``update_instance``). Raises Conflict when the instance's state or protection forbids it, so
    a caller can check every instance of a request before changing any."""
    check_options(action, skip_shutdown)
    if inst.provisioning_state == ProvisioningState.DELETING.value:
        raise Conflict(f"instance {inst.instance_id} is being deleted")
    if action.protected and inst.protect_actions:
        raise Conflict(f"instance {inst.instance_id} is protected from scale-set actions; remove the protection first")
    name = action.api_name
    if name == "delete":
        return {"provisioning_state": ProvisioningState.DELETING.value}
    if name == "start":
        if inst.desired_power == "running" and inst.health != "unhealthy":
            return {"desired_power": "running"}
        # Also an instance meant to run but unhealthy: its domain may be off (stopped outside
        # localvmss and left to the repair, or protected from it): start boots it again.
        return {"desired_power": "running", **_booting(now)}
    if name in ("powerOff", "deallocate"):
        # A guest that is off has no health (the monitor probes running instances only).
        return {
            "desired_power": "stopped" if name == "powerOff" else "deallocated",
            "skip_shutdown": skip_shutdown,
            "health": "unknown",
            "ready_at": None,
        }
    if name == "restart":
        if inst.desired_power != "running":
            raise Conflict(f"instance {inst.instance_id} is not running; start it instead")
        return {"restart_generation": inst.restart_generation + 1, **_booting(now)}
    if name == "redeploy":
        if inst.desired_power != "running":
            raise Conflict(f"instance {inst.instance_id} is not running; start it before redeploying it")
        return {"redeploy_generation": inst.redeploy_generation + 1, **_booting(now)}
    if name == "reimage":
        return {
            "reimage_generation": inst.reimage_generation + 1,
            "model_version": model_version,
            "desired_power": "running",
            **_booting(now),
        }
    raise AssertionError(f"action {name} is in ACTIONS but has no request")  # pragma: no cover


def _booting(now: float) -> dict[str, Any]:
    """What every action that (re)boots the guest also asks: not ready, health unknown, the boot
    timeout counting from now."""
    return {
        "provisioning_state": ProvisioningState.UPDATING.value,
        "health": "unknown",
        "ready_at": None,
        "boot_started_at": now,
    }


# -- predicates ---------------------------------------------------------------------------------


def changing(inst: InstanceRow) -> bool:
    """A reimage, restart or redeploy has been asked for and not yet done."""
    return (
        inst.reimage_generation != inst.applied_reimage
        or inst.restart_generation != inst.applied_restart
        or inst.redeploy_generation != inst.applied_redeploy
    )


def busy(inst: InstanceRow) -> bool:
    """Something is under way: being made, updated or deleted, or a reimage/restart pending.
    A rolling upgrade waits for busy instances; nothing new is started on them."""
    return changing(inst) or inst.provisioning_state in (
        ProvisioningState.CREATING.value,
        ProvisioningState.UPDATING.value,
        ProvisioningState.DELETING.value,
    )


def in_rotation(inst: InstanceRow) -> bool:
    """Takes new connections: ready, and not an overprovisioning extra still waiting to be kept
    (the first extras to become healthy are adopted; the rest go without ever taking traffic),
    nor a standby-pool instance."""
    return ready(inst) and not inst.overprovisioned and not in_pool(inst)


def in_pool(inst: InstanceRow) -> bool:
    """A standby-pool instance: kept ready out of the set's capacity, its load balancer, its
    metrics and its instance counts, until a scale-out takes it (``localvmss.standby``)."""
    return inst.standby_state is not None


# Where a member came from (the ``origin`` column, shown by the instance view and the activity log).
COLD_BOOT = "cold boot"
FROM_POOL = "standby pool"
TEMPLATE_CLONE = "template clone"
# The ``standby_state`` of a hidden instance booted only to be saved as a warm template
# (``localvmss.warmclones``): out of everything a pool instance is out of, and never taken.
TEMPLATE_BUILDER = "Template"


def preparing(inst: InstanceRow) -> bool:
    """A member taken from the standby pool or restored from a warm template whose clock (and,
    for a clone, identity) is not set yet: nothing may call it healthy meanwhile, as it may
    still answer as the template it was saved from (the worker probes it once that is done)."""
    return (
        (inst.origin.startswith(FROM_POOL) or inst.origin == TEMPLATE_CLONE)
        and inst.prepared_at is None
        and inst.provisioning_state in (ProvisioningState.CREATING.value, ProvisioningState.UPDATING.value)
    )


def load_balanced(inst: InstanceRow) -> bool:
    """One of the set's servers in the load balancer (in rotation or not): every member, and a
    pool instance only while a scale-in returns it (it drains; then it leaves the backends)."""
    return not in_pool(inst) or (inst.standby_at is None and inst.origin != "")


def kept_in_pool(inst: InstanceRow) -> bool:
    """A pool instance that is not on its way out: what the pool's size and views count."""
    return in_pool(inst) and inst.provisioning_state != ProvisioningState.DELETING.value


def standing_by(inst: InstanceRow) -> bool:
    """A pool instance that has reached its standby state (Running, Paused or Saved)."""
    return in_pool(inst) and inst.standby_at is not None


def usable_from_pool(inst: InstanceRow, set_version: int) -> bool:
    """A scale-out may take it: standing by, on the set's current model, nothing pending. An
    outdated one is never handed out (the pool replaces it in the background)."""
    return (
        standing_by(inst)
        and not outdated(inst, set_version)
        and inst.provisioning_state == ProvisioningState.SUCCEEDED.value
        and inst.health != "unhealthy"
        and not changing(inst)
    )


def ready(inst: InstanceRow) -> bool:
    """Could take traffic: healthy since its last (re)start, meant to run, nothing pending."""
    return (
        inst.ready_at is not None
        and inst.desired_power == "running"
        and inst.provisioning_state == ProvisioningState.SUCCEEDED.value
        and not changing(inst)
    )


def unhealthy_for_scale_in(inst: InstanceRow) -> bool:
    """Removed first by a scale-in with ``prioritizeUnhealthyVMs`` (Azure: "unhealthy and inactive
    VMs"): its probe says unhealthy, its provisioning failed, or it is not meant to run. An
    instance still initializing (inside its grace period) or of unknown health is not."""
    return (
        inst.health == "unhealthy"
        or inst.provisioning_state == ProvisioningState.FAILED.value
        or inst.desired_power != "running"
    )


def to_probe(inst: InstanceRow, spec: ScaleSetSpec) -> bool:
    """The health monitor probes it: it has a probe, is meant to run, and is not being changed."""
    return (
        spec.health_probe is not None
        and inst.desired_power == "running"
        and inst.provisioning_state != ProvisioningState.DELETING.value
        and not changing(inst)
        # A paused or saved pool instance has no CPU to answer with; a Running one is watched.
        and (not standing_by(inst) or inst.standby_state == "Running")
        and not preparing(inst)
    )


def to_repair(inst: InstanceRow, spec: ScaleSetSpec, unhealthy_for_s: float | None, grace_s: float) -> bool:
    """Automatic repair is due: the set has it on, it is a Uniform set's instance (a Flexible VM
    is managed on its own), it is not protected from scale-set actions, nothing is already being
    done to it, and it has been unhealthy or unknown (its probe unreachable) for the whole grace
    period after it left Initializing."""
    return (
        spec.automatic_repairs.enabled
        and spec.mode is OrchestrationMode.UNIFORM
        and not in_pool(inst)  # the pool replaces its own failures
        and inst.health in FAILING_HEALTH
        and not inst.protect_actions
        and inst.provisioning_state != ProvisioningState.DELETING.value
        and not changing(inst)
        and unhealthy_for_s is not None
        and unhealthy_for_s >= grace_s
    )


# Rich health states (Azure's Application Health extension), as the ``health`` column keeps them.
FAILING_HEALTH = frozenset({"unhealthy", "unknown"})


def boot_started(inst: InstanceRow) -> float:
    """When the instance's current (re)boot began (its creation if it never rebooted)."""
    return inst.boot_started_at if inst.boot_started_at is not None else inst.created_at


def initializing(inst: InstanceRow, spec: ScaleSetSpec, now: float) -> bool:
    """Inside the grace period (automaticRepairsPolicy.gracePeriod) after its (re)boot and not
    yet seen healthy or failing since: counts for neither repair nor upgrade."""
    return inst.health in ("unknown", "initializing") and now < boot_started(inst) + spec.automatic_repairs.grace_s()


def outdated(inst: InstanceRow, set_version: int) -> bool:
    """Not on the set's model version (older, or newer after a rollback of the set's model)."""
    return inst.model_version != set_version


def counts_toward_capacity(inst: InstanceRow) -> bool:
    """One of the set's ``capacity`` instances: not on its way out (being deleted, or replaced
    by a surge upgrade's new instance, while it still serves until that one is healthy), and not
    a standby-pool instance."""
    return (
        inst.provisioning_state != ProvisioningState.DELETING.value and inst.replaced_by is None and not in_pool(inst)
    )


def memory_mib(inst: InstanceRow | None, spec: ScaleSetSpec) -> int:
    """What the instance occupies on its host: a Flexible VM's own size, else the set's."""
    if inst is not None and inst.overrides.get("memory_mib"):
        return int(inst.overrides["memory_mib"])
    return spec.memory_mib
