"""Scale-out time of a Uniform scale set, to serving through HAProxy: cold, from a Paused and a
Saved standby pool, and by template clone; against plain libvirt; and overlay (clone) time.

Run as root from the repository:
``.venv/bin/python bench/scale_out.py [--image-dir DIR] [--counts 1,4,8] [--kinds cold,paused,saved,template]``.
In one run, with its own one-host lab and its own daemon (both always removed at the end):

- plain: the image through localvmss.virt directly, with the seed and domain XML the daemon
  would make (overlay + seed + reservation + define + start per guest), until every guest's
  ``/healthz`` answers 200: the baseline, taken right before the cold run of the same N;
- for each kind of set, ``scale 0 -> N`` (PATCH sku.capacity) until every new instance has
  answered ``GET /`` (its computer name) through the set's HAProxy frontend on 127.0.0.1 (a
  load-balancing rule PORT -> 80, probe /healthz), for each N, back to 0 between runs:

  - cold: no pool;
  - paused pool / saved pool: a standby pool of 4 in that state (dynamic sizing, so the pool
    holds 4 minus the capacity: no refill boots during a measurement), full before each run;
    only the N that fit in the pool;
  - template clone: ``properties.templateClones.enabled`` (no pool), or "not available" with the
    daemon's refusal;

  each with every instance's time, where it came from (its ``origin`` and the activity log)
  and the ratio to cold for the same N;
- the ratio cold / plain for each N against issue 16's goal of at most 1.10 (the machines are
  shared: compare ratios, not seconds);
- Host.create_overlay on a 64 MiB base (64 MiB of data) and on a 20 GiB base (virtual, sparse).

Prints figures only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib  # noqa: E402

from localvmss.cli.client import ApiClient  # noqa: E402
from localvmss.config import load_config  # noqa: E402
from localvmss.errors import LocalVMSSError  # noqa: E402
from localvmss.inventory import read_manifest  # noqa: E402
from localvmss.lab.hosts import LabHost  # noqa: E402
from localvmss.lab.testbed import DEFAULT_IMAGE_DIR, DaemonProcess, free_port  # noqa: E402
from localvmss.lb.spec import LoadBalancerSpec, parse_lb_rule, parse_probe  # noqa: E402
from localvmss.runcommand import ManagementKey  # noqa: E402
from localvmss.virt.host import Host  # noqa: E402
from localvmss.virt.seed import build_nocloud_seed  # noqa: E402

PLAIN_POOL = "lvmss-plain"
TIMEOUT_S = 600.0
CLONE_REPEATS = 5
POOL_SIZE = 4
SETTLE_S = 2.0  # idle before a run: the pass that saw the pool full finishes its own logging
COUNTS = (1, 4, 8)
GOAL_RATIO = 1.10  # issue 16: cold scale-out / plain libvirt create, for every N
KINDS = {  # --kinds name -> (label, standby pool state, extra set properties)
    "cold": ("cold", None, {}),
    "paused": ("paused pool", "Paused", {}),
    "saved": ("saved pool", "Saved", {}),
    "template": ("template clone", None, {"templateClones": {"enabled": True}}),
}


def set_body(capacity: int, port: int, extra: dict[str, Any]) -> dict[str, Any]:
    """A Uniform set of the base image with one load-balancing rule PORT -> 80 (probe /healthz)."""
    lb = LoadBalancerSpec(rules=(parse_lb_rule(f"{port}:80"),), probe=parse_probe("http:/healthz")).to_json()
    return {
        "sku": {"name": "Standard_B1ls", "capacity": capacity},  # 1 vCPU, 256 MiB, like the plain guests
        "properties": {
            "orchestrationMode": "Uniform",
            "virtualMachineProfile": {
                "storageProfile": {"imageReference": {"id": "base"}},
                "osProfile": {},
                "networkProfile": {"loadBalancer": lb},
            },
            **extra,
        },
    }


def pool_body(state: str) -> dict[str, Any]:
    return {
        "maxReadyCapacity": POOL_SIZE,
        "minReadyCapacity": 0,
        "virtualMachineState": state,
        "dynamicSizing": {"enabled": True},
        "reuseOnScaleIn": False,
    }


def wait(check: Callable[[], bool], what: str, timeout: float = TIMEOUT_S) -> None:
    benchlib.wait(check, what, timeout, 0.3)


@dataclass
class Run:
    """One scale-out 0 -> count: each new instance's (computer name, seconds to serve through
    HAProxy or None), origin, the activity-log lines naming it, and the daemon's CPU meanwhile."""

    count: int
    daemon_cpu_s: float | None = None  # the daemon process's CPU (user + system) during the run
    served: dict[str, tuple[str, float | None]] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    activity: list[str] = field(default_factory=list)
    frontend_requests: tuple[int, int] = (0, 0)  # the watch's requests, and of them served by a guest

    def last(self) -> float | None:
        times = [t for _, t in self.served.values()]
        if len(times) < self.count or any(t is None for t in times):
            return None
        return max(t for t in times if t is not None)


