"""The daemon's Prometheus exporter: instance and scale-set metrics plus the daemon's own.

Instance and scale-set metrics are custom collectors (prometheus_client style): each scrape calls a
``source`` callable that returns fresh samples, so the values are exactly what libvirt reported at
scrape time and nothing is cached between scrapes. The source is a constructor argument so tests
feed fixture samples. Metric names are fixed by docs/CONTRACTS.md; autoscale/ builds PromQL on them,
and the dashboard (dashboards/localvmss.json) and the rules (prometheus/localvmss-rules.yml) use them.
The per-instance families are ``exposition.SeriesFamily``, which the exporter's HTTP server writes
without prometheus_client's work per sample (see metrics/exposition.py).
"""

from __future__ import annotations

import importlib.metadata
import logging
import platform
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from localvmss import __version__
from localvmss.errors import LocalVMSSError
from localvmss.metrics.exposition import LabelSet, SeriesFamily, serve
from localvmss.virt.stats import STATE_NAMES, DomainStats

log = logging.getLogger(__name__)

INSTANCE_LABELS = ["scale_set", "instance_id", "host", "fault_domain"]
SCALE_SET_LABELS = ["scale_set"]
# Domain states without live counters (see InstanceCollector).
_NOT_RUNNING = frozenset(state for state, name in STATE_NAMES.items() if name in ("shutoff", "crashed"))

# Reconcile passes range from a no-op (milliseconds) to creating VMs (tens of seconds).
RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


@dataclass(frozen=True)
class InstanceSample:
    """One instance's libvirt counters plus the labels that place it in a scale set."""

    scale_set: str
    instance_id: int
    host: str
    fault_domain: int
    stats: DomainStats

    def label_values(self) -> tuple[str, str, str, str]:
        """Values of INSTANCE_LABELS, in their order."""
        return (self.scale_set, str(self.instance_id), self.host, str(self.fault_domain))


@dataclass(frozen=True)
class ScaleSetSample:
    """Capacity as asked for (desired), as present (actual) and as passing health checks."""

    scale_set: str
    desired: int
    actual: int
    healthy: int
    standby: tuple[tuple[str, int], ...] = ()  # standby pool: (state, instances standing by in it)


@dataclass(frozen=True)
class AutoscaleLimits:
    """The capacity bounds of the autoscale profile in force (the last one evaluated)."""

    profile: str
    minimum: int
    maximum: int
    default: int
    enabled: bool


@dataclass(frozen=True)
class SetStatus:
    """What the store says of a set beyond its counts: repairs, autoscale bounds, state."""

    scale_set: str
    mode: str
    provisioning_state: str
    automatic_repairs_enabled: bool
    # Suspended by a person (set-orchestration-service-state) or by repairs that kept failing.
    automatic_repairs_suspended: bool
    autoscale: AutoscaleLimits | None


@dataclass(frozen=True)
class InstanceStatus:
    scale_set: str
    instance_id: int
    host: str
    health: str  # one of HEALTH_STATES
    provisioning_state: str


@dataclass(frozen=True)
class HostStatus:
    host: str
    zone: str
    available: bool


@dataclass(frozen=True)
class StatusSnapshot:
    sets: list[SetStatus]
    instances: list[InstanceStatus]
    hosts: list[HostStatus]


HEALTH_STATES = ("healthy", "unhealthy", "unknown", "initializing")  # rich health states
InstanceSource = Callable[[], Iterable[InstanceSample]]
ScaleSetSource = Callable[[], Iterable[ScaleSetSample]]
StatusSource = Callable[[], StatusSnapshot]


def _safe_read(source: Callable[[], Iterable[Any]], what: str) -> list[Any]:
    """Read a source; on failure log and expose nothing for it.

    A failing libvirt host must not turn the whole /metrics page into a 500: the daemon's own
    metrics (and other hosts' instances) should still be scraped. Missing series are what
    Prometheus and the autoscaler treat as "unknown", which is the truth.
    """
    try:
        return list(source())
    except LocalVMSSError as exc:
        log.warning("metrics: reading %s failed: %s", what, exc.message)
    except Exception:
        log.exception("metrics: reading %s failed", what)
    return []


