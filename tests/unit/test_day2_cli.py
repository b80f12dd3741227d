"""Day-2 operations without VMs: the activity log's time window and filters (the CLI's parsing
and the store's query), the watch loop and its CPU arithmetic, the boot log's clear refusals,
the instance metrics route, and the log lines of refused and accepted requests."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from localvmss.cli.context import Ctx
from localvmss.cli.day2_cmds import (
    activity_query,
    activity_window,
    cpu_percent,
    memory_cell,
    parse_when,
    run_watch,
    shown_time,
    watch,
    with_cpu,
)
from localvmss.config import HostConfig
from localvmss.errors import InvalidSpec
from localvmss.model import PowerState
from localvmss.virt.host import OwnedDomain
from tests.unit.servicefake import Harness, add_instances, api_client, make_service, refused, uniform_body

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


# -- time filters (CLI) -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-30T10:00:00Z", datetime(2026, 11, 30, 10, 0, tzinfo=UTC)),
        ("2026-11-30T10:00:00+01:00", datetime(2026, 11, 30, 9, 0, tzinfo=UTC)),
        ("2026-11-30T10:00:00", datetime(2026, 11, 30, 10, 0, tzinfo=UTC)),  # no offset: UTC
        ("2026-11-30", datetime(2026, 11, 30, tzinfo=UTC)),
        ("1h", NOW - timedelta(hours=1)),
        ("90s", NOW - timedelta(seconds=90)),
        ("2d", NOW - timedelta(days=2)),
        ("1h30m", NOW - timedelta(minutes=90)),
        ("PT5M", NOW - timedelta(minutes=5)),
        (" 30m ", NOW - timedelta(minutes=30)),
    ],
)
def test_parse_when(text: str, expected: datetime) -> None:
    assert parse_when(text, NOW) == expected


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "time is empty"),
        ("yesterday", "is neither a date-time nor an age"),
        ("5", "is neither a date-time nor an age"),
        ("2026-13-01T00:00:00", "is not a date-time"),
        ("10:61", "is not a date-time"),
    ],
)
def test_parse_when_refuses(text: str, words: str) -> None:
    with pytest.raises(InvalidSpec, match=words):
        parse_when(text, NOW)


H = timedelta(hours=1)


@pytest.mark.parametrize(
    ("start", "end", "offset", "expected"),
    [
        (None, None, None, (None, None)),
        ("2h", None, None, (NOW - 2 * H, None)),
        (None, "1h", None, (None, NOW - H)),
        (None, None, "6h", (NOW - 6 * H, NOW)),  # az: the offset before --end-time, which is now
        ("3h", None, "1h", (NOW - 3 * H, NOW - 2 * H)),  # with --start-time it sets the end
        (None, "2h", "1h", (NOW - 3 * H, NOW - 2 * H)),
        ("2026-12-01T08:00:00Z", "2026-12-01T09:00:00Z", None, (NOW - 4 * H, NOW - 3 * H)),
    ],
)
def test_activity_window(
    start: str | None, end: str | None, offset: str | None, expected: tuple[datetime | None, datetime | None]
) -> None:
    assert activity_window(start, end, offset, NOW) == expected


@pytest.mark.parametrize(
    ("start", "end", "offset", "words"),
    [
        ("1h", "2h", None, "--start-time .* is after --end-time"),
        ("2h", "1h", "1h", "--offset goes with --start-time or --end-time, not both"),
        (None, None, "soon", "--offset 'soon' is not a duration"),
        ("later", None, None, "--start-time 'later' is neither"),
    ],
)
def test_activity_window_refuses(start: str | None, end: str | None, offset: str | None, words: str) -> None:
    with pytest.raises(InvalidSpec, match=words):
        activity_window(start, end, offset, NOW)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((None, None, None, None, ()), {}),
        (
            (datetime(2026, 12, 1, 13, tzinfo=UTC) + timedelta(), None, 5, "3", ("scale", "repair")),
            {"startTime": "2026-12-01T13:00:00+00:00", "maxEvents": "5", "instanceId": "3", "kind": "scale,repair"},
        ),
        (
            (None, datetime(2026, 12, 1, 14, tzinfo=UTC).astimezone(), None, None, ()),
            {"endTime": "2026-12-01T14:00:00+00:00"},  # sent in UTC whatever the local zone
        ),
    ],
)
def test_activity_query(args: tuple[Any, ...], expected: dict[str, str]) -> None:
    assert activity_query(*args) == expected


def test_shown_time_is_iso_utc_or_local() -> None:
    at = datetime(2026, 12, 1, 12, 0, 5, 700000, tzinfo=UTC).timestamp()
    assert shown_time(at) == "2026-12-01T12:00:05Z"
    assert datetime.fromisoformat(shown_time(at, local=True)) == datetime(2026, 12, 1, 12, 0, 5, tzinfo=UTC)


# -- activity filters (store and service) -------------------------------------------------------
def logged_set(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Harness:
    """A set whose activity log holds six entries, one an hour from NOW - 5h to NOW."""
    h = make_service(tmp_path)
    h.service.put_set("web", uniform_body(2))  # an entry "create", at the real time (now)
    entries = [
        ("scale", "capacity 2 -> 3 (requested)", []),
        ("restart", "restart requested for instance 1", [1]),
        ("scale-out", "creating instances [2] to reach capacity 3", [2]),
        ("health", "instance 2 unhealthy: timeout", [2]),
        ("repair", "instance 2 unhealthy for 300 s (timeout): reimaging it", [2]),
        ("restart", "restart requested for instance 12", [12]),
    ]
    for hours_ago, (kind, message, ids) in zip(range(5, -1, -1), entries, strict=True):
        at = (NOW - timedelta(hours=hours_ago)).timestamp()
        monkeypatch.setattr("localvmss.store.time.time", lambda at=at: at)
        h.store.log_activity("web", kind, message, instances=ids)
    monkeypatch.undo()
    return h


@pytest.mark.parametrize(
    ("query", "messages"),
    [
        ("startTime=2026-12-01T09:00:00Z&endTime=2026-12-01T11:00:00Z", ["scale-out", "health", "repair"]),
        ("startTime=2026-12-01T08:00:00%2B01:00&endTime=2026-12-01T08:00:00", ["scale", "restart"]),
        ("instanceId=2", ["scale-out", "health", "repair"]),
        ("instanceId=1", ["restart"]),
        ("kind=restart", ["restart", "restart"]),
        ("kind=scale,repair&endTime=2026-12-01T12:00:00Z", ["scale", "repair"]),
        ("maxEvents=2&endTime=2026-12-01T12:00:00Z", ["repair", "restart"]),  # the newest two, oldest first
        ("instanceId=2&maxEvents=1", ["repair"]),
    ],
)
def test_activity_filters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, query: str, messages: list[str]) -> None:
    h = logged_set(tmp_path, monkeypatch)
    resp = api_client(h).get(f"/scaleSets/web/activityLog?{query}")
    assert resp.status_code == 200, resp.text
    entries = resp.json()["value"]
    assert [e["kind"] for e in entries] == messages
    for e in entries:
        assert datetime.fromisoformat(e["eventTimestamp"]).timestamp() == pytest.approx(e["at"], abs=0.001)
        if "instanceId=" in query:
            assert query.split("instanceId=")[1].split("&")[0] in e["instanceIds"]
        assert e["eventTimestamp"].endswith("+00:00")


def test_entries_record_the_instances_they_are_about(tmp_path: Path) -> None:
    """The instance filter reads a column every writer fills, not the message text."""
    h = make_service(tmp_path)
    h.service.put_set("web", uniform_body(2))
    add_instances(h.store, "web", 3)
    h.service.instance_action("web", "restart", ["1", "2"])
    h.service.set_protection("web", "0", scale_in=True, actions=None)
    about = {i: [a.kind for a in h.store.activity("web", instance_id=i)] for i in (0, 1, 2)}
    assert about == {0: ["protection"], 1: ["restart"], 2: ["restart"]}
    assert [a.instance_ids for a in h.store.activity("web", kinds=["create"])] == [[]]


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("startTime=noon", "startTime 'noon' must be an ISO-8601 date-time"),
        ("endTime=2026-02-30T00:00:00", "endTime '2026-02-30T00:00:00' must be an ISO-8601"),
        ("startTime=2026-12-02T00:00:00Z&endTime=2026-12-01T00:00:00Z", "is after endTime"),
        ("maxEvents=0", "maxEvents '0' must be a number from 1 to 10000"),
        ("maxEvents=ten", "maxEvents 'ten' must be a number"),
        ("instanceId=x", "instance id"),
    ],
)
def test_activity_filters_refuse_bad_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, query: str, words: str
) -> None:
    h = logged_set(tmp_path, monkeypatch)
    refused(api_client(h).get(f"/scaleSets/web/activityLog?{query}"), 400, words)


# -- watch ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("before", "after", "seconds", "expected"),
    [
        (None, {"cpuSeconds": 5.0, "vcpus": 1}, 2.0, None),  # the first reading
        ({"cpuSeconds": 5.0}, {"cpuSeconds": 6.0, "vcpus": 1}, 2.0, 50.0),
        ({"cpuSeconds": 5.0}, {"cpuSeconds": 7.0, "vcpus": 2}, 2.0, 50.0),
        ({"cpuSeconds": 5.0}, {"cpuSeconds": 9.0, "vcpus": 2}, 2.0, 100.0),
        ({"cpuSeconds": 5.0}, {"cpuSeconds": 1.0, "vcpus": 1}, 2.0, None),  # restarted: counter reset
        ({"cpuSeconds": None}, {"cpuSeconds": 1.0, "vcpus": 1}, 2.0, None),  # was not running
        ({"cpuSeconds": 5.0}, {"cpuSeconds": None, "vcpus": None}, 2.0, None),  # stopped since
        ({"cpuSeconds": 5.0}, {"cpuSeconds": 6.0, "vcpus": 1}, 0.0, None),
    ],
)
def test_cpu_percent(
    before: dict[str, Any] | None, after: dict[str, Any], seconds: float, expected: float | None
) -> None:
    assert cpu_percent(before, after, seconds) == expected


@pytest.mark.parametrize(
    ("item", "cell"),
    [
        ({"memoryBytes": 256 << 20, "memoryUsedBytes": 40 << 20}, "40/256 MiB"),
        ({"memoryBytes": 256 << 20, "memoryUsedBytes": None}, "256 MiB"),
        ({"memoryBytes": None}, "-"),
    ],
)
def test_memory_cell(item: dict[str, Any], cell: str) -> None:
    assert memory_cell(item) == cell


def reading(at: float, cpu: float | None, power: str = "running") -> dict[str, Any]:
    item = {
        "instanceId": "0",
        "host": "h1",
        "powerState": power,
        "provisioningState": "Succeeded",
        "health": "healthy",
        "cpuSeconds": cpu,
        "vcpus": 1,
        "memoryBytes": 256 << 20,
        "memoryUsedBytes": None,
        "lbSessions": 3,
        "lbStatus": "UP",
    }
    return {"sampledAt": at, "value": [item]}


def test_run_watch_reads_count_times_and_computes_cpu_between_readings() -> None:
    readings = iter([reading(100.0, 10.0), reading(102.0, 11.0), reading(104.0, 11.5)])
    shown: list[dict[str, Any]] = []
    sleeps: list[float] = []
    assert run_watch(lambda: next(readings), shown.append, 2.0, 3, sleep=sleeps.append) == 3
    assert [r["value"][0]["cpuPercent"] for r in shown] == [None, 50.0, 25.0]
    assert sleeps == [2.0, 2.0]  # none before the first reading, none after the last


def test_with_cpu_keeps_instances_apart() -> None:
    before = {"sampledAt": 0.0, "value": [{"instanceId": "0", "cpuSeconds": 1.0}]}
    after = {"sampledAt": 1.0, "value": [{"instanceId": "1", "cpuSeconds": 9.0, "vcpus": 1}]}
    assert with_cpu(after, before)["value"][0]["cpuPercent"] is None  # a new instance: no earlier reading


class RecordingClient:
    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        self.paths: list[str] = []

    def get(self, path: str) -> Any:
        self.paths.append(path)
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


def test_watch_command_prints_plain_snapshots_when_not_a_terminal() -> None:
    client = RecordingClient([reading(100.0, 10.0), reading(100.5, 10.25)])
    result = CliRunner().invoke(watch, ["web", "--count", "2", "--interval", "0.2"], obj=Ctx(client, "table", False))  # type: ignore[arg-type]
    assert result.exit_code == 0, result.output
    assert client.paths == ["/scaleSets/web/instanceMetrics"] * 2
    assert result.output.count("web at ") == 2 and "50.0%" in result.output
    assert "running" in result.output and "3 (UP)" in result.output


def test_watch_ends_cleanly_on_ctrl_c() -> None:
    client = RecordingClient([reading(100.0, 10.0), KeyboardInterrupt()])
    result = CliRunner().invoke(watch, ["web", "--interval", "0.2"], obj=Ctx(client, "table", False))  # type: ignore[arg-type]
    assert result.exit_code == 0 and result.output.count("web at ") == 1


@pytest.mark.parametrize(("args", "words"), [(["--count", "0"], "--count"), (["--interval", "0"], "--interval")])
def test_watch_refuses_bad_options(args: list[str], words: str) -> None:
    client = RecordingClient([])
    result = CliRunner().invoke(watch, ["web", *args], obj=Ctx(client, "table", False))  # type: ignore[arg-type]
    assert result.exit_code == 2 and words in result.output and client.paths == []


# -- instance metrics and boot log (service and API) --------------------------------------------
class StatsHost:
    """A host that answers the two bulk calls the metrics route makes."""

    uri = "qemu+tcp://h1/system"

    def __init__(self, running: dict[str, dict[str, Any]]) -> None:
        self.running = running

    def owned_domains(self) -> list[OwnedDomain]:
        return [OwnedDomain(name, None, PowerState.RUNNING) for name in self.running]  # type: ignore[arg-type]

    def all_domain_stats(self) -> list[tuple[str, dict[str, Any]]]:
        return list(self.running.items())

    def domain_exists(self, name: str) -> bool:
        return name in self.running


class FakeBalancer:
    def server_states(self, _name: str) -> dict[int, Any]:
        from localvmss.lb.haproxy import ServerState

        return {0: ServerState(0, "UP", "L7OK", 4, {})}


def test_instance_metrics(tmp_path: Path) -> None:
    h = make_service(tmp_path)
    lb = {
        "loadBalancingRules": [{"protocol": "Tcp", "frontendPort": 8081, "backendPort": 80}],
        "probes": [{"protocol": "Tcp", "port": 80}],
    }
    h.service.put_set("web", uniform_body(2, lb=lb))
    add_instances(h.store, "web", 2)
    h.inventory.hosts["h1"] = StatsHost(  # type: ignore[assignment]
        {
            "lvmss-web-0": {
                "state.state": 1,
                "cpu.time": 3_500_000_000,
                "vcpu.current": 1,
                "balloon.current": 262144,
                "balloon.available": 250000,
                "balloon.usable": 200000,
            }
        }
    )
    h.service.balancer = FakeBalancer()
    resp = api_client(h).get("/scaleSets/web/instanceMetrics")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    first, second = body["value"]
    assert first["powerState"] == "running" and first["cpuSeconds"] == 3.5 and first["vcpus"] == 1
    assert first["memoryBytes"] == 256 << 20 and first["memoryUsedBytes"] == 50000 * 1024
    assert (first["lbSessions"], first["lbStatus"]) == (4, "UP")
    # Not defined on its host: deallocated; no counters, no server.
    assert second["powerState"] == "deallocated" and second["cpuSeconds"] is None and second["lbSessions"] is None
    assert isinstance(body["sampledAt"], float)


def test_instance_metrics_of_an_unknown_set(tmp_path: Path) -> None:
    refused(api_client(make_service(tmp_path)).get("/scaleSets/nope/instanceMetrics"), 404, "nope")


def boot_set(tmp_path: Path, read_dir: str | None) -> Harness:
    h = make_service(tmp_path)
    h.service.put_set("web", uniform_body(1))
    add_instances(h.store, "web", 1)
    h.inventory.configs = {  # type: ignore[attr-defined]
        "h1": HostConfig(name="h1", serial_log_dir="/var/log/libvirt/qemu", serial_log_read_dir=read_dir)
    }
    return h


def test_boot_log_reads_the_serial_console(tmp_path: Path) -> None:
    logs = tmp_path / "qemu"
    logs.mkdir()
    (logs / "lvmss-web-0-serial.log").write_bytes(b"[    0.000000] Linux version 6.1.0\n\xff odd byte\n")
    resp = api_client(boot_set(tmp_path, str(logs))).get("/scaleSets/web/virtualMachines/0/bootLog")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["serialConsoleLog"].startswith("[    0.000000] Linux version 6.1.0\n")
    assert "\ufffd odd byte" in body["serialConsoleLog"] and body["truncated"] is False and body["host"] == "h1"


def test_boot_log_keeps_the_end_of_a_long_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("localvmss.service.MAX_BOOT_LOG_BYTES", 10)
    logs = tmp_path / "qemu"
    logs.mkdir()
    (logs / "lvmss-web-0-serial.log").write_text("early lines\nlogin: ")
    body = api_client(boot_set(tmp_path, str(logs))).get("/scaleSets/web/virtualMachines/0/bootLog").json()
    assert body == {**body, "serialConsoleLog": "es\nlogin: ", "truncated": True}


@pytest.mark.parametrize(
    ("read_dir", "path", "status", "words"),
    [
        (None, "/scaleSets/web/virtualMachines/0/bootLog", 400, "set serial_log_read_dir of host h1"),
        ("missing", "/scaleSets/web/virtualMachines/0/bootLog", 404, "has no serial console log at"),
        ("missing", "/scaleSets/web/virtualMachines/7/bootLog", 404, "7"),
        ("missing", "/scaleSets/nope/virtualMachines/0/bootLog", 404, "nope"),
    ],
)
def test_boot_log_refusals(tmp_path: Path, read_dir: str | None, path: str, status: int, words: str) -> None:
    where = None if read_dir is None else str(tmp_path / read_dir)
    refused(api_client(boot_set(tmp_path, where)).get(path), status, words)


# -- log lines of requests ------------------------------------------------------------------------
def records(caplog: pytest.LogCaptureFixture, logger: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == logger]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "reason"),
    [
        ("GET", "/scaleSets", {"headers": {"Authorization": "Bearer wrong"}}, 401, "a valid bearer token"),
        ("PUT", "/scaleSets/web", {"content": b"x" * ((1 << 20) + 1)}, 413, "larger than"),
        ("GET", "/scaleSets/nope", {}, 404, "nope"),
        ("GET", "/no/such/route", {}, 404, "Not Found"),
        ("PATCH", "/scaleSets/web", {"json": {"sku": {}}}, 400, "PATCH takes"),
        (
            "PUT",
            "/scaleSets/web",
            {"content": b"not json", "headers": {"content-type": "application/json"}},
            400,
            "JSON",
        ),
        ("PUT", "/scaleSets/web", {"json": uniform_body(2), "headers": {"if-none-match": "*"}}, 409, "already exists"),
    ],
)
def test_every_refused_request_is_logged_once(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    reason: str,
) -> None:
    h = make_service(tmp_path)
    h.service.put_set("web", uniform_body(2))
    client = api_client(h)
    caplog.set_level(logging.INFO)
    resp = client.request(method, path, **kwargs)
    assert resp.status_code == status, resp.text
    said = records(caplog, "localvmss.api.app")
    assert len(said) == 1, [r.getMessage() for r in said]
    rec = said[0]
    assert rec.levelno == logging.INFO
    assert (rec.method, rec.path, rec.status) == (method, path, status)  # type: ignore[attr-defined]
    assert reason in rec.reason and reason in rec.getMessage()  # type: ignore[attr-defined]
    assert "wrong" not in rec.getMessage()  # a token, even a wrong one, is never logged


def test_accepted_requests_are_logged_once_with_their_reason(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    h = make_service(tmp_path)
    client = api_client(h)
    caplog.set_level(logging.INFO)
    steps: list[tuple[str, str, dict[str, Any], str, str]] = [
        ("PUT", "/scaleSets/web", {"json": uniform_body(3)}, "create", "scale set created (Uniform, capacity 3)"),
        ("PATCH", "/scaleSets/web", {"json": {"sku": {"capacity": 4}}}, "scale", "capacity 3 -> 4 (requested)"),
    ]
    for method, path, kwargs, action, reason in steps:
        caplog.clear()
        assert client.request(method, path, **kwargs).status_code < 300
        said = records(caplog, "localvmss.service")
        assert [(r.action, r.reason, r.scale_set) for r in said] == [(action, reason, "web")]  # type: ignore[attr-defined]
        assert said[0].levelno == logging.INFO and reason in said[0].getMessage()
    add_instances(h.store, "web", 3)
    more: list[tuple[str, str, dict[str, Any], str, str, list[int]]] = [
        (
            "POST",
            "/scaleSets/web/restart",
            {"json": {}},
            "restart",
            "restart requested for instances [0, 1, 2]",
            [0, 1, 2],
        ),
        (
            "POST",
            "/scaleSets/web/virtualMachines/1/powerOff",
            {},
            "powerOff",
            "powerOff requested for instances [1]",
            [1],
        ),
        (
            "PATCH",
            "/scaleSets/web/virtualMachines/2",
            {"json": {"properties": {"protectionPolicy": {"protectFromScaleIn": True}}}},
            "protection",
            "instance 2 protection scale_in=True",
            [2],
        ),
        (
            "POST",
            "/scaleSets/web/delete",
            {"json": {"instanceIds": ["0"]}},
            "delete-instances",
            "deleting instances [0]",
            [0],
        ),
    ]
    for method, path, kwargs, action, reason, ids in more:
        caplog.clear()
        resp = client.request(method, path, **kwargs)
        assert resp.status_code < 300, resp.text
        said = records(caplog, "localvmss.service")
        assert [(r.action, r.reason, r.instance) for r in said] == [(action, reason, ids)]  # type: ignore[attr-defined]
    caplog.clear()
    assert client.delete("/scaleSets/web").status_code == 202
    assert [r.action for r in records(caplog, "localvmss.service")] == ["delete"]  # type: ignore[attr-defined]


def test_a_refused_action_logs_no_acceptance(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    h = make_service(tmp_path)
    h.service.put_set("web", uniform_body(2))
    add_instances(h.store, "web", 1, protect_actions=True)
    caplog.set_level(logging.INFO)
    refused(api_client(h).post("/scaleSets/web/restart", json={}), 409, "protected")
    assert records(caplog, "localvmss.service") == []
    assert len(records(caplog, "localvmss.api.app")) == 1


def test_watch_on_a_terminal_redraws_one_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal rich's Live redraws in place; rendered to a non-terminal (as here) it
    leaves the last table, once."""
    from types import SimpleNamespace

    monkeypatch.setattr("localvmss.cli.day2_cmds.sys", SimpleNamespace(stdout=SimpleNamespace(isatty=lambda: True)))
    client = RecordingClient([reading(100.0, 10.0), reading(101.0, 10.5)])
    result = CliRunner().invoke(watch, ["web", "--count", "2", "--interval", "0.2"], obj=Ctx(client, "table", False))  # type: ignore[arg-type]
    assert result.exit_code == 0, result.output
    assert len(client.paths) == 2 and result.output.count("web at ") == 1 and "50.0%" in result.output


def test_a_refused_path_cannot_forge_log_lines(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    resp = api_client(make_service(tmp_path)).get("/scaleSets/x%0A%3C3%3Eforged")
    assert resp.status_code == 404
    (rec,) = records(caplog, "localvmss.api.app")
    assert "\n" not in rec.getMessage() and "forged" in rec.getMessage()


@pytest.mark.parametrize(("path", "shown"), [("/a\nb", "/a\\nb"), ("/a\x1b[2Jb", "/a\\x1b[2Jb"), ("/é", "/é")])
def test_refused_paths_are_logged_printable(caplog: pytest.LogCaptureFixture, path: str, shown: str) -> None:
    from localvmss.api.app import log_refused

    caplog.set_level(logging.INFO)
    log_refused("GET", path, 404, "NotFound", "no such route")
    assert caplog.records[-1].getMessage() == f"refused GET {shown}: 404 NotFound: no such route"
