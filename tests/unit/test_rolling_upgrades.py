"""Rolling upgrades through the real reconciler, store and provisioner over recording fake hosts:
surge keeps capacity, a failing version is rolled back (and not retried), model versions and
what-if, cancel, and a daemon restart in the middle."""

from __future__ import annotations

from typing import Any

from localvmss.model import ProvisioningState
from localvmss.plans import Change
from localvmss.reconciler import Reconciler
from localvmss.store import Store
from localvmss.upgrades import Upgrades
from tests.unit.test_reconciler import Env

POLICY = {"mode": "Rolling", "rollingUpgradePolicy": {"maxBatchInstancePercent": 50, "pauseTimeBetweenBatches": "PT0S"}}


def _set(env: Env, capacity: int, **rolling: Any) -> None:
    policy = {"mode": "Rolling", "rollingUpgradePolicy": {**POLICY["rollingUpgradePolicy"], **rolling}}  # type: ignore[dict-item]
    env.create_set(
        "web",
        capacity,
        fault_domains=2,
        upgradePolicy=policy,
        automaticRepairsPolicy={"enabled": False, "gracePeriod": "PT30S"},
    )
    env.converge(3)
    assert len(env.instances("web")) == capacity


def _new_model(env: Env, data: str = "djI=") -> int:
    row = env.store.scale_set("web")
    model = dict(row.model, custom_data=data)
    return env.store.update_model(
        "web", model, row.capacity, new_version=True, actor="tester", changes=["customData changed"]
    )


def _run(env: Env, passes: int, healthy_version: int | None = None, watch: Any = None) -> None:
    """Passes with workers, 2 s apart; running guests become healthy unless ``healthy_version``
    is given and they run another (a new version whose guest never serves). ``watch`` is
    called after each pass."""
    for _ in range(passes):
        env.converge(1, serving=None if healthy_version is None else lambda i: i.model_version == healthy_version)
        if watch is not None:
            watch()
        env.clock.advance(2)


def _healthy_serving(env: Env) -> int:
    return sum(
        1
        for i in env.instances("web")
        if i.health == "healthy"
        and i.provisioning_state == ProvisioningState.SUCCEEDED.value
        and i.reimage_generation == i.applied_reimage
    )


def test_a_surge_rollout_never_drops_below_capacity_and_ends_on_the_new_version(env: Env) -> None:
    _set(env, 4, maxSurge=True)
    before = {i.instance_id for i in env.instances("web")}
    version = _new_model(env)
    lowest: list[int] = []
    _run(env, 30, watch=lambda: lowest.append(_healthy_serving(env)))
    latest = env.store.latest_rollout("web")
    assert latest is not None and latest.status == "Completed", latest
    after = env.instances("web")
    assert len(after) == 4 and all(i.model_version == version for i in after)
    assert not before & {i.instance_id for i in after}, "surge: new instances replaced the old ones"
    assert min(lowest) >= 4, f"healthy instances per pass: {lowest}"
    assert all(i.reimage_generation == 0 for i in after), "no instance was reimaged in place"


def test_a_version_that_never_becomes_healthy_is_rolled_back_and_not_retried(env: Env) -> None:
    _set(env, 4, rollbackFailedInstancesOnPolicyBreach=True)
    version = _new_model(env)
    _run(env, 40, healthy_version=1)
    latest = env.store.latest_rollout("web")
    assert latest is not None and latest.status == "RolledBack", latest
    state = latest.state
    assert len(state["succeeded"]) == 0 and len(state["failed"]) == 2, "stopped after its first batch (2 of 4)"
    assert all(i.model_version == 1 for i in env.instances("web")), "every instance on the old version"
    assert _healthy_serving(env) == 4
    assert env.store.scale_set("web").model_version == version, "Azure's rollback: the set's model stays"
    _run(env, 5, healthy_version=1)
    assert len(env.store.rollouts("web")) == 1, "the same version is not rolled out again by itself"
    log = [a.message for a in env.store.activity("web") if a.kind == "rollingUpgrade"]
    assert any("RolledBack" in m and "maxUnhealthyUpgradedInstancePercent" in m for m in log), log


