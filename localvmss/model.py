"""Domain vocabulary shared by every layer: enums, VM sizes, name and range validation.

Imports nothing of ours but ``errors``; pure data and checks, so it is safe to use anywhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from localvmss.errors import InvalidSpec

# Names become libvirt domain/volume names, file names and HAProxy identifiers, so they are
# restricted to a set that is safe in all of them: no path, XML or shell metacharacters.
# Always used with fullmatch: "$" would also match before a trailing newline.
NAME_PATTERN = re.compile(r"[a-z](?:[a-z0-9-]{0,30}[a-z0-9])?")
NAME_RULE = "1-32 characters: lowercase letters, digits and '-', starting with a letter, not ending with '-'"
# Instance ids as the API writes them: ASCII digits, no sign, no leading zero, no spaces (int()
# would take "01", " 1", "1_0" and "١" too, and two spellings of one id count it twice).
INSTANCE_ID_PATTERN = re.compile(r"0|[1-9][0-9]{0,8}")

UNIFORM_MAX_CAPACITY = 1000
FLEXIBLE_MAX_VMS = 200
UNIFORM_FAULT_DOMAINS = (1, 5)
FLEXIBLE_FAULT_DOMAINS = (2, 3)
FLEXIBLE_ZONAL_FAULT_DOMAINS = 5
UPDATE_DOMAIN_COUNT = 5

# Every libvirt object localvmss owns carries this prefix, so ownership is readable from libvirt.
OBJECT_PREFIX = "lvmss-"
METADATA_NS = "https://localvmss.dev/xmlns/instance/1"


class OrchestrationMode(StrEnum):
    """The two modes of the seed documents; fixed when a set is created."""

    UNIFORM = "Uniform"  # seed name: ScaleSetVM
    FLEXIBLE = "Flexible"  # seed name: VM

    @classmethod
    def parse(cls, value: str) -> OrchestrationMode:
        aliases = {
            "uniform": cls.UNIFORM,
            "scalesetvm": cls.UNIFORM,
            "flexible": cls.FLEXIBLE,
            "vm": cls.FLEXIBLE,
        }
        try:
            return aliases[value.strip().lower()]
        except (KeyError, AttributeError):
            raise InvalidSpec(
                f"orchestrationMode {value!r} is not one of Uniform (ScaleSetVM) or Flexible (VM)"
            ) from None


class UpgradeMode(StrEnum):
    MANUAL = "Manual"
    AUTOMATIC = "Automatic"
    ROLLING = "Rolling"


class FaultDomainMapping(StrEnum):
    """What a fault domain is on these hosts."""

    HOST = "host"  # fault domains are libvirt hosts
    NUMA = "numa"  # fault domains are NUMA cells of one host


class ProvisioningState(StrEnum):
    CREATING = "Creating"
    UPDATING = "Updating"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    DELETING = "Deleting"


class PowerState(StrEnum):
    """Azure's PowerState/* codes."""

    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    PAUSED = "paused"  # libvirt suspend (a Paused standby-pool instance): memory kept, no CPU
    DEALLOCATING = "deallocating"
    DEALLOCATED = "deallocated"
    UNKNOWN = "unknown"

    @property
    def active(self) -> bool:
        """Its QEMU process is still there: running, or its guest shutting down (libvirt's "in
        shutdown"). A domain is off, and its disk may be moved or its definition removed, only
        when this is False."""
        return self in (PowerState.STARTING, PowerState.RUNNING, PowerState.STOPPING, PowerState.PAUSED)


class ScaleInPolicy(StrEnum):
    DEFAULT = "Default"
    NEWEST_VM = "NewestVM"
    OLDEST_VM = "OldestVM"


@dataclass(frozen=True)
class VMSize:
    name: str
    vcpus: int
    memory_mib: int


# Small sizes named like Azure's B-series; TCG guests do not need more to serve HTTP.
VM_SIZES: dict[str, VMSize] = {
    s.name: s
    for s in (
        VMSize("Standard_B1ls", 1, 256),
        VMSize("Standard_B1s", 1, 512),
        VMSize("Standard_B1ms", 1, 1024),
        VMSize("Standard_B2s", 2, 2048),
        VMSize("Standard_B2ms", 2, 4096),
    )
}
DEFAULT_VM_SIZE = "Standard_B1ls"


DEFAULT_RESOURCE_GROUP = "default"  # where sets live when no group is named (config: default_resource_group)

# Azure's rule for resource group names (they compare case-insensitively).
RESOURCE_GROUP_PATTERN = re.compile(r"[-\w.()]{0,89}[-\w()]", re.ASCII)
RESOURCE_GROUP_RULE = "1-90 characters: letters, digits, '_', '-', '.', '(' and ')', not ending with '.'"


