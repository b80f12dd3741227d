"""The daemon's footprint with idle instances: RSS and CPU of the localvmssd process, against
issue 16's targets (80 MiB RSS, 1 % of a core with 10 idle instances).

Run as root from the repository:
``.venv/bin/python bench/footprint.py [--image-dir DIR] [--instances 10] [--window 60] [--no-attribution]``.
With its own one-host lab and its own daemon (both always removed at the end), the daemon with
its default intervals (reconcile, health, scrape, autoscale: what users run, not the faster ones
the tests use):

- a Uniform set of N small instances (Standard_B1ls, a load-balancing rule PORT -> 80 with the
  probe /healthz, so HAProxy, the health monitor, the exporter and the guests' metadata agents
  all do their usual work), waited for until every instance serves through HAProxy, then a
  settle time;
- over the window: the daemon process's RSS (psutil, once a second: mean and peak) and its CPU
  (user + system of all its threads, delta over wall time) as % of one core; beside it, not
  counted, the data plane of the same state directory (HAProxy, Prometheus, metadata proxies);
- attribution (unless ``--no-attribution``): the daemon is restarted (it adopts its guests and
  data plane, as after any restart) under this script's ``--instrumented-daemon`` mode, which
  runs the same ``localvmss.daemon.main`` with counters: CPU per Python thread (by name, from
  /proc), CPU and calls of the periodic work (reconcile pass, health probe pass, metadata
  requests, exporter scrapes, the supervisor's steps), and where each thread was when sampled.

Prints figures only; figures from a shared machine move with its load (printed next to them).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

TARGET_RSS_MIB = 80.0
TARGET_CPU_PCT = 1.0
SAMPLE_EVERY_S = 0.05  # the instrumented daemon's stack sampler
TIMEOUT_S = 900.0


# -- the instrumented daemon (a child process; imports only what the daemon imports) --------------


class _Counters:
    """CPU (thread time) and calls per label, from wrappers around the daemon's periodic work."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cpu: defaultdict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()
        self.active = False

    def add(self, label: str, cpu_s: float) -> None:
        if self.active:
            with self.lock:
                self.cpu[label] += cpu_s
                self.calls[label] += 1


def _wrap(counters: _Counters, owner: Any, attr: str, label: str, *, generator: bool = False) -> None:
    original = getattr(owner, attr)

    def timed(*args: Any, **kwargs: Any) -> Any:
        t0 = time.thread_time()
        try:
            result = original(*args, **kwargs)
            return iter(list(result)) if generator else result
        finally:
            counters.add(label, time.thread_time() - t0)

    setattr(owner, attr, timed)


