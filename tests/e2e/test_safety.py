"""What must never cost a guest or a request: libvirtd away, a busy pool, daemon restarts.

One Uniform set of 2 (2 fault domains mapped to hosts: one instance on h1, one on h2) behind an
LB rule with an HTTP probe, shared by this module's tests; each test starts by waiting until it
is back at 2 ready instances, both answering through HAProxy. Load goes through HAProxy on
127.0.0.1 (tests/e2e/load.py) and failures are counted, never retried. The libvirtd outage
test is the last one (it stops and restarts h2's libvirtd, as the lab starts it).

These tests pin the data plane's independence from the control plane:
* a lab host's libvirtd away for 60 s (its guests' QEMU processes keep running) costs no guest
  and no record: replacements are made in addition while it is away, the surplus is scaled in
  by policy once it is back;
* a storage pool busy with a volume upload ("has asynchronous jobs running") is not a dead host;
* SIGTERM, kill -9 and a second daemon on the same state directory leave HAProxy (same master
  pid) and every request alone.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest

from localvmss.cli.client import ApiClient
from localvmss.config import load_config
from localvmss.errors import LocalVMSSError, NotFound
from localvmss.lab.hosts import LabHost, start_libvirtd, wait_libvirtd
from localvmss.lab.testbed import DaemonProcess, Testbed, free_port
from tests.conftest import Cli
from tests.e2e.helpers import POOL, backend_names, instances, libvirt_view, process_gone, wait_until
from tests.e2e.load import Load

OUTAGE_S = 60.0


# -- helpers -------------------------------------------------------------------------------------
def _client(daemon: DaemonProcess) -> ApiClient:
    """A client of its own: the daemon may have been restarted since another was opened."""
    return ApiClient(str(daemon.socket_path), timeout=30)


def _lab_host(testbed: Testbed, name: str) -> LabHost:
    assert testbed.lab is not None
    return next(h for h in testbed.lab.hosts if h.name == name)


def _hosts(api: ApiClient) -> dict[str, dict[str, Any]]:
    return {h["name"]: h for h in api.get("/hosts")["value"]}


def _view(api: ApiClient, name: str) -> dict[str, dict[str, Any]]:
    """instance id -> what the API says of it (host, IP, names, states)."""
    out = {}
    for inst in instances(api, name):
        view = inst["properties"]["instanceView"]
        out[inst["instanceId"]] = {
            "host": view["host"],
            "ip": inst["properties"]["networkProfile"]["privateIpAddress"],
            "domain": view["domainName"],
            "computerName": view["computerName"],
            "state": inst["properties"]["provisioningState"],
            "health": view["vmHealth"]["status"]["code"],
        }
    return out


def _settled(api: ApiClient, name: str, port: int, count: int = 2) -> bool:
    """The set is Succeeded with ``count`` ready instances, all answering through HAProxy."""
    s = api.get(f"/scaleSets/{name}")["properties"]
    if s["provisioningState"] != "Succeeded" or s["readyCount"] != count:
        return False
    view = _view(api, name)
    if len(view) != count or any(v["state"] != "Succeeded" for v in view.values()):
        return False
    return backend_names(port, 4 * count) == {v["computerName"] for v in view.values()}


def _wait_settled(api: ApiClient, lb: dict[str, Any], timeout: float = 180) -> dict[str, dict[str, Any]]:
    wait_until(lambda: _settled(api, lb["name"], lb["port"]), timeout, f"{lb['name']} at 2 ready instances", 1.0)
    return _view(api, lb["name"])


def _proc_start(pid: int) -> int | None:
    """A process's start time (clock ticks since boot): tells a pid from a reused one."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _qemu_pid(lab_host: LabHost, domain: str) -> int | None:
    """The pid of a guest's QEMU from libvirt's pid file, checked against /proc."""
    try:
        pid = int(Path(lab_host.state_dir, "run", "qemu", f"{domain}.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (OSError, ValueError):
        return None
    return pid if "qemu-system" in cmdline and f"guest={domain}," in cmdline else None


def _guest_boot(api: ApiClient, name: str, iid: str) -> tuple[str, float]:
    """The guest kernel's boot id (new on every boot) and its uptime, asked over SSH (runCommand
    needs no libvirtd)."""
    out = api.post(
        f"/scaleSets/{name}/virtualMachines/{iid}/runCommand",
        {"script": "cat /proc/sys/kernel/random/boot_id; cut -d' ' -f1 /proc/uptime"},
    )
    boot_id, uptime = out["stdout"].split()
    return boot_id, float(uptime)


def _domain_identity(lab_host: LabHost, domain: str) -> dict[str, Any]:
    """What libvirt and /proc say of one running guest: its UUID, its id, its QEMU process."""
    conn = libvirt.open(lab_host.socket_uri)
    try:
        dom = conn.lookupByName(domain)
        uuid_, dom_id, active = dom.UUIDString(), dom.ID(), bool(dom.isActive())
    finally:
        conn.close()
    pid = _qemu_pid(lab_host, domain)
    return {"uuid": uuid_, "id": dom_id, "active": active, "pid": pid, "pid_start": _proc_start(pid) if pid else None}


def _metric(daemon: DaemonProcess, metric: str) -> float | None:
    """One unlabelled sample of the daemon's own exporter, or None if it does not export it."""
    port = load_config(daemon.config_path).exporter_port
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(metric + " "):
            return float(line.split()[1])
    return None


def _alive_haproxy(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        return b"haproxy" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _delete_and_wait(daemon: DaemonProcess, testbed: Testbed, name: str, timeout: float = 180) -> None:
    api = _client(daemon)
    try:
        try:
            api.delete(f"/scaleSets/{name}")
        except NotFound:
            pass

        def gone() -> bool:
            try:
                api.get(f"/scaleSets/{name}")
                return False
            except NotFound:
                return libvirt_view(testbed, name)["domains"] == {}

        wait_until(gone, timeout, f"{name} deleted")
    finally:
        api.close()


# -- the shared set ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def lb(daemon: DaemonProcess, testbed: Testbed) -> Iterator[dict[str, Any]]:
    """A set of 2, one instance on each lab host (fault domain n -> n-th host), behind an LB rule."""
    name = f"sf{uuid.uuid4().hex[:6]}"
    port = free_port()
    try:
        Cli(daemon.socket_path).ok(
            "create",
            name,
            "--image",
            "base",
            "--instance-count",
            "2",
            "--platform-fault-domain-count",
            "2",
            "--fault-domain-mapping",
            "host",
            "--lb-rule",
            f"{port}:80",
            "--health-probe",
            "http:/healthz",
            "--computer-name-prefix",
            "sf",
            timeout=300,
        )
        yield {"name": name, "port": port}
    finally:
        _delete_and_wait(daemon, testbed, name)


# -- (b) a busy pool -----------------------------------------------------------------------------
def _sparse_volume_xml(name: str, capacity: int) -> str:
    """A raw volume with nothing allocated (a file of holes)."""
    return (
        f"<volume><name>{name}</name><capacity unit='bytes'>{capacity}</capacity>"
        "<allocation unit='bytes'>0</allocation><target><format type='raw'/></target></volume>"
    )


def _busy_message(pool: libvirt.virStoragePool) -> str:
    """libvirt's answer to a pool refresh: '' when it refreshed, else its message."""
    try:
        pool.refresh(0)
        return ""
    except libvirt.libvirtError as exc:
        return exc.get_error_message() or str(exc)


class _BusyPool:
    """Keeps a lab host's storage pool busy until the test is done with it: libvirt clones large
    sparse raw volumes (createXMLFrom) one after another. While a volume is being built the pool
    has an asynchronous job, and libvirt refuses to refresh it ("pool 'lvmss-pool' has
    asynchronous jobs running."). A volume upload (virStorageVolUpload) does not do that in
    libvirt 9.0 (it only marks the volume in use; measured here), so uploading cannot make the
    pool busy. A clone reads holes and writes none: it costs libvirtd CPU, no disk. The chain
    runs until ``stop``; its source grows until one clone takes about ``CHUNK_S`` (the first
    clone on a host is several times slower than the next, so no single timing can size one
    clone for a whole window: one that was sized so ended early once, before the test was done).
    Its volumes are deleted at the end, also on failure."""

    START, MAX = 1 << 30, 64 << 30
    CHUNK_S = 3.0

    def __init__(self, lab_host: LabHost, prefix: str) -> None:
        self.lab_host = lab_host
        self.src, self.dst = f"{prefix}-src.raw", f"{prefix}-dst.raw"
        self.size = self.START
        self.clones: list[tuple[int, float]] = []  # (bytes, seconds) of each clone
        self.refused = ""
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._chain, name="busy-pool", daemon=True)

    def _chain(self) -> None:
        conn = libvirt.open(self.lab_host.socket_uri)
        try:
            pool = conn.storagePoolLookupByName(POOL)
            while not self._stop.is_set():
                src = pool.storageVolLookupByName(self.src)
                t0 = time.monotonic()
                pool.createXMLFrom(_sparse_volume_xml(self.dst, self.size), src, 0).delete(0)
                took = time.monotonic() - t0
                self.clones.append((self.size, took))
                if took < self.CHUNK_S / 2 and self.size < self.MAX:
                    self.size = min(self.size * 4, self.MAX)
                    src.delete(0)
                    pool.createXML(_sparse_volume_xml(self.src, self.size), 0)
        except BaseException as exc:
            self.error = exc
        finally:
            conn.close()

    def __enter__(self) -> _BusyPool:
        conn = libvirt.open(self.lab_host.socket_uri)
        try:
            pool = conn.storagePoolLookupByName(POOL)
            pool.createXML(_sparse_volume_xml(self.src, self.size), 0)
            self._thread.start()
            deadline = time.monotonic() + 30
            while self._thread.is_alive() and time.monotonic() < deadline and not self.refused:
                self.refused = _busy_message(pool)
                time.sleep(0.05)
        except BaseException:
            self.__exit__()
            raise
        finally:
            conn.close()
        return self

    def alive(self) -> bool:
        """The chain is still cloning (it ends only on ``stop`` or an error)."""
        return self._thread.is_alive()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(20 * self.CHUNK_S + 60)
        conn = libvirt.open(self.lab_host.socket_uri)
        try:
            pool = conn.storagePoolLookupByName(POOL)
            for volume in (self.dst, self.src):
                try:
                    pool.storageVolLookupByName(volume).delete(0)
                except libvirt.libvirtError as err:
                    if err.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_VOL:
                        raise
        finally:
            conn.close()


def test_busy_pool_is_not_a_dead_host(
    daemon: DaemonProcess, api: ApiClient, testbed: Testbed, lb: dict[str, Any], name: str
) -> None:
    before = _wait_settled(api, lb)
    iid, inst = next((i, v) for i, v in sorted(before.items()) if v["host"] == "h1")
    lab_host = _lab_host(testbed, "h1")
    interval = load_config(daemon.config_path).reconcile_interval_s
    want_passes, want_s, deadline_s = 3, max(4 * interval, 12.0), 180.0
    passes_metric = "localvmss_reconcile_duration_seconds_count"
    samples = 0
    problems: list[str] = []
    with Load(lb["port"], threads=2, max_seconds=300) as load:
        time.sleep(1)
        with _BusyPool(lab_host, f"{name}-busy") as busy:  # no lvmss- prefix: not the daemon's
            t0 = time.monotonic()
            answered_before = load.result.answers[inst["computerName"]]
            # The point of the test: libvirt really refuses to refresh the pool meanwhile.
            assert "asynchronous jobs running" in busy.refused, f"the pool was not busy: refresh said {busy.refused!r}"
            # A daemon starting now prepares h1 (a pool refresh) and refreshes every pool on its
            # first pass: both meet the busy pool, and must take it for busy, not for down.
            log_from = daemon.log_path.stat().st_size
            daemon.stop()
            daemon.start()
            restarted = time.monotonic()
            restarted_in = restarted - t0
            api = _client(daemon)
            passes_before = _metric(daemon, passes_metric) or 0.0
            passes = 0
            # The pool stays busy until the restarted daemon has run its passes over it.
            while busy.alive() and time.monotonic() - restarted < deadline_s:
                samples += 1
                host = _hosts(api)["h1"]
                if not host["available"]:
                    problems.append(f"{time.monotonic() - t0:.1f} s: h1 unavailable: {host.get('message')}")
                now = _view(api, lb["name"]).get(iid)
                if now is None:
                    problems.append(f"{time.monotonic() - t0:.1f} s: instance {iid} is gone")
                elif now["state"] != "Succeeded" or now["health"] != "HealthState/healthy":
                    problems.append(f"{time.monotonic() - t0:.1f} s: instance {iid} {now['state']} {now['health']}")
                passes = int((_metric(daemon, passes_metric) or 0.0) - passes_before)
                if passes >= want_passes and time.monotonic() - restarted >= want_s:
                    break
                time.sleep(0.5)
            still_busy = busy.alive()
            busy_for = time.monotonic() - t0
            answered_during = load.result.answers[inst["computerName"]] - answered_before
        time.sleep(1)
    result = load.result
    met_busy = [
        line
        for line in daemon.log_path.read_bytes()[log_from:].decode(errors="replace").splitlines()
        if "is busy" in line and "asynchronous jobs running" in line
    ]
    print(
        f"\nbusy pool on h1: {len(busy.clones)} clones of sparse volumes "
        f"(GiB, seconds: {[(n >> 30, round(t, 1)) for n, t in busy.clones]}; "
        f"refresh refused: {busy.refused!r}); pool busy {busy_for:.1f} s (daemon restarted inside it in "
        f"{restarted_in:.1f} s), {passes} reconcile passes after the restart (interval {interval} s), "
        f"{len(met_busy)} daemon log lines on the busy pool, {samples} samples every 0.5 s, problems {len(problems)}; "
        f"load: sent {result.sent}, failed {result.failed} ({dict(result.errors)}), "
        f"instance {iid} on h1 answered {answered_during} meanwhile, per backend {dict(result.answers)}"
    )
    assert busy.error is None, f"the clone chain failed: {busy.error}"
    assert still_busy, "the pool stopped being busy before the restarted daemon had run its passes"
    assert passes >= want_passes, (
        f"the restarted daemon ran only {passes} reconcile passes in {deadline_s:.0f} s while the pool was busy"
    )
    assert met_busy, "the restarted daemon never met the busy pool (it should have said so in its log)"
    assert not problems, f"a busy pool was taken for a dead host: {problems[:10]}"
    assert result.failed == 0, f"failed requests: {result.failures[:20]}"
    assert answered_during > 0, f"instance {iid} on h1 left the rotation while the pool was busy"
    assert _view(api, lb["name"]).keys() == before.keys()


# -- (c) daemon restarts under load ---------------------------------------------------------------
def test_daemon_restart_under_load_drops_nothing(
    daemon: DaemonProcess, testbed: Testbed, lb: dict[str, Any], tmp_path: Path
) -> None:
    api = _client(daemon)
    try:
        before = _wait_settled(api, lb)
    finally:
        api.close()
    domains_before = libvirt_view(testbed, lb["name"])["domains"]
    master = daemon.haproxy_master_pid()
    assert _alive_haproxy(master), f"no HAProxy master runs (pid file says {master})"
    failures: list[str] = []
    timings: dict[str, float] = {}
    masters: list[str] = []

    def same_haproxy(step: str) -> None:
        now = daemon.haproxy_master_pid()
        masters.append(f"{step}: {now}")
        if now != master or not _alive_haproxy(master):
            failures.append(f"HAProxy master after {step}: pid {now} (alive: {_alive_haproxy(now)}), was {master}")

    second_out = ""
    second_rc: int | None = None
    try:
        with Load(lb["port"], threads=2, max_seconds=300) as load:
            time.sleep(2)
            # 1. SIGTERM, then start again.
            t = time.monotonic()
            daemon.stop()
            daemon.start()
            timings["SIGTERM + start"] = time.monotonic() - t
            same_haproxy("SIGTERM + start")
            time.sleep(3)
            # 2. kill -9, then start again.
            t = time.monotonic()
            daemon.kill9()
            daemon.start()
            timings["kill -9 + start"] = time.monotonic() - t
            same_haproxy("kill -9 + start")
            time.sleep(3)
            # 3. A second daemon on the same configuration while the first runs.
            first_pid = daemon.pid
            second = DaemonProcess(daemon.config_path, daemon.socket_path, tmp_path / "second-localvmssd.log")
            t = time.monotonic()
            proc = second.launch()
            try:
                second_rc = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            timings["second daemon"] = time.monotonic() - t
            second_out = second.log_path.read_text(errors="replace")
            if daemon.proc is None or daemon.proc.poll() is not None or daemon.pid != first_pid:
                failures.append("the first daemon died when a second one started")
            api = _client(daemon)
            try:
                api.get("/healthz")
                api.get(f"/scaleSets/{lb['name']}")
            except LocalVMSSError as exc:
                failures.append(f"the first daemon does not answer after the second one's attempt: {exc}")
            finally:
                api.close()
            if not daemon.socket_path.exists():
                failures.append("the second daemon removed the first one's API socket")
            same_haproxy("a second daemon's attempt")
            time.sleep(3)
        result = load.result
    finally:
        if daemon.proc is None or daemon.proc.poll() is not None:
            daemon.start()  # the rest of the session needs it
    api = _client(daemon)
    try:
        after = _wait_settled(api, lb, 60)
    finally:
        api.close()
    domains_after = libvirt_view(testbed, lb["name"])["domains"]
    lines = [line for line in second_out.splitlines() if line.strip()]
    print(
        f"\ndaemon restarts under load: sent {result.sent}, failed {result.failed} ({dict(result.errors)}), "
        f"per backend {dict(result.answers)}; took {', '.join(f'{k} {v:.1f} s' for k, v in timings.items())}; "
        f"haproxy master {master}, then {'; '.join(masters)}; second daemon exit {second_rc}, said {lines}"
    )
    if second_rc is None or second_rc == 0:
        failures.append(f"a second daemon on the same state directory did not exit non-zero (exit {second_rc})")
    if timings["second daemon"] >= 15:
        failures.append(f"the second daemon took {timings['second daemon']:.0f} s to give up")
    if len(lines) != 1 or not re.search(r"another localvmssd", lines[0]) or "state dir" not in lines[0]:
        failures.append(
            f"the second daemon did not say in one line that another localvmssd holds the state dir: {lines}"
        )
    if result.sent < 100:
        failures.append(f"only {result.sent} requests were sent")
    if result.failed:
        failures.append(f"{result.failed} of {result.sent} requests failed: {result.failures[:20]}")
    if {i: v["ip"] for i, v in after.items()} != {i: v["ip"] for i, v in before.items()}:
        failures.append(f"instances changed: {before} -> {after}")
    if domains_after != domains_before:
        failures.append(f"a restart touched a guest: {domains_before} -> {domains_after}")
    assert not failures, "\n".join(failures)


# -- (a) libvirtd away (LAST: stops and restarts h2's libvirtd) ------------------------------------
def _stop_libvirtd(lab_host: LabHost) -> None:
    """SIGTERM the lab host's libvirtd (a pid this session started; SIGKILL after 15 s). Its
    guests' QEMU processes and virtlogd keep running."""
    pid = lab_host.libvirtd_pid
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    assert cmdline.endswith("libvirtd"), f"pid {pid} of {lab_host.name} is {cmdline!r}, not libvirtd"
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not process_gone(pid):
        time.sleep(0.1)
    if not process_gone(pid):
        os.kill(pid, signal.SIGKILL)
    try:
        os.waitpid(pid, 0)  # the lab started it from this process: reap it
    except ChildProcessError:
        pass
    wait_until(lambda: process_gone(pid), 15, f"libvirtd of {lab_host.name} to end", 0.1)


def _start_libvirtd(testbed: Testbed, lab_host: LabHost) -> None:
    assert testbed.lab is not None
    start_libvirtd(lab_host)
    testbed.lab.save()
    wait_libvirtd(lab_host, timeout=60)


def test_libvirtd_away_60s_costs_no_guest(
    daemon: DaemonProcess, api: ApiClient, testbed: Testbed, lb: dict[str, Any]
) -> None:
    name, port = lb["name"], lb["port"]
    h2 = _lab_host(testbed, "h2")
    before = _wait_settled(api, lb)
    assert sorted(v["host"] for v in before.values()) == ["h1", "h2"], before
    on_h2 = next(i for i, v in before.items() if v["host"] == "h2")
    libvirt_before = libvirt_view(testbed, name)
    identity = {i: _domain_identity(_lab_host(testbed, v["host"]), v["domain"]) for i, v in before.items()}
    boot = {i: _guest_boot(api, name, i) for i in before}
    assert identity[on_h2]["pid"], f"no QEMU pid for {before[on_h2]['domain']} on h2"
    started_at = time.time()
    stopped = False
    most_serving = 0
    saw_unavailable = False
    samples: list[str] = []
    converge_error = ""
    try:
        with Load(port, threads=2, max_seconds=480) as load:
            time.sleep(2)
            _stop_libvirtd(h2)
            stopped = True
            t0 = time.monotonic()
            while time.monotonic() - t0 < OUTAGE_S:
                hosts = _hosts(api)
                saw_unavailable |= not hosts["h2"]["available"]
                now = _view(api, name)
                # "Answering" is the truth, not the daemon's opinion: h2 does not answer now.
                serving = [i for i, v in now.items() if v["state"] == "Succeeded" and v["host"] != "h2"]
                most_serving = max(most_serving, len(serving))
                samples.append(
                    f"{time.monotonic() - t0:.0f}s h2={'up' if hosts['h2']['available'] else 'down'} "
                    + ",".join(f"{i}:{v['host']}:{v['state'][:4]}" for i, v in sorted(now.items()))
                )
                assert _qemu_pid(h2, before[on_h2]["domain"]) == identity[on_h2]["pid"], "h2's guest died"
                time.sleep(1)
            t_back = time.monotonic()
            _start_libvirtd(testbed, h2)
            stopped = False
            outage = t_back - t0

            def converged() -> bool:
                view = libvirt_view(testbed, name)["domains"]
                return (
                    _settled(api, name, port)
                    and len(view) == 2
                    and all(state == "running" for _, state in view.values())
                    and _hosts(api)["h2"]["available"]
                )

            try:
                wait_until(converged, 240, "the set back at exactly 2 running, ready instances", 1.0)
            except AssertionError as exc:
                converge_error = str(exc)
            t_converged = time.monotonic() - t_back
            time.sleep(2)
    finally:
        if stopped:
            _start_libvirtd(testbed, h2)
            wait_until(lambda: _hosts(api)["h2"]["available"], 60, "h2 available again")
    result = load.result
    after = _view(api, name)
    libvirt_after = libvirt_view(testbed, name)
    identity_after = {}
    for i, v in before.items():
        try:
            identity_after[i] = _domain_identity(_lab_host(testbed, v["host"]), v["domain"])
        except libvirt.libvirtError as exc:
            identity_after[i] = {"error": exc.get_error_message()}
    boot_after = {}
    for i in before:
        try:
            boot_after[i] = _guest_boot(api, name, i)
        except LocalVMSSError as exc:
            boot_after[i] = ("", -1.0)
            samples.append(f"runCommand on {i} after: {exc}")
    activity = [a for a in api.get(f"/scaleSets/{name}/activityLog")["value"] if float(a["at"]) >= started_at - 1]
    print(
        f"\nh2 libvirtd away {outage:.1f} s; at most {most_serving} instance(s) Succeeded on answering hosts "
        f"meanwhile; daemon saw h2 unavailable: {saw_unavailable}; {converge_error or 'converged'} "
        f"{t_converged:.1f} s after h2's libvirtd restarted; load: sent {result.sent}, failed {result.failed} "
        f"({dict(result.errors)}), per backend {dict(result.answers)}\n"
        f"instances before {sorted(before)} after {sorted(after)} ({after}); libvirt before "
        f"{libvirt_before['domains']} after {libvirt_after['domains']}\n"
        f"guest identity before {identity} after {identity_after}\nguest boot before {boot} after {boot_after}\n"
        f"outage samples: {samples[::5]}\n"
        "activity: " + "; ".join(f"{a['kind']}: {a['message']}" for a in sorted(activity, key=lambda a: a["at"]))
    )
    failures: list[str] = []

    def check(ok: object, what: str) -> None:
        if not ok:
            failures.append(what)

    # The guests were never destroyed: same domain, same QEMU process, same boot, uptime went on.
    for i in before:
        was, now_ = identity[i], identity_after[i]
        check(now_.get("uuid") == was["uuid"], f"instance {i}'s domain is gone or was re-created: {now_}")
        check(now_.get("id") == was["id"], f"instance {i}'s domain was restarted (id {was['id']} -> {now_.get('id')})")
        check(
            (now_.get("pid"), now_.get("pid_start")) == (was["pid"], was["pid_start"]),
            f"instance {i}'s QEMU process changed: {was} -> {now_}",
        )
        check(boot_after[i][0] == boot[i][0], f"instance {i}'s guest rebooted or is gone: {boot[i]} -> {boot_after[i]}")
        check(
            boot_after[i][1] >= boot[i][1] + outage - 5,
            f"instance {i}'s uptime did not continue: {boot[i][1]:.0f} s -> {boot_after[i][1]:.0f} s",
        )
    # No record lost, with the same addresses.
    lost = sorted(set(before) - set(after))
    check(not lost, f"instance records lost: {lost} (after: {sorted(after)})")
    changed = {i: (before[i]["ip"], after[i]["ip"]) for i in before if i in after and after[i]["ip"] != before[i]["ip"]}
    check(not changed, f"addresses changed: {changed}")
    # Capacity held while h2 was away: a replacement on h1 served in addition ...
    check(saw_unavailable, "the daemon never showed h2 unavailable while its libvirtd was away")
    check(
        most_serving >= 2, f"capacity fell to {most_serving} Succeeded instance(s) on answering hosts while h2 was away"
    )
    # ... and the surplus was scaled in by policy once h2 was back: the 2 original instances remain.
    check(not converge_error, converge_error)
    check(sorted(after) == sorted(before), f"instances after {sorted(after)}, not the original {sorted(before)}")
    check(
        sorted(libvirt_after["domains"]) == sorted(libvirt_before["domains"]),
        f"libvirt holds {libvirt_after['domains']}, not {libvirt_before['domains']}",
    )
    texts = [f"{a['kind']} {a['message']}" for a in activity]
    check(
        any(re.search(r"\bh2\b.*(unreachable|does not answer|unavailable|away|lost)", t, re.I) for t in texts),
        f"the activity log does not say h2 was unreachable: {texts}",
    )
    check(
        any(re.search(r"scale-in|scal(e|ed|ing) in|surplus", t, re.I) for t in texts),
        f"the activity log does not mention scaling in the surplus: {texts}",
    )
    check(result.failed == 0, f"{result.failed} of {result.sent} requests failed: {result.failures[:20]}")
    check(result.answers[before[on_h2]["computerName"]] > 0, "the h2 guest never answered through HAProxy")
    assert not failures, "\n".join(failures)