class ScaleSet:
    """One bench set on the daemon: made, scaled, watched through its frontend, deleted."""

    def __init__(
        self,
        api: ApiClient,
        host: Host,
        label: str,
        pool_state: str | None = None,
        template: bool = False,
        daemon_pid: int | None = None,
        frontend_pause_s: float = 0.03,
    ) -> None:
        self.api = api
        self.frontend_pause_s = frontend_pause_s
        self.daemon = psutil.Process(daemon_pid) if daemon_pid is not None else None
        self.host = host
        self.label = label
        self.pool_state = pool_state
        self.template = template
        self.name = f"bench{uuid.uuid4().hex[:6]}"
        self.port = free_port()

    def create(self, extra: dict[str, Any]) -> None:
        self.api.put(f"/scaleSets/{self.name}", set_body(0, self.port, extra))
        wait(
            lambda: self.api.get(f"/scaleSets/{self.name}")["properties"]["provisioningState"] == "Succeeded",
            f"the empty set {self.name}",
        )
        if self.pool_state is not None:
            self.api.put(f"/scaleSets/{self.name}/standbyPool", pool_body(self.pool_state))

    def members(self) -> list[dict[str, Any]]:
        return list(self.api.get(f"/scaleSets/{self.name}/virtualMachines")["value"])

    def pool_ready(self) -> bool:
        """The pool holds POOL_SIZE instances, all standing by in the pool's state."""
        if self.pool_state is None:
            return True
        props = self.api.get(f"/scaleSets/{self.name}/standbyPool")["properties"]
        by_state = {s["state"]: s for s in props["instanceCountSummary"]}
        mine = by_state.get(self.pool_state, {"standingBy": 0, "preparing": 0})
        return bool(props["size"] == POOL_SIZE and mine["standingBy"] == POOL_SIZE and mine["preparing"] == 0)

    def wait_settled(self) -> None:
        """No members, their domains gone, and the pool (if any) full again."""
        domains = POOL_SIZE if self.pool_state is not None else 0
        what = f"{self.label}: 0 members" + (f" and {POOL_SIZE} {self.pool_state} standing by" if domains else "")
        started = time.monotonic()
        wait(
            lambda: (
                not self.members()
                and len(self.host.owned_domains(f"lvmss-{self.name}-")) == domains
                and self.pool_ready()
            ),
            what,
        )
        print(f"  ({what} after {time.monotonic() - started:.1f} s)")
        time.sleep(SETTLE_S)

    def wait_template(self) -> None:
        """templateClones: the daemon boots a hidden builder and saves it as the warm template;
        the runs start once the activity log says it was saved and the builder is gone."""
        started = time.monotonic()
        saved: list[str] = []

        def ready() -> bool:
            saved[:] = [
                a["message"]
                for a in self.api.get(f"/scaleSets/{self.name}/activityLog?kind=template")["value"]
                if "saved from instance" in a["message"]
            ]
            return bool(saved) and not self.host.owned_domains(f"lvmss-{self.name}-")

        wait(ready, f"{self.label}: a warm template saved")
        print(f"  ({self.label}: warm template after {time.monotonic() - started:.1f} s: {saved[0]})")
        time.sleep(SETTLE_S)

    def scale_out(self, count: int) -> Run:
        """PATCH capacity 0 -> count, then poll the frontend until every new instance answered."""
        before = {vm["instanceId"] for vm in self.members()}
        run = Run(count)
        wall_t0 = time.time()
        t0 = time.monotonic()
        names: dict[str, str] = {}
        cpu0 = self._daemon_cpu()
        with benchlib.FrontendWatch(self.port, t0, pause_s=self.frontend_pause_s) as watch:
            self.api.patch(f"/scaleSets/{self.name}", {"sku": {"capacity": count}})
            while time.monotonic() < t0 + TIMEOUT_S:
                for vm in self.members():
                    iid = vm["instanceId"]
                    name = vm.get("properties", {}).get("osProfile", {}).get("computerName")
                    if iid not in before and name:
                        names[iid] = name
                answered = watch.answered()
                if len(names) >= count and all(n in answered for n in names.values()):
                    break
                time.sleep(0.1)
            answered = watch.answered()
        run.frontend_requests = (watch.requests, watch.served)
        cpu1 = self._daemon_cpu()
        if cpu0 is not None and cpu1 is not None:
            run.daemon_cpu_s = cpu1 - cpu0
        time.sleep(SETTLE_S)  # what the daemon logs about the instances may trail their first answer
        members = {vm["instanceId"]: vm for vm in self.members()}
        for iid, name in sorted(names.items(), key=lambda kv: int(kv[0])):
            run.served[iid] = (name, answered.get(name))
            run.origins[iid] = members.get(iid, {}).get("properties", {}).get("origin", "?")
        for entry in self.api.get(f"/scaleSets/{self.name}/activityLog")["value"]:
            if entry["at"] >= wall_t0 and set(entry.get("instanceIds", [])) & set(names):
                run.activity.append(entry["message"])
        return run

    def _daemon_cpu(self) -> float | None:
        if self.daemon is None:
            return None
        try:
            times = self.daemon.cpu_times()
        except psutil.Error:
            return None
        return float(times.user + times.system)

    def scale_in(self) -> None:
        self.api.patch(f"/scaleSets/{self.name}", {"sku": {"capacity": 0}})
        self.wait_settled()

    def delete(self) -> None:
        self.api.delete(f"/scaleSets/{self.name}")
        wait(lambda: not self.host.owned_domains(f"lvmss-{self.name}-"), f"{self.name} to be deleted")