def _thread_cpu(native_id: int) -> float | None:
    """User + system seconds of one thread of this process, from /proc (None once it ended)."""
    try:
        text = Path(f"/proc/self/task/{native_id}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _group(name: str) -> str:
    """Pool threads by their pool: converge_0..3 -> converge; request threads -> request."""
    if "process_request_thread" in name:
        return "request threads (ended)"
    return re.sub(r"_\d+$", "", name)


def rss_by_mapping(pid: int | str, top: int = 8) -> list[tuple[str, int]]:
    """Resident bytes per mapping of a process (/proc/PID/smaps): anonymous memory (Python's
    objects, malloc, thread stacks) as ``[anon]``/``[heap]``/``[stack]``, file-backed pages by
    file (shared libraries). The ``top`` largest, then the rest as one line."""
    totals: defaultdict[str, int] = defaultdict(int)
    name = "[anon]"
    try:
        lines = Path(f"/proc/{pid}/smaps").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        first = line.split(None, 5)
        if first and "-" in first[0] and len(first) >= 5 and not first[0].endswith(":"):
            name = first[5].strip() if len(first) == 6 else "[anon]"
            name = "[stack]" if name.startswith("[stack") else name
        elif line.startswith("Rss:"):
            totals[name] += int(line.split()[1]) * 1024
    ranked = sorted(totals.items(), key=lambda kv: kv[1], reverse=True)
    rest = sum(n for _, n in ranked[top:])
    return [(Path(n).name if n.startswith("/") else n, b) for n, b in ranked[:top]] + [("the rest", rest)]


def _malloc_slack() -> tuple[int, int]:
    """VmRSS before and after glibc's malloc_trim(0): how much freed heap malloc was holding."""

    def vm_rss() -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    import ctypes

    before = vm_rss()
    ctypes.CDLL(None).malloc_trim(0)
    return before, vm_rss()


def _where(frame: Any) -> str:
    """The innermost localvmss frame of a stack and the leaf function (what a thread waits in)."""
    leaf = f"{frame.f_code.co_name}"
    here = frame
    while here is not None:
        filename = here.f_code.co_filename
        if "/localvmss/" in filename and "/bench/" not in filename:
            return f"{Path(filename).name}:{here.f_code.co_name}:{here.f_lineno} (in {leaf})"
        here = here.f_back
    return f"(no localvmss frame; in {Path(frame.f_code.co_filename).name}:{leaf})"


def _attribute(counters: _Counters, settle_s: float, window_s: float, report: Path) -> None:
    """After ``settle_s``, ``window_s`` of counting; the result as JSON in ``report``."""
    time.sleep(settle_s)
    me = threading.get_ident()

    def per_thread() -> dict[int, tuple[str, float]]:
        out = {}
        for thread in threading.enumerate():
            if thread.ident == me or thread.native_id is None:
                continue
            cpu = _thread_cpu(thread.native_id)
            if cpu is not None:
                out[thread.native_id] = (thread.name, cpu)
        return out

    before = per_thread()
    sampler0 = _thread_cpu(threading.get_native_id()) or 0.0
    t_before = os.times()
    counters.active = True
    started = time.monotonic()
    samples: dict[str, Counter[str]] = {}
    names = {t.ident: t.name for t in threading.enumerate()}
    while time.monotonic() - started < window_s:
        time.sleep(SAMPLE_EVERY_S)
        for ident, frame in sys._current_frames().items():
            if ident == me:
                continue
            name = names.get(ident)
            if name is None:
                names = {t.ident: t.name for t in threading.enumerate()}
                name = names.get(ident, f"thread {ident}")
            samples.setdefault(_group(name), Counter())[_where(frame)] += 1
    counters.active = False
    wall = time.monotonic() - started
    t_after = os.times()
    after = per_thread()
    sampler = (_thread_cpu(threading.get_native_id()) or 0.0) - sampler0
    by_group: defaultdict[str, float] = defaultdict(float)
    for tid, (name, cpu) in after.items():
        by_group[_group(name)] += cpu - (before[tid][1] if tid in before else 0.0)
    total = (t_after.user + t_after.system) - (t_before.user + t_before.system)
    trim_before, trim_after = _malloc_slack()  # after the counting: its own CPU is not in the window
    doc = {
        "rss_before_trim": trim_before,
        "rss_after_trim": trim_after,
        "wall_s": wall,
        "process_cpu_s": total,
        "sampler_cpu_s": sampler,
        "threads_cpu_s": dict(by_group),
        "ended_threads_cpu_s": total - sampler - sum(by_group.values()),
        "work_cpu_s": dict(counters.cpu),
        "work_calls": dict(counters.calls),
        "samples": {group: counter.most_common(6) for group, counter in samples.items()},
    }
    tmp = report.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, report)


