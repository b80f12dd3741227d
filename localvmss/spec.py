"""The scale-set model as localvmss stores it, and its translation from/to Azure-shaped JSON.

The API speaks Azure's shape (``sku.capacity``, ``properties.virtualMachineProfile`` ...); the
store keeps the flat ``ScaleSetSpec``. Parsing is strict (unknown fields are errors) so a typo
in a request is reported instead of silently ignored.
"""

from __future__ import annotations

import base64
import binascii
from enum import StrEnum
from typing import Any, Literal

import isodate
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from localvmss.errors import InvalidSpec
from localvmss.lb.spec import check_probe_path
from localvmss.model import (
    DEFAULT_ADMIN_USERNAME,
    FaultDomainMapping,
    OrchestrationMode,
    ScaleInPolicy,
    UpgradeMode,
    check_capacity,
    check_fault_domain_count,
    resolve_size,
    validate_admin_username,
    validate_name,
)
from localvmss.sshkeys import check_ssh_public_key

# The VM model: a change of any of these makes a new model version, and a rollback restores them.
MODEL_FIELDS = frozenset(
    {"image", "vm_size", "vcpus", "memory_mib", "ssh_public_keys", "custom_data", "admin_username"}
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RollingUpgradePolicy(_Strict):
    """Azure's rollingUpgradePolicy, whole, and two fields beyond it:

    * ``rollbackAllInstancesOnPolicyBreach``: on a breach the whole set returns to the model
      version the rollout started from (as AWS instance refresh's automatic rollback does);
      Azure's ``rollbackFailedInstancesOnPolicyBreach`` returns only the failed instances.
    * ``bakeTime``: after the last batch the rollout watches the upgraded instances this long
      before it calls itself Completed; a breach meanwhile still stops (and rolls back) it.
    """

    max_batch_instance_percent: int = Field(20, alias="maxBatchInstancePercent", ge=5, le=100)
    max_unhealthy_instance_percent: int = Field(20, alias="maxUnhealthyInstancePercent", ge=5, le=100)
    max_unhealthy_upgraded_instance_percent: int = Field(20, alias="maxUnhealthyUpgradedInstancePercent", ge=0, le=100)
    pause_time_between_batches: str = Field("PT0S", alias="pauseTimeBetweenBatches")
    prioritize_unhealthy_instances: bool = Field(True, alias="prioritizeUnhealthyInstances", strict=True)
    max_surge: bool = Field(False, alias="maxSurge", strict=True)
    rollback_failed_instances_on_policy_breach: bool = Field(
        False, alias="rollbackFailedInstancesOnPolicyBreach", strict=True
    )
    rollback_all_instances_on_policy_breach: bool = Field(
        False, alias="rollbackAllInstancesOnPolicyBreach", strict=True
    )
    bake_time: str = Field("PT0S", alias="bakeTime")

    @field_validator("pause_time_between_batches", "bake_time")
    @classmethod
    def _duration(cls, value: str, info: ValidationInfo) -> str:
        try:
            check_iso_duration(value, str(cls.model_fields[str(info.field_name)].alias))
        except InvalidSpec as exc:
            raise ValueError(exc.message) from None
        return value


class UpgradePolicy(_Strict):
    mode: UpgradeMode = UpgradeMode.MANUAL
    rolling_upgrade_policy: RollingUpgradePolicy = Field(
        default_factory=lambda: RollingUpgradePolicy(), alias="rollingUpgradePolicy"
    )


class HealthProbeModel(_Strict):
    """How localvmss decides an instance is healthy (readiness, LB membership, repair)."""

    protocol: Literal["http", "tcp"] = "http"
    port: int = Field(80, ge=1, le=65535)
    path: str = "/healthz"


class RepairAction(StrEnum):
    """What an automatic repair does to an instance that stayed unhealthy (Azure's repairAction)."""

    REPLACE = "Replace"  # delete it; the set, below capacity, creates a new one
    RESTART = "Restart"
    REIMAGE = "Reimage"


MAX_REPAIR_GRACE_S = 90 * 60.0


class AutomaticRepairs(_Strict):
    """Azure's automaticRepairsPolicy. ``gracePeriod`` is how long a (re)booted instance is
    Initializing and how long it must then stay unhealthy before it is repaired. Azure allows
    PT10M..PT90M (default PT10M); localvmss accepts PT0S..PT90M so tests can use short ones."""

    enabled: bool = False
    grace_period: str = Field("PT10M", alias="gracePeriod")
    repair_action: RepairAction = Field(RepairAction.REPLACE, alias="repairAction")

    @field_validator("repair_action", mode="before")
    @classmethod
    def _action_any_case(cls, value: Any) -> Any:
        """ARM matches enum values case-insensitively; store Azure's spelling."""
        if isinstance(value, str):
            for action in RepairAction:
                if action.value.lower() == value.strip().lower():
                    return action
            known = ", ".join(a.value for a in RepairAction)
            raise ValueError(f"repairAction {value!r} is not one of {known}")
        return value

    @field_validator("grace_period")
    @classmethod
    def _grace_in_range(cls, value: str) -> str:
        try:
            seconds = isodate.parse_duration(value).total_seconds()
        except (isodate.ISO8601Error, ValueError, TypeError, AttributeError):
            raise ValueError(f"gracePeriod {value!r} is not an ISO-8601 duration such as PT10M") from None
        if not 0 <= seconds <= MAX_REPAIR_GRACE_S:
            raise ValueError(f"gracePeriod {value!r} must be between PT0S and PT90M")
        return value

    def grace_s(self) -> float:
        return float(isodate.parse_duration(self.grace_period).total_seconds())


class StandbyState(StrEnum):
    """What a standby-pool instance waits in (Azure's virtualMachineState, on local hypervisors):
    Running (booted, no traffic), Paused (libvirt suspend: memory kept, no CPU) or Saved (libvirt
    managed save: memory written to disk, no memory held)."""

    RUNNING = "Running"
    PAUSED = "Paused"
    SAVED = "Saved"

    @property
    def holds_memory(self) -> bool:
        return self is not StandbyState.SAVED


# Azure's names for the states it has: Hibernated is what Saved is here (memory on disk);
# Deallocated (no memory, a cold boot on use) would be no faster than a new instance.
_STANDBY_ALIASES = {"hibernated": StandbyState.SAVED}
MAX_READY_CAPACITY = 1000


class VmStateDistribution(_Strict):
    """Azure's vmStateDistribution: the pool's share of each state, in percent (sum 100)."""

    running_percent: int = Field(0, alias="runningPercent", ge=0, le=100, strict=True)
    paused_percent: int = Field(0, alias="pausedPercent", ge=0, le=100, strict=True)
    saved_percent: int = Field(0, alias="savedPercent", ge=0, le=100, strict=True)

    def percents(self) -> dict[StandbyState, int]:
        return {
            StandbyState.RUNNING: self.running_percent,
            StandbyState.PAUSED: self.paused_percent,
            StandbyState.SAVED: self.saved_percent,
        }


class TemplateClones(_Strict):
    """properties.templateClones (beyond Azure): new instances beyond the standby pool are
    restored from a warm template of their model version instead of booted (docs/WARM-CLONES.md)."""

    enabled: bool = Field(False, strict=True)


class DynamicSizing(_Strict):
    enabled: bool = Field(False, strict=True)


class StandbyPoolPolicy(_Strict):
    """A Uniform set's standby pool (Azure's standbyVirtualMachinePool, attached to the set):
    instances booted from the current model and kept ready out of capacity and out of the load
    balancer; a scale-out takes them first. ``reuseOnScaleIn`` (AWS's ReuseOnScaleIn, beyond
    Azure): a scale-in returns drained instances of the current model to the pool."""

    max_ready_capacity: int = Field(alias="maxReadyCapacity", ge=0, le=MAX_READY_CAPACITY, strict=True)
    min_ready_capacity: int = Field(0, alias="minReadyCapacity", ge=0, le=MAX_READY_CAPACITY, strict=True)
    virtual_machine_state: StandbyState = Field(StandbyState.PAUSED, alias="virtualMachineState")
    vm_state_distribution: VmStateDistribution | None = Field(None, alias="vmStateDistribution")
    dynamic_sizing: DynamicSizing = Field(default_factory=lambda: DynamicSizing(), alias="dynamicSizing")
    reuse_on_scale_in: bool = Field(False, alias="reuseOnScaleIn", strict=True)

    @field_validator("virtual_machine_state", mode="before")
    @classmethod
    def _state_any_case(cls, value: Any) -> Any:
        if isinstance(value, str):
            word = value.strip().lower()
            for state in StandbyState:
                if state.value.lower() == word:
                    return state
            if word in _STANDBY_ALIASES:
                return _STANDBY_ALIASES[word]
            if word == "deallocated":
                raise ValueError(
                    "virtualMachineState 'Deallocated' is not offered: a deallocated standby instance boots cold "
                    "when used, no faster than a new one; use Saved (memory on disk) or Paused"
                )
            raise ValueError(f"virtualMachineState {value!r} is not one of Running, Paused, Saved (or Hibernated)")
        return value

    @field_validator("vm_state_distribution")
    @classmethod
    def _sums_to_100(cls, value: VmStateDistribution | None) -> VmStateDistribution | None:
        if value is not None and sum(value.percents().values()) != 100:
            total = sum(value.percents().values())
            raise ValueError(f"vmStateDistribution percentages add up to {total}, not 100")
        return value

    def check(self) -> StandbyPoolPolicy:
        if self.min_ready_capacity > self.max_ready_capacity:
            raise InvalidSpec(
                f"standbyPool.minReadyCapacity {self.min_ready_capacity} exceeds maxReadyCapacity "
                f"{self.max_ready_capacity}"
            )
        return self

    def distribution(self) -> dict[StandbyState, int]:
        """Percent per state: the distribution if given, else all in ``virtualMachineState``."""
        if self.vm_state_distribution is not None:
            return self.vm_state_distribution.percents()
        return {s: (100 if s is self.virtual_machine_state else 0) for s in StandbyState}


# Azure accepts PT5M-PT15M; localvmss accepts PT0S-PT15M so tests and demos can use short ones.
NOT_BEFORE_TIMEOUT_MAX_S = 15 * 60.0


class TerminateNotificationProfile(_Strict):
    """Azure's scheduledEventsProfile.terminateNotificationProfile: before an instance is
    deleted its guest is sent a Terminate scheduled event and may acknowledge it early."""

    enable: bool = False
    not_before_timeout: str = Field("PT5M", alias="notBeforeTimeout")


class _AzScheduledEvents(_Strict):
    terminate_notification_profile: TerminateNotificationProfile | None = Field(
        None, alias="terminateNotificationProfile"
    )


def check_not_before_timeout(value: str) -> float:
    """Seconds of a notBeforeTimeout; InvalidSpec outside PT0S-PT15M."""
    seconds = check_iso_duration(value, "terminateNotificationProfile.notBeforeTimeout")
    if seconds > NOT_BEFORE_TIMEOUT_MAX_S:
        raise InvalidSpec(f"terminateNotificationProfile.notBeforeTimeout {value!r} is longer than PT15M")
    return seconds


class ScaleSetSpec(_Strict):
    """The flat, validated model stored for each scale set."""

    mode: OrchestrationMode
    image: str | None = None
    vm_size: str = "Standard_B1ls"
    vcpus: int = 1
    memory_mib: int = 256
    computer_name_prefix: str = ""
    admin_username: str = DEFAULT_ADMIN_USERNAME  # a login of its own in the base image; root keeps the keys
    ssh_public_keys: list[str] = Field(default_factory=list)
    custom_data: str | None = None  # base64, as in Azure
    upgrade_policy: UpgradePolicy = Field(default_factory=UpgradePolicy)
    scale_in_policy: ScaleInPolicy = ScaleInPolicy.DEFAULT
    platform_fault_domain_count: int = 1
    fault_domain_mapping: FaultDomainMapping = FaultDomainMapping.HOST
    zones: list[str] = Field(default_factory=list)
    zone_balance: bool = False
    load_balancer: dict[str, Any] | None = None
    health_probe: HealthProbeModel | None = Field(default_factory=HealthProbeModel)
    automatic_repairs: AutomaticRepairs = Field(default_factory=AutomaticRepairs)
    terminate_notification: TerminateNotificationProfile = Field(default_factory=TerminateNotificationProfile)
    force_deletion: bool = False  # scaleInPolicy.forceDeletion: scale-in skips the notice and its wait
    # scaleInPolicy.prioritizeUnhealthyVMs: a scale-in removes unhealthy and inactive instances
    # first (lifecycle.unhealthy_for_scale_in). Off unless set, as in Azure.
    prioritize_unhealthy_vms: bool = False
    # properties.overprovision (Uniform): a scale-out makes extra instances, keeps the first to
    # become healthy and removes the rest before they take traffic (planner.plan_scale). Azure's
    # default is true because its extras cost the user nothing; here every extra is a real boot
    # on the user's own hosts, so localvmss's default is false.
    overprovision: bool = False
    # properties.standbyPool (Uniform): instances kept ready out of capacity (localvmss.standby).
    standby_pool: StandbyPoolPolicy | None = None
    template_clones: TemplateClones = Field(default_factory=lambda: TemplateClones())

    def model_fields_for_update(self) -> set[str]:
        """Fields whose change makes a new model version (instances become not latest)."""
        return set(MODEL_FIELDS)

    def with_model_of(self, version_model: dict[str, Any]) -> ScaleSetSpec:
        """This set's spec with the VM model of a stored version (what an instance on that
        version runs); policies, probe and load balancer stay the set's current ones."""
        return self.model_copy(update={k: v for k, v in version_model.items() if k in MODEL_FIELDS})


# -- Azure-shaped request bodies ------------------------------------------------------------
class _AzSku(_Strict):
    name: str | None = None
    capacity: int | None = None
    tier: str | None = None


class _AzImageRef(_Strict):
    id: str


class _AzStorage(_Strict):
    image_reference: _AzImageRef = Field(alias="imageReference")


class _AzSizeProps(_Strict):
    vcpus_available: int | None = Field(None, alias="vCPUsAvailable")
    memory_mib: int | None = Field(None, alias="memoryMiB")


class _AzHardware(_Strict):
    vm_size_properties: _AzSizeProps | None = Field(None, alias="vmSizeProperties")


class _AzKey(_Strict):
    key_data: str = Field(alias="keyData")
    path: str | None = None


class _AzSsh(_Strict):
    public_keys: list[_AzKey] = Field(default_factory=list, alias="publicKeys")


class _AzLinux(_Strict):
    ssh: _AzSsh | None = None
    disable_password_authentication: bool | None = Field(None, alias="disablePasswordAuthentication")


class _AzOsProfile(_Strict):
    computer_name_prefix: str | None = Field(None, alias="computerNamePrefix")
    admin_username: str | None = Field(None, alias="adminUsername")
    custom_data: str | None = Field(None, alias="customData")
    linux_configuration: _AzLinux | None = Field(None, alias="linuxConfiguration")


class _AzNetwork(_Strict):
    load_balancer: dict[str, Any] | None = Field(None, alias="loadBalancer")
    health_probe: HealthProbeModel | None = Field(None, alias="healthProbe")


class _AzVmProfile(_Strict):
    storage_profile: _AzStorage | None = Field(None, alias="storageProfile")
    hardware_profile: _AzHardware | None = Field(None, alias="hardwareProfile")
    os_profile: _AzOsProfile | None = Field(None, alias="osProfile")
    network_profile: _AzNetwork | None = Field(None, alias="networkProfile")
    scheduled_events_profile: _AzScheduledEvents | None = Field(None, alias="scheduledEventsProfile")


class _AzScaleIn(_Strict):
    rules: list[ScaleInPolicy] = Field(default_factory=lambda: [ScaleInPolicy.DEFAULT])
    force_deletion: bool | None = Field(None, alias="forceDeletion")
    prioritize_unhealthy_vms: bool | None = Field(None, alias="prioritizeUnhealthyVMs")


class _AzProperties(_Strict):
    orchestration_mode: str = Field("Uniform", alias="orchestrationMode")
    platform_fault_domain_count: int | None = Field(None, alias="platformFaultDomainCount")
    fault_domain_mapping: FaultDomainMapping | None = Field(None, alias="faultDomainMapping")
    zone_balance: bool | None = Field(None, alias="zoneBalance")
    upgrade_policy: UpgradePolicy | None = Field(None, alias="upgradePolicy")
    scale_in_policy: _AzScaleIn | None = Field(None, alias="scaleInPolicy")
    overprovision: bool | None = None
    standby_pool: StandbyPoolPolicy | None = Field(None, alias="standbyPool")
    template_clones: TemplateClones | None = Field(None, alias="templateClones")
    automatic_repairs_policy: AutomaticRepairs | None = Field(None, alias="automaticRepairsPolicy")
    virtual_machine_profile: _AzVmProfile | None = Field(None, alias="virtualMachineProfile")
    single_placement_group: bool | None = Field(None, alias="singlePlacementGroup")


class AzScaleSetBody(_Strict):
    location: str | None = None
    tags: dict[str, str] | None = None
    sku: _AzSku | None = None
    zones: list[str] | None = None
    properties: _AzProperties = Field(default_factory=lambda: _AzProperties())


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    more = f" (and {len(exc.errors()) - 1} more problems)" if len(exc.errors()) > 1 else ""
    return f"{where}: {first['msg']}{more}"


def parse_standby_pool(body: Any) -> StandbyPoolPolicy:
    """A standbyPool body (PUT /scaleSets/{name}/standbyPool, or properties.standbyPool)."""
    if not isinstance(body, dict):
        raise InvalidSpec("request body must be a JSON object: the standbyPool policy")
    props = body.get("properties", body) if set(body) <= {"properties", "name", "type"} else body
    try:
        return StandbyPoolPolicy.model_validate(props).check()
    except ValidationError as exc:
        raise InvalidSpec(f"invalid standbyPool: {_validation_message(exc)}") from None


def check_iso_duration(value: str, what: str) -> float:
    """Seconds of an ISO-8601 duration such as PT5M; InvalidSpec if malformed."""
    try:
        seconds = isodate.parse_duration(value).total_seconds()
    except (isodate.ISO8601Error, ValueError, TypeError, AttributeError):
        raise InvalidSpec(f"{what} {value!r} is not an ISO-8601 duration such as PT5M") from None
    if seconds < 0:
        raise InvalidSpec(f"{what} {value!r} must not be negative")
    return float(seconds)


def parse_scale_set_body(name: str, body: Any, known_images: set[str]) -> tuple[ScaleSetSpec, int]:
    """Validate an Azure-shaped PUT body; returns the spec and the requested capacity."""
    validate_name(name, "scale set name")
    if not isinstance(body, dict):
        raise InvalidSpec("request body must be a JSON object")
    try:
        az = AzScaleSetBody.model_validate(body)
    except ValidationError as exc:
        raise InvalidSpec(f"invalid scale set body: {_validation_message(exc)}") from None
    props = az.properties
    mode = OrchestrationMode.parse(props.orchestration_mode)
    if props.single_placement_group is False and mode is OrchestrationMode.FLEXIBLE:
        raise InvalidSpec("singlePlacementGroup=false is not supported in VM (Flexible) orchestration mode")
    sku = az.sku or _AzSku()
    capacity = check_capacity(sku.capacity if sku.capacity is not None else 0, mode)
    vmp = props.virtual_machine_profile
    default_fd = 1 if mode is OrchestrationMode.UNIFORM else 2
    zones = [str(z) for z in (az.zones or [])]
    fd_count = check_fault_domain_count(
        props.platform_fault_domain_count if props.platform_fault_domain_count is not None else default_fd,
        mode,
        zonal=len(zones) == 1,
    )
    if len(set(zones)) != len(zones):
        raise InvalidSpec(f"zones {zones} contain duplicates")
    if mode is OrchestrationMode.FLEXIBLE:
        if len(zones) > 1:
            raise InvalidSpec("VM (Flexible) orchestration mode supports a regional set or a single zone, not several")
        if props.zone_balance:
            raise InvalidSpec("zoneBalance is not supported in VM (Flexible) orchestration mode")
        if capacity:
            raise InvalidSpec(
                "sku.capacity is not used in VM (Flexible) orchestration mode: create the set empty "
                "and add VMs with 'localvmss vm create NAME --vmss SET'"
            )
        if props.upgrade_policy is not None and props.upgrade_policy.mode is not UpgradeMode.MANUAL:
            raise InvalidSpec("OS upgrade and model updates are not supported in VM orchestration mode")
    spec_data: dict[str, Any] = {
        "mode": mode,
        "platform_fault_domain_count": fd_count,
        "zones": zones,
        "zone_balance": bool(props.zone_balance),
    }
    if props.fault_domain_mapping is not None:
        spec_data["fault_domain_mapping"] = props.fault_domain_mapping
    if props.upgrade_policy is not None:
        spec_data["upgrade_policy"] = props.upgrade_policy
    if props.scale_in_policy is not None and props.scale_in_policy.rules:
        spec_data["scale_in_policy"] = props.scale_in_policy.rules[0]
    if props.scale_in_policy is not None and props.scale_in_policy.force_deletion is not None:
        spec_data["force_deletion"] = props.scale_in_policy.force_deletion
    if props.scale_in_policy is not None and props.scale_in_policy.prioritize_unhealthy_vms is not None:
        spec_data["prioritize_unhealthy_vms"] = props.scale_in_policy.prioritize_unhealthy_vms
    if props.overprovision is not None:
        if props.overprovision and mode is OrchestrationMode.FLEXIBLE:
            raise InvalidSpec("overprovision is not supported in VM (Flexible) orchestration mode")
        spec_data["overprovision"] = props.overprovision
    if props.standby_pool is not None:
        if mode is OrchestrationMode.FLEXIBLE:
            raise InvalidSpec(
                "standbyPool is not supported in VM (Flexible) orchestration mode: pool instances are made from "
                "the set's VM model, and a Flexible set has none (its VMs are created and attached one by one)"
            )
        spec_data["standby_pool"] = props.standby_pool.check()
    if props.template_clones is not None:
        if props.template_clones.enabled and mode is OrchestrationMode.FLEXIBLE:
            raise InvalidSpec(
                "templateClones is not supported in VM (Flexible) orchestration mode: a template is made from the "
                "set's VM model, and a Flexible set has none"
            )
        spec_data["template_clones"] = props.template_clones
    if props.automatic_repairs_policy is not None:
        check_iso_duration(props.automatic_repairs_policy.grace_period, "automaticRepairsPolicy.gracePeriod")
        spec_data["automatic_repairs"] = props.automatic_repairs_policy
    if vmp is None and mode is OrchestrationMode.UNIFORM:
        raise InvalidSpec(
            "properties.virtualMachineProfile is required in Uniform (ScaleSetVM) mode: "
            "it is the model instances are made from"
        )
    if vmp is not None:
        spec_data.update(_profile_fields(name, vmp, sku, known_images))
    spec = ScaleSetSpec(**spec_data)
    if mode is OrchestrationMode.UNIFORM and spec.image is None:
        raise InvalidSpec("virtualMachineProfile.storageProfile.imageReference.id is required in Uniform mode")
    return spec, capacity


def _profile_fields(name: str, vmp: _AzVmProfile, sku: _AzSku, known_images: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if vmp.storage_profile is not None:
        image = vmp.storage_profile.image_reference.id
        if image not in known_images:
            known = ", ".join(sorted(known_images)) or "none imported yet ('localvmss image import')"
            raise InvalidSpec(f"image {image!r} is unknown; known images: {known}")
        out["image"] = image
    size_props = vmp.hardware_profile.vm_size_properties if vmp.hardware_profile else None
    size = resolve_size(
        sku.name,
        size_props.vcpus_available if size_props else None,
        size_props.memory_mib if size_props else None,
    )
    out.update(vm_size=size.name, vcpus=size.vcpus, memory_mib=size.memory_mib)
    osp = vmp.os_profile
    prefix = (osp.computer_name_prefix if osp and osp.computer_name_prefix else name)[:15]
    validate_name(prefix, "computerNamePrefix")
    out["computer_name_prefix"] = prefix
    if osp and osp.linux_configuration and osp.linux_configuration.ssh:
        out["ssh_public_keys"] = [check_ssh_public_key(k.key_data) for k in osp.linux_configuration.ssh.public_keys]
    if osp and osp.custom_data is not None:
        out["custom_data"] = check_custom_data(osp.custom_data)
    if osp and osp.admin_username is not None:
        out["admin_username"] = validate_admin_username(osp.admin_username)
    if vmp.network_profile is not None:
        if vmp.network_profile.health_probe is not None:
            out["health_probe"] = check_probe(vmp.network_profile.health_probe)
        if vmp.network_profile.load_balancer is not None:
            out["load_balancer"] = vmp.network_profile.load_balancer
    sep = vmp.scheduled_events_profile
    if sep is not None and sep.terminate_notification_profile is not None:
        check_not_before_timeout(sep.terminate_notification_profile.not_before_timeout)
        out["terminate_notification"] = sep.terminate_notification_profile
    return out


def check_probe(probe: HealthProbeModel) -> HealthProbeModel:
    """The health probe's path goes into the daemon's HTTP request line (ASCII only) and, when
    the set has a load balancer, into HAProxy's config: the load balancer's one path rule."""
    if probe.protocol == "http":
        check_probe_path(probe.path, "health probe path")
    return probe


def check_custom_data(value: str) -> str:
    """customData is base64 (as in Azure), at most 64 KiB decoded."""
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSpec("customData must be base64-encoded (as in Azure)") from None
    if len(decoded) > 65536:
        raise InvalidSpec(f"customData is {len(decoded)} bytes decoded; the limit is 65536")
    return value


# What a set's view shows that nobody sets (the service adds them): left out when a view is sent
# back as a request body (az's read-modify-write, ARM's PATCH).
COMPUTED_PROPERTIES = (
    "provisioningState",
    "message",
    "modelVersion",
    "instanceCount",
    "readyCount",
    "standbyPoolCount",
    "standbyPoolStandingBy",
)


def without_computed(props: dict[str, Any]) -> dict[str, Any]:
    """A set view's properties as a request body's: the computed ones left out."""
    return {k: v for k, v in props.items() if k not in COMPUTED_PROPERTIES}


def spec_to_azure(
    name: str, spec: ScaleSetSpec, capacity: int, extra_props: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The Azure-shaped view of a stored scale set."""
    vm_profile: dict[str, Any] | None = None
    network = {
        "healthProbe": spec.health_probe.model_dump() if spec.health_probe else None,
        "loadBalancer": spec.load_balancer,
    }
    if spec.image is None and spec.load_balancer:
        # A Flexible set without a model can still put its VMs behind a load balancer.
        vm_profile = {"networkProfile": network}
    scheduled_events = {
        "terminateNotificationProfile": spec.terminate_notification.model_dump(by_alias=True, mode="json")
    }
    if spec.image is None and spec.terminate_notification.enable:
        vm_profile = {**(vm_profile or {"networkProfile": network}), "scheduledEventsProfile": scheduled_events}
    if spec.image is not None:
        vm_profile = {
            "storageProfile": {"imageReference": {"id": spec.image}},
            "hardwareProfile": {"vmSizeProperties": {"vCPUsAvailable": spec.vcpus, "memoryMiB": spec.memory_mib}},
            "osProfile": {
                "computerNamePrefix": spec.computer_name_prefix,
                "adminUsername": spec.admin_username,
                "linuxConfiguration": {
                    "disablePasswordAuthentication": True,
                    "ssh": {"publicKeys": [{"keyData": k} for k in spec.ssh_public_keys]},
                },
                "customData": "(set)" if spec.custom_data else None,
            },
            "networkProfile": network,
            "scheduledEventsProfile": scheduled_events,
        }
    props: dict[str, Any] = {
        "orchestrationMode": spec.mode.value,
        "platformFaultDomainCount": spec.platform_fault_domain_count,
        "faultDomainMapping": spec.fault_domain_mapping.value,
        "zoneBalance": spec.zone_balance,
        "upgradePolicy": spec.upgrade_policy.model_dump(by_alias=True, mode="json"),
        "scaleInPolicy": {
            "rules": [spec.scale_in_policy.value],
            "forceDeletion": spec.force_deletion,
            "prioritizeUnhealthyVMs": spec.prioritize_unhealthy_vms,
        },
        "overprovision": spec.overprovision,
        "standbyPool": spec.standby_pool.model_dump(by_alias=True, mode="json") if spec.standby_pool else None,
        "templateClones": spec.template_clones.model_dump(by_alias=True, mode="json"),
        "automaticRepairsPolicy": spec.automatic_repairs.model_dump(by_alias=True, mode="json"),
        "virtualMachineProfile": vm_profile,
    }
    props.update(extra_props or {})
    return {
        "name": name,
        "id": f"/scaleSets/{name}",
        "type": "Microsoft.Compute/virtualMachineScaleSets",
        "sku": {"name": spec.vm_size, "tier": "Standard", "capacity": capacity},
        "zones": spec.zones,
        "properties": props,
    }
