"""The control plane's own cost, with libvirt's in-process ``test:///default`` driver as the
hypervisor (no guests, no root, no network): the daemon's Store, Inventory, Provisioner,
Reconciler, Service, planner and exporter code, timed as they are, at N = 10, 100, 1,000
(and 10,000 with ``--large``).

Run from the repository: ``.venv/bin/python bench/control_plane.py [--large] [--sizes 10,100]
[--addressing static|dhcp]``. The host hands out static addresses by default (its
``static_addresses``, as a host meant for many instances is configured; see
``localvmss.addressing``); ``--addressing dhcp`` pins each address with a DHCP reservation.
Each N runs in a child process of its own (the test driver's state lives as long as a process
holds a connection, so every N starts from an empty hypervisor). Prints figures only, each next
to the target of issue 16 as a ratio (ratio <= 1: within the target); asserts nothing.

Per N:
- ``scale 0->N (API)``: ``PATCH /scaleSets/{name}`` through the FastAPI app (TestClient), ms
  (a Uniform set holds at most 1,000: N above that is several sets, and the slowest PATCH);
- ``create N records``: the pass's planning step that writes the N new records (ids,
  addresses, NAT ports), s;
- ``converge N new``: from the scale until every instance is defined, started and Succeeded
  (the health monitor's own recording marks each running one healthy, as if its probe answered),
  passes and workers, s, and how much of it was spent inside libvirt calls (the test driver's
  own work: e.g. its ``virNetworkUpdate`` grows with the entries the network holds); the CPU
  time of the process and the part of it outside libvirt calls (the control plane's own, which
  the machine's other load does not inflate as it does wall time), and the libvirt calls per
  new instance (passes and workers, by method). With ``--addressing dhcp``, above PRESEED_ABOVE
  the reservations are in the network's definition before the workers run (see there);
- ``steady pass``: one pass with nothing to do (median of 5), ms, its CPU time and its libvirt
  calls;
- ``pass with work``: 1 % of the domains (at least 1) destroyed behind the daemon's back, then
  one pass and its workers until idle, ms, CPU time, and the libvirt calls of pass and workers;
- ``plan scale-in of N``: ``planner.choose_scale_in`` choosing N victims among 2N, ms;
- ``/metrics``: one render of the exporter's registry (instance, scale-set and status
  collectors over the converged set) as its HTTP server writes it (``exposition.render``: text,
  and OpenMetrics as Prometheus asks for it), ms and CPU ms, next to prometheus_client's own
  encoders over the same families (what the exporter served before); the target is for 2,000
  instances, so 2,000 is among the default sizes.

libvirt calls are counted by a thin wrapper on the methods of libvirt's Python classes
(connection, domain, network, pool, volume, stream), in this process only; accessors libvirt
answers from the client's own copy (a domain's name and UUID, ``isAlive``) are not counted, as
they are no round trip to a remote libvirtd.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import libvirt

URI = "test:///default"
HOST = "sim"
NETWORK = "lvmss-bench"
# What Prometheus 3 asks a target for (its default scrape protocols): OpenMetrics first.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,"
    "text/plain;version=0.0.4;q=0.2,*/*;q=0.1"
)
SET_MAX = 1000  # Azure's (and our) capacity limit of a Uniform set: larger N is several sets
# The bench's network, 198.18.0.0/16 (gateway .0.1). "static" (the default): a small DHCP range
# and the host's static_addresses beyond it, as a host with many instances is configured
# (localvmss.addressing): no DHCP entry per instance. "dhcp": one DHCP range over the whole
# subnet, each instance's address pinned with a DHCP host entry (virNetworkUpdate).
ADDRESSING = {
    "static": {"dhcp": ("198.18.0.10", "198.18.0.250"), "static_addresses": "198.18.1.0-198.18.255.254"},
    "dhcp": {"dhcp": ("198.18.0.10", "198.18.255.250"), "static_addresses": None},
}
# With "dhcp", above this N the DHCP reservations are made by the bench in the network's
# definition before the workers run (the daemon's Host then finds each one there and makes no
# update call): the test driver's virNetworkUpdate copies the whole network definition, so one
# call per reservation is quadratic in N (about 9 s for 1,000, 34 s for 2,000, and some 15
# minutes for 10,000). The converge figure of such an N leaves them out (printed with a note).
PRESEED_ABOVE = 2000

# Issue 16's targets (None: printed without a target).
TARGETS: dict[str, dict[int, float]] = {
    "steady_pass_ms": {1000: 100.0, 10000: 1000.0},
    "work_pass_ms": {10000: 1000.0},
    "work_pass_cpu_ms": {10000: 1000.0},
    "converge_s": {1000: 5.0},
    "scale_api_ms": {1000: 100.0},
    "scale_in_plan_ms": {1000: 50.0},
    "metrics_ms": {2000: 100.0},
    "metrics_openmetrics_ms": {2000: 100.0},
    "metrics_cpu_ms": {2000: 100.0},
    "metrics_openmetrics_cpu_ms": {2000: 100.0},
    "steady_pass_cpu_ms": {1000: 100.0, 10000: 1000.0},
    "converge_own_cpu_s": {1000: 5.0},
}

CALLS: Counter[str] = Counter()
IN_LIBVIRT = [0.0]  # seconds spent inside libvirt calls (the simulated hypervisor), all threads
IN_LIBVIRT_CPU = [0.0]  # CPU seconds of those calls (the test driver runs in this process)
# Answered from the client's own copy (no round trip to libvirtd): not counted.
LOCAL = {"name", "UUID", "UUIDString", "ID", "connect", "isAlive"}


def count_libvirt_calls() -> None:
    """Count every call of a libvirt object's method (the module functions too): the bench's
    measure of "no per-instance libvirt call", whatever the driver."""
    classes = [
        libvirt.virConnect,
        libvirt.virDomain,
        libvirt.virNetwork,
        libvirt.virStoragePool,
        libvirt.virStorageVol,
        libvirt.virStream,
    ]
    for cls in classes:
        for name, fn in list(vars(cls).items()):
            if name.startswith("_") or name in LOCAL or not callable(fn):
                continue

            def counted(*args: Any, __fn: Any = fn, __name: str = f"{cls.__name__}.{name}", **kw: Any) -> Any:
                CALLS[__name] += 1
                started, cpu = time.perf_counter(), time.thread_time()
                try:
                    return __fn(*args, **kw)
                finally:
                    IN_LIBVIRT[0] += time.perf_counter() - started
                    IN_LIBVIRT_CPU[0] += time.thread_time() - cpu

            setattr(cls, name, functools.wraps(fn)(counted))
    real_open = libvirt.open

    def open_counted(uri: str | None = None) -> libvirt.virConnect:
        CALLS["open"] += 1
        return real_open(uri)

    libvirt.open = open_counted


def sim_host(name: str) -> Any:
    """``localvmss.virt.host.Host`` on the test driver, which has no volume streams: an upload
    (image volumes once, a seed per instance) creates its volume with the same calls, minus the
    stream. Everything else is the daemon's own ``Host``."""
    from localvmss.virt import domainxml
    from localvmss.virt.host import Host

    class SimHost(Host):
        def _upload(self, pool: str, name: str, size: int, fmt: str, read: Any) -> None:
            def upload(conn: libvirt.virConnect) -> None:
                p = conn.storagePoolLookupByName(pool)
                try:
                    p.storageVolLookupByName(name).delete(0)
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                        raise
                p.createXML(domainxml.volume_xml(name, max(size, 512), fmt), 0)

            self._call(f"uploading volume {name}", lambda _c: self._on_own_connection(upload))

    return SimHost(name, URI)