def instrumented_daemon(config: str, report: Path, settle_s: float, window_s: float) -> int:
    """``localvmss.daemon.main`` with counters around its periodic work, and a thread that
    writes their figures over one window to ``report``."""
    import socketserver

    from localvmss import daemon, metadata, metadata_proxies, monitor, reconciler
    from localvmss.lb import haproxy
    from localvmss.metrics import exporter, prometheus, sources

    counters = _Counters()
    _wrap(counters, reconciler.Reconciler, "pass_once", "reconcile pass")
    _wrap(counters, monitor.HealthMonitor, "probe_pass", "health probe pass (whole, its probes included)")
    if hasattr(monitor, "probe_many"):  # all of a pass's probes from the health thread
        _wrap(counters, monitor, "probe_many", "  health probes of one pass (in the health thread)")
    else:  # before: one probe per call, on a pool thread
        _wrap(counters, monitor, "probe_once", "  one health probe (on a probe thread)")
    answer = "handle_with_headers" if hasattr(metadata.MetadataService, "handle_with_headers") else "handle"
    _wrap(counters, metadata.MetadataService, answer, "metadata request: the service's answer")
    if hasattr(metadata.MetadataServer, "_read"):  # the one-thread server (before: a thread per request)
        _wrap(counters, metadata.MetadataServer, "_read", "metadata: read, parse, answer (metadata thread)")
    if hasattr(metadata.MetadataServer, "_answer_held"):  # long polls: held requests looked at again
        _wrap(counters, metadata.MetadataServer, "_answer_held", "metadata: a held request looked at or answered")
    _wrap(counters, exporter.InstanceCollector, "collect", "exporter: instance collector", generator=True)
    _wrap(counters, exporter.ScaleSetCollector, "collect", "exporter: scale-set collector", generator=True)
    _wrap(counters, exporter.StatusCollector, "collect", "exporter: status collector", generator=True)
    _wrap(counters, sources.Sources, "write_guest_targets", "supervisor: guest targets file")
    _wrap(counters, prometheus.PrometheusServer, "ensure_running", "supervisor: prometheus ensure_running")
    _wrap(counters, haproxy.LoadBalancer, "ensure_running", "supervisor: haproxy ensure_running")
    _wrap(counters, haproxy.LoadBalancer, "save_server_state", "supervisor: haproxy save_server_state")
    _wrap(counters, metadata_proxies.MetadataProxies, "ensure_running", "supervisor: metadata proxies")

    original = socketserver.ThreadingMixIn.process_request_thread

    def request_thread(self: Any, request: Any, client_address: Any) -> None:
        t0 = time.thread_time()
        try:
            original(self, request, client_address)
        finally:
            counters.add(f"request thread of {type(self).__module__}.{type(self).__name__}", time.thread_time() - t0)

    socketserver.ThreadingMixIn.process_request_thread = request_thread  # type: ignore[method-assign]
    threading.Thread(
        target=_attribute, args=(counters, settle_s, window_s, report), name="footprint-sampler", daemon=True
    ).start()
    return daemon.main(["--config", config])


# -- the bench --------------------------------------------------------------------------------


def _benchlib() -> Any:
    """bench/benchlib.py, imported only in the parent: the instrumented daemon child imports
    nothing the daemon does not (its RSS is what is measured)."""
    import benchlib

    return benchlib


def load() -> str:
    return str(_benchlib().load())


def wait(check: Callable[[], bool], what: str, timeout: float = TIMEOUT_S) -> None:
    _benchlib().wait(check, what, timeout, 1.0)


def mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def measure(pid: int, state_dir: Path, window_s: float) -> dict[str, Any]:
    """RSS once a second and CPU over ``window_s`` of the daemon, and of its data plane."""
    import psutil

    proc = psutil.Process(pid)
    others = [
        p
        for p in psutil.process_iter(["pid", "cmdline"])
        if p.pid != pid and str(state_dir) in " ".join(p.info["cmdline"] or [])
    ]
    other_cpu0 = {}
    for p in others:
        try:
            other_cpu0[p.pid] = sum(p.cpu_times()[:2])
        except psutil.Error:
            pass
    threads0 = {t.id: t.user_time + t.system_time for t in proc.threads()}
    cpu0 = proc.cpu_times()
    t0 = time.monotonic()
    rss = []
    while time.monotonic() - t0 < window_s:
        rss.append(proc.memory_info().rss)
        time.sleep(1.0)
    cpu1 = proc.cpu_times()
    wall = time.monotonic() - t0
    threads1 = {t.id: t.user_time + t.system_time for t in proc.threads()}
    full = proc.memory_full_info()
    plane = []
    for p in others:
        try:
            cpu = sum(p.cpu_times()[:2]) - other_cpu0.get(p.pid, 0.0)
            plane.append((" ".join(p.cmdline()[:2]), p.pid, p.memory_info().rss, 100.0 * cpu / wall))
        except psutil.Error:
            pass
    cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    per_thread = sorted(
        ((tid, threads1[tid] - threads0.get(tid, 0.0)) for tid in threads1), key=lambda kv: kv[1], reverse=True
    )
    return {
        "wall": wall,
        "cpu_s": cpu,
        "cpu_pct": 100.0 * cpu / wall,
        "user_s": cpu1.user - cpu0.user,
        "system_s": cpu1.system - cpu0.system,
        "rss_mean": sum(rss) / len(rss),
        "rss_max": max(rss),
        "uss": full.uss,
        "by_mapping": rss_by_mapping(pid),
        "threads": len(threads1),
        "per_thread": per_thread,
        "ended_threads_s": cpu - sum(d for _, d in per_thread),
        "plane": plane,
    }


