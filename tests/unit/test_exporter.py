"""The exporter's exposition text from fixture samples: names (docs/CONTRACTS.md), labels, values.

Also the file_sd writer, which shares the metrics package and has no other unit-test home.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from localvmss.errors import HostUnavailable, InvalidSpec, TemporaryError
from localvmss.metrics.exporter import (
    HEALTH_STATES,
    INSTANCE_LABELS,
    AutoscaleLimits,
    DaemonMetrics,
    HostStatus,
    InstanceCollector,
    InstanceSample,
    InstanceStatus,
    ScaleSetCollector,
    ScaleSetSample,
    SetStatus,
    StatusCollector,
    StatusSnapshot,
    build_labels,
    start_exporter,
)
from localvmss.metrics.file_sd import read_file_sd, render_file_sd, write_file_sd
from localvmss.metrics.status import autoscale_limits
from localvmss.virt.stats import DomainStats

CONTRACT_INSTANCE_METRICS = {
    "localvmss_instance_cpu_seconds_total",
    "localvmss_instance_vcpus",
    "localvmss_instance_memory_bytes",
    "localvmss_instance_memory_rss_bytes",
    "localvmss_instance_memory_available_bytes",
    "localvmss_instance_disk_read_bytes_total",
    "localvmss_instance_disk_write_bytes_total",
    "localvmss_instance_network_receive_bytes_total",
    "localvmss_instance_network_transmit_bytes_total",
}


def _stats(name: str, cpu: float, usable: int | None) -> DomainStats:
    return DomainStats(
        name=name,
        state=1,
        cpu_seconds=cpu,
        vcpus=2,
        memory_bytes=512 * 2**20,
        rss_bytes=200 * 2**20,
        available_bytes=490 * 2**20 if usable is not None else None,
        usable_bytes=usable,
        disk_read_bytes=4096,
        disk_write_bytes=8192,
        net_rx_bytes=1000,
        net_tx_bytes=2000,
    )


SAMPLES = [
    InstanceSample("web", 0, "host-a", 0, _stats("lvmss-web-0", 12.5, 300 * 2**20)),
    InstanceSample("web", 1, "host-b", 1, _stats("lvmss-web-1", 3.25, None)),
]


def _exposition(registry: CollectorRegistry) -> dict[str, list[tuple[dict[str, str], float]]]:
    """{sample name: [(labels, value)]} as Prometheus would parse the page."""
    text = generate_latest(registry).decode()
    result: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            result.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return result


def _by_instance(series: list[tuple[dict[str, str], float]]) -> dict[str, float]:
    return {labels["instance_id"]: value for labels, value in series}


def test_instance_metrics_names_labels_values() -> None:
    registry = CollectorRegistry()
    registry.register(InstanceCollector(lambda: SAMPLES))
    page = _exposition(registry)

    assert CONTRACT_INSTANCE_METRICS <= set(page)
    cpu = page["localvmss_instance_cpu_seconds_total"]
    assert sorted(cpu, key=lambda s: s[0]["instance_id"]) == [
        ({"scale_set": "web", "instance_id": "0", "host": "host-a", "fault_domain": "0"}, 12.5),
        ({"scale_set": "web", "instance_id": "1", "host": "host-b", "fault_domain": "1"}, 3.25),
    ]
    assert _by_instance(page["localvmss_instance_vcpus"]) == {"0": 2, "1": 2}
    assert _by_instance(page["localvmss_instance_memory_bytes"]) == {"0": 512 * 2**20, "1": 512 * 2**20}
    assert _by_instance(page["localvmss_instance_memory_rss_bytes"])["0"] == 200 * 2**20
    assert _by_instance(page["localvmss_instance_disk_read_bytes_total"])["1"] == 4096
    assert _by_instance(page["localvmss_instance_disk_write_bytes_total"])["1"] == 8192
    assert _by_instance(page["localvmss_instance_network_receive_bytes_total"])["0"] == 1000
    assert _by_instance(page["localvmss_instance_network_transmit_bytes_total"])["0"] == 2000


def test_available_memory_only_for_guests_that_report_it_and_uses_usable() -> None:
    registry = CollectorRegistry()
    registry.register(InstanceCollector(lambda: SAMPLES))
    page = _exposition(registry)
    # instance 1 has no balloon stats: no series at all (not a 0).
    assert _by_instance(page["localvmss_instance_memory_available_bytes"]) == {"0": 300 * 2**20}


def test_shut_off_instances_are_not_exported() -> None:
    stopped = DomainStats("lvmss-web-2", 5, 0.0, 0, 0, 0, None, None, 0, 0, 0, 0)
    samples = [*SAMPLES, InstanceSample("web", 2, "host-a", 2, stopped)]
    registry = CollectorRegistry()
    registry.register(InstanceCollector(lambda: samples))
    page = _exposition(registry)
    assert set(_by_instance(page["localvmss_instance_cpu_seconds_total"])) == {"0", "1"}
    assert set(_by_instance(page["localvmss_instance_vcpus"])) == {"0", "1"}


def test_counter_and_gauge_types_in_text() -> None:
    registry = CollectorRegistry()
    registry.register(InstanceCollector(lambda: SAMPLES))
    registry.register(ScaleSetCollector(lambda: [ScaleSetSample("web", 3, 2, 1)]))
    text = generate_latest(registry).decode()
    assert "# TYPE localvmss_instance_cpu_seconds_total counter" in text
    assert "# TYPE localvmss_instance_vcpus gauge" in text
    assert "# TYPE localvmss_instance_memory_available_bytes gauge" in text
    assert "# TYPE localvmss_instance_network_transmit_bytes_total counter" in text
    assert "# TYPE localvmss_scale_set_capacity_desired gauge" in text


def test_standby_pool_instances_per_state_and_not_in_the_capacity_figures() -> None:
    registry = CollectorRegistry()
    pool = (("Running", 0), ("Paused", 2), ("Saved", 1))
    registry.register(
        ScaleSetCollector(lambda: [ScaleSetSample("web", 1, 1, 1, standby=pool), ScaleSetSample("api", 2, 2, 2)])
    )
    text = generate_latest(registry).decode()
    assert 'localvmss_standby_pool_instances{scale_set="web",state="Paused"} 2.0' in text
    assert 'localvmss_standby_pool_instances{scale_set="web",state="Saved"} 1.0' in text
    assert 'localvmss_standby_pool_instances{scale_set="web",state="Running"} 0.0' in text
    assert 'localvmss_standby_pool_instances{scale_set="api"' not in text  # no pool, no series
    assert 'localvmss_scale_set_capacity_actual{scale_set="web"} 1.0' in text


def test_source_is_called_per_scrape() -> None:
    calls: list[int] = []

    def source() -> Iterable[InstanceSample]:
        calls.append(1)
        return [InstanceSample("web", 0, "h", 0, _stats("x", float(len(calls)), None))]

    registry = CollectorRegistry()
    registry.register(InstanceCollector(source))
    assert calls == []  # describe() does not touch the source at registration
    first = _exposition(registry)["localvmss_instance_cpu_seconds_total"][0][1]
    second = _exposition(registry)["localvmss_instance_cpu_seconds_total"][0][1]
    assert (first, second) == (1.0, 2.0)


@pytest.mark.parametrize(
    ("second", "kept"),
    [
        (InstanceSample("web", 0, "host-a", 0, _stats("lvmss-web-0", 20.0, None)), True),  # new values only
        (InstanceSample("web", 0, "host-b", 0, _stats("lvmss-web-0", 20.0, None)), False),  # moved: new labels
        (InstanceSample("web", 0, "host-a", 1, _stats("lvmss-web-0", 20.0, None)), False),
    ],
)
def test_an_instances_label_set_is_kept_between_scrapes_while_its_labels_stay(
    second: InstanceSample, kept: bool
) -> None:
    scrapes = iter([[SAMPLES[0]], [second], []])
    collector = InstanceCollector(lambda: next(scrapes))

    def cpu() -> list[tuple[object, float]]:
        family = next(f for f in collector.collect() if f.name == "localvmss_instance_cpu_seconds")
        return list(family.series)  # type: ignore[attr-defined]

    [(first_labels, _)] = cpu()
    [(second_labels, value)] = cpu()
    assert (second_labels is first_labels) is kept
    assert dict(zip(INSTANCE_LABELS, second_labels.values, strict=True)) == {  # type: ignore[attr-defined]
        "scale_set": "web",
        "instance_id": "0",
        "host": second.host,
        "fault_domain": str(second.fault_domain),
    }
    assert value == 20.0
    assert cpu() == [] and collector._labels == {}, "an instance gone is forgotten"


@pytest.mark.parametrize(("before", "after"), [("healthy", "healthy"), ("healthy", "unhealthy"), ("odd", "unknown")])
def test_health_series_follow_the_state_and_are_kept_while_it_stays(before: str, after: str) -> None:
    snapshots = iter(
        StatusSnapshot([], [InstanceStatus("web", 0, "h", state, "Succeeded")], []) for state in (before, after)
    )
    collector = StatusCollector(lambda: next(snapshots))

    def health() -> list[tuple[object, float]]:
        family = next(f for f in collector.collect() if f.name == "localvmss_instance_health")
        return list(family.series)  # type: ignore[attr-defined]

    first, second = health(), health()
    current = after if after in HEALTH_STATES else "unknown"
    assert [
        (dict(zip(("scale_set", "instance_id", "host", "state"), ls.values, strict=True))["state"], v)
        for ls, v in second
    ] == [(state, int(state == current)) for state in HEALTH_STATES]  # type: ignore[attr-defined]
    assert (first == second) is ((before if before in HEALTH_STATES else "unknown") == current)


def test_failing_source_exposes_nothing_but_keeps_the_page() -> None:
    def broken() -> Iterable[InstanceSample]:
        raise HostUnavailable("host-a did not answer")

    registry = CollectorRegistry()
    registry.register(InstanceCollector(broken))
    metrics = DaemonMetrics(registry)
    metrics.action("create", "success")
    page = _exposition(registry)
    assert "localvmss_instance_cpu_seconds_total" not in page
    assert page["localvmss_actions_total"] == [({"kind": "create", "result": "success"}, 1.0)]


def test_scale_set_metrics() -> None:
    registry = CollectorRegistry()
    registry.register(ScaleSetCollector(lambda: [ScaleSetSample("web", 3, 2, 1), ScaleSetSample("api", 1, 1, 1)]))
    page = _exposition(registry)

    def by_set(name: str) -> dict[str, float]:
        return {labels["scale_set"]: value for labels, value in page[name]}

    assert by_set("localvmss_scale_set_capacity_desired") == {"web": 3, "api": 1}
    assert by_set("localvmss_scale_set_capacity_actual") == {"web": 2, "api": 1}
    assert by_set("localvmss_scale_set_healthy_instances") == {"web": 1, "api": 1}


def test_daemon_metrics() -> None:
    registry = CollectorRegistry()
    metrics = DaemonMetrics(registry)
    metrics.observe_reconcile(0.02)
    metrics.observe_reconcile(1.5)
    metrics.action("scale_out", "success")
    metrics.action("scale_out", "success")
    metrics.action("delete", "failure")
    metrics.error("HostUnavailable")
    metrics.error(TemporaryError("prometheus down"))
    metrics.error(ValueError("x"))
    page = _exposition(registry)

    assert page["localvmss_reconcile_duration_seconds_count"] == [({}, 2.0)]
    buckets = {labels["le"]: v for labels, v in page["localvmss_reconcile_duration_seconds_bucket"]}
    assert buckets["+Inf"] == 2.0
    assert buckets["0.025"] >= 1.0
    actions = {(labels["kind"], labels["result"]): v for labels, v in page["localvmss_actions_total"]}
    assert actions == {("scale_out", "success"): 2.0, ("delete", "failure"): 1.0}
    errors = {labels["kind"]: v for labels, v in page["localvmss_errors_total"]}
    assert errors == {"HostUnavailable": 1.0, "TemporaryError": 1.0, "ValueError": 1.0}


def test_build_info_and_process_metrics() -> None:
    registry = CollectorRegistry()
    metrics = DaemonMetrics(registry)
    page = _exposition(registry)
    [(labels, value)] = page["localvmss_build_info"]
    assert value == 1 and labels == build_labels()
    assert set(labels) == {"version", "python", "libvirt"} and all(labels.values())
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "python_info"):
        assert name in page, name
    # Webhook results exist at 0 before the first delivery, so rates and alerts have a series.
    assert {labels["result"]: v for labels, v in page["localvmss_autoscale_webhook_deliveries_total"]} == {
        "success": 0.0,
        "failure": 0.0,
        "dropped": 0.0,
    }
    metrics.webhook_result("success")
    metrics.autoscale_evaluated("api")  # both directions at 0: a first action is an increase
    metrics.autoscale_action("web", "out")
    page = _exposition(registry)
    assert ({"result": "success"}, 1.0) in page["localvmss_autoscale_webhook_deliveries_total"]
    actions = {(labels["scale_set"], labels["direction"]): v for labels, v in page["localvmss_autoscale_actions_total"]}
    assert actions == {("api", "out"): 0.0, ("api", "in"): 0.0, ("web", "out"): 1.0}


STATUS = StatusSnapshot(
    sets=[
        SetStatus("web", "Uniform", "Succeeded", True, False, AutoscaleLimits("default", 2, 5, 3, True)),
        SetStatus("api", "Flexible", "Failed", False, False, None),
    ],
    instances=[
        InstanceStatus("web", 0, "host-a", "healthy", "Succeeded"),
        InstanceStatus("web", 1, "host-b", "unhealthy", "Succeeded"),
        InstanceStatus("api", 0, "host-a", "odd", "Creating"),
    ],
    hosts=[HostStatus("host-a", "1", True), HostStatus("host-b", "", False)],
)


@pytest.mark.parametrize(
    ("metric", "key", "expected"),
    [
        (
            "localvmss_scale_set_info",
            ("scale_set", "mode", "provisioning_state"),
            {("web", "Uniform", "Succeeded"): 1, ("api", "Flexible", "Failed"): 1},
        ),
        ("localvmss_scale_set_automatic_repairs_enabled", ("scale_set",), {("web",): 1, ("api",): 0}),
        ("localvmss_scale_set_automatic_repairs_suspended", ("scale_set",), {("web",): 0, ("api",): 0}),
        ("localvmss_autoscale_enabled", ("scale_set",), {("web",): 1}),
        ("localvmss_autoscale_capacity_minimum", ("scale_set", "profile"), {("web", "default"): 2}),
        ("localvmss_autoscale_capacity_maximum", ("scale_set", "profile"), {("web", "default"): 5}),
        ("localvmss_autoscale_capacity_default", ("scale_set", "profile"), {("web", "default"): 3}),
        (
            "localvmss_instance_health",
            ("scale_set", "instance_id", "state"),
            {
                ("web", "0", "healthy"): 1,
                ("web", "0", "unhealthy"): 0,
                ("web", "0", "unknown"): 0,
                ("web", "0", "initializing"): 0,
                ("web", "1", "healthy"): 0,
                ("web", "1", "unhealthy"): 1,
                ("web", "1", "unknown"): 0,
                ("web", "1", "initializing"): 0,
                ("api", "0", "healthy"): 0,
                ("api", "0", "unhealthy"): 0,
                ("api", "0", "unknown"): 1,
                ("api", "0", "initializing"): 0,
            },
        ),
        ("localvmss_host_available", ("host", "zone"), {("host-a", "1"): 1, ("host-b", ""): 0}),
    ],
)
def test_status_metrics(metric: str, key: tuple[str, ...], expected: dict[tuple[str, ...], float]) -> None:
    registry = CollectorRegistry()
    registry.register(StatusCollector(lambda: STATUS))
    page = _exposition(registry)
    assert {tuple(labels[k] for k in key): v for labels, v in page[metric]} == expected


def test_failing_status_source_keeps_the_page() -> None:
    def broken() -> StatusSnapshot:
        raise HostUnavailable("store gone")

    registry = CollectorRegistry()
    registry.register(StatusCollector(broken))
    DaemonMetrics(registry, process=False)
    page = _exposition(registry)
    assert "localvmss_build_info" in page and "localvmss_host_available" not in page


@pytest.mark.parametrize(
    ("setting", "state", "expected"),
    [
        (
            {"profiles": [{"name": "d", "capacity": {"minimum": 1, "maximum": 4, "default": 2}}]},
            {},
            AutoscaleLimits("d", 1, 4, 2, True),
        ),
        (
            {
                "enabled": False,
                "profiles": [
                    {"name": "night", "capacity": {"minimum": 0, "maximum": 1, "default": 0}, "recurrence": {}},
                    {"name": "d", "capacity": {"minimum": 1, "maximum": 4, "default": 2}},
                ],
            },
            {},
            AutoscaleLimits("d", 1, 4, 2, False),
        ),
        (
            {"profiles": [{"name": "d", "capacity": {"minimum": 1, "maximum": 4, "default": 2}}]},
            {"limits": {"profile": "night", "minimum": 0, "maximum": 1, "default": 0}},
            AutoscaleLimits("night", 0, 1, 0, True),
        ),
        ({"profiles": [{"name": "d", "capacity": {}}]}, {"limits": "junk"}, None),
        ({"profiles": []}, {}, None),
    ],
)
def test_autoscale_limits_from_the_store(
    setting: dict[str, object], state: dict[str, object], expected: AutoscaleLimits | None
) -> None:
    assert autoscale_limits(setting, state) == expected


def test_start_exporter_serves_on_loopback_and_stops() -> None:
    registry = CollectorRegistry()
    registry.register(ScaleSetCollector(lambda: [ScaleSetSample("web", 2, 2, 2)]))
    server, port = start_exporter(registry)
    try:
        assert port > 0 and server.address == "127.0.0.1"
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert response.status_code == 200
        assert 'localvmss_scale_set_capacity_desired{scale_set="web"} 2.0' in response.text
    finally:
        server.stop()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)


# -- file_sd ------------------------------------------------------------------------------------


def test_file_sd_document(tmp_path: Path) -> None:
    path = tmp_path / "sd" / "guests.json"
    targets = [
        ("10.0.0.5:80", {"scale_set": "web", "instance_id": "0"}),
        ("10.0.0.6:80", {"scale_set": "web", "instance_id": "1"}),
    ]
    write_file_sd(path, targets)
    assert json.loads(path.read_text()) == [
        {"targets": ["10.0.0.5:80"], "labels": {"instance_id": "0", "scale_set": "web"}},
        {"targets": ["10.0.0.6:80"], "labels": {"instance_id": "1", "scale_set": "web"}},
    ]
    assert read_file_sd(path) == targets
    assert os.stat(path).st_mode & 0o777 == 0o644
    write_file_sd(path, [])
    assert json.loads(path.read_text()) == []
    assert [p.name for p in path.parent.iterdir()] == ["guests.json"]  # no temporary files left


def test_file_sd_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InvalidSpec, match="label name"):
        render_file_sd([("a:1", {"__address__": "x"})])
    with pytest.raises(InvalidSpec, match="label name"):
        render_file_sd([("a:1", {"bad-name": "x"})])
    with pytest.raises(InvalidSpec, match="host:port"):
        render_file_sd([("http://a:1/x", {})])
    with pytest.raises(InvalidSpec, match=r"\.json"):
        write_file_sd(tmp_path / "guests.txt", [])
    assert read_file_sd(tmp_path / "missing.json") == []


def test_file_sd_failed_write_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "guests.json"
    write_file_sd(path, [("10.0.0.5:80", {"scale_set": "web"})])

    def fail(*_args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_file_sd(path, [])
    assert read_file_sd(path) == [("10.0.0.5:80", {"scale_set": "web"})]
    assert [p.name for p in tmp_path.iterdir()] == ["guests.json"]