def print_run(label: str, run: Run) -> None:
    last = run.last()
    head = f"{last:.2f} s" if last is not None else "not every instance answered"
    cpu = f", daemon CPU {run.daemon_cpu_s:.2f} s meanwhile" if run.daemon_cpu_s is not None else ""
    what = f"scale 0->{run.count} until every new instance serves through HAProxy"
    print(f"{label}, {what}: {head} ({benchlib.load()}{cpu})")
    asked, served = run.frontend_requests
    print(f"  the frontend watch asked {asked} requests, {served} of them served by a guest")
    for iid, (name, took) in run.served.items():
        shown = f"{took:.2f} s" if took is not None else "never answered"
        print(f"  instance {iid} ({name}, origin: {run.origins.get(iid, '?')}): {shown}")
    if len(run.served) < run.count:
        print(f"  only {len(run.served)} of {run.count} new instances appeared in the set")
    for line in run.activity:
        print(f"  activity: {line}")


def measure_set(
    api: ApiClient,
    host: Host,
    label: str,
    pool_state: str | None,
    extra: dict[str, Any],
    counts: tuple[int, ...],
    before_each: Callable[[int], None] | None = None,
    daemon_pid: int | None = None,
    frontend_pause_s: float = 0.03,
) -> dict[int, Run] | str:
    """Every count on one set; instead, as a string, the daemon's refusal of the set or what
    stopped the runs (a pool that never fills, say). ``before_each(count)`` runs right before
    each scale-out, the set at 0 and settled (the plain baseline of the same N)."""
    bench_set = ScaleSet(
        api,
        host,
        label,
        pool_state,
        template=bool(extra.get("templateClones")),
        daemon_pid=daemon_pid,
        frontend_pause_s=frontend_pause_s,
    )
    try:
        bench_set.create(extra)
    except LocalVMSSError as exc:
        print(f"{label}: not available ({exc})")
        return str(exc)
    try:
        if pool_state is not None:
            bench_set.wait_settled()
        if bench_set.template:
            bench_set.wait_template()
        props = api.get(f"/scaleSets/{bench_set.name}")["properties"]
        for key in extra:
            print(f"  ({label}: the set shows {key} = {props.get(key)})")
        runs = {}
        for count in counts:
            if before_each is not None:
                before_each(count)
                time.sleep(SETTLE_S)
            runs[count] = bench_set.scale_out(count)
            print_run(label, runs[count])
            bench_set.scale_in()
        return runs
    except (RuntimeError, LocalVMSSError) as exc:
        print(f"{label}: stopped: {exc}")
        return f"stopped: {exc}"
    finally:
        bench_set.delete()


