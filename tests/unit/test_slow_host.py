"""A host that keeps its connection open but does not answer (its libvirtd SIGSTOPped or stuck)
fails its calls only when the keepalive gives up, about 30 s later; until then the host list
says how long its ping has waited, and calls it slow from SLOW_HOST_S on."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

import localvmss.virt.host as host_module
from localvmss.inventory import SLOW_HOST_S
from localvmss.virt.host import Host
from tests.unit.fakeclock import ManualClock
from tests.unit.servicefake import make_service


def test_a_ping_waiting_for_its_answer_is_timed(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = ManualClock()
    monkeypatch.setattr(host_module, "time", clock)
    host = Host("t", "test:///default")
    sent, answer = threading.Event(), threading.Event()
    real_call = host._call

    def unanswered(doing: str, fn: Any, idempotent: bool = True) -> Any:
        sent.set()
        answer.wait(30)
        return real_call(doing, fn, idempotent)

    monkeypatch.setattr(host, "_call", unanswered)
    assert host.unanswered_for() == 0.0
    pinger = threading.Thread(target=host.ping)
    pinger.start()
    try:
        assert sent.wait(30)
        clock.now += 12
        assert host.unanswered_for() == 12
    finally:
        answer.set()
        pinger.join(30)
    assert host.unanswered_for() == 0.0, "an answered ping no longer counts"
    host.close()


@pytest.mark.parametrize(
    ("waiting_s", "slow"),
    [(0.0, False), (SLOW_HOST_S - 0.1, False), (SLOW_HOST_S, True), (29.0, True)],
)
def test_the_host_list_calls_a_host_slow_while_its_ping_waits(tmp_path: Path, waiting_s: float, slow: bool) -> None:
    h = make_service(tmp_path)
    h.inventory.unanswered_for = lambda _name: waiting_s  # type: ignore[method-assign]
    (entry,) = h.service.list_hosts()
    assert entry["available"] is True, "slow is not lost"
    assert entry["slow"] is slow and entry["unansweredSeconds"] == round(waiting_s, 1)
    if slow:
        assert entry["message"].startswith("slow: ") and f"not answered for {waiting_s:.0f} s" in entry["message"]
    else:
        assert entry["message"] == ""