def network_xml(addressing: str, reservations: list[tuple[str, str, str]] | None = None) -> str:
    """The bench's network (``ADDRESSING``); ``reservations``: DHCP host entries (mac, ip,
    name) it starts with."""
    from lxml import etree

    start, end = ADDRESSING[addressing]["dhcp"]
    net = etree.Element("network")
    etree.SubElement(net, "name").text = NETWORK
    etree.SubElement(net, "bridge", name="lvbench0")
    ip = etree.SubElement(net, "ip", address="198.18.0.1", netmask="255.255.0.0")
    dhcp = etree.SubElement(ip, "dhcp")
    etree.SubElement(dhcp, "range", start=start, end=end)
    for mac, addr, name in reservations or ():
        etree.SubElement(dhcp, "host", mac=mac, ip=addr, name=name)
    return etree.tostring(net, encoding="unicode")


def preseed_reservations(keep: libvirt.virConnect, reservations: list[tuple[str, str, str]]) -> None:
    """Redefine the (still unused) network with every reservation the records name, in one
    definition: see PRESEED_ABOVE."""
    net = keep.networkLookupByName(NETWORK)
    net.destroy()
    net.undefine()
    keep.networkDefineXML(network_xml("dhcp", reservations)).create()


def fake_image(directory: Path) -> dict[str, Any]:
    directory.mkdir(parents=True, exist_ok=True)
    files = {"disk.qcow2": b"qcow2-base", "vmlinux": b"kernel", "initrd.img": b"initrd"}
    for file, data in files.items():
        (directory / file).write_bytes(data)
    manifest = {
        "disk": "disk.qcow2",
        "format": "qcow2",
        "kernel": "vmlinux",
        "initrd": "initrd.img",
        "cmdline": "console=ttyS0",
        "files": {f: hashlib.sha256(d).hexdigest() for f, d in files.items()},
    }
    (directory / "image.json").write_text(json.dumps(manifest))
    return manifest