def test_rolling_back_all_returns_the_set_to_its_previous_model(env: Env) -> None:
    _set(env, 4, rollbackAllInstancesOnPolicyBreach=True)
    old_model = env.store.scale_set("web").model["custom_data"]
    _new_model(env)
    _run(env, 40, healthy_version=1)
    latest = env.store.latest_rollout("web")
    assert latest is not None and latest.status == "RolledBack", latest
    row = env.store.scale_set("web")
    assert (row.model_version, row.model["custom_data"]) == (1, old_model)
    assert all(i.model_version == 1 for i in env.instances("web"))
    assert [v.version for v in env.store.model_versions("web")] == [1, 2]
    assert _new_model(env, "djM=") == 3, "version numbers never repeat after a rollback"


def test_what_if_names_the_batches_a_start_then_runs(env: Env) -> None:
    env.create_set("web", 4, fault_domains=2, automaticRepairsPolicy={"enabled": False, "gracePeriod": "PT30S"})
    env.converge(3)
    _new_model(env)
    upgrades: Upgrades = env.rec.upgrades
    plan = upgrades.preview("web")
    assert [c.change for c in plan.changes] == [Change.UPGRADE] * 4
    batches: dict[int, list[int]] = {}
    for c in plan.changes:
        assert c.batch is not None and c.instance_id is not None
        batches.setdefault(c.batch, []).append(c.instance_id)
    assert env.store.latest_rollout("web") is None, "what-if writes nothing"
    ro = upgrades.start("web", "tester")
    assert ro.state["batches"] == [batches[b] for b in sorted(batches)]
    seen: list[list[int]] = []
    upgraded: set[int] = set()

    def watch() -> None:
        now_on_2 = {i.instance_id for i in env.instances("web") if i.model_version == 2}
        if now_on_2 - upgraded:
            seen.append(sorted(now_on_2 - upgraded))
            upgraded.update(now_on_2)

    _run(env, 30, watch=watch)
    assert seen == ro.state["batches"], "the batches run are the batches shown"
    assert env.store.latest_rollout("web").status == "Completed"  # type: ignore[union-attr]


def test_manual_policy_waits_for_start_and_cancel_stops_after_the_batch(env: Env) -> None:
    env.create_set("web", 4, fault_domains=2, automaticRepairsPolicy={"enabled": False, "gracePeriod": "PT30S"})
    env.converge(3)
    _new_model(env)
    _run(env, 3)
    assert env.store.latest_rollout("web") is None, "Manual: nothing starts by itself"
    env.rec.upgrades.start("web", "tester")
    env.rec.pass_once()  # the first batch starts
    env.rec.upgrades.cancel("web", "tester")
    _run(env, 10)
    latest = env.store.latest_rollout("web")
    assert latest is not None and latest.status == "Cancelled"
    assert sorted(i.model_version for i in env.instances("web")) == [1, 1, 1, 2], (
        "only the first batch (20 % of 4: one)"
    )


def test_a_daemon_restart_resumes_the_rollout(env: Env) -> None:
    _set(env, 4, maxSurge=True)
    _new_model(env)
    _run(env, 2)
    mid = env.store.latest_rollout("web")
    assert mid is not None and mid.status == "RollingForward"
    # A new reconciler (a new daemon) over the same store and hosts.
    env.rec.stop(timeout_s=1)
    env.rec = Reconciler(env.rec.cfg, env.store, env.inv, env.rec.prov, env.balancer, clock=env.clock)
    _run(env, 30)
    latest = env.store.latest_rollout("web")
    assert latest is not None and (latest.id, latest.status) == (mid.id, "Completed")
    assert len(env.instances("web")) == 4 and all(i.model_version == 2 for i in env.instances("web"))


def test_history_records_each_version_with_who_and_what(env: Env) -> None:
    _set(env, 2)
    _new_model(env)
    versions = env.store.model_versions("web")
    assert [(v.version, v.changes) for v in versions] == [(1, ["created"]), (2, ["customData changed"])]
    assert versions[1].actor == "tester"


def test_store_round_trips_a_rollout(tmp_path: Any) -> None:
    store = Store(tmp_path / "s.db")
    store.insert_scale_set("web", "Uniform", {"mode": "Uniform"}, 1, "Creating", actor="me")
    ro = store.insert_rollout("web", 1, 2, "RollingForward", "me", {"batches": [[0]]})
    store.update_rollout(ro.id, status="Completed", reason="done", ended_at=5.0)
    got = store.latest_rollout("web")
    assert got is not None and (got.status, got.reason, got.ended_at, got.state) == (
        "Completed",
        "done",
        5.0,
        {"batches": [[0]]},
    )
    store.close()
