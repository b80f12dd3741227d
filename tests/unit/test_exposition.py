"""metrics/exposition.py writes, byte for byte, what prometheus_client writes.

Golden comparisons: the page ``render`` makes from the exporter's collectors against
prometheus_client's own encoder over the families the collectors made before SeriesFamily
(CounterMetricFamily and GaugeMetricFamily, rebuilt here as they were), for every format and
escaping a scraper can ask for; and the WSGI app against prometheus_client's ``make_wsgi_app``.
"""

from __future__ import annotations

import gzip
import io
import math
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from localvmss.metrics.exporter import (
    HEALTH_STATES,
    INSTANCE_LABELS,
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
)
from localvmss.metrics.exposition import SeriesFamily, render, wsgi_app
from localvmss.virt.stats import DomainStats


def _stats(name: str, state: int, cpu: float, usable: int | None, disk: int) -> DomainStats:
    return DomainStats(name, state, cpu, 2, 512 * 2**20, 200 * 2**20, None, usable, disk, 8192, 10**15, 0)


SAMPLES = [
    InstanceSample("web", 0, "host-a", 0, _stats("a", 1, 12.5, 300 * 2**20, 4096)),
    InstanceSample("web", 1, "host-b", 1, _stats("b", 1, 3.25, None, 0)),
    InstanceSample("web", 2, "host-a", 2, _stats("c", 5, 0.0, None, 0)),  # shut off: not exported
    # Hostile label values: quote, backslash, newline, non-ASCII; odd values.
    InstanceSample('we"b\\x\n', 3, "hôst-ü", 0, _stats("d", 1, math.inf, 1, 2**63)),
    InstanceSample("api", 10, "host-a", 1, _stats("e", 3, math.nan, 0, 1234567)),
]
STATUS = StatusSnapshot(
    [SetStatus("web", "Uniform", "Succeeded", True, False, None)],
    [
        InstanceStatus("web", 0, "host-a", "healthy", "Succeeded"),
        InstanceStatus("web", 1, "host-b", "initializing", "Creating"),
        InstanceStatus('we"b\\x\n', 3, "hôst-ü", "something-else", "Failed"),  # not a state: unknown
    ],
    [HostStatus("host-a", "1", True), HostStatus("host-b", "", False)],
)


class OldInstanceCollector(Collector):
    """The families InstanceCollector and StatusCollector's health made before SeriesFamily."""

    def collect(self) -> Iterator[Metric]:
        kinds = {
            "localvmss_instance_cpu_seconds": (CounterMetricFamily, "cpu_seconds"),
            "localvmss_instance_vcpus": (GaugeMetricFamily, "vcpus"),
            "localvmss_instance_memory_bytes": (GaugeMetricFamily, "memory_bytes"),
            "localvmss_instance_memory_rss_bytes": (GaugeMetricFamily, "rss_bytes"),
            "localvmss_instance_memory_available_bytes": (GaugeMetricFamily, "usable_bytes"),
            "localvmss_instance_disk_read_bytes": (CounterMetricFamily, "disk_read_bytes"),
            "localvmss_instance_disk_write_bytes": (CounterMetricFamily, "disk_write_bytes"),
            "localvmss_instance_network_receive_bytes": (CounterMetricFamily, "net_rx_bytes"),
            "localvmss_instance_network_transmit_bytes": (CounterMetricFamily, "net_tx_bytes"),
        }
        new = {f.name: f for f in InstanceCollector(lambda: []).collect()}
        for name, (cls, field) in kinds.items():
            family = cls(name, new[name].documentation, labels=INSTANCE_LABELS)
            for s in SAMPLES:
                value = getattr(s.stats, field)
                if s.stats.state not in (5, 6) and value is not None:
                    family.add_metric([s.scale_set, str(s.instance_id), s.host, str(s.fault_domain)], value)
            yield family


def _new_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    DaemonMetrics(registry, process=False).action("create")
    registry.register(InstanceCollector(lambda: SAMPLES))
    registry.register(ScaleSetCollector(lambda: [ScaleSetSample("web", 3, 2, 1, standby=(("Paused", 1),))]))
    registry.register(StatusCollector(lambda: STATUS))
    return registry


ACCEPT = [
    None,
    "text/plain",
    "text/plain;version=0.0.4",
    "text/plain;version=1.0.0;escaping=allow-utf-8",
    "text/plain;version=1.0.0;escaping=underscores",
    "text/plain;version=1.0.0;escaping=dots",
    "text/plain;version=1.0.0;escaping=values",
    "application/openmetrics-text",
    "application/openmetrics-text;version=1.0.0",
    # What Prometheus 3 sends by default.
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,"
    "text/plain;version=0.0.4;q=0.2,*/*;q=0.1",
    "application/openmetrics-text;version=1.0.0;escaping=dots",
    "application/openmetrics-text;version=1.0.0;escaping=values",
]


@pytest.mark.parametrize("accept", ACCEPT)
def test_render_is_prometheus_clients_page(accept: str | None) -> None:
    registry = _new_registry()
    encoder, content_type = choose_encoder(accept or "")
    page, rendered_type = render(registry, accept)
    assert rendered_type == content_type
    assert page.decode() == encoder(registry).decode()


@pytest.mark.parametrize("accept", ACCEPT)
def test_instance_families_are_the_old_families(accept: str | None) -> None:
    new = CollectorRegistry()
    new.register(InstanceCollector(lambda: SAMPLES))
    old = CollectorRegistry()
    old.register(OldInstanceCollector())
    encoder, _ = choose_encoder(accept or "")
    assert render(new, accept)[0].decode() == encoder(old).decode()