class InstanceCollector(Collector):
    """Per-instance CPU, memory, disk and network metrics (labels: scale_set, instance_id, host,
    fault_domain).

    ``localvmss_instance_memory_available_bytes`` is the guest's *usable* memory from the virtio
    balloon (libvirt ``balloon.usable``, the guest's ``MemAvailable``), not ``balloon.available``
    which is the guest's ``MemTotal``. It is only exposed for instances whose guest reports it, so
    absence means "unknown", never "zero bytes free".

    Instances whose domain is shut off or crashed are skipped: libvirt reports only their state,
    and zeros for CPU/memory would drag averages down as if they were idle guests.
    """

    def __init__(self, source: InstanceSource) -> None:
        self._source = source
        # The label set of each instance of the last scrape, by its labels: escaped once while
        # the instance lives (an instance gone is forgotten at the next scrape).
        self._labels: dict[tuple[str, int, str, int], LabelSet] = {}

    @staticmethod
    def _families() -> dict[str, SeriesFamily]:
        def c(name: str, documentation: str) -> SeriesFamily:
            return SeriesFamily(name, documentation, "counter", INSTANCE_LABELS)

        def g(name: str, documentation: str) -> SeriesFamily:
            return SeriesFamily(name, documentation, "gauge", INSTANCE_LABELS)

        return {
            "cpu": c(
                "localvmss_instance_cpu_seconds",
                "CPU time consumed by the instance's QEMU process (all vCPUs), seconds.",
            ),
            "vcpus": g("localvmss_instance_vcpus", "Online vCPUs of the instance."),
            "memory": g("localvmss_instance_memory_bytes", "Memory assigned to the instance (balloon current), bytes."),
            "rss": g(
                "localvmss_instance_memory_rss_bytes",
                "Resident set size of the instance's QEMU process on the host, bytes.",
            ),
            "available": g(
                "localvmss_instance_memory_available_bytes",
                "Memory the guest could still use without swapping (guest MemAvailable via the "
                "virtio balloon), bytes. Absent when the guest does not report it.",
            ),
            "disk_read": c("localvmss_instance_disk_read_bytes", "Bytes read from all of the instance's disks."),
            "disk_write": c("localvmss_instance_disk_write_bytes", "Bytes written to all of the instance's disks."),
            "net_rx": c(
                "localvmss_instance_network_receive_bytes",
                "Bytes received on all of the instance's network interfaces.",
            ),
            "net_tx": c(
                "localvmss_instance_network_transmit_bytes",
                "Bytes transmitted on all of the instance's network interfaces.",
            ),
        }

    def describe(self) -> Iterator[Metric]:
        """Names without samples, so registering does not call the (libvirt-backed) source."""
        yield from self._families().values()

    def collect(self) -> Iterator[Metric]:
        f = self._families()
        names = f["cpu"].label_names  # the same tuple in every instance family (INSTANCE_LABELS)
        # Every family but "available" has a sample for every running instance: one list of
        # label sets for all of them.
        for shared in ("vcpus", "memory", "rss", "disk_read", "disk_write", "net_rx", "net_tx"):
            f[shared].share_label_sets(f["cpu"])
        label_sets = f["cpu"].label_sets
        cpu, vcpus, memory, rss, disk_read, disk_write, net_rx, net_tx = (
            f[name].values for name in ("cpu", "vcpus", "memory", "rss", "disk_read", "disk_write", "net_rx", "net_tx")
        )
        available = f["available"]
        kept = self._labels
        seen: dict[tuple[str, int, str, int], LabelSet] = {}
        for sample in _safe_read(self._source, "instance statistics"):
            stats = sample.stats
            if stats.state in _NOT_RUNNING:
                continue
            key = (sample.scale_set, sample.instance_id, sample.host, sample.fault_domain)
            labels = kept.get(key)
            if labels is None:
                labels = LabelSet(names, sample.label_values())
            seen[key] = labels
            label_sets.append(labels)
            cpu.append(stats.cpu_seconds)
            vcpus.append(stats.vcpus)
            memory.append(stats.memory_bytes)
            rss.append(stats.rss_bytes)
            if stats.usable_bytes is not None:
                available.label_sets.append(labels)
                available.values.append(stats.usable_bytes)
            disk_read.append(stats.disk_read_bytes)
            disk_write.append(stats.disk_write_bytes)
            net_rx.append(stats.net_rx_bytes)
            net_tx.append(stats.net_tx_bytes)
        self._labels = seen
        yield from f.values()


class ScaleSetCollector(Collector):
    """Desired, actual and healthy capacity per scale set (label: scale_set)."""

    def __init__(self, source: ScaleSetSource) -> None:
        self._source = source

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "localvmss_scale_set_capacity_desired",
                "Instances the scale set should have.",
                labels=SCALE_SET_LABELS,
            ),
            GaugeMetricFamily(
                "localvmss_scale_set_capacity_actual",
                "Instances the scale set has (any state).",
                labels=SCALE_SET_LABELS,
            ),
            GaugeMetricFamily(
                "localvmss_scale_set_healthy_instances",
                "Instances of the scale set passing their health check.",
                labels=SCALE_SET_LABELS,
            ),
            GaugeMetricFamily(
                "localvmss_standby_pool_instances",
                "Standby-pool instances standing by, per state (not in the capacity or any figure above).",
                labels=[*SCALE_SET_LABELS, "state"],
            ),
        )

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        desired, actual, healthy, standby = self._families()
        for sample in _safe_read(self._source, "scale set capacity"):
            desired.add_metric([sample.scale_set], sample.desired)
            actual.add_metric([sample.scale_set], sample.actual)
            healthy.add_metric([sample.scale_set], sample.healthy)
            for state, count in sample.standby:
                standby.add_metric([sample.scale_set, state], count)
        yield from (desired, actual, healthy, standby)


