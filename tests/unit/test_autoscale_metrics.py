"""Metric catalogue: query shapes, durations, dimensions, raw queries; PromQL checked by promtool
(syntax of every combination, and values on synthetic series) when promtool is installed."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from localvmss.autoscale.metrics_catalog import (
    CATALOG,
    build_query,
    canonical_metric_name,
    is_load_proportional,
    known_metric_names,
    prom_duration,
)
from localvmss.autoscale.settings import MetricTrigger, Statistic, TimeAggregation
from localvmss.errors import InvalidSpec


def trigger(**fields: Any) -> MetricTrigger:
    data: dict[str, Any] = {"metricName": "Percentage CPU", "operator": "GreaterThan", "threshold": 1}
    data.update(fields)
    return MetricTrigger.model_validate(data)


HOST_CPU = (
    '100 * rate(localvmss_instance_cpu_seconds_total{scale_set="web"}[1m]) / localvmss_instance_vcpus{scale_set="web"}'
)
GUEST_CPU = (
    '100 * sum by (scale_set, instance_id) (rate(node_cpu_seconds_total{job="localvmss-guest",mode!="idle",'
    'scale_set="web"}[1m])) / count by (scale_set, instance_id) '
    '(node_cpu_seconds_total{job="localvmss-guest",mode="idle",scale_set="web"})'
)


@pytest.mark.parametrize(
    "fields,expected",
    [
        ({}, f"avg(avg_over_time(({HOST_CPU})[5m:1m]))"),
        (
            {"timeWindow": "PT2M", "timeAggregation": "Maximum"},
            f"avg(max_over_time(({HOST_CPU})[2m:1m]))",
        ),
        (
            {"timeGrain": "PT30S", "timeWindow": "PT1M30S", "timeAggregation": "Minimum"},
            'avg(min_over_time((100 * rate(localvmss_instance_cpu_seconds_total{scale_set="web"}[30s])'
            ' / localvmss_instance_vcpus{scale_set="web"})[90s:30s]))',
        ),
        ({"timeAggregation": "Total"}, f"avg(sum_over_time(({HOST_CPU})[5m:1m]))"),
        ({"timeAggregation": "Count"}, f"avg(count_over_time(({HOST_CPU})[5m:1m]))"),
        ({"timeAggregation": "Last"}, f"avg(last_over_time(({HOST_CPU})[5m:1m]))"),
        # counters: one value per grain, so Min/Max/Sum are the same rate; Count counts samples
        ({"statistic": "Max"}, f"avg(avg_over_time(({HOST_CPU})[5m:1m]))"),
        (
            {"statistic": "Count"},
            'avg(avg_over_time((count_over_time(localvmss_instance_cpu_seconds_total{scale_set="web"}[1m]))[5m:1m]))',
        ),
        ({"metricName": "Guest Percentage CPU"}, f"avg(avg_over_time(({GUEST_CPU})[5m:1m]))"),
        # gauges: the statistic is *_over_time within the grain
        (
            {"metricName": "Available Memory Bytes", "statistic": "Min"},
            "avg(avg_over_time((min_over_time(localvmss_instance_memory_available_bytes"
            '{scale_set="web"}[1m]))[5m:1m]))',
        ),
        (
            {"metricName": "Guest Available Memory Bytes", "statistic": "Sum", "timeAggregation": "Last"},
            'avg(last_over_time((sum_over_time(node_memory_MemAvailable_bytes{job="localvmss-guest",'
            'scale_set="web"}[1m]))[5m:1m]))',
        ),
        (
            {"metricName": "Network In Total", "timeAggregation": "Total", "timeWindow": "PT1H"},
            "avg(sum_over_time((increase(localvmss_instance_network_receive_bytes_total"
            '{scale_set="web"}[1m]))[1h:1m]))',
        ),
        (
            {"metricName": "Network Out Total"},
            "avg(avg_over_time((increase(localvmss_instance_network_transmit_bytes_total"
            '{scale_set="web"}[1m]))[5m:1m]))',
        ),
        (
            {"metricName": "Disk Read Bytes"},
            'avg(avg_over_time((increase(localvmss_instance_disk_read_bytes_total{scale_set="web"}[1m]))[5m:1m]))',
        ),
        (
            {"metricName": "disk write bytes"},
            'avg(avg_over_time((increase(localvmss_instance_disk_write_bytes_total{scale_set="web"}[1m]))[5m:1m]))',
        ),
        # dimensions become label matchers on every selector
        (
            {
                "metricName": "Network In Total",
                "dimensions": [
                    {"DimensionName": "instance_id", "Operator": "Equals", "Values": ["0", "3"]},
                    {"DimensionName": "host", "Operator": "NotEquals", "Values": ["h1.lab"]},
                ],
            },
            "avg(avg_over_time((increase(localvmss_instance_network_receive_bytes_total"
            '{scale_set="web",instance_id=~"0|3",host!~"h1\\\\.lab"}[1m]))[5m:1m]))',
        ),
    ],
)
def test_build_query(fields: dict[str, Any], expected: str) -> None:
    assert build_query(trigger(**fields), "web") == expected


def test_raw_query_substitution() -> None:
    t = trigger(query='sum(rate(x{scale_set="$scale_set"}[1m])) / count(up{set="${scale_set}"})')
    assert build_query(t, "api-2") == 'sum(rate(x{scale_set="api-2"}[1m])) / count(up{set="api-2"})'


@pytest.mark.parametrize("name", ["Web", "a b", 'x"}', "", "-x"])
def test_build_query_rejects_unsafe_scale_set(name: str) -> None:
    with pytest.raises(InvalidSpec, match="scale set name"):
        build_query(trigger(), name)


def test_unsafe_dimension_value() -> None:
    t = trigger(dimensions=[{"DimensionName": "host", "Values": ['a"}or vector(1)']}])
    with pytest.raises(InvalidSpec, match="dimension value"):
        build_query(t, "web")


@pytest.mark.parametrize(
    "td,expected",
    [
        (timedelta(seconds=15), "15s"),
        (timedelta(seconds=90), "90s"),
        (timedelta(minutes=1), "1m"),
        (timedelta(minutes=5), "5m"),
        (timedelta(minutes=90), "90m"),
        (timedelta(hours=1), "1h"),
        (timedelta(hours=12), "12h"),
        (timedelta(days=1), "24h"),
        (timedelta(seconds=1.5), "1500ms"),
    ],
)
def test_prom_duration(td: timedelta, expected: str) -> None:
    assert prom_duration(td) == expected


@pytest.mark.parametrize("td", [timedelta(0), timedelta(seconds=-5)])
def test_prom_duration_rejects(td: timedelta) -> None:
    with pytest.raises(InvalidSpec):
        prom_duration(td)


@pytest.mark.parametrize(
    "fields,expected",
    [
        ({}, True),
        ({"metricName": "Guest Percentage CPU"}, True),
        ({"metricName": "Network Out Total"}, True),
        ({"metricName": "Disk Read Bytes"}, True),
        ({"metricName": "Available Memory Bytes"}, False),
        ({"metricName": "Guest Available Memory Bytes"}, False),
        ({"statistic": "Count"}, False),
        ({"timeAggregation": "Count"}, False),
        ({"query": "sum(up)"}, True),
    ],
)
def test_is_load_proportional(fields: dict[str, Any], expected: bool) -> None:
    assert is_load_proportional(trigger(**fields)) is expected


def test_catalogue_names() -> None:
    assert known_metric_names() == [
        "Percentage CPU",
        "Available Memory Bytes",
        "Guest Percentage CPU",
        "Guest Available Memory Bytes",
        "Network In Total",
        "Network Out Total",
        "Disk Read Bytes",
        "Disk Write Bytes",
    ]
    assert canonical_metric_name("  percentage   CPU ") == "Percentage CPU"
    with pytest.raises(ValueError, match="known metrics: Percentage CPU"):
        canonical_metric_name("CPU")


# ---------------------------------------------------------------------------------- promtool
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")


def _promtool(args: list[str]) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False)


@needs_promtool
def test_every_combination_is_valid_promql(tmp_path: Path) -> None:
    rules: list[dict[str, str]] = []
    for name in CATALOG:
        for stat in Statistic:
            for agg in TimeAggregation:
                t = trigger(metricName=name, statistic=stat.value, timeAggregation=agg.value)
                rules.append({"record": f"r{len(rules)}", "expr": build_query(t, "web")})
    path = tmp_path / "rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "all", "rules": rules}]}))  # JSON is YAML
    result = _promtool(["check", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr


def _labels(instance: str, **extra: str) -> str:
    base = {"scale_set": "web", "instance_id": instance, "host": f"h{instance}", "fault_domain": instance}
    base.update(extra)
    return "{" + ",".join(f'{k}="{v}"' for k, v in base.items()) + "}"


def _guest(instance: str, cpu: str, mode: str) -> str:
    return "{" + f'job="localvmss-guest",scale_set="web",instance_id="{instance}",cpu="{cpu}",mode="{mode}"' + "}"


# 15 s steps, 41 samples = 10 minutes; evaluated at 10m.
SERIES = [
    # host CPU, 2 vCPUs each: instance 0 busy 1 CPU (50%), instance 1 busy 0.5 CPU (25%)
    (f"localvmss_instance_cpu_seconds_total{_labels('0')}", "0+15x40"),
    (f"localvmss_instance_vcpus{_labels('0')}", "2x40"),
    (f"localvmss_instance_cpu_seconds_total{_labels('1')}", "0+7.5x40"),
    (f"localvmss_instance_vcpus{_labels('1')}", "2x40"),
    # available memory: instance 0 steady 1000 but 5000 from 7m15s to 7m45s; instance 1 steady 3000
    (f"localvmss_instance_memory_available_bytes{_labels('0')}", "1000x28 5000x2 1000x10"),
    (f"localvmss_instance_memory_available_bytes{_labels('1')}", "3000x40"),
    # network in: 1000 B/s and 3000 B/s
    (f"localvmss_instance_network_receive_bytes_total{_labels('0')}", "0+15000x40"),
    (f"localvmss_instance_network_receive_bytes_total{_labels('1')}", "0+45000x40"),
    # guest CPU, instance 0 with 2 CPUs: cpu0 80% busy, cpu1 20% busy -> 50%
    (f"node_cpu_seconds_total{_guest('0', '0', 'user')}", "0+12x40"),
    (f"node_cpu_seconds_total{_guest('0', '0', 'idle')}", "0+3x40"),
    (f"node_cpu_seconds_total{_guest('0', '1', 'user')}", "0+3x40"),
    (f"node_cpu_seconds_total{_guest('0', '1', 'idle')}", "0+12x40"),
    # instance 1 with 1 CPU, 10% busy
    (f"node_cpu_seconds_total{_guest('1', '0', 'system')}", "0+1.5x40"),
    (f"node_cpu_seconds_total{_guest('1', '0', 'idle')}", "0+13.5x40"),
    ('node_memory_MemAvailable_bytes{job="localvmss-guest",scale_set="web",instance_id="0"}', "100x40"),
    ('node_memory_MemAvailable_bytes{job="localvmss-guest",scale_set="web",instance_id="1"}', "300x40"),
    # another set that must not leak in
    ('localvmss_instance_cpu_seconds_total{scale_set="other",instance_id="0"}', "0+150x40"),
    ('localvmss_instance_vcpus{scale_set="other",instance_id="0"}', "1x40"),
]

# Cases whose value does not depend on whether range selectors include their left edge
# (Prometheus 2 includes it, Prometheus 3 does not).
VALUE_CASES: list[tuple[dict[str, Any], float]] = [
    ({}, 37.5),
    ({"timeAggregation": "Maximum", "timeWindow": "PT2M"}, 37.5),
    ({"timeAggregation": "Last"}, 37.5),
    ({"dimensions": [{"DimensionName": "instance_id", "Values": ["0"]}]}, 50.0),
    ({"dimensions": [{"DimensionName": "host", "Operator": "NotEquals", "Values": ["h0"]}]}, 25.0),
    ({"metricName": "Guest Percentage CPU"}, 30.0),
    ({"metricName": "Guest Available Memory Bytes"}, 200.0),
    ({"metricName": "Network In Total"}, 120000.0),  # (60000 + 180000) / 2 per minute
    # per-grain Max sees the spike, window Maximum keeps it: (5000 + 3000) / 2
    ({"metricName": "Available Memory Bytes", "statistic": "Max", "timeAggregation": "Maximum"}, 4000.0),
    # per-grain Min never sees it
    ({"metricName": "Available Memory Bytes", "statistic": "Min", "timeAggregation": "Maximum"}, 2000.0),
    # the window's Minimum and Last do not either
    ({"metricName": "Available Memory Bytes", "statistic": "Max", "timeAggregation": "Minimum"}, 2000.0),
    ({"metricName": "Available Memory Bytes", "statistic": "Max", "timeAggregation": "Last"}, 2000.0),
]


@needs_promtool
def test_queries_compute_the_documented_values(tmp_path: Path) -> None:
    exprs = [
        {
            "expr": build_query(trigger(**fields), "web"),
            "eval_time": "10m",
            "exp_samples": [{"labels": "{}", "value": value}],
        }
        for fields, value in VALUE_CASES
    ]
    doc = {
        "rule_files": [],
        "evaluation_interval": "15s",
        "tests": [
            {
                "interval": "15s",
                "input_series": [{"series": s, "values": v} for s, v in SERIES],
                "promql_expr_test": exprs,
            }
        ],
    }
    path = tmp_path / "test.yml"
    path.write_text(json.dumps(doc))
    result = _promtool(["test", "rules", str(path)])
    assert result.returncode == 0, result.stdout + result.stderr