def validate_resource_group(value: object) -> str:
    """``value`` if it is a valid resource group name, else InvalidSpec."""
    if not isinstance(value, str) or not RESOURCE_GROUP_PATTERN.fullmatch(value):
        raise InvalidSpec(f"resource group name {value!r} is invalid: {RESOURCE_GROUP_RULE}")
    return value


ADMIN_USERNAME_PATTERN = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
DEFAULT_ADMIN_USERNAME = "root"


def validate_admin_username(value: object) -> str:
    """A Linux login name the guest can make (the base image does; see images/README.md)."""
    if not isinstance(value, str) or not ADMIN_USERNAME_PATTERN.fullmatch(value):
        raise InvalidSpec(
            f"adminUsername {value!r} is invalid: 1-32 lowercase letters, digits, '_' and '-', "
            "starting with a letter or '_'"
        )
    return value


def validate_name(value: str, what: str = "name") -> str:
    """Return ``value`` if it is a safe resource name, else raise InvalidSpec."""
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise InvalidSpec(f"{what} {value!r} is invalid: {NAME_RULE}")
    return value


def parse_instance_id(value: object) -> int:
    """An instance id from a URL or a body: an int, or its one canonical spelling; else InvalidSpec."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not INSTANCE_ID_PATTERN.fullmatch(value):
        raise InvalidSpec(
            f"instance id {value!r} is invalid: a whole number such as 0 or 12 "
            "(ASCII digits, no sign, spaces or leading zeros, at most 9 digits)"
        )
    return int(value)


def resolve_size(name: str | None, vcpus: int | None = None, memory_mib: int | None = None) -> VMSize:
    """A named size, optionally overridden by explicit vCPUs and memory."""
    base_name = name or DEFAULT_VM_SIZE
    if base_name not in VM_SIZES:
        known = ", ".join(VM_SIZES)
        raise InvalidSpec(f"vmSize {base_name!r} is unknown; known sizes: {known}")
    base = VM_SIZES[base_name]
    cpus = base.vcpus if vcpus is None else vcpus
    mem = base.memory_mib if memory_mib is None else memory_mib
    if not isinstance(cpus, int) or not 1 <= cpus <= 64:
        raise InvalidSpec(f"vCPUs {cpus!r} must be an integer from 1 to 64")
    if not isinstance(mem, int) or not 128 <= mem <= 262144:
        raise InvalidSpec(f"memoryMiB {mem!r} must be an integer from 128 to 262144")
    return VMSize(base_name, cpus, mem)


def check_capacity(capacity: object, mode: OrchestrationMode) -> int:
    """Capacity limits of the seed documents: Uniform 0-1000, Flexible up to 200."""
    limit = UNIFORM_MAX_CAPACITY if mode is OrchestrationMode.UNIFORM else FLEXIBLE_MAX_VMS
    if isinstance(capacity, bool) or not isinstance(capacity, int) or not 0 <= capacity <= limit:
        raise InvalidSpec(f"capacity {capacity!r} must be an integer from 0 to {limit} in {mode} mode")
    return capacity


def check_fault_domain_count(count: object, mode: OrchestrationMode, zonal: bool = False) -> int:
    """Fault domain ranges of the seed documents: Uniform 1-5; Flexible 2 or 3 for a regional
    set, and 5 for a set in an availability zone ("2 of 3 ... en 5 voor beschikbaarheidszone")."""
    low, high = UNIFORM_FAULT_DOMAINS if mode is OrchestrationMode.UNIFORM else FLEXIBLE_FAULT_DOMAINS
    if mode is OrchestrationMode.FLEXIBLE and zonal and count == FLEXIBLE_ZONAL_FAULT_DOMAINS:
        return FLEXIBLE_ZONAL_FAULT_DOMAINS
    if isinstance(count, bool) or not isinstance(count, int) or not low <= count <= high:
        extra = f" (or {FLEXIBLE_ZONAL_FAULT_DOMAINS} in a zone)" if mode is OrchestrationMode.FLEXIBLE else ""
        raise InvalidSpec(
            f"platformFaultDomainCount {count!r} must be from {low} to {high}{extra} in {mode} orchestration mode"
        )
    return count


def update_domain_for(fault_domain: int, instance_index: int, fault_domain_count: int) -> int:
    """Update domains are assigned automatically from fault domains (seed documents).

    With several fault domains each fault domain is its own update domain; with one, instances
    are spread round-robin over the 5 update domains so rolling upgrades still have batches.
    """
    if fault_domain_count > 1:
        return fault_domain % UPDATE_DOMAIN_COUNT
    return instance_index % UPDATE_DOMAIN_COUNT