def test_health_is_the_old_one_hot_family() -> None:
    old = GaugeMetricFamily("localvmss_instance_health", "", labels=["scale_set", "instance_id", "host", "state"])
    for i in STATUS.instances:
        for state in HEALTH_STATES:
            value = 1 if i.health == state or (state == "unknown" and i.health not in HEALTH_STATES) else 0
            old.add_metric([i.scale_set, str(i.instance_id), i.host, state], value)
    health = next(f for f in StatusCollector(lambda: STATUS).collect() if f.name == "localvmss_instance_health")
    assert health.samples == old.samples


@pytest.mark.parametrize(
    ("name", "kind", "labels", "error"),
    [
        ("a.b", "gauge", ["x"], "needs escaping"),
        ("ok", "gauge", ["x-y"], "needs escaping"),
        ("ok", "gauge", ["__name__"], "reserved"),
        ("1abc", "counter", [], "needs escaping"),
    ],
)
def test_series_family_refuses_names_that_need_escaping(name: str, kind: Any, labels: list[str], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        SeriesFamily(name, "doc", kind, labels)


@pytest.mark.parametrize(
    ("name", "kind", "family_name", "sample_name"),
    [
        ("x_total", "counter", "x", "x_total"),
        ("x", "counter", "x", "x_total"),
        ("x_total", "gauge", "x_total", "x_total"),
    ],
)
def test_series_family_names_as_prometheus_client(name: str, kind: Any, family_name: str, sample_name: str) -> None:
    family = SeriesFamily(name, "doc", kind, [])
    family.add((), 1)
    assert (family.name, [s.name for s in family.samples]) == (family_name, [sample_name])
    assert render(_Only(family))[0] == choose_encoder("")[0](_Only(family))


class _Only(Collector):
    def __init__(self, family: Metric) -> None:
        self.family = family

    def collect(self) -> Iterator[Metric]:
        yield self.family


def _call(
    app: Any, method: str, path: str = "/metrics", query: str = "", **headers: str
) -> tuple[str, dict[str, str], bytes]:
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "wsgi.input": io.BytesIO(),
        **{f"HTTP_{k.upper()}": v for k, v in headers.items()},
    }
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        answer.update(status=status, headers=dict(headers))

    body = b"".join(app(environ, start_response))
    if answer["headers"].get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    return answer["status"], answer["headers"], body


@pytest.mark.parametrize(
    ("method", "path", "query", "headers"),
    [
        ("GET", "/metrics", "", {}),
        ("GET", "/anything", "", {"accept": "application/openmetrics-text;version=1.0.0"}),
        ("GET", "/metrics", "", {"accept_encoding": "gzip, deflate"}),
        ("GET", "/metrics", "name[]=localvmss_instance_vcpus&name[]=localvmss_actions_total", {}),
        ("GET", "/favicon.ico", "", {}),
        ("OPTIONS", "/metrics", "", {}),
        ("POST", "/metrics", "", {}),
    ],
)
def test_wsgi_app_answers_as_prometheus_clients(method: str, path: str, query: str, headers: dict[str, str]) -> None:
    registry = _new_registry()
    assert _call(wsgi_app(registry), method, path, query, **headers) == _call(
        make_wsgi_app(registry), method, path, query, **headers
    )


def test_values_are_written_as_prometheus_client_writes_them() -> None:
    family = SeriesFamily("odd_values", "doc", "gauge", ["i"])
    values: list[float] = [0, -0.0, 0.0, 1, True, 1.0, 2**70, -5, 10**7, 1e-300, math.inf, -math.inf, math.nan, 0, -0.0]
    for index, value in enumerate(values):
        family.add((str(index),), value)
    for _ in range(2):  # the second time from what was kept
        assert render(_Only(family))[0] == choose_encoder("")[0](_Only(family))


@pytest.mark.parametrize(
    ("labels", "values", "error"),
    [
        ([("a",), ("b",)], [1, 2], None),
        ([("a",)], [1, 2], "1 label sets for 2 values"),
        ([("a", "x")], [1], "a label set of"),  # made for other label names
    ],
)
def test_series_family_extend_takes_label_sets_of_its_own_names(
    labels: list[tuple[str, ...]], values: list[float], error: str | None
) -> None:
    family = SeriesFamily("f", "doc", "gauge", ["i"])
    other = SeriesFamily("g", "doc", "gauge", ["i", "j"])
    sets = [(family if len(v) == 1 else other).label_set(v) for v in labels]
    if error is None:
        family.extend(sets, values)
        assert [(ls.values, v) for ls, v in family.series] == list(zip(labels, values, strict=True))
    else:
        with pytest.raises(ValueError, match=error):
            family.extend(sets, values)
        assert family.series == []


def test_families_sharing_label_sets_write_each_its_own_values() -> None:
    cpu = SeriesFamily("cpu", "doc", "counter", ["i"])
    vcpus = SeriesFamily("vcpus", "doc", "gauge", ["i"])
    vcpus.share_label_sets(cpu)
    cpu.add(("0",), 1.5)
    vcpus.values.append(2)
    assert [s.value for s in vcpus.samples] == [2] and [s.value for s in cpu.samples] == [1.5]
    with pytest.raises(ValueError, match="cannot share"):
        SeriesFamily("x", "doc", "gauge", ["j"]).share_label_sets(cpu)