class StatusCollector(Collector):
    """The store's view of sets, instances and hosts, for alerts and dashboards.

    Health is one-hot (``localvmss_instance_health{state=...}`` is 1 for the current state and 0
    for the others) so a ``for:`` clause in an alert sees one unbroken series per state.
    """

    def __init__(self, source: StatusSource) -> None:
        self._source = source
        # (scale_set, instance_id, host, current state) -> the instance's four health series
        # (label sets, values), for the instances of the last scrape: made again only when one
        # of them changes.
        self._health: dict[tuple[str, int, str, str], tuple[tuple[LabelSet, ...], tuple[int, ...]]] = {}

    @staticmethod
    def _families() -> tuple[dict[str, GaugeMetricFamily], SeriesFamily, GaugeMetricFamily]:
        """(per-set families, instance health, host availability), in the page's order."""
        g = GaugeMetricFamily
        autoscale_labels = ["scale_set", "profile"]
        per_set = {
            "info": g(
                "localvmss_scale_set_info",
                "A scale set (always 1) with its orchestration mode and provisioning state.",
                labels=["scale_set", "mode", "provisioning_state"],
            ),
            "repairs": g(
                "localvmss_scale_set_automatic_repairs_enabled",
                "1 when the set's automaticRepairsPolicy is enabled.",
                labels=SCALE_SET_LABELS,
            ),
            "suspended": g(
                "localvmss_scale_set_automatic_repairs_suspended",
                "1 when the set's automatic repairs are suspended (by a person, or by repairs that kept failing).",
                labels=SCALE_SET_LABELS,
            ),
            "as_enabled": g(
                "localvmss_autoscale_enabled",
                "1 when the set has an autoscale setting switched on, 0 when it is switched off.",
                labels=SCALE_SET_LABELS,
            ),
            "as_min": g(
                "localvmss_autoscale_capacity_minimum",
                "Minimum capacity of the autoscale profile in force.",
                labels=autoscale_labels,
            ),
            "as_max": g(
                "localvmss_autoscale_capacity_maximum",
                "Maximum capacity of the autoscale profile in force.",
                labels=autoscale_labels,
            ),
            "as_default": g(
                "localvmss_autoscale_capacity_default",
                "Default capacity of the autoscale profile in force.",
                labels=autoscale_labels,
            ),
        }
        health = SeriesFamily(
            "localvmss_instance_health",
            "1 for the instance's health state (healthy, unhealthy or unknown), 0 for the others.",
            "gauge",
            ["scale_set", "instance_id", "host", "state"],
        )
        hosts = g(
            "localvmss_host_available", "1 when the libvirt host answers, 0 when it does not.", labels=["host", "zone"]
        )
        return per_set, health, hosts

    def describe(self) -> Iterator[Metric]:
        per_set, health, hosts = self._families()
        yield from (*per_set.values(), health, hosts)

    def collect(self) -> Iterator[Metric]:
        f, health, hosts = self._families()
        snapshots = _safe_read(lambda: [self._source()], "scale set status")
        for snap in snapshots:
            for s in snap.sets:
                f["info"].add_metric([s.scale_set, s.mode, s.provisioning_state], 1)
                f["repairs"].add_metric([s.scale_set], int(s.automatic_repairs_enabled))
                f["suspended"].add_metric([s.scale_set], int(s.automatic_repairs_suspended))
                if s.autoscale is not None:
                    a = s.autoscale
                    f["as_enabled"].add_metric([s.scale_set], int(a.enabled))
                    f["as_min"].add_metric([s.scale_set, a.profile], a.minimum)
                    f["as_max"].add_metric([s.scale_set, a.profile], a.maximum)
                    f["as_default"].add_metric([s.scale_set, a.profile], a.default)
            kept = self._health
            seen: dict[tuple[str, int, str, str], tuple[tuple[LabelSet, ...], tuple[int, ...]]] = {}
            label_sets, values = health.label_sets, health.values
            for i in snap.instances:
                current = i.health if i.health in HEALTH_STATES else "unknown"
                key = (i.scale_set, i.instance_id, i.host, current)
                series = kept.get(key)
                if series is None:
                    iid = str(i.instance_id)
                    series = (
                        tuple(health.label_set((i.scale_set, iid, i.host, state)) for state in HEALTH_STATES),
                        tuple(int(state == current) for state in HEALTH_STATES),
                    )
                seen[key] = series
                label_sets.extend(series[0])
                values.extend(series[1])
            self._health = seen
            for h in snap.hosts:
                hosts.add_metric([h.host, h.zone], int(h.available))
        yield from (*f.values(), health, hosts)


