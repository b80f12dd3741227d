"""The graceful power-off's steps, pass by pass, against a recording stand-in for a host.

The real thing (a guest that shuts down on the ACPI power button) is checked in
tests/e2e/test_uniform.py; here the clock is ours, so the timeout and the daemon-restart cases
are exact and fast.
"""

from __future__ import annotations

from typing import Any

import pytest

from localvmss import provision
from localvmss.config import DaemonConfig
from localvmss.errors import NotFound
from localvmss.model import PowerState
from localvmss.provision import Provisioner
from localvmss.store import InstanceRow


class RecordingHost:
    """Our Host's power verbs, with a guest that turns itself off when told to by the test."""

    def __init__(self, state: PowerState = PowerState.RUNNING) -> None:
        self.state: PowerState | None = state
        self.calls: list[str] = []

    def power_state(self, _name: str) -> PowerState:
        if self.state is None:
            raise NotFound("no domain")
        return self.state

    def shutdown(self, _name: str) -> None:
        self.calls.append("shutdown")

    def destroy(self, _name: str) -> None:
        self.calls.append("destroy")
        self.state = PowerState.STOPPED

    def undefine(self, _name: str) -> None:
        self.calls.append("undefine")
        self.state = None

    def start(self, _name: str) -> None:
        self.calls.append("start")
        self.state = PowerState.RUNNING


class OneHostInventory:
    def __init__(self, host: RecordingHost) -> None:
        self._host = host

    def host(self, _name: str) -> RecordingHost:
        return self._host


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(provision.time, "monotonic", c)
    return c


def _prov(host: RecordingHost, timeout: float = 60.0) -> Provisioner:
    inventory: Any = OneHostInventory(host)
    return Provisioner(DaemonConfig(shutdown_timeout_s=timeout), inventory)


def _inst(desired: str = "stopped", skip: bool = False) -> InstanceRow:
    return InstanceRow("web", 0, "h1", 0, 0, "m", "i", 1, desired, "Succeeded", 0.0, skip_shutdown=skip)


def test_the_guest_is_asked_then_found_off(clock: Clock) -> None:
    host = RecordingHost()
    prov = _prov(host)
    assert prov.power_off(_inst()) is None and host.calls == ["shutdown"]
    assert prov.shutdown_pending(_inst())
    clock.now += 2
    assert prov.power_off(_inst()) is None and host.calls == ["shutdown"], "asked once, not again"
    host.state = PowerState.STOPPED  # the guest powered itself off
    clock.now += 2.5
    assert prov.power_off(_inst()) == "the guest shut down in 4.5 s"
    assert not prov.shutdown_pending(_inst()) and host.calls == ["shutdown"], "never forced"


def test_a_guest_still_shutting_down_is_not_off(clock: Clock) -> None:
    """libvirt's "in shutdown": the guest has begun to power off and QEMU still runs. Its disk
    must not be copied (a redeploy) nor its definition removed (a deallocate) yet."""
    host = RecordingHost()
    prov = _prov(host, timeout=30)
    assert prov.converge_power(_inst("deallocated")) is None
    host.state = PowerState.STOPPING
    clock.now += 1
    assert prov.converge_power(_inst("deallocated")) is None and host.calls == ["shutdown"], "still waiting"
    host.state = PowerState.STOPPED
    clock.now += 1
    assert prov.converge_power(_inst("deallocated")) == "the guest shut down in 2.0 s"
    assert host.calls == ["shutdown", "undefine"]


def test_a_guest_that_ignores_the_button_is_powered_off_after_the_timeout(clock: Clock) -> None:
    host = RecordingHost()
    prov = _prov(host, timeout=30)
    assert prov.power_off(_inst()) is None
    clock.now += 29.9
    assert prov.power_off(_inst()) is None and "destroy" not in host.calls
    clock.now += 0.1
    assert prov.power_off(_inst()) == "the guest did not shut down within 30 s: powered off hard"
    assert host.calls == ["shutdown", "destroy"] and not prov.shutdown_pending(_inst())


@pytest.mark.parametrize(("skip", "timeout"), [(True, 60.0), (False, 0.0)])
def test_skip_shutdown_or_no_timeout_powers_off_at_once(clock: Clock, skip: bool, timeout: float) -> None:
    host = RecordingHost()
    assert _prov(host, timeout).power_off(_inst(skip=skip)) == "powered off without a guest shutdown"
    assert host.calls == ["destroy"]


@pytest.mark.parametrize("state", [PowerState.STOPPED, None])
def test_already_off_or_gone_needs_nothing(clock: Clock, state: PowerState | None) -> None:
    host = RecordingHost()
    host.state = state
    assert _prov(host).power_off(_inst()) == "" and host.calls == []


def test_after_a_daemon_restart_the_guest_is_asked_again(clock: Clock) -> None:
    """The request time lives in memory only: a new daemon asks again and waits a full timeout."""
    host = RecordingHost()
    assert _prov(host, timeout=30).power_off(_inst()) is None
    clock.now += 25
    again = _prov(host, timeout=30)
    assert again.power_off(_inst()) is None and host.calls == ["shutdown", "shutdown"]
    clock.now += 29
    assert again.power_off(_inst()) is None and "destroy" not in host.calls


def test_deallocate_undefines_only_once_the_guest_is_off(clock: Clock) -> None:
    host = RecordingHost()
    prov = _prov(host)
    assert prov.converge_power(_inst("deallocated")) is None and host.calls == ["shutdown"]
    host.state = PowerState.STOPPED
    clock.now += 3
    assert prov.converge_power(_inst("deallocated")) == "the guest shut down in 3.0 s"
    assert host.calls == ["shutdown", "undefine"] and host.state is None


def test_running_starts(clock: Clock) -> None:
    host = RecordingHost(PowerState.STOPPED)
    assert _prov(host).converge_power(_inst("running")) == "" and host.calls == ["start"]