def print_measure(m: dict[str, Any], label: str) -> None:
    rss_ok = m["rss_max"] / 2**20 <= TARGET_RSS_MIB
    cpu_ok = m["cpu_pct"] <= TARGET_CPU_PCT
    print(f"{label} over {m['wall']:.0f} s ({load()} at its end):")
    print(
        f"  RSS: mean {mib(m['rss_mean'])}, peak {mib(m['rss_max'])} (USS {mib(m['uss'])}); "
        f"target <= {TARGET_RSS_MIB:.0f} MiB: {'met' if rss_ok else 'missed'}"
    )
    print(
        f"  CPU: {m['cpu_s']:.2f} s in {m['wall']:.0f} s = {m['cpu_pct']:.2f} % of a core "
        f"(user {m['user_s']:.2f} s, system {m['system_s']:.2f} s); target <= {TARGET_CPU_PCT:.0f} %: "
        f"{'met' if cpu_ok else 'missed'}"
    )
    print("  RSS by mapping: " + ", ".join(f"{name} {mib(n)}" for name, n in m["by_mapping"]))
    busy = ", ".join(f"{tid}: {d:.2f} s" for tid, d in m["per_thread"][:6] if d > 0)
    print(
        f"  {m['threads']} threads; the busiest (thread id: CPU s): {busy or 'none'}; "
        f"threads that ended in the window: {m['ended_threads_s']:.2f} s"
    )
    for cmd, pid, rss, pct in m["plane"]:
        print(f"  not counted, data plane: {cmd} (pid {pid}): RSS {mib(rss)}, CPU {pct:.2f} % of a core")


def print_attribution(doc: dict[str, Any]) -> None:
    wall = doc["wall_s"]

    def pct(s: float) -> str:
        return f"{s:.3f} s ({100.0 * s / wall:.2f} %)"

    print(f"attribution over {wall:.0f} s (instrumented daemon; {load()} at its end):")
    print(
        f"  process CPU {pct(doc['process_cpu_s'])}, of which the sampler's own {pct(doc['sampler_cpu_s'])}; "
        f"without it {pct(doc['process_cpu_s'] - doc['sampler_cpu_s'])}"
    )
    if "rss_before_trim" in doc:
        print(
            f"  malloc_trim(0) at the end: RSS {mib(doc['rss_before_trim'])} -> {mib(doc['rss_after_trim'])} "
            "(freed memory glibc's malloc held)"
        )
    print("  CPU by thread (name):")
    for name, cpu in sorted(doc["threads_cpu_s"].items(), key=lambda kv: kv[1], reverse=True):
        if cpu > 0:
            print(f"    {name}: {pct(cpu)}")
    print(f"    threads that ended in the window (request threads): {pct(doc['ended_threads_cpu_s'])}")
    print("  CPU by work (thread time inside the call; calls in the window):")
    for label, cpu in sorted(doc["work_cpu_s"].items(), key=lambda kv: kv[1], reverse=True):
        calls = doc["work_calls"].get(label, 0)
        each = 1000.0 * cpu / calls if calls else 0.0
        print(f"    {label}: {pct(cpu)}, {calls} calls, {each:.2f} ms each")
    print("  where threads were when sampled (most frequent; a leaf like wait/select/sleep is idle):")
    for group, top in sorted(doc["samples"].items()):
        total = sum(n for _, n in top)
        if not total:
            continue
        print(f"    {group}: " + "; ".join(f"{where} x{n}" for where, n in top[:3]))