@dataclass(frozen=True)
class DaemonSeed:
    """What the daemon puts in every seed besides the names: its management key (run-command)
    and its metadata service's port (the guest's scheduled-events agent polls it)."""

    keys: tuple[str, ...]
    metadata_port: int

    @classmethod
    def of(cls, daemon: DaemonProcess) -> DaemonSeed:
        cfg = load_config(daemon.config_path)
        return cls((ManagementKey(cfg.state_dir).public,), cfg.metadata_port)


def prepare_like_daemon(
    host: Host, lab_host: LabHost, base: benchlib.BaseVolumes, guest: benchlib.PlainGuest, seed: DaemonSeed
) -> None:
    """Overlay, seed and address reservation of one plain guest, the seed made as
    ``Provisioner.ensure_identity`` makes it (same keys, same metadata port)."""
    host.create_overlay(base.pool, f"{guest.name}-os.qcow2", base.disk)
    iso = build_nocloud_seed(guest.name, guest.name, list(seed.keys), None, seed.metadata_port)
    host.upload_bytes(base.pool, f"{guest.name}-seed.iso", iso, "raw")
    host.reserve_address(lab_host.network_name, guest.mac, guest.ip, guest.name)


def plain_create(
    host: Host, lab_host: LabHost, base: benchlib.BaseVolumes, domain_type: str, count: int, seed: DaemonSeed
) -> dict[str, float]:
    """Seconds from the first overlay to each plain guest's /healthz 200; removes the guests after.
    The domain XML is ``build_domain_xml``'s, as the daemon's, without the ownership metadata
    (the daemon would remove an owned domain it has no record of)."""
    guests = benchlib.plain_guests(lab_host, f"plain{uuid.uuid4().hex[:6]}", count)
    try:
        t0 = time.monotonic()
        watch = benchlib.HealthWatch(t0, TIMEOUT_S)
        for guest in guests:
            prepare_like_daemon(host, lab_host, base, guest, seed)
            benchlib.define_and_start(host, lab_host, base, guest, domain_type)
            watch.add(guest.ip)
        return watch.wait()
    finally:
        for guest in guests:
            benchlib.remove(host, lab_host, base, guest)


