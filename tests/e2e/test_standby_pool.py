"""Standby pools end to end, as users run them, under steady load through HAProxy.

One set of capacity 1 with a pool (``maxReadyCapacity`` 3, dynamic sizing: the pool holds 3 minus
the capacity; half Paused, half Saved; ``reuseOnScaleIn``):

* the pool fills to its size, and libvirt itself shows one guest paused and one saved (shut off
  with a managed save image); pool instances are no servers in HAProxy and answer no request;
* a scale-out 1 -> 2 takes the Paused instance (no new domain), which serves through HAProxy; the
  activity log says where it came from and how long it took;
* a daemon kill -9 and restart keeps the pool as it was: the same instances, no duplicates;
* a scale-in 2 -> 1 returns the drained member to the pool (same id, Paused again), and the next
  scale-out takes it back and it serves again;
* a model update replaces the pool's instances in the background (new ids on the new version);
* no request fails throughout, and HAProxy's counters show no session to a pool instance.

Bad input (no guest boots): a pool larger than the hosts can hold is refused with the numbers; a
pool on a Flexible set is refused (the seed's table gives it no model); nothing changes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from localvmss.cli.client import ApiClient
from localvmss.errors import LocalVMSSError
from localvmss.lab.testbed import DaemonProcess, Testbed, free_port
from localvmss.lb.runtime import RuntimeClient
from tests.conftest import Cli
from tests.e2e.helpers import create_set, instances, libvirt_view, wait_until
from tests.e2e.load import Load


def _pool(api: ApiClient, name: str) -> dict[str, Any]:
    return dict(api.get(f"/scaleSets/{name}/standbyPool"))


def _standing(api: ApiClient, name: str) -> dict[str, str]:
    """Pool instance id -> its state, for those standing by."""
    return {
        i["instanceId"]: i["properties"]["standbyPool"]["state"]
        for i in _pool(api, name)["value"]
        if i["properties"]["standbyPool"]["standingBy"]
    }


def _members(api: ApiClient, name: str) -> dict[str, str]:
    """Member id -> computer name."""
    return {i["instanceId"]: i["properties"]["osProfile"]["computerName"] for i in instances(api, name)}


def _pool_names(api: ApiClient, name: str) -> set[str]:
    return {i["properties"]["osProfile"]["computerName"] for i in _pool(api, name)["value"]}


def _server_sessions(daemon: DaemonProcess, name: str) -> dict[str, int]:
    """HAProxy's own counters: total sessions per server of the set's backends."""
    client = RuntimeClient(daemon.state_dir / "haproxy" / "admin.sock")
    out: dict[str, int] = {}
    for row in client.show_stat():
        if row.get("pxname", "").startswith(f"lvmss-{name}-") and row.get("svname") not in ("FRONTEND", "BACKEND"):
            out[row["svname"]] = out.get(row["svname"], 0) + int(row.get("stot") or 0)
    return out


def _activity(api: ApiClient, name: str) -> list[str]:
    return [a["message"] for a in api.get(f"/scaleSets/{name}/activityLog")["value"]]


def _domains(testbed: Testbed, name: str) -> dict[str, tuple[str, str]]:
    return dict(libvirt_view(testbed, name)["domains"])


def test_a_pool_fills_serves_nothing_is_taken_kept_over_kill9_and_reused(
    cli: Cli, api: ApiClient, daemon: DaemonProcess, testbed: Testbed, name: str, tmp_path: Path
) -> None:
    port = free_port()
    create_set(
        cli,
        name,
        1,
        port=port,
        timeout=600,
    )
    try:
        cli.ok(
            "standby-pool",
            "create",
            name,
            "--max-ready-capacity",
            "3",
            "--dynamic-sizing",
            "true",
            "--vm-state-distribution",
            "paused=50 saved=50",
            "--reuse-on-scale-in",
            "true",
        )
        wait_until(lambda: len(_standing(api, name)) == 2, 600, "the pool to fill to 2", 0.5)
        pool = _standing(api, name)
        assert sorted(pool.values()) == ["Paused", "Saved"], pool
        paused = next(i for i, s in pool.items() if s == "Paused")
        saved = next(i for i, s in pool.items() if s == "Saved")
        member = next(iter(_members(api, name)))
        domains = _domains(testbed, name)
        assert domains[f"lvmss-{name}-{paused}"][1] == "paused", domains
        assert domains[f"lvmss-{name}-{saved}"][1] == "stopped", domains
        assert len(domains) == 3, domains
        view = api.get(f"/scaleSets/{name}")["properties"]
        assert (view["instanceCount"], view["standbyPoolCount"]) == (1, 2), view

        with Load(port, threads=2) as load:
            time.sleep(3)
            assert set(_server_sessions(daemon, name)) == {f"i{member}"}, "pool instances are no servers"
            # Scale-out: the Paused instance becomes a member; no new domain is made.
            started = time.monotonic()
            cli.ok("scale", name, "--new-capacity", "2", timeout=300)
            took = time.monotonic() - started
            assert set(_members(api, name)) == {member, paused}
            names = _members(api, name)
            wait_until(lambda: load.result.answers[names[paused]] > 0, 30, "the taken instance to serve", 0.2)
            assert len(_domains(testbed, name)) == 3
            taken_log = [m for m in _activity(api, name) if f"instance {paused} from the Paused standby pool" in m]
            assert taken_log, _activity(api, name)[:10]
            print(f"\nscale 1->2 from the Paused pool: CLI returned in {took:.2f} s; {taken_log[0]}")
            # Dynamic sizing: the pool holds 3 - 2 = 1 now, the Saved one.
            assert _standing(api, name) == {saved: "Saved"}

            # kill -9 and restart: the same members and pool, no duplicates.
            before = (_members(api, name), _standing(api, name), _domains(testbed, name))
            daemon.kill9()
            daemon.start()
            api2 = ApiClient(str(daemon.socket_path))
            try:
                time.sleep(5)  # a few passes of the new daemon
                after = (_members(api2, name), _standing(api2, name), _domains(testbed, name))
                assert after == before, f"before kill -9: {before}\nafter restart: {after}"

                # Scale-in with reuse: the victim (highest id: the taken one) goes back, Paused.
                cli.ok("scale", name, "--new-capacity", "1", timeout=300)
                wait_until(
                    lambda: _standing(api2, name) == {saved: "Saved", paused: "Paused"}, 120, "the victim back", 0.5
                )
                assert set(_members(api2, name)) == {member}
                assert len(_domains(testbed, name)) == 3, "reuse makes no new domain"
                assert any(
                    f"returning instances [{int(paused)}] to the standby pool" in m for m in _activity(api2, name)
                )
                served = load.result.answers[names[paused]]
                time.sleep(2)
                assert load.result.answers[names[paused]] == served, "a returned instance takes no new request"

                # And it serves again when the next scale-out takes it.
                cli.ok("scale", name, "--new-capacity", "2", timeout=300)
                assert set(_members(api2, name)) == {member, paused}
                wait_until(lambda: load.result.answers[names[paused]] > served, 30, "the reused instance serves", 0.2)
            finally:
                api2.close()
            time.sleep(1)
        print(f"load: sent {load.result.sent}, failed {load.result.failed}, answers {dict(load.result.answers)}")
        assert load.result.failed == 0, load.result.failures[:10]
        sessions = _server_sessions(daemon, name)
        pool_servers = {f"i{i}" for i in _standing(api, name)}
        assert not pool_servers & set(sessions), f"pool instances {pool_servers} are servers: {sessions}"
        assert sum(load.result.answers[n] for n in _pool_names(api, name)) == 0, "a pool instance answered"

        # A model update replaces the pool in the background; the members stay (Manual policy).
        old_pool = set(_standing(api, name))
        data = tmp_path / "user-data"
        data.write_text("#cloud-config\n# model v2\n")
        cli.ok("update", name, "--custom-data", str(data), timeout=300)
        version = api.get(f"/scaleSets/{name}")["properties"]["modelVersion"]
        wait_until(
            lambda: (now := _standing(api, name)) and not set(now) & old_pool and len(now) == 1,
            600,
            "the pool replaced on the new model",
            0.5,
        )
        fresh = _pool(api, name)["value"]
        assert all(i["properties"]["modelVersion"] == version for i in fresh), fresh
        assert any("made from an older model version" in m for m in _activity(api, name))
        assert set(_members(api, name)) == {member, paused}
    finally:
        api.delete(f"/scaleSets/{name}")
        wait_until(lambda: _domains(testbed, name) == {}, 180, f"{name} deleted")


def test_a_pool_the_hosts_cannot_hold_or_on_a_flexible_set_is_refused_and_changes_nothing(
    cli: Cli, api: ApiClient, name: str
) -> None:
    cli.ok("create", name, "--image", "base", "--instance-count", "0", "--memory-mib", "4096", timeout=120)
    flex = f"{name}f"
    try:
        before = _pool(api, name)
        refused = cli("standby-pool", "create", name, "--max-ready-capacity", "1000")
        assert refused.returncode != 0
        assert "not enough memory" in refused.stderr and "MiB" in refused.stderr, refused.stderr
        assert "1000 more instance(s)" in refused.stderr, refused.stderr
        assert _pool(api, name) == before
        assert _pool(api, name)["properties"]["policy"] is None

        body = {
            "sku": {"name": "Standard_B1ls", "capacity": 0},
            "properties": {
                "orchestrationMode": "Uniform",
                "virtualMachineProfile": {"storageProfile": {"imageReference": {"id": "base"}}, "osProfile": {}},
                "standbyPool": {"maxReadyCapacity": 1000},
            },
        }
        with pytest.raises(LocalVMSSError, match="not enough memory"):
            api.put(f"/scaleSets/{name}x", body)
        assert f"{name}x" not in {s["name"] for s in api.get("/scaleSets")["value"]}

        cli.ok("create", flex, "--orchestration-mode", "Flexible", timeout=120)
        refused = cli("standby-pool", "create", flex, "--max-ready-capacity", "1")
        assert refused.returncode != 0 and "Flexible" in refused.stderr, refused.stderr
        assert _pool(api, flex)["properties"]["policy"] is None

        for bad, why in (
            ({"maxReadyCapacity": 2, "minReadyCapacity": 3}, "exceeds maxReadyCapacity"),
            ({"maxReadyCapacity": 2, "vmStateDistribution": {"pausedPercent": 60}}, "add up to 60"),
            ({"maxReadyCapacity": 2, "virtualMachineState": "Deallocated"}, "boots cold"),
            ({"maxReadyCapacity": "2"}, "maxReadyCapacity"),
        ):
            with pytest.raises(LocalVMSSError, match=why):
                api.put(f"/scaleSets/{name}/standbyPool", bad)
        assert _pool(api, name) == before
    finally:
        for n in (flex, name):
            try:
                api.delete(f"/scaleSets/{n}")
            except LocalVMSSError:
                pass
