"""Azure metric names -> PromQL on the series localvmss exports (docs/CONTRACTS.md).

Query shape (``build_query``), for a trigger with statistic S, timeGrain G, timeWindow W and
timeAggregation A on scale set ``web``::

    avg( A_over_time( (<per-instance value of S over one grain G>)[W:G] ) )

1. The *statistic* is applied per instance per time grain (Azure's "time grain statistic"):
   - gauges (available memory): ``S_over_time(metric{...}[G])`` with S in avg/min/max/sum/count;
   - counters (CPU, disk, network): one grain has exactly one value per instance, the
     ``rate`` (CPU) or ``increase`` (bytes) over the grain, so Average, Min, Max and Sum are
     that value, and Count is the number of raw samples in the grain (``count_over_time``).
     The rate window is the grain itself, so grains shorter than two scrape intervals give
     no data.
2. The *timeAggregation* combines the grains of the time window with a subquery
   ``[W:G]``: Average->avg_over_time, Minimum->min_over_time, Maximum->max_over_time,
   Total->sum_over_time, Count->count_over_time, Last->last_over_time.
3. The instances are then averaged, as Azure averages a scale set's metric across its
   instances: ``avg(...)`` gives one number.

Example, Percentage CPU, Average/Average, PT1M grain, PT5M window::

    avg(avg_over_time((100 * rate(localvmss_instance_cpu_seconds_total{scale_set="web"}[1m])
        / localvmss_instance_vcpus{scale_set="web"})[5m:1m]))

A raw ``query`` is used as written, with ``$scale_set`` (or ``${scale_set}``) replaced by the
set's name; names are validated safe (``model.validate_name``), so no quoting is needed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from localvmss.errors import InvalidSpec
from localvmss.model import validate_name

if TYPE_CHECKING:
    from localvmss.autoscale.settings import Dimension, MetricSource

__all__ = [
    "CATALOG",
    "GUEST_JOB",
    "MetricDef",
    "build_query",
    "canonical_metric_name",
    "is_load_proportional",
    "known_metric_names",
    "prom_duration",
]

GUEST_JOB = "localvmss-guest"
HOST_LABELS = frozenset({"instance_id", "host", "fault_domain"})
GUEST_LABELS = frozenset({"instance_id"})

# Azure statistic -> PromQL *_over_time function for gauges.
_STAT_FN = {"Average": "avg", "Min": "min", "Max": "max", "Sum": "sum", "Count": "count"}
# Azure timeAggregation -> PromQL *_over_time function.
_AGG_FN = {
    "Average": "avg_over_time",
    "Minimum": "min_over_time",
    "Maximum": "max_over_time",
    "Total": "sum_over_time",
    "Count": "count_over_time",
    "Last": "last_over_time",
}
# Label values end up inside a PromQL regex in a double-quoted string: keep them plain.
# Used with fullmatch: "$" would also match before a trailing newline.
_SAFE_LABEL_VALUE = re.compile(r"[A-Za-z0-9_.:-]{1,128}")

# (selector, grain, statistic) -> per-instance, per-grain PromQL expression.
PerGrain = Callable[[str, str, str], str]


@dataclass(frozen=True)
class MetricDef:
    """One catalogue entry."""

    name: str
    unit: str
    description: str
    dimensions: frozenset[str]
    # True when the per-instance value shrinks as instances are added (load spread over more
    # instances): the flapping estimate projects such values to a new capacity.
    load_proportional: bool
    per_grain: PerGrain


def _sel(*matchers: str) -> str:
    return "{" + ",".join(m for m in matchers if m) + "}"


def _gauge(metric: str, *extra: str) -> PerGrain:
    def build(selector: str, grain: str, statistic: str) -> str:
        return f"{_STAT_FN[statistic]}_over_time({metric}{_sel(*extra, selector)}[{grain}])"

    return build


def _counter(metric: str, fn: str) -> PerGrain:
    def build(selector: str, grain: str, statistic: str) -> str:
        if statistic == "Count":
            return f"count_over_time({metric}{_sel(selector)}[{grain}])"
        return f"{fn}({metric}{_sel(selector)}[{grain}])"

    return build


def _host_cpu(selector: str, grain: str, statistic: str) -> str:
    counter = f"localvmss_instance_cpu_seconds_total{_sel(selector)}"
    if statistic == "Count":
        return f"count_over_time({counter}[{grain}])"
    return f"100 * rate({counter}[{grain}]) / localvmss_instance_vcpus{_sel(selector)}"


def _guest_cpu(selector: str, grain: str, statistic: str) -> str:
    job = f'job="{GUEST_JOB}"'
    by = "by (scale_set, instance_id)"
    idle = "node_cpu_seconds_total" + _sel(job, 'mode="idle"', selector)
    if statistic == "Count":
        return f"max {by} (count_over_time({idle}[{grain}]))"
    busy = "node_cpu_seconds_total" + _sel(job, 'mode!="idle"', selector)
    return f"100 * sum {by} (rate({busy}[{grain}])) / count {by} ({idle})"


CATALOG: dict[str, MetricDef] = {
    m.name: m
    for m in (
        MetricDef(
            "Percentage CPU",
            "Percent",
            "host-measured CPU time of the instance's QEMU process per vCPU",
            HOST_LABELS,
            True,
            _host_cpu,
        ),
        MetricDef(
            "Available Memory Bytes",
            "Bytes",
            "guest available memory as reported through the virtio balloon",
            HOST_LABELS,
            False,
            _gauge("localvmss_instance_memory_available_bytes"),
        ),
        MetricDef(
            "Guest Percentage CPU",
            "Percent",
            "non-idle CPU time measured inside the guest per CPU",
            GUEST_LABELS,
            True,
            _guest_cpu,
        ),
        MetricDef(
            "Guest Available Memory Bytes",
            "Bytes",
            "MemAvailable measured inside the guest",
            GUEST_LABELS,
            False,
            _gauge("node_memory_MemAvailable_bytes", f'job="{GUEST_JOB}"'),
        ),
        MetricDef(
            "Network In Total",
            "Bytes",
            "bytes received by the instance's NIC",
            HOST_LABELS,
            True,
            _counter("localvmss_instance_network_receive_bytes_total", "increase"),
        ),
        MetricDef(
            "Network Out Total",
            "Bytes",
            "bytes sent by the instance's NIC",
            HOST_LABELS,
            True,
            _counter("localvmss_instance_network_transmit_bytes_total", "increase"),
        ),
        MetricDef(
            "Disk Read Bytes",
            "Bytes",
            "bytes read from the instance's disks",
            HOST_LABELS,
            True,
            _counter("localvmss_instance_disk_read_bytes_total", "increase"),
        ),
        MetricDef(
            "Disk Write Bytes",
            "Bytes",
            "bytes written to the instance's disks",
            HOST_LABELS,
            True,
            _counter("localvmss_instance_disk_write_bytes_total", "increase"),
        ),
    )
}


def known_metric_names() -> list[str]:
    return list(CATALOG)


def canonical_metric_name(name: str) -> str:
    """The catalogue spelling of ``name`` (matched case-insensitively, like Azure), else ValueError.

    ValueError rather than InvalidSpec so pydantic validators can attach the field path.
    """
    if isinstance(name, str):
        wanted = " ".join(name.split()).lower()
        for known in CATALOG:
            if known.lower() == wanted:
                return known
    raise ValueError(f"metricName {name!r} is unknown; known metrics: {', '.join(CATALOG)}")


def prom_duration(value: timedelta) -> str:
    """A Prometheus duration for ``value``: whole hours, minutes or seconds (PT1M30S -> 90s)."""
    ms = round(value.total_seconds() * 1000)
    if ms <= 0:
        raise InvalidSpec(f"duration {value} must be positive for a Prometheus query")
    if ms % 1000:
        return f"{ms}ms"
    seconds = ms // 1000
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def dimension_matchers(dimensions: Sequence[Dimension] | None) -> list[str]:
    """PromQL label matchers for Azure metric dimensions (Equals -> =~, NotEquals -> !~)."""
    out: list[str] = []
    for d in dimensions or ():
        for v in d.values:
            if not isinstance(v, str) or not _SAFE_LABEL_VALUE.fullmatch(v):
                raise InvalidSpec(
                    f"dimension value {v!r} must be 1-128 letters, digits or _.:- (it goes into a PromQL regex)"
                )
        alternatives = "|".join(v.replace(".", "\\\\.") for v in d.values)
        op = "=~" if d.operator.value == "Equals" else "!~"
        out.append(f'{d.dimension_name}{op}"{alternatives}"')
    return out


def build_query(source: MetricSource, scale_set: str) -> str:
    """The PromQL for one metric trigger (or target-tracking source) of ``scale_set``."""
    validate_name(scale_set, "scale set name")
    if source.query is not None:
        return source.query.replace("${scale_set}", scale_set).replace("$scale_set", scale_set)
    if source.metric_name is None:
        raise InvalidSpec("a metric trigger needs a metricName or a query")
    try:
        metric = CATALOG[canonical_metric_name(source.metric_name)]
    except ValueError as exc:
        raise InvalidSpec(str(exc)) from None
    selector = ",".join([f'scale_set="{scale_set}"', *dimension_matchers(source.dimensions)])
    grain = prom_duration(source.time_grain)
    window = prom_duration(source.time_window)
    inner = metric.per_grain(selector, grain, source.statistic.value)
    return f"avg({_AGG_FN[source.time_aggregation.value]}(({inner})[{window}:{grain}]))"


def is_load_proportional(source: MetricSource) -> bool:
    """Whether the flapping estimate may scale this value by current/new capacity.

    True for catalogue metrics that measure load (CPU, bytes moved) and for raw queries (we
    assume a raw query is a per-instance average, as Azure's estimate does); False for memory
    left over and for Count statistics/aggregations, which count samples, not load.
    """
    if source.statistic.value == "Count" or source.time_aggregation.value == "Count":
        return False
    if source.query is not None:
        return True
    if source.metric_name is None:
        return False
    try:
        return CATALOG[canonical_metric_name(source.metric_name)].load_proportional
    except ValueError:
        return False