def clone_times(host: Host, workdir: Path) -> list[str]:
    """Host.create_overlay on a 64 MiB base (full of data) and a 20 GiB sparse base."""
    small_raw = workdir / "base64m.raw"
    with open(small_raw, "wb") as fh:
        for _ in range(64):
            fh.write(os.urandom(1 << 20))
    small = workdir / "base64m.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(small_raw), str(small)], check=True)
    small_raw.unlink()
    big = workdir / "base20g.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(big), "20G"], check=True)
    lines = []
    for label, path in (("64 MiB base (64 MiB of data)", small), ("20 GiB base (virtual, sparse)", big)):
        vol = f"clone-{path.stem}.qcow2"
        host.upload_file(PLAIN_POOL, vol, str(path), "qcow2")
        took = []
        for k in range(CLONE_REPEATS):
            name = f"clone-{path.stem}-{k}.qcow2"
            t0 = time.monotonic()
            host.create_overlay(PLAIN_POOL, name, vol)
            took.append(time.monotonic() - t0)
            host.delete_volume(PLAIN_POOL, name)
        host.delete_volume(PLAIN_POOL, vol)
        each = ", ".join(f"{t:.3f}" for t in took)
        lines.append(
            f"overlay (Host.create_overlay) on a {label}, file {path.stat().st_size / 2**20:.1f} MiB: "
            f"median {statistics.median(took):.3f} s (each: {each})"
        )
    return lines


def _cell(took: float | None, cold: float | None) -> str:
    if took is None:
        return "n/a"
    if cold is None or cold == 0:
        return f"{took:.2f} s"
    return f"{took:.2f} s ({took / cold:.2f} of cold)"


def _plain_last(plain: dict[int, dict[str, float]], n: int) -> float | None:
    return max(plain[n].values()) if n in plain and len(plain[n]) == n else None


def summary(
    plain: dict[int, dict[str, float]], kinds: dict[str, dict[int, Run] | str], counts: tuple[int, ...]
) -> list[str]:
    """The table: seconds to the last new instance serving, its ratio to cold for the same N, and
    cold against plain libvirt for each N with issue 16's goal."""
    cold = kinds.get("cold")
    cold_last = {n: cold[n].last() if n in cold else None for n in counts} if isinstance(cold, dict) else {}
    lines = ["summary: seconds from the PATCH to the last new instance serving through HAProxy"]
    for label, runs in kinds.items():
        if isinstance(runs, str):
            lines.append(f"  {label}: {runs if runs.startswith('stopped') else f'not available ({runs})'}")
            continue
        cells = "; ".join(
            f"N={n}: {_cell(runs[n].last(), cold_last.get(n))}" if n in runs else f"N={n}: not run" for n in counts
        )
        lines.append(f"  {label}: {cells}")
    met = []
    for n in counts:
        plain_n = _plain_last(plain, n)
        cold_n = cold_last.get(n)
        if plain_n is None or cold_n is None:
            lines.append(f"  ratio cold/plain libvirt, N={n}: n/a (not every guest answered, or not run)")
            met.append(False)
            continue
        ratio = cold_n / plain_n
        met.append(ratio <= GOAL_RATIO)
        lines.append(
            f"  ratio cold/plain libvirt, N={n}: {ratio:.2f} (goal <= {GOAL_RATIO:.2f}: "
            f"{'met' if ratio <= GOAL_RATIO else 'missed'}; plain {plain_n:.2f} s to /healthz on the guest, "
            f"cold {cold_n:.2f} s through HAProxy)"
        )
    lines.append(
        f"  issue 16 goal, cold/plain <= {GOAL_RATIO:.2f} for N={','.join(map(str, counts))} in one run: "
        f"{'met' if all(met) else 'missed'}"
    )
    return lines


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-dir", type=Path, default=DEFAULT_IMAGE_DIR)
    parser.add_argument(
        "--counts",
        default=",".join(map(str, COUNTS)),
        help="scale-out sizes, comma separated (default %(default)s)",
    )
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help=f"which sets, comma separated, of {', '.join(KINDS)} (default all)"
    )
    parser.add_argument(
        "--frontend-pause",
        type=float,
        default=0.03,
        help="seconds each of the 3 frontend-watch threads pauses between requests (default %(default)s)",
    )
    args = parser.parse_args()
    if not 0.0 <= args.frontend_pause <= 5.0:
        parser.error("--frontend-pause: give seconds between 0 and 5")
    try:
        args.counts = tuple(int(c) for c in args.counts.split(","))
    except ValueError:
        parser.error(f"--counts {args.counts!r}: give whole numbers separated by commas, e.g. 1,4,8")
    if not args.counts or any(c < 1 for c in args.counts):
        parser.error("--counts: every size must be at least 1")
    args.kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    unknown = [k for k in args.kinds if k not in KINDS]
    if unknown or not args.kinds:
        parser.error(f"--kinds: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(KINDS)}")
    return args