def bench(args: argparse.Namespace) -> int:
    import subprocess

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import benchlib
    import scale_out

    from localvmss.cli.client import ApiClient
    from localvmss.config import load_config
    from localvmss.errors import LocalVMSSError
    from localvmss.lab.testbed import free_port
    from localvmss.virt.host import Host

    count: int = args.instances
    print(f"start: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {load()}, {os.cpu_count()} CPUs")
    print(f"terminate notifications: {'on (guests poll every second)' if args.terminate_notifications else 'off'}")
    # None drops the testbed's faster test intervals: the daemon's defaults apply.
    with benchlib.bench_lab(
        "benchfoot",
        reconcile_interval_s=None,
        health_interval_s=None,
        scrape_interval_s=None,
        autoscale_interval_s=None,
    ) as (lab_host, daemon, workdir):
        cfg = load_config(daemon.config_path)
        print(
            f"daemon defaults: reconcile_interval_s {cfg.reconcile_interval_s}, health_interval_s "
            f"{cfg.health_interval_s}, scrape_interval_s {cfg.scrape_interval_s}, autoscale_interval_s "
            f"{cfg.autoscale_interval_s}"
        )
        daemon.start()
        api = ApiClient(str(daemon.socket_path), timeout=600)
        host = Host(lab_host.name, lab_host.socket_uri)
        name = f"foot{os.getpid()}"
        port = free_port()
        try:
            api.put("/images/base", {"sourceDirectory": str(args.image_dir)})
            t0 = time.monotonic()
            body = scale_out.set_body(count, port, {})
            if args.terminate_notifications:  # the guests then poll their scheduled events every second
                body["properties"]["virtualMachineProfile"]["scheduledEventsProfile"] = {
                    "terminateNotificationProfile": {"enable": True, "notBeforeTimeout": "PT5M"}
                }
            api.put(f"/scaleSets/{name}", body)

            def all_succeeded() -> bool:
                vms = api.get(f"/scaleSets/{name}/virtualMachines")["value"]
                return len(vms) == count and all(vm["properties"].get("provisioningState") == "Succeeded" for vm in vms)

            wait(all_succeeded, f"{count} instances Succeeded")
            with benchlib.FrontendWatch(port, time.monotonic()) as watch:
                wait(lambda: len(watch.answered()) >= count, f"{count} instances serving through HAProxy", 120)
            print(f"{count} instances serving through HAProxy {time.monotonic() - t0:.0f} s after the PUT ({load()})")
            time.sleep(args.settle)
            assert daemon.pid is not None
            m = measure(daemon.pid, cfg.state_dir, args.window)
            print_measure(m, f"localvmssd (pid {daemon.pid}) with {count} idle instances")

            if args.attribution:
                daemon.stop()
                report = workdir / "attribution.json"
                with open(daemon.log_path, "ab") as log:
                    daemon.proc = subprocess.Popen(
                        [
                            sys.executable,
                            str(Path(__file__).resolve()),
                            "--instrumented-daemon",
                            str(daemon.config_path),
                            "--report",
                            str(report),
                            "--settle",
                            str(args.settle),
                            "--window",
                            str(args.attribution_window),
                        ],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                wait(report.exists, "the instrumented daemon's report", args.settle + args.attribution_window + 120)
                print_attribution(json.loads(report.read_text()))
                problems = daemon.log_tail(10, problems_only=True)
                if problems:
                    print("daemon log, its last warnings and errors:\n" + problems)

            api.delete(f"/scaleSets/{name}")
            wait(lambda: not host.owned_domains(f"lvmss-{name}-"), f"{name} to be deleted", 300)
            print(f"end: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {load()}")
        except (RuntimeError, LocalVMSSError) as exc:
            print(f"footprint: stopped: {exc}")
            print(daemon.log_tail(10, problems_only=True))
            return 1
        finally:
            host.close()
            api.close()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-dir", type=Path, default=None, help="the base image (default: the testbed's)")
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--settle", type=float, default=30.0, help="seconds of rest before a window")
    parser.add_argument("--window", type=float, default=60.0, help="seconds of measurement")
    parser.add_argument("--attribution-window", type=float, default=30.0)
    parser.add_argument("--no-attribution", dest="attribution", action="store_false")
    parser.add_argument(
        "--terminate-notifications",
        action="store_true",
        help="the set sends terminate notices (PT5M), so its guests poll the metadata service every second",
    )
    parser.add_argument("--instrumented-daemon", metavar="CONFIG", help=argparse.SUPPRESS)
    parser.add_argument("--report", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.instrumented_daemon:
        return instrumented_daemon(args.instrumented_daemon, args.report, args.settle, args.attribution_window)
    if args.instances < 1 or args.window <= 0 or args.settle < 0 or args.attribution_window <= 0:
        parser.error("--instances must be at least 1, --window and --attribution-window positive, --settle >= 0")
    if os.geteuid() != 0:
        print("footprint: run as root (lab namespaces and libvirtd)", file=sys.stderr)
        return 2
    if args.image_dir is None:
        from localvmss.lab.testbed import DEFAULT_IMAGE_DIR

        args.image_dir = DEFAULT_IMAGE_DIR
    return bench(args)


if __name__ == "__main__":
    sys.exit(main())