def ms(seconds: float) -> float:
    return seconds * 1000.0


def run_one(n: int, addressing: str) -> dict[str, Any]:
    """Every figure for one N, in this (fresh) process."""
    from fastapi.testclient import TestClient
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

    from localvmss import lifecycle, planner
    from localvmss.api.app import create_app
    from localvmss.capacity import CapacityRule
    from localvmss.config import DaemonConfig, HostConfig
    from localvmss.health import ProbeResult
    from localvmss.inventory import Inventory
    from localvmss.metrics.exporter import InstanceCollector, ScaleSetCollector, StatusCollector
    from localvmss.metrics.exposition import render
    from localvmss.metrics.sources import Sources
    from localvmss.metrics.status import StatusSource
    from localvmss.model import ProvisioningState
    from localvmss.monitor import HealthMonitor
    from localvmss.provision import Provisioner, computer_name
    from localvmss.reconciler import Reconciler
    from localvmss.service import Service
    from localvmss.store import HostRow, Store

    logging.basicConfig(level=logging.WARNING)
    count_libvirt_calls()
    keep = libvirt.open(URI)  # holds the test driver's state for the whole run
    keep.networkDefineXML(network_xml(addressing)).create()

    tmp = Path(tempfile.mkdtemp(prefix="lvmss-bench-cp-"))
    manifest = fake_image(tmp / "image")
    cfg = DaemonConfig(
        state_dir=tmp / "state",
        hosts=[
            HostConfig(
                name=HOST,
                network=NETWORK,
                serial_log_dir=str(tmp),
                serial_log_read_dir=None,
                static_addresses=ADDRESSING[addressing]["static_addresses"],
            )
        ],
        kvm_probe=False,
        haproxy_enabled=False,
        pool_path=str(tmp / "pool"),
        memory_overcommit=1e9,  # the test driver reports 3 MiB free: admission is not what is timed
        reconcile_interval_s=3.0,
    )
    store = Store(tmp / "state.db")
    store.put_image("base", manifest, str(tmp / "image"))
    # The test driver's domains are of type "test": recorded as the host's accelerator choice.
    store.put_host(HostRow(HOST, URI, None, "test", "bench: test driver", True, ""))
    inv = Inventory(cfg, store)
    inv.hosts[HOST] = sim_host(HOST)
    inv.prepare_all()
    prov = Provisioner(cfg, inv)
    capacity = CapacityRule(cfg, store, inv)
    rec = Reconciler(cfg, store, inv, prov, capacity=capacity)
    service = Service(cfg, store, inv, wake=lambda: None, allocator=rec.alloc, capacity=capacity)
    client = TestClient(create_app(service, "bench"), headers={"Authorization": "Bearer bench"})
    body = {
        "sku": {"name": "Standard_B1ls", "capacity": 0},
        "properties": {
            "orchestrationMode": "Uniform",
            "platformFaultDomainCount": 1,
            "virtualMachineProfile": {"storageProfile": {"imageReference": {"id": "base"}}, "osProfile": {}},
        },
    }
    sizes = [min(SET_MAX, n - k) for k in range(0, n, SET_MAX)]
    sets = [f"bench{k}" for k in range(len(sizes))]
    for name in sets:
        resp = client.put(f"/scaleSets/{name}", json=body)
        assert resp.status_code in (200, 201), resp.text
    out: dict[str, Any] = {"n": n, "sets": len(sets)}

    answered = []
    for name, size in zip(sets, sizes, strict=True):
        started = time.perf_counter()
        resp = client.patch(f"/scaleSets/{name}", json={"sku": {"capacity": size}})
        answered.append(time.perf_counter() - started)
        assert resp.status_code == 200, resp.text
    out["scale_api_ms"] = ms(max(answered))  # the slowest (the last: the most records already)

    def wait_idle() -> None:
        while not rec.idle():
            time.sleep(0.001)

    CALLS.clear()
    converge_started, converge_cpu = time.perf_counter(), time.process_time()
    in_libvirt, in_libvirt_cpu = IN_LIBVIRT[0], IN_LIBVIRT_CPU[0]
    alive = inv.refresh_availability()
    started = time.perf_counter()
    for name in sets:
        rec._plan_records(store.scale_set(name), alive)  # the pass's step that writes the records
    out["records_s"] = time.perf_counter() - started
    preseed_s = preseed_cpu_s = 0.0
    preseed = addressing == "dhcp" and n > PRESEED_ABOVE
    if preseed:
        started, cpu, lv, lv_cpu = time.perf_counter(), time.process_time(), IN_LIBVIRT[0], IN_LIBVIRT_CPU[0]
        spec = store.scale_set(sets[0]).spec
        preseed_reservations(keep, [(i.mac, i.ip, computer_name(spec, i)) for i in store.instances()])
        inv.host(HOST).network_layout(NETWORK)  # what the daemon's Host knows of the network
        preseed_s, preseed_cpu_s = time.perf_counter() - started, time.process_time() - cpu
        in_libvirt, in_libvirt_cpu = in_libvirt + IN_LIBVIRT[0] - lv, in_libvirt_cpu + IN_LIBVIRT_CPU[0] - lv_cpu
    out["dhcp_preseeded"] = preseed
    out["addressing"] = addressing
    monitor = HealthMonitor(store, cfg.health_interval_s, lambda: None)
    spec = store.scale_set(sets[0]).spec  # every set has the same model
    passes = 0
    while True:
        rec.pass_once()
        passes += 1
        wait_idle()
        # No guest answers a probe here: what the health monitor records for a guest that
        # does, recorded by its own code for every instance whose domain runs.
        running = {d.name() for d in keep.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)}
        healthy = ProbeResult("healthy", "bench")
        monitor.record_results(
            [(i, healthy) for i in store.instances() if i.domain_name in running and lifecycle.to_probe(i, spec)],
            {name: spec for name in sets},
        )
        states = Counter(str(i.provisioning_state) for i in store.instances())
        if states.get(ProvisioningState.SUCCEEDED.value, 0) == n:
            break
        if passes > 50:
            raise RuntimeError(f"not converged after {passes} passes: {dict(states)}")
    out["converge_s"] = time.perf_counter() - converge_started - preseed_s
    out["converge_in_libvirt_s"] = IN_LIBVIRT[0] - in_libvirt
    # CPU of this process (every thread), and the part outside libvirt calls: the control
    # plane's own work, whatever else the machine runs.
    out["converge_cpu_s"] = time.process_time() - converge_cpu - preseed_cpu_s
    out["converge_own_cpu_s"] = out["converge_cpu_s"] - (IN_LIBVIRT_CPU[0] - in_libvirt_cpu)
    out["converge_passes"] = passes
    # The bench's own listing of running domains (one a pass) is counted too: a few in all.
    out["converge_calls_per_instance"] = sum(CALLS.values()) / n
    out["converge_calls_by"] = {k: round(v / n, 2) for k, v in CALLS.most_common(14)}

    steady, steady_cpu = [], []
    for _ in range(5):
        CALLS.clear()
        started, cpu = time.perf_counter(), time.thread_time()
        report = rec.pass_once()
        steady.append(time.perf_counter() - started)
        steady_cpu.append(time.thread_time() - cpu)  # a steady pass runs in this thread only
        assert report.submitted == 0, f"a steady pass submitted {report.submitted}"
    out["steady_pass_ms"] = ms(statistics.median(steady))
    out["steady_pass_cpu_ms"] = ms(statistics.median(steady_cpu))
    out["steady_calls"] = sum(CALLS.values())
    out["steady_calls_by"] = dict(CALLS.most_common(8))

    victims = [i.domain_name for i in store.instances()][:: max(1, 100)][: max(1, n // 100)]
    for name in victims:
        keep.lookupByName(name).destroy()
    CALLS.clear()
    started, cpu = time.perf_counter(), time.process_time()
    report = rec.pass_once()
    wait_idle()
    out["work_pass_ms"] = ms(time.perf_counter() - started)
    out["work_pass_cpu_ms"] = ms(time.process_time() - cpu)  # pass and workers
    out["work_instances"] = len(victims)
    out["work_submitted"] = report.submitted
    out["work_calls"] = sum(CALLS.values())
    out["work_calls_by"] = dict(CALLS.most_common(8))
    assert all(keep.lookupByName(v).isActive() for v in victims), "the pass with work restarted them"

    slots = [
        planner.Slot(instance_id=i, zone=None, fault_domain=i % 3, created_at=float(i), healthy=i % 7 != 0)
        for i in range(2 * n)
    ]
    started = time.perf_counter()
    chosen = planner.choose_scale_in(slots, n, policy="Default")
    out["scale_in_plan_ms"] = ms(time.perf_counter() - started)
    assert len(chosen) == n

    registry = CollectorRegistry()
    sources = Sources(store, inv)
    registry.register(InstanceCollector(sources.instance_samples))
    registry.register(ScaleSetCollector(sources.scale_set_samples))
    registry.register(StatusCollector(StatusSource(store).snapshot))
    for key, page in (
        ("metrics_ms", lambda: render(registry, None)),  # text 0.0.4, what curl gets
        ("metrics_openmetrics_ms", lambda: render(registry, PROMETHEUS_ACCEPT)),  # what Prometheus gets
        ("metrics_library_ms", lambda: generate_latest(registry)),  # before: prometheus_client's text
        ("metrics_library_openmetrics_ms", lambda: openmetrics_latest(registry)),
    ):
        renders, renders_cpu = [], []
        for _ in range(5):
            CALLS.clear()
            started, cpu = time.perf_counter(), time.thread_time()
            page()
            renders.append(time.perf_counter() - started)
            renders_cpu.append(time.thread_time() - cpu)
        out[key] = ms(statistics.median(renders))
        out[key.replace("_ms", "_cpu_ms")] = ms(statistics.median(renders_cpu))
    out["metrics_calls"] = sum(CALLS.values())

    rec.stop(timeout_s=5)
    store.close()
    return out


def ratio(key: str, n: int, value: float) -> str:
    target = TARGETS.get(key, {}).get(n)
    if target is None:
        return ""
    return f"(target {target:g}, ratio {value / target:.2f})"


def report(results: list[dict[str, Any]]) -> None:
    rows = [
        ("scale 0->N answered by the API", "scale_api_ms", "ms"),
        ("create N records", "records_s", "s"),
        ("converge N new instances", "converge_s", "s"),
        ("  of which inside libvirt calls (summed over threads)", "converge_in_libvirt_s", "s"),
        ("  CPU time of the process (all threads)", "converge_cpu_s", "s"),
        ("  of which outside libvirt calls (the control plane's own)", "converge_own_cpu_s", "s"),
        ("  libvirt calls per new instance (passes and workers)", "converge_calls_per_instance", ""),
        ("steady pass", "steady_pass_ms", "ms"),
        ("  its CPU time (one thread)", "steady_pass_cpu_ms", "ms"),
        ("  libvirt calls in a steady pass", "steady_calls", ""),
        ("pass with work (1 % restarted)", "work_pass_ms", "ms"),
        ("  its CPU time (all threads)", "work_pass_cpu_ms", "ms"),
        ("  libvirt calls of that pass + workers", "work_calls", ""),
        ("plan scale-in of N (of 2N)", "scale_in_plan_ms", "ms"),
        ("/metrics render (text, as the exporter serves it)", "metrics_ms", "ms"),
        ("  its CPU time", "metrics_cpu_ms", "ms"),
        ("  as OpenMetrics (what Prometheus asks for)", "metrics_openmetrics_ms", "ms"),
        ("  its CPU time", "metrics_openmetrics_cpu_ms", "ms"),
        ("  prometheus_client's generate_latest of the same families (before)", "metrics_library_ms", "ms"),
        ("  prometheus_client's OpenMetrics of the same families", "metrics_library_openmetrics_ms", "ms"),
        ("  libvirt calls of a render", "metrics_calls", ""),
    ]
    print(
        f"control plane on {URI} (no guests); addresses: {results[0]['addressing']}; "
        f"N = {', '.join(str(r['n']) for r in results)}"
    )
    for title, key, unit in rows:
        print(title)
        for r in results:
            value = r[key]
            text = f"{value:.3f}" if isinstance(value, float) else str(value)
            print(f"  N={r['n']:>6}: {text:>10} {unit:<2} {ratio(key, r['n'], float(value))}".rstrip())
    print("growth (each figure / the one at the previous N):")
    for _title, key, _unit in rows:
        if "calls" in key or key.endswith("libvirt_s"):
            continue
        steps = []
        for prev, cur in zip(results, results[1:], strict=False):
            if prev[key] > 0:
                steps.append(f"x{cur[key] / prev[key]:.1f} for x{cur['n'] / prev['n']:.0f}")
        print(f"  {key}: {', '.join(steps)}")
    for r in results:
        if r["dhcp_preseeded"]:
            print(f"N={r['n']}: DHCP reservations made in the network's definition first (PRESEED_ABOVE)")
        print(f"N={r['n']}: steady pass calls {r['steady_calls_by']}; pass with work calls {r['work_calls_by']}")
        print(f"N={r['n']}: converge, libvirt calls per new instance {r['converge_calls_by']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--large", action="store_true", help="also N=10000 (about 10 minutes more)")
    parser.add_argument("--sizes", help="comma-separated N (default 10,100,1000,2000 [,10000])")
    parser.add_argument(
        "--addressing",
        choices=sorted(ADDRESSING),
        default="static",
        help="static: the host's static_addresses, no DHCP entry per instance (default); "
        "dhcp: a DHCP reservation per instance",
    )
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child: one N, JSON out
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(run_one(args.one, args.addressing)))
        return 0
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else [10, 100, 1000, 2000]
    if args.large and 10000 not in sizes:
        sizes.append(10000)
    results = []
    for n in sizes:
        done = subprocess.run(
            [sys.executable, __file__, "--one", str(n), "--addressing", args.addressing],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            print(f"N={n} failed:\n{done.stderr[-3000:]}", file=sys.stderr)
            return 1
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