def main() -> int:
    args = parse_args()
    if os.geteuid() != 0:
        print("scale_out: run as root (lab namespaces and libvirtd)", file=sys.stderr)
        return 2
    image_dir = args.image_dir
    manifest = read_manifest(image_dir)
    counts: tuple[int, ...] = args.counts
    print(f"start: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {benchlib.load()}, {os.cpu_count()} CPUs")
    print(f"frontend watch: 3 threads, {args.frontend_pause:.2f} s pause between requests")
    with benchlib.bench_lab("benchscale") as (lab_host, daemon, workdir):
        daemon.start()
        cfg = load_config(daemon.config_path)
        print(
            f"daemon: reconcile_interval_s {cfg.reconcile_interval_s}, health_interval_s {cfg.health_interval_s}, "
            f"max_parallel_boots {cfg.max_parallel_boots}; guests Standard_B1ls (1 vCPU, 256 MiB) on both paths"
        )
        api = ApiClient(str(daemon.socket_path), timeout=600)
        host = Host(lab_host.name, lab_host.socket_uri)
        try:
            api.put("/images/base", {"sourceDirectory": str(image_dir)})
            h = next(x for x in api.get("/hosts")["value"] if x["name"] == lab_host.name)
            domain_type = h["domainType"] or "qemu"
            print(f"accelerator: {domain_type} ({h['accelerator']})")

            host.ensure_pool(PLAIN_POOL, f"/var/lib/libvirt/{PLAIN_POOL}")
            base = benchlib.upload_image(host, PLAIN_POOL, image_dir, manifest, "plainbase")
            seed = DaemonSeed.of(daemon)
            plain: dict[int, dict[str, float]] = {}

            def baseline(count: int) -> None:
                """Plain libvirt create of ``count``, right before the cold run of the same count."""
                plain[count] = plain_create(host, lab_host, base, domain_type, count, seed)
                print(
                    f"plain libvirt create of {count} until every guest serves: "
                    f"{benchlib.fmt_times(plain[count], count)} ({benchlib.load()})"
                )

            kinds: dict[str, dict[int, Run] | str] = {}
            for kind in args.kinds:
                label, pool_state, extra = KINDS[kind]
                kind_counts = counts if pool_state is None else tuple(n for n in counts if n <= POOL_SIZE)
                if kind_counts != counts:
                    skipped = ", ".join(str(n) for n in counts if n not in kind_counts)
                    print(f"{label}: N={skipped} not run (more than the pool of {POOL_SIZE})")
                hook = baseline if kind == "cold" else None
                kinds[label] = measure_set(
                    api, host, label, pool_state, extra, kind_counts, hook, daemon.pid, args.frontend_pause
                )
            if "cold" not in args.kinds:  # the baseline still gets taken, on its own
                for count in counts:
                    baseline(count)

            for line in clone_times(host, workdir):
                print(line)
            print()
            for line in summary(plain, kinds, counts):
                print(line)
            print(f"end: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {benchlib.load()}")
        finally:
            host.close()
            api.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
