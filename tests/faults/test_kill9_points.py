"""kill -9 of the daemon at seeded random points of four operations, under load.

Twenty points (LOCALVMSS_FAULT_SEED picks them; the seed is printed): five rounds of a scale-out
(2 -> 3), a scale-in (3 -> 2), a rolling upgrade (a new model, one instance per batch) and a
Flexible VM create. Each operation is acknowledged by the API first, then the daemon is killed
after a random delay within the operation's usual length, started again, and must converge:
what was acknowledged is there (capacity, model version, the VM), and libvirt and HAProxy hold
exactly what the records say (tests/faults/world.py: 0 orphan domains, volumes, seeds, DHCP
reservations or HAProxy servers, 0 duplicates). A graceful restart (SIGTERM) closes the run.

Requests go through the shared set's HAProxy frontend the whole time, from before the first
point until at least LOAD_TARGET have been sent; none may fail (the data plane never depends on
the daemon). The counts are printed.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from localvmss.cli.client import ApiClient
from localvmss.errors import NotFound
from localvmss.lab.testbed import DaemonProcess, Testbed
from tests.conftest import Cli
from tests.e2e.helpers import wait_until
from tests.e2e.load import Load
from tests.faults.conftest import client, converged_world, settled, wait_settled

SEED = int(os.environ.get("LOCALVMSS_FAULT_SEED", "1616"))
ROUNDS = 5
LOAD_TARGET = 10_000
LOAD_THREADS = 8
CONVERGE_S = 300.0
# Each operation's usual length on a 2-core TCG machine: the kill falls uniformly within it.
KILL_WINDOW_S = {"scale-out": 8.0, "scale-in": 4.0, "rolling upgrade": 20.0, "flexible VM create": 8.0}


@dataclass
class Point:
    number: int
    operation: str
    delay_s: float
    acknowledged: str = ""
    converged_s: float = 0.0
    started_at: float = 0.0  # wall clock, to place load failures


def _restart(daemon: DaemonProcess) -> None:
    daemon.kill9()
    daemon.start()


def _flex_vm_ready(api: ApiClient, vm: str) -> bool:
    try:
        got = api.get(f"/virtualMachines/{vm}")
    except NotFound:
        return False
    return bool(got["properties"]["provisioningState"] == "Succeeded")


def _model_version(api: ApiClient, name: str) -> int:
    return int(api.get(f"/scaleSets/{name}")["properties"]["modelVersion"])


def test_kill9_at_seeded_points_converges_and_loses_no_request(
    daemon: DaemonProcess, testbed: Testbed, shared: dict[str, Any], cli: Cli
) -> None:
    name, port = shared["name"], shared["port"]
    rng = random.Random(SEED)
    flex = f"fx{uuid.uuid4().hex[:6]}"
    # Empty, with the image its VMs default to, as users make one (README: vm create).
    cli.ok("create", flex, "--orchestration-mode", "Flexible", "--image", "base", "--platform-fault-domain-count", "2")
    wait_settled(daemon, shared)
    points: list[Point] = []
    failures: list[str] = []
    started = time.monotonic()

    def run_point(operation: str, act: Callable[[ApiClient], str], done: Callable[[ApiClient], bool]) -> None:
        point = Point(len(points) + 1, operation, round(rng.uniform(0.0, KILL_WINDOW_S[operation]), 2))
        points.append(point)
        point.started_at = time.time()
        api = client(daemon)
        try:
            point.acknowledged = act(api)
        finally:
            api.close()
        time.sleep(point.delay_s)
        _restart(daemon)
        t0 = time.monotonic()

        def effect_there() -> bool:
            api = client(daemon, 15)
            try:
                return done(api)
            finally:
                api.close()

        try:
            wait_until(effect_there, CONVERGE_S, f"point {point.number} ({operation}): {point.acknowledged}", 1.0)
        except AssertionError as exc:
            failures.append(f"point {point.number} ({operation} killed {point.delay_s} s in): {exc}")
        left = converged_world(testbed, daemon, 60, f"the world after point {point.number}")
        point.converged_s = round(time.monotonic() - t0, 1)
        failures.extend(f"point {point.number} ({operation} killed {point.delay_s} s in): {p}" for p in left)
        print(
            f"point {point.number:2d}: {operation:18s} killed {point.delay_s:5.2f} s after '{point.acknowledged}'; "
            f"converged {point.converged_s:5.1f} s after the restart; problems: {left or 'none'}",
            flush=True,
        )

    def scale(capacity: int) -> Callable[[ApiClient], str]:
        def act(api: ApiClient) -> str:
            api.patch(f"/scaleSets/{name}", {"sku": {"capacity": capacity}})
            return f"capacity {capacity}"

        return act

    def at_capacity(capacity: int) -> Callable[[ApiClient], bool]:
        def done(api: ApiClient) -> bool:
            if api.get(f"/scaleSets/{name}")["sku"]["capacity"] != capacity:
                raise AssertionError(f"the acknowledged capacity {capacity} was lost")
            return settled(daemon, shared, capacity)

        return done

    with Load(port, threads=LOAD_THREADS, max_seconds=3000) as load:
        for round_ in range(ROUNDS):
            run_point("scale-out", scale(3), at_capacity(3))
            run_point("scale-in", scale(2), at_capacity(2))

            upgrade, upgraded = _upgrade_ops(daemon, shared, cli, round_)
            run_point("rolling upgrade", upgrade, upgraded)
            create_vm, vm_ready, vm = _flexible_ops(flex, round_)
            run_point("flexible VM create", create_vm, vm_ready)
            _delete_vm(daemon, vm)

        # A graceful restart too, then the load runs on until it has sent its share.
        daemon.stop()
        daemon.start()
        deadline = time.monotonic() + 900
        while load.result.sent < LOAD_TARGET and time.monotonic() < deadline:
            time.sleep(1)
    result = load.result
    elapsed = time.monotonic() - started

    api = client(daemon)
    with suppress(NotFound):
        api.delete(f"/scaleSets/{flex}")
    api.close()
    by_point: dict[int, int] = {}
    for at, _what in result.failures:
        owner = max((p for p in points if p.started_at <= at), key=lambda p: p.started_at, default=None)
        by_point[owner.number if owner else 0] = by_point.get(owner.number if owner else 0, 0) + 1
    print(
        f"\nseed {SEED}: {len(points)} kill -9 points in {elapsed:.0f} s; load through HAProxy: sent {result.sent}, "
        f"failed {result.failed} ({dict(result.errors)}; by point {by_point}), per backend {dict(result.answers)}"
    )
    assert len(points) >= 20
    assert not failures, "\n".join(failures)
    assert result.sent >= LOAD_TARGET, f"only {result.sent} requests in {elapsed:.0f} s"
    assert result.failed == 0, f"{result.failed} of {result.sent} requests failed: {result.failures[:20]}"


def _upgrade_ops(
    daemon: DaemonProcess, shared: dict[str, Any], cli: Cli, round_: int
) -> tuple[Callable[[ApiClient], str], Callable[[ApiClient], bool]]:
    """A new model (its custom data), rolled out by the set's Rolling policy."""
    name = shared["name"]
    want: list[int] = []

    def upgrade(api: ApiClient) -> str:
        before = _model_version(api, name)
        cli.ok("update", name, "--custom-data", f"#!/bin/sh\necho fault-round-{round_}\n", "--no-wait")
        want.append(_model_version(api, name))
        assert want[0] == before + 1, f"model version {before} -> {want[0]}"
        return f"model version {want[0]}"

    def upgraded(api: ApiClient) -> bool:
        if _model_version(api, name) != want[0]:
            raise AssertionError(f"the acknowledged model version {want[0]} was lost")
        return settled(daemon, shared, 2)

    return upgrade, upgraded


def _flexible_ops(flex: str, round_: int) -> tuple[Callable[[ApiClient], str], Callable[[ApiClient], bool], str]:
    vm = f"{flex}v{round_}"

    def create_vm(api: ApiClient) -> str:
        api.put(f"/virtualMachines/{vm}", {"properties": {"virtualMachineScaleSet": {"id": f"/scaleSets/{flex}"}}})
        return f"VM {vm}"

    return create_vm, lambda api: _flex_vm_ready(api, vm), vm


def _delete_vm(daemon: DaemonProcess, vm: str) -> None:
    api = client(daemon)
    try:
        api.delete(f"/virtualMachines/{vm}")
        wait_until(lambda: not _exists(api, vm), 120, f"{vm} deleted")
    finally:
        api.close()


def _exists(api: ApiClient, vm: str) -> bool:
    try:
        api.get(f"/virtualMachines/{vm}")
        return True
    except NotFound:
        return False
