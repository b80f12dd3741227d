"""The health monitor: one instance whose probe cannot even be made (a stored probe path that is
not ASCII, from before paths were checked) must not end the pass for every other set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from localvmss import health
from localvmss import monitor as monitor_module
from localvmss.health import ProbeResult
from localvmss.monitor import HealthMonitor
from localvmss.store import Store
from tests.unit.servicefake import add_instances


def test_a_probe_that_raises_does_not_stop_the_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path / "state.db")
    bad = {"mode": "Uniform", "health_probe": {"protocol": "http", "port": 80, "path": "/gesundheit\u00e4"}}
    store.insert_scale_set("bad", "Uniform", bad, 1, "Creating")
    store.insert_scale_set("good", "Uniform", {"mode": "Uniform"}, 1, "Creating")
    add_instances(store, "bad", 1, provisioning_state="Creating", ready_at=None)
    add_instances(store, "good", 1, provisioning_state="Creating", ready_at=None)
    probed: list[str] = []

    def probe(ip: str, model: Any) -> ProbeResult:  # no network: what probe_many would answer
        probed.append(model.path)
        if not model.path.isascii():  # the real prober, which fails before it connects
            result = health.probe_many([(ip, model)])[0]
            assert result.state == "unknown" and "could not be made: UnicodeEncodeError" in result.seen, result
            return result
        return ProbeResult("healthy", "HTTP 200")

    monkeypatch.setattr(
        monitor_module, "probe_many", lambda targets, on_result=None: [probe(ip, m) for ip, m in targets]
    )
    changes: list[int] = []
    HealthMonitor(store, 1.0, lambda: changes.append(1)).probe_pass()
    assert sorted(probed) == ["/gesundheit\u00e4", "/healthz"]
    assert store.instances("good")[0].provisioning_state == "Succeeded", "the other set was still probed"
    assert store.instances("bad")[0].provisioning_state == "Creating"
    assert changes == [1]


@pytest.mark.parametrize("failing", [None, 0, 1, 2])
def test_a_round_of_results_is_one_commit_and_a_failed_write_is_undone_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: int | None
) -> None:
    store = Store(tmp_path / "state.db")
    store.insert_scale_set("web", "Uniform", {"mode": "Uniform"}, 3, "Creating")
    add_instances(store, "web", 3, provisioning_state="Creating", ready_at=None)
    instances = store.instances("web")
    commits: list[int] = []
    real_record, real_execute = store.record_status, store._db.execute

    def record_status(scale_set: str, instance_id: int, generation: int | None = None, **changes: Any) -> bool:
        with store.transaction() as db:  # the write, then a failure inside the same savepoint
            written = real_record(scale_set, instance_id, generation, **changes)
            if instance_id == failing:
                db.execute("SELECT no_such_column FROM instances")
            return written

    class Connection:  # counts COMMITs of the store's connection
        def __getattr__(self, name: str) -> Any:
            return getattr(store_db, name)

        def execute(self, sql: str, *args: Any) -> Any:
            commits.extend([1] if sql == "COMMIT" else [])
            return real_execute(sql, *args)

    store_db = store._db
    monkeypatch.setattr(store, "record_status", record_status)
    monkeypatch.setattr(store, "_db", Connection())
    healthy = ProbeResult("healthy", "HTTP 200")
    spec = store.scale_set("web").spec
    changed = HealthMonitor(store, 1.0, lambda: None).record_results([(i, healthy) for i in instances], {"web": spec})
    assert changed and len(commits) == 1
    states = {i.instance_id: str(i.provisioning_state) for i in store.instances("web")}
    assert states == {iid: "Creating" if iid == failing else "Succeeded" for iid in range(3)}


def test_an_instance_seen_healthy_is_recorded_before_the_rounds_slowest_probe_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Instance 0 answers while instance 1's probe still waits (a guest with no address on the
    wire yet): 0 is ready, and the load balancer told, before probe_many returns; recorded once."""
    store = Store(tmp_path / "state.db")
    store.insert_scale_set("web", "Uniform", {"mode": "Uniform"}, 2, "Creating")
    add_instances(store, "web", 2, provisioning_state="Creating", ready_at=None)
    changes: list[int] = []
    seen_during_probe: dict[int, str] = {}
    writes: list[int] = []
    real_record = store.record_status

    def record_status(scale_set: str, instance_id: int, generation: int | None = None, **kw: Any) -> bool:
        writes.append(instance_id)
        return real_record(scale_set, instance_id, generation, **kw)

    def probe_many(targets: Any, on_result: Any = None) -> list[ProbeResult]:
        healthy, waiting = ProbeResult("healthy", "HTTP 200"), ProbeResult("unknown", "http 80: timed out")
        on_result(0, healthy)
        seen_during_probe.update({i.instance_id: str(i.provisioning_state) for i in store.instances("web")})
        seen_during_probe[-1] = len(changes)
        on_result(1, waiting)
        return [healthy, waiting]

    monkeypatch.setattr(store, "record_status", record_status)
    monkeypatch.setattr(monitor_module, "probe_many", probe_many)
    HealthMonitor(store, 1.0, lambda: changes.append(1)).probe_pass()
    assert seen_during_probe == {0: "Succeeded", 1: "Creating", -1: 1}, "0 was ready while 1 was still probed"
    assert writes.count(0) == 1, writes
    assert store.instances("web")[0].provisioning_state == "Succeeded"
    assert store.instances("web")[1].provisioning_state == "Creating"
