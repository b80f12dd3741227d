"""Terminate notification: the pure rule (``localvmss.terminate``) as a table, then the rule at
work in the reconciler over recording fake hosts (drain first, one durable notice, the deletion
waits without blocking a worker until the guest acknowledges or NotBefore passes, forceDeletion
on scale-in, a daemon restart mid-notice) and the metadata service's documents."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from localvmss import terminate
from localvmss.cli.main import _terminate_notification
from localvmss.errors import InvalidSpec
from localvmss.metadata import MetadataService, events_document
from localvmss.model import PowerState, ProvisioningState
from localvmss.provision import Provisioner
from localvmss.reconciler import Reconciler
from localvmss.spec import parse_scale_set_body, spec_to_azure
from localvmss.store import ScheduledEventRow, Store
from localvmss.terminate import Decision, Notice, Step
from localvmss.virt.seed import build_nocloud_seed, render_meta_data
from tests.unit import test_reconciler
from tests.unit.test_reconciler import GRACE, ORPHAN_GRACE, Env

env = test_reconciler.env  # the reconciler tests' fixture: real store and inventory over fake hosts

T0 = 1_000_000.0
SENT = Notice(created_at=T0, not_before=T0 + 60)
ACKED = Notice(created_at=T0, not_before=T0 + 60, acknowledged_at=T0 + 2.5)


@pytest.mark.parametrize(
    ("enabled", "force", "scale_in", "notice", "now", "expected"),
    [
        # disabled: straight to deletion, nothing to tell
        (False, False, False, None, T0, Decision(Step.DELETE)),
        (False, True, True, None, T0, Decision(Step.DELETE)),
        # enabled, nothing sent yet: drain and send it (any deletion: scale-in, delete, repair)
        (True, False, False, None, T0, Decision(Step.NOTIFY)),
        (True, False, True, None, T0, Decision(Step.NOTIFY)),
        # forceDeletion applies to scale-in deletions only
        (True, True, False, None, T0, Decision(Step.NOTIFY)),
        (True, True, True, None, T0, Decision(Step.DELETE, "forceDeletion: deleted without a terminate notice")),
        # sent, not acknowledged, before NotBefore: wait (a later pass looks again)
        (True, False, True, SENT, T0 + 59.9, Decision(Step.WAIT)),
        # acknowledged early: delete now, saying how long the guest took
        (True, False, True, ACKED, T0 + 3, Decision(Step.DELETE, "acknowledged after 2.5 s")),
        # NotBefore passed without an acknowledgement
        (True, False, False, SENT, T0 + 60, Decision(Step.DELETE, "not acknowledged within notBeforeTimeout (60 s)")),
        # a daemon restart mid-notice: the stored NotBefore rules, whatever the clock says now
        (True, False, False, SENT, T0 + 30, Decision(Step.WAIT)),
        (True, False, False, SENT, T0 + 3600, Decision(Step.DELETE, "not acknowledged within notBeforeTimeout (60 s)")),
        # the profile disabled while a notice is out: stop waiting
        (
            False,
            False,
            False,
            SENT,
            T0 + 1,
            Decision(Step.DELETE, "terminate notification disabled meanwhile: not waiting any longer"),
        ),
    ],
)
def test_before_delete(
    enabled: bool, force: bool, scale_in: bool, notice: Notice | None, now: float, expected: Decision
) -> None:
    assert (
        terminate.before_delete(enabled=enabled, force_deletion=force, scale_in=scale_in, notice=notice, now=now)
        == expected
    )


@pytest.mark.parametrize(
    ("enabled", "notice", "now", "expected"),
    [
        # a guest that does not run (never booted, stopped, crashed) cannot read a notice
        (True, None, T0, Decision(Step.DELETE, "the guest is not running: deleted without a terminate notice")),
        (False, None, T0, Decision(Step.DELETE)),
        (True, SENT, T0 + 1, Decision(Step.DELETE, "not acknowledged: the guest stopped running meanwhile")),
        # an acknowledgement or a passed NotBefore is told as such, running or not
        (True, ACKED, T0 + 3, Decision(Step.DELETE, "acknowledged after 2.5 s")),
        (True, SENT, T0 + 61, Decision(Step.DELETE, "not acknowledged within notBeforeTimeout (60 s)")),
    ],
)
def test_before_delete_of_a_guest_that_does_not_run(
    enabled: bool, notice: Notice | None, now: float, expected: Decision
) -> None:
    decision = terminate.before_delete(
        enabled=enabled, force_deletion=False, scale_in=True, notice=notice, now=now, guest_running=False
    )
    assert decision == expected


@pytest.mark.parametrize(("enabled", "force"), [(True, False), (True, True), (False, False)])
def test_an_overprovisioned_extra_gets_no_notice(enabled: bool, force: bool) -> None:
    decision = terminate.before_delete(
        enabled=enabled, force_deletion=force, scale_in=False, notice=None, now=T0, overprovisioned=True
    )
    assert decision == Decision(Step.DELETE)


def test_not_before_is_rfc1123_as_azure_writes_it() -> None:
    assert terminate.rfc1123(1474309787.0) == "Mon, 19 Sep 2016 18:29:47 GMT"
    assert terminate.not_before(T0, 300) == T0 + 300


# -- the model ------------------------------------------------------------------------------------


def _body(**profile: object) -> dict[str, object]:
    return {
        "sku": {"capacity": 1},
        "properties": {
            "scaleInPolicy": {"rules": ["Default"], "forceDeletion": True},
            "virtualMachineProfile": {
                "storageProfile": {"imageReference": {"id": "base"}},
                "scheduledEventsProfile": {"terminateNotificationProfile": profile},
            },
        },
    }


@pytest.mark.parametrize(
    ("timeout", "ok"),
    [("PT0S", True), ("PT60S", True), ("PT5M", True), ("PT15M", True), ("PT16M", False), ("5 minutes", False)],
)
def test_not_before_timeout_is_pt0s_to_pt15m(timeout: str, ok: bool) -> None:
    body = _body(enable=True, notBeforeTimeout=timeout)
    if ok:
        spec, _ = parse_scale_set_body("web", body, {"base"})
        assert spec.terminate_notification.enable and spec.force_deletion
        shown = spec_to_azure("web", spec, 1)["properties"]
        assert shown["virtualMachineProfile"]["scheduledEventsProfile"]["terminateNotificationProfile"] == {
            "enable": True,
            "notBeforeTimeout": timeout,
        }
        assert shown["scaleInPolicy"]["forceDeletion"] is True
        # What GET shows is a body PUT takes back (the CLI's update round-trips it).
        again, _ = parse_scale_set_body("web", {"sku": {"capacity": 1}, "properties": shown}, {"base"})
        assert again.terminate_notification == spec.terminate_notification
    else:
        with pytest.raises(InvalidSpec, match="notBeforeTimeout"):
            parse_scale_set_body("web", body, {"base"})


# -- the reconciler -------------------------------------------------------------------------------


def _notify_set(env: Env, name: str, capacity: int, timeout: str = "PT60S", force: bool = False) -> None:
    env.create_set(
        name,
        capacity,
        scaleInPolicy={"rules": ["Default"], "forceDeletion": force},
        virtualMachineProfile={
            "storageProfile": {"imageReference": {"id": "base"}},
            "osProfile": {},
            "scheduledEventsProfile": {"terminateNotificationProfile": {"enable": True, "notBeforeTimeout": timeout}},
        },
    )


def _activity(env: Env, name: str) -> list[str]:
    return [a.message for a in env.store.activity(name) if a.kind == "terminate-notice"]


def test_scale_in_drains_notifies_and_waits_for_the_acknowledgement(env: Env) -> None:
    _notify_set(env, "web", 2)
    env.converge(2)
    env.store.update_scale_set("web", capacity=1)
    env.converge(2)
    (event,) = env.store.scheduled_events("web", 1)
    assert event.event_type == "Terminate" and event.resource == "web000001"
    assert event.not_before == pytest.approx(env.clock() + 60, abs=1)
    assert ("drain", 1) in env.balancer.calls and ("remove", 1) not in env.balancer.calls
    assert "lvmss-web-1" in env.hosts["h1"].domains or "lvmss-web-1" in env.hosts["h2"].domains
    env.converge(3)  # waiting costs passes, never a second notice
    assert [e.event_id for e in env.store.scheduled_events("web", 1)] == [event.event_id]
    env.clock.advance(4)
    assert env.store.acknowledge_events("web", 1, [event.event_id], env.clock()) == [event.event_id]
    env.converge(1)
    assert [i.instance_id for i in env.instances("web")] == [0]
    assert env.store.scheduled_events("web", 1) == []
    sent, done = _activity(env, "web")
    assert f"terminate notice sent to web000001 (EventId {event.event_id}" in sent
    assert done.endswith("acknowledged after 4.0 s")


def test_a_notice_not_acknowledged_is_waited_out(env: Env) -> None:
    _notify_set(env, "web", 2, timeout="PT30S")
    env.converge(2)
    # Marked for deletion without lowering the capacity (as a repair that replaces it does).
    env.store.update_instances([("web", 0, {"provisioning_state": ProvisioningState.DELETING.value})])
    env.converge(1)
    assert len(env.store.scheduled_events("web", 0)) == 1
    env.clock.advance(29)
    env.converge(1)
    assert 0 in {i.instance_id for i in env.instances("web")}
    env.clock.advance(1)
    env.converge(1)
    assert 0 not in {i.instance_id for i in env.instances("web")}
    assert _activity(env, "web")[-1].endswith("not acknowledged within notBeforeTimeout (30 s)")


def test_force_deletion_skips_the_notice_on_scale_in_only(env: Env) -> None:
    _notify_set(env, "web", 3, force=True)
    env.converge(2)
    env.store.update_scale_set("web", capacity=2)
    env.converge(2)
    assert len(env.instances("web")) == 2
    assert env.balancer.calls.count(("drain", 2)) == 0 and ("remove", 2) in env.balancer.calls
    assert _activity(env, "web") == ["instance 2: forceDeletion: deleted without a terminate notice"]
    # A delete asked for by name is no scale-in: its guest is told.
    env.store.update_instances([("web", 0, {"provisioning_state": ProvisioningState.DELETING.value})])
    env.converge(1)
    assert len(env.store.scheduled_events("web", 0)) == 1


def test_a_restarted_daemon_keeps_the_notice_and_its_not_before(env: Env, tmp_path: Path) -> None:
    _notify_set(env, "web", 2)
    env.converge(2)
    env.store.update_scale_set("web", capacity=1)
    env.converge(1)
    (event,) = env.store.scheduled_events("web", 1)
    env.rec.stop(timeout_s=1)
    env.clock.advance(30)
    # A new daemon: a new reconciler over the same state database.
    env.rec = Reconciler(
        env.rec.cfg,
        env.store,
        env.inv,
        Provisioner(env.rec.cfg, env.inv),
        env.balancer,
        host_lost_grace_s=GRACE,
        orphan_grace_s=ORPHAN_GRACE,
        clock=env.clock,
    )
    env.converge(2)
    assert env.store.scheduled_events("web", 1) == [event]
    env.clock.advance(30)
    env.converge(1)
    assert [i.instance_id for i in env.instances("web")] == [0]


def test_scheduled_events_are_durable_and_each_instance_acknowledges_only_its_own(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    event = ScheduledEventRow("e-1", "web", 1, "Terminate", "web000001", T0, T0 + 60)
    assert store.schedule_event(event) == event
    assert store.schedule_event(ScheduledEventRow("e-2", "web", 1, "Terminate", "web000001", T0 + 5, T0 + 65)) == event
    assert store.acknowledge_events("web", 2, ["e-1"], T0 + 1) == []
    store.close()
    store = Store(tmp_path / "s.db")
    assert store.scheduled_events("web", 1) == [event]
    assert store.acknowledge_events("web", 1, ["e-1", "nope"], T0 + 2) == ["e-1"]
    assert store.acknowledge_events("web", 1, ["e-1"], T0 + 3) == []
    assert store.scheduled_events("web", 1)[0].acknowledged_at == T0 + 2
    store.close()


# -- the metadata service's documents ---------------------------------------------------------------


def test_events_document_is_azures_shape() -> None:
    sent = ScheduledEventRow("e-1", "web", 1, "Terminate", "web000001", T0, 1474309787.0)
    assert events_document([]) == {"DocumentIncarnation": 0, "Events": []}
    doc = events_document([sent])
    assert doc["DocumentIncarnation"] == 1
    assert doc["Events"][0] | {"Description": ""} == {
        "EventId": "e-1",
        "EventStatus": "Scheduled",
        "EventType": "Terminate",
        "ResourceType": "VirtualMachine",
        "Resources": ["web000001"],
        "NotBefore": "Mon, 19 Sep 2016 18:29:47 GMT",
        "Description": "",
        "EventSource": "Platform",
        "DurationInSeconds": -1,
    }
    acked = events_document([ScheduledEventRow(**{**sent.__dict__, "acknowledged_at": T0 + 1})])
    assert acked["DocumentIncarnation"] == 2 and acked["Events"][0]["EventStatus"] == "Started"


def test_metadata_service_answers_only_the_guest_that_asks(env: Env) -> None:
    _notify_set(env, "web", 2)
    env.converge(2)
    a, b = env.instances("web")
    woken: list[int] = []
    service = MetadataService(env.store, lambda: woken.append(1), env.clock)

    def ask(inst: object, method: str, path: str, body: bytes = b"", metadata: bool = True) -> tuple[int, dict]:
        headers = {"X-Forwarded-For": inst.ip, "X-Localvmss-Host": inst.host}  # type: ignore[attr-defined]
        if metadata:
            headers["Metadata"] = "true"
        return service.handle(method, path, headers, body)

    assert ask(a, "GET", "/metadata/instance", metadata=False)[0] == 400
    status, doc = ask(a, "GET", "/metadata/instance?api-version=2021-02-01")
    assert status == 200
    assert doc["compute"] | {"vmSize": "", "location": ""} == {
        "name": "web_0",
        "osProfile": {"computerName": "web000000"},
        "vmScaleSetName": "web",
        "instanceId": "0",
        "resourceId": "/scaleSets/web/virtualMachines/0",
        "modelVersion": "1",
        "latestModelVersion": "1",
        "zone": "",
        "platformFaultDomain": str(a.fault_domain),
        "platformUpdateDomain": str(a.update_domain),
        "vmSize": "",
        "location": "",
        "host": a.host,
    }
    env.store.update_scale_set("web", capacity=1)
    env.converge(1)
    (event,) = env.store.scheduled_events("web", 1)
    assert ask(a, "GET", "/metadata/scheduledevents")[1] == {"DocumentIncarnation": 0, "Events": []}
    assert [e["EventId"] for e in ask(b, "GET", "/metadata/scheduledevents")[1]["Events"]] == [event.event_id]
    ack = json.dumps({"StartRequests": [{"EventId": event.event_id}]}).encode()
    assert ask(a, "POST", "/metadata/scheduledevents", ack) == (200, {"acknowledged": []})
    assert woken == []
    assert ask(b, "POST", "/metadata/scheduledevents", b"{}")[0] == 400
    assert ask(b, "POST", "/metadata/scheduledevents", ack) == (200, {"acknowledged": [event.event_id]})
    assert woken == [1]
    stranger = {"X-Forwarded-For": "198.18.9.9", "X-Localvmss-Host": "h1", "Metadata": "true"}
    assert service.handle("GET", "/metadata/instance", stranger, b"")[0] == 404


# -- the CLI's az flags -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "time", "enable", "expected"),
    [
        ({}, None, None, {}),
        ({}, "5", None, {"enable": True, "notBeforeTimeout": "PT5M"}),
        ({}, "0.5", None, {"enable": True, "notBeforeTimeout": "PT30S"}),
        ({}, "pt60s", None, {"enable": True, "notBeforeTimeout": "PT60S"}),
        ({}, None, True, {"enable": True, "notBeforeTimeout": "PT5M"}),
        ({"enable": True, "notBeforeTimeout": "PT10M"}, None, False, {"enable": False, "notBeforeTimeout": "PT10M"}),
        ({"enable": False, "notBeforeTimeout": "PT10M"}, "2", None, {"enable": True, "notBeforeTimeout": "PT2M"}),
    ],
)
def test_cli_terminate_flags(
    current: dict[str, object], time: str | None, enable: bool | None, expected: object
) -> None:
    assert _terminate_notification(current, time, enable) == expected


def test_cli_terminate_time_must_be_minutes() -> None:
    with pytest.raises(InvalidSpec, match="must be minutes"):
        _terminate_notification({}, "soon", None)


def test_a_guest_that_does_not_run_is_deleted_without_a_notice(env: Env) -> None:
    _notify_set(env, "web", 2)
    env.converge(2)
    inst = env.instances("web")[0]
    env.hosts[inst.host].domains[inst.domain_name].state = PowerState.STOPPED  # crashed, say
    env.store.update_instances([("web", inst.instance_id, {"provisioning_state": ProvisioningState.DELETING.value})])
    env.converge(1)
    assert inst.instance_id not in {i.instance_id for i in env.instances("web")}
    assert env.store.scheduled_events("web", inst.instance_id) == []
    assert _activity(env, "web") == [
        f"instance {inst.instance_id}: the guest is not running: deleted without a terminate notice"
    ]


# -- the guest side: the seed tells the port, the agent reads the daemon's document ----------------------

GUEST = Path(__file__).resolve().parents[2] / "images/guest/rootfs/usr/lib/localvmss"


@pytest.mark.parametrize(("port", "line"), [(80, None), (None, None), (8080, "localvmss-metadata-port: '8080'")])
def test_the_seed_names_the_metadata_port_only_when_it_is_not_80(
    tmp_path: Path, port: int | None, line: str | None
) -> None:
    meta = render_meta_data("i-7", "web-7", [], port)
    assert (line in meta.splitlines()) if line else ("metadata-port" not in meta)
    (tmp_path / "meta-data").write_text(meta)
    subprocess.run(
        ["busybox", "awk", "-v", f"out={tmp_path}", "-f", str(GUEST / "meta-data.awk"), str(tmp_path / "meta-data")],
        check=True,
    )
    assert (tmp_path / "metadata-port").read_text() == "8080\n" if line else not (tmp_path / "metadata-port").exists()
    with pytest.raises(InvalidSpec, match="metadata port"):
        build_nocloud_seed("i-7", "web-7", [], None, 0)


def test_the_agent_parses_the_daemons_document() -> None:
    """The awk program of ``agent`` over the JSON the daemon writes (compact, one object an event)."""
    script = (GUEST / "agent").read_text()
    program = script[script.index("awk '") + 5 : script.index("}' |") + 1]
    events = [
        ScheduledEventRow("e-1", "web", 1, "Terminate", "web000001", T0, T0 + 60),
        ScheduledEventRow("e-2", "web", 1, "Freeze", "web000001", T0, T0 + 60, T0 + 1),
    ]
    doc = json.dumps(events_document(events), separators=(",", ":"))
    out = subprocess.run(["busybox", "awk", program], input=doc, capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["e-1 Terminate Scheduled web000001", "e-2 Freeze Started web000001"]
    empty = json.dumps(events_document([]), separators=(",", ":"))
    assert subprocess.run(["busybox", "awk", program], input=empty, capture_output=True, text=True).stdout == ""
