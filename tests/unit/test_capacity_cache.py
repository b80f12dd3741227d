"""A host's capacity is read by the reconcile pass and served from that read: admitting work
and listing hosts (API requests) never wait on a host that is slow to answer (a SIGSTOPped
libvirtd held ``GET /hosts`` for 30 s, until the connection's keepalive gave up)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import localvmss.inventory as inventory_module
from localvmss.config import DaemonConfig, HostConfig
from localvmss.errors import HostUnavailable
from localvmss.inventory import CAPACITY_REFRESH_S, Inventory
from localvmss.store import Store
from tests.unit.fakeclock import ManualClock
from tests.unit.fakehost import FakeHost


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> ManualClock:
    c = ManualClock()
    monkeypatch.setattr(inventory_module, "time", c)
    return c


def _inventory(tmp_path: Path) -> tuple[Inventory, FakeHost]:
    inv = Inventory(DaemonConfig(state_dir=tmp_path, hosts=[HostConfig(name="h1")]), Store(tmp_path / "state.db"))
    host = FakeHost("h1")
    inv.hosts["h1"] = host  # type: ignore[assignment]
    return inv, host


def _reads(host: FakeHost) -> int:
    return host.verbs().count("capacity")


def test_capacity_is_read_once_then_served_from_that_read(tmp_path: Path, clock: ManualClock) -> None:
    inv, host = _inventory(tmp_path)
    assert inv.capacity_age("h1") is None
    first = inv.capacity("h1")
    clock.now += 60
    assert inv.capacity("h1") == first
    assert _reads(host) == 1
    assert inv.capacity_age("h1") == 60


def test_a_host_that_stops_answering_does_not_hold_up_a_capacity_read(tmp_path: Path, clock: ManualClock) -> None:
    inv, host = _inventory(tmp_path)
    first = inv.capacity("h1")

    def hang(verb: str) -> None:
        if verb == "capacity":
            raise AssertionError("capacity read from libvirt on the request path")

    host.on_call = hang
    assert inv.capacity("h1") == first


@pytest.mark.parametrize(
    ("age_s", "answering", "read_again"),
    [
        (0.0, True, False),
        (CAPACITY_REFRESH_S - 0.1, True, False),
        (CAPACITY_REFRESH_S, True, True),
        (600.0, True, True),
        (600.0, False, False),  # a host that does not answer is not asked
    ],
)
def test_the_pass_reads_capacity_again_once_it_is_old(
    tmp_path: Path, clock: ManualClock, age_s: float, answering: bool, read_again: bool
) -> None:
    inv, host = _inventory(tmp_path)
    inv.prepare("h1")  # (its accelerator probe reads capacity itself)
    inv.capacity("h1")
    host.clear_calls()
    clock.now += age_s
    host.answering = answering
    inv.refresh_availability()
    assert _reads(host) == (1 if read_again else 0)
    assert inv.capacity_age("h1") == pytest.approx(0.0 if read_again else age_s)


def test_a_failed_read_keeps_the_last_known_figure(tmp_path: Path, clock: ManualClock) -> None:
    inv, host = _inventory(tmp_path)
    inv.prepare("h1")
    first = inv.capacity("h1")
    clock.now += CAPACITY_REFRESH_S
    host.failing["capacity"] = HostUnavailable("host h1 stopped answering while reading capacity")
    alive: Any = inv.refresh_availability()
    assert alive == {"h1": True}
    assert inv.capacity("h1") == first and inv.capacity_age("h1") == CAPACITY_REFRESH_S