def _version_of(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def build_labels() -> dict[str, str]:
    """Labels of ``localvmss_build_info``: our version, Python's, and libvirt-python's (the
    binding the daemon runs; metrics/ may not import libvirt to ask the library itself)."""
    return {"version": __version__, "python": platform.python_version(), "libvirt": _version_of("libvirt-python")}


class DaemonMetrics:
    """The daemon's own health: how long reconcile passes take, what they did, what failed;
    its build and its process (CPU, memory, file descriptors; prometheus_client's collectors);
    autoscale actions and webhook deliveries."""

    def __init__(self, registry: CollectorRegistry, *, process: bool = True) -> None:
        labels = build_labels()
        self.build_info = Gauge(
            "localvmss_build_info",
            "Always 1; the labels name the localvmss, Python and libvirt-python versions.",
            list(labels),
            registry=registry,
        )
        self.build_info.labels(**labels).set(1)
        if process:
            ProcessCollector(registry=registry)  # process_* (Linux /proc); registers itself
            PlatformCollector(registry=registry)  # python_info
        self.autoscale_actions = Counter(
            "localvmss_autoscale_actions",
            "Capacity changes made by the autoscaler, by scale set and direction (out, in).",
            ["scale_set", "direction"],
            registry=registry,
        )
        self.webhook_deliveries = Counter(
            "localvmss_autoscale_webhook_deliveries",
            "Autoscale webhook deliveries by result: success, failure (after every retry), dropped.",
            ["result"],
            registry=registry,
        )
        for result in ("success", "failure", "dropped"):
            self.webhook_deliveries.labels(result=result)  # present at 0 before the first one
        self.reconcile_duration = Histogram(
            "localvmss_reconcile_duration_seconds",
            "Duration of one reconcile pass, seconds.",
            buckets=RECONCILE_BUCKETS,
            registry=registry,
        )
        self.actions = Counter(
            "localvmss_actions",
            "Actions taken by the reconciler, by kind (e.g. create, delete, scale_out) and result.",
            ["kind", "result"],
            registry=registry,
        )
        self.errors = Counter(
            "localvmss_errors",
            "Errors met by the daemon, by kind (the error's code, e.g. HostUnavailable).",
            ["kind"],
            registry=registry,
        )

    def observe_reconcile(self, seconds: float) -> None:
        self.reconcile_duration.observe(seconds)

    def autoscale_evaluated(self, scale_set: str) -> None:
        """Make the set's action counters exist at 0, so the first action shows as an increase."""
        for direction in ("out", "in"):
            self.autoscale_actions.labels(scale_set=scale_set, direction=direction)

    def autoscale_action(self, scale_set: str, direction: str) -> None:
        self.autoscale_actions.labels(scale_set=scale_set, direction=direction).inc()

    def webhook_result(self, result: str) -> None:
        self.webhook_deliveries.labels(result=result).inc()

    def action(self, kind: str, result: str = "success") -> None:
        self.actions.labels(kind=kind, result=result).inc()

    def error(self, kind: str | BaseException) -> None:
        """Count an error; an exception is counted under its project code (or class name)."""
        if isinstance(kind, LocalVMSSError):
            label = kind.code
        elif isinstance(kind, BaseException):
            label = type(kind).__name__
        else:
            label = kind
        self.errors.labels(kind=label).inc()


class ExporterServer:
    """A running exporter HTTP server; ``stop()`` closes the socket and joins its thread."""

    def __init__(self, server: Any, thread: threading.Thread | None) -> None:
        self.server = server
        self.thread = thread

    @property
    def address(self) -> str:
        return str(self.server.server_address[0])

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def stop(self, timeout: float = 5.0) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self.thread is not None:
            self.thread.join(timeout)


def start_exporter(
    registry: CollectorRegistry, address: str = "127.0.0.1", port: int = 0
) -> tuple[ExporterServer, int]:
    """Serve ``registry`` over HTTP (any path, /metrics included) on a daemon thread.

    ``port=0`` lets the kernel pick a free port, so parallel daemons and tests never collide; the
    bound port is returned. Loopback by default: exposing metrics further is a deliberate choice.
    """
    server, thread = serve(registry, address, port)
    handle = ExporterServer(server, thread)
    log.info("metrics exporter listening on %s:%d", handle.address, handle.port)
    return handle, handle.port
