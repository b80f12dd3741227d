"""The one table of instance actions and the lifecycle predicates, as tables of cases."""

from __future__ import annotations

from typing import Any

import pytest

from localvmss import lifecycle
from localvmss.errors import Conflict, InvalidSpec, NotFound
from localvmss.spec import ScaleSetSpec
from localvmss.store import InstanceRow

NOW = 1000.0


def inst(**kw: Any) -> InstanceRow:
    base: dict[str, Any] = dict(
        scale_set="web",
        instance_id=3,
        host="h1",
        fault_domain=0,
        update_domain=0,
        mac="52:54:00:00:00:03",
        ip="198.18.1.13",
        model_version=1,
        desired_power="running",
        provisioning_state="Succeeded",
        created_at=0.0,
        ready_at=10.0,
    )
    base.update(kw)
    return InstanceRow(**base)


@pytest.mark.parametrize("spelling", ["powerOff", "poweroff", "POWEROFF"])
def test_actions_are_found_case_insensitively(spelling: str) -> None:
    assert lifecycle.find_action(spelling).cli_name == "stop"


def test_an_unknown_action_names_the_known_ones() -> None:
    with pytest.raises(NotFound, match="actions are start, powerOff, deallocate, restart, reimage, redeploy, delete"):
        lifecycle.find_action("reboot")


@pytest.mark.parametrize(
    ("action", "row", "expected"),
    [
        ("start", {"desired_power": "stopped"}, {"desired_power": "running", "provisioning_state": "Updating"}),
        ("start", {}, {"desired_power": "running"}),
        ("powerOff", {}, {"desired_power": "stopped", "skip_shutdown": False, "ready_at": None}),
        ("deallocate", {}, {"desired_power": "deallocated"}),
        ("restart", {"restart_generation": 2, "applied_restart": 2}, {"restart_generation": 3, "ready_at": None}),
        ("reimage", {"model_version": 1}, {"reimage_generation": 1, "model_version": 4, "desired_power": "running"}),
        ("delete", {}, {"provisioning_state": "Deleting"}),
        ("redeploy", {"redeploy_generation": 1, "applied_redeploy": 1}, {"redeploy_generation": 2, "ready_at": None}),
    ],
)
def test_request_asks_for_exactly_these_changes(action: str, row: dict[str, Any], expected: dict[str, Any]) -> None:
    changes = lifecycle.request(lifecycle.find_action(action), inst(**row), model_version=4, now=NOW)
    assert {k: changes[k] for k in expected} == expected


@pytest.mark.parametrize(
    ("action", "row", "message"),
    [
        ("powerOff", {"protect_actions": True}, "protected from scale-set actions"),
        ("deallocate", {"protect_actions": True}, "protected from scale-set actions"),
        ("restart", {"protect_actions": True}, "protected from scale-set actions"),
        ("reimage", {"protect_actions": True}, "protected from scale-set actions"),
        ("delete", {"protect_actions": True}, "protected from scale-set actions"),
        ("restart", {"desired_power": "stopped"}, "not running; start it instead"),
        ("redeploy", {"desired_power": "deallocated"}, "not running; start it before redeploying it"),
        ("redeploy", {"protect_actions": True}, "protected from scale-set actions"),
        ("start", {"provisioning_state": "Deleting"}, "being deleted"),
        ("reimage", {"provisioning_state": "Deleting"}, "being deleted"),
    ],
)
def test_request_refuses(action: str, row: dict[str, Any], message: str) -> None:
    with pytest.raises(Conflict, match=message):
        lifecycle.request(lifecycle.find_action(action), inst(**row), model_version=1, now=NOW)


def test_start_is_allowed_on_a_protected_instance() -> None:
    changes = lifecycle.request(
        lifecycle.find_action("start"), inst(protect_actions=True, desired_power="stopped"), model_version=1, now=NOW
    )
    assert changes["desired_power"] == "running"


def test_skip_shutdown_only_with_power_off() -> None:
    off = lifecycle.request(lifecycle.find_action("powerOff"), inst(), model_version=1, now=NOW, skip_shutdown=True)
    assert off["skip_shutdown"] is True
    with pytest.raises(InvalidSpec, match="only to powerOff"):
        lifecycle.request(lifecycle.find_action("restart"), inst(), model_version=1, now=NOW, skip_shutdown=True)


@pytest.mark.parametrize(
    ("row", "busy", "in_rotation", "probed"),
    [
        ({}, False, True, True),
        ({"provisioning_state": "Creating", "ready_at": None}, True, False, True),
        ({"provisioning_state": "Updating"}, True, False, True),
        ({"provisioning_state": "Deleting"}, True, False, False),
        ({"reimage_generation": 1}, True, False, False),
        ({"restart_generation": 1}, True, False, False),  # a restart is busy too (the old upgrade check forgot it)
        ({"redeploy_generation": 1}, True, False, False),
        ({"desired_power": "stopped"}, False, False, False),
        ({"provisioning_state": "Failed"}, False, False, True),
    ],
)
def test_predicates(row: dict[str, Any], busy: bool, in_rotation: bool, probed: bool) -> None:
    spec = ScaleSetSpec(mode="Uniform", image="base")
    i = inst(**row)
    assert (lifecycle.busy(i), lifecycle.in_rotation(i), lifecycle.to_probe(i, spec)) == (busy, in_rotation, probed)


def test_a_set_without_a_probe_is_never_probed() -> None:
    assert lifecycle.to_probe(inst(), ScaleSetSpec(mode="Uniform", image="base", health_probe=None)) is False


@pytest.mark.parametrize(("overrides", "expected"), [({}, 256), ({"memory_mib": 1024}, 1024)])
def test_memory_is_the_instances_own_size(overrides: dict[str, Any], expected: int) -> None:
    spec = ScaleSetSpec(mode="Uniform", image="base")
    assert lifecycle.memory_mib(inst(overrides=overrides), spec) == expected
    assert lifecycle.memory_mib(None, spec) == 256


@pytest.mark.parametrize(
    ("row", "enabled", "mode", "unhealthy_for", "due"),
    [
        ({"health": "unhealthy"}, True, "Uniform", 600.0, True),
        ({"health": "unhealthy"}, True, "Uniform", 299.0, False),  # inside the grace period
        ({"health": "unhealthy"}, False, "Uniform", 600.0, False),  # repairs off
        ({"health": "unhealthy"}, True, "Flexible", 600.0, False),  # a VM is managed on its own
        ({"health": "healthy"}, True, "Uniform", 600.0, False),
        ({"health": "unhealthy"}, True, "Uniform", None, False),
    ],
)
def test_to_repair(row: dict[str, Any], enabled: bool, mode: str, unhealthy_for: float | None, due: bool) -> None:
    spec = ScaleSetSpec(mode=mode, image="base", automatic_repairs={"enabled": enabled})
    assert lifecycle.to_repair(inst(**row), spec, unhealthy_for, grace_s=300.0) is due
