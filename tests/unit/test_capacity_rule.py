"""One capacity rule for manual scale, autoscale and Flexible VMs: memory admission at each
instance's own size, and an autoscale decision the hosts cannot hold refused with the numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from localvmss.autoscaler import Autoscaler
from localvmss.capacity import CapacityRule
from localvmss.config import DaemonConfig
from localvmss.errors import CapacityError
from localvmss.spec import ScaleSetSpec
from tests.unit.servicefake import (
    FakeCapacity,
    add_instances,
    api_client,
    make_service,
    refused,
    snapshot,
    uniform_body,
)

MiB = 1 << 20


class FakePrometheus:
    """The one query the rule below makes: average CPU of the set."""

    def __init__(self, value: float) -> None:
        self.value = value

    def query_scalar(self, _expr: str, _at: Any = None) -> float:
        return self.value


def _setting(maximum: int) -> dict[str, Any]:
    return {
        "enabled": True,
        "targetResourceName": "web",
        "profiles": [
            {
                "name": "default",
                "capacity": {"minimum": "1", "maximum": str(maximum), "default": "2"},
                "rules": [
                    {
                        "metricTrigger": {
                            "metricName": "Percentage CPU",
                            "timeGrain": "PT1M",
                            "statistic": "Average",
                            "timeWindow": "PT2M",
                            "timeAggregation": "Average",
                            "operator": "GreaterThan",
                            "threshold": 70,
                        },
                        "scaleAction": {"direction": "Increase", "type": "ChangeCount", "value": 4, "cooldown": "PT1M"},
                    }
                ],
            }
        ],
    }


def _with_free_memory(h: Any, free_mib: int) -> None:
    h.inventory.capacity = lambda _name: FakeCapacity(free_memory_bytes=free_mib * MiB)


@pytest.mark.parametrize(("free_mib", "expected"), [(600, 2), (4096, 6)])
def test_an_autoscale_decision_beyond_the_hosts_memory_is_refused_and_logged(
    tmp_path: Path, free_mib: int, expected: int
) -> None:
    h = make_service(tmp_path, cfg=DaemonConfig(memory_overcommit=1.5))
    h.service.put_set("web", uniform_body(2))
    _with_free_memory(h, free_mib)
    wakes: list[int] = []
    scaler = Autoscaler(h.store, "http://127.0.0.1:9", 10.0, lambda: wakes.append(1), capacity=h.service.capacity)
    scaler.client = FakePrometheus(90.0)  # type: ignore[assignment]
    h.store.put_autoscale("web", _setting(maximum=10))
    decision = scaler.evaluate_set("web")
    assert decision is not None and decision.new_capacity == 6, "the rule asks for 4 more"
    assert h.store.scale_set("web").capacity == expected
    log = [(a.kind, a.message) for a in h.store.activity("web")]
    if expected == 2:
        refusal = [m for k, m in log if k == "autoscale-refused"]
        assert len(refusal) == 1, log
        assert "not enough memory: 4 more instance(s) need 1024 MiB but the hosts can take 900 MiB" in refusal[0]
        assert wakes == [], "a refused decision changes nothing, so nothing is woken"
        scaler.evaluate_set("web")
        assert [a.kind for a in h.store.activity("web")].count("autoscale-refused") == 1, "said once, not every pass"
    else:
        assert any(k == "autoscale" for k, _ in log) and wakes == [1]


def test_manual_scale_uses_the_same_rule(tmp_path: Path) -> None:
    h = make_service(tmp_path, cfg=DaemonConfig(memory_overcommit=1.0))
    h.service.put_set("web", uniform_body(1))
    _with_free_memory(h, 700)
    before = snapshot(h.store)
    refused(api_client(h).patch("/scaleSets/web", json={"sku": {"capacity": 4}}), 409, "need 768 MiB")
    assert snapshot(h.store) == before


def test_flexible_admission_uses_the_vms_own_size(tmp_path: Path) -> None:
    h = make_service(tmp_path, cfg=DaemonConfig(memory_overcommit=1.0))
    h.service.put_set("flex", {"properties": {"orchestrationMode": "Flexible"}})
    _with_free_memory(h, 1500)
    body = {
        "properties": {
            "virtualMachineScaleSet": {"id": "/scaleSets/flex"},
            "storageProfile": {"imageReference": {"id": "base"}},
            "hardwareProfile": {"vmSize": "Standard_B2s"},  # 2048 MiB; the set's default is 256
        }
    }
    before = snapshot(h.store)
    refused(api_client(h).put("/virtualMachines/big", json=body), 409, "need 2048 MiB but the hosts can take 1500")
    assert snapshot(h.store) == before
    body["properties"]["hardwareProfile"] = {"vmSize": "Standard_B1ms"}  # 1024 MiB fits
    assert api_client(h).put("/virtualMachines/small", json=body).status_code in (200, 201)


def test_booting_instances_count_at_their_own_size(tmp_path: Path) -> None:
    h = make_service(tmp_path)
    h.service.put_set("flex", {"properties": {"orchestrationMode": "Flexible"}})
    add_instances(h.store, "flex", 1, provisioning_state="Creating", overrides={"memory_mib": 1024})
    add_instances(h.store, "flex", 1, provisioning_state="Creating")
    add_instances(h.store, "flex", 1, provisioning_state="Succeeded", overrides={"memory_mib": 4096})
    rule = CapacityRule(DaemonConfig(), h.store, h.inventory)  # type: ignore[arg-type]
    assert rule.booting_bytes() == (1024 + 256) * MiB


def test_no_host_available_is_one_line(tmp_path: Path) -> None:
    h = make_service(tmp_path)
    h.service.put_set("web", uniform_body(1))
    h.inventory.available = lambda: []  # type: ignore[method-assign]
    with pytest.raises(CapacityError, match="no host is available"):
        h.service.capacity.admit(ScaleSetSpec(mode="Uniform", image="base"), 1)
