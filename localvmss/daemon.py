"""``localvmssd``: the daemon. Wires the store, hosts, reconciler, health monitor, load balancer,
exporter, Prometheus and autoscaler together and serves the REST API.

Threads: the reconcile loop, the health monitor, libvirt's event loop (events only wake the
reconciler), a supervisor (HAProxy, Prometheus, guest scrape targets), the systemd watchdog and
the API server in the main thread. SIGTERM/SIGINT stop the API server, then every loop; SIGHUP
re-reads the configuration (``reload``).

Under systemd (``Type=notify``): READY=1 once the API socket accepts connections, STATUS= after
reconcile passes, WATCHDOG=1 only while reconcile passes keep finishing (a pass stuck in a hung
libvirt call stops the pings, and systemd restarts the daemon; the data plane is untouched),
RELOADING=1/READY=1 around a reload and STOPPING=1 on the way out.

The data plane never depends on the control plane: HAProxy and Prometheus keep running when the
daemon stops or crashes, and the next daemon adopts them; only ``--stop-data-plane`` stops them.
One daemon per state directory: a lock taken before anything else is touched turns a second
daemon away before it can disturb the first one's processes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import faulthandler
import fcntl
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry

from localvmss import __version__, children
from localvmss.api.app import UVICORN_OPTIONS, create_app
from localvmss.capacity import CapacityRule
from localvmss.config import DaemonConfig, load_config, reload_changes
from localvmss.errors import Conflict, InvalidSpec, LocalVMSSError
from localvmss.inventory import Inventory
from localvmss.logs import configure_logging
from localvmss.metadata import MetadataServer, MetadataService, socket_path
from localvmss.metadata_proxies import MetadataProxies, stop_all
from localvmss.metrics.exporter import (
    DaemonMetrics,
    InstanceCollector,
    ScaleSetCollector,
    StatusCollector,
    start_exporter,
)
from localvmss.metrics.sources import Sources
from localvmss.metrics.status import StatusSource
from localvmss.monitor import HealthMonitor
from localvmss.provision import Provisioner
from localvmss.reconciler import Reconciler
from localvmss.runcommand import ManagementKey
from localvmss.sdnotify import Notifier
from localvmss.service import Service
from localvmss.store import Store
from localvmss.tlsfiles import Certificate, certificate_from_child
from localvmss.virt.host import start_event_loop

log = logging.getLogger("localvmssd")

LOCK_FILE = "localvmssd.lock"
STATUS_EVERY_S = 5.0  # STATUS= at most this often
# glibc gives threads up to 8 malloc arenas per core, each keeping its own freed memory; with
# about 20 threads that mostly wait, 2 arenas hold the same work in less RSS (issue 16).
MALLOC_ARENAS = 2
M_ARENA_MAX = -8  # mallopt's parameter number (glibc malloc.h)
API_TICK_S = 1.0  # how often the API server's loop looks at its exit flag and its Date header


def lock_state_dir(state_dir: Path) -> int:
    """Hold an exclusive lock on the state directory for the life of the process; returns its fd.
    Raises Conflict naming the daemon that holds it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise Conflict(
            f"another localvmssd (pid {holder}) is using state directory {state_dir}; nothing was touched"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def run_supervisor_steps(steps: Sequence[tuple[str, Callable[[], None]]], failing: dict[str, str]) -> None:
    """Run every step, each on its own: a failing one is logged (once while its reason stays the
    same, with a traceback only for the unexpected: neither an OS error nor one of ours) and the
    next steps still run.
    ``failing`` (step -> reason) carries what failed from one call to the next."""
    for doing, step in steps:
        try:
            step()
        except Exception as exc:
            why = exc.message if isinstance(exc, LocalVMSSError) else f"{type(exc).__name__}: {exc}"
            if failing.get(doing) != why:
                known = isinstance(exc, OSError | LocalVMSSError)  # a traceback only for the unexpected
                log.error("supervisor: %s failed: %s", doing, why, exc_info=not known)
            failing[doing] = why
        else:
            if failing.pop(doing, None) is not None:
                log.info("supervisor: %s works again", doing)


class Daemon:
    """Everything the daemon runs; ``start()`` then ``serve()``; tests may drive parts directly."""

    def __init__(self, cfg: DaemonConfig, config_path: Path | None = None, notifier: Notifier | None = None) -> None:
        self.cfg = cfg
        self.config_path = config_path  # what a reload re-reads
        self.notifier = notifier or Notifier()
        self.stop_event = threading.Event()
        self.passes = 0
        self.last_pass_end = time.monotonic()  # the watchdog's measure of a live reconcile loop
        self._status_sent = 0.0
        self._reload_lock = threading.Lock()
        self._lock_fd = lock_state_dir(cfg.state_dir)  # before anything else is touched
        self.store = Store(cfg.db_path)
        self.inventory = Inventory(cfg, self.store)
        self.management_key = ManagementKey(cfg.state_dir)
        self.provisioner = Provisioner(cfg, self.inventory, self.management_key.public)
        self.capacity = CapacityRule(cfg, self.store, self.inventory)
        self.registry = CollectorRegistry()
        self.metrics = DaemonMetrics(self.registry)
        self.balancer: Any = None
        self.prometheus: Any = None
        self.autoscaler: Any = None
        self._setup_balancer()
        self.reconciler = Reconciler(
            cfg,
            self.store,
            self.inventory,
            self.provisioner,
            self.balancer,
            on_action=lambda kind, result: self.metrics.action(kind, result),
            capacity=self.capacity,
        )
        self.monitor = HealthMonitor(self.store, cfg.health_interval_s, self.reconciler.wake)
        # Guests' metadata (identity, terminate notices): a unix socket here, a proxy per host.
        self.metadata = MetadataServer(
            socket_path(cfg.state_dir), MetadataService(self.store, self.reconciler.wake, time.time)
        )
        self.metadata_proxies = MetadataProxies(cfg, self.inventory, socket_path(cfg.state_dir))
        self.service = Service(
            cfg,
            self.store,
            self.inventory,
            wake=self.reconciler.wake,
            allocator=self.reconciler.alloc,
            capacity=self.capacity,
        )
        self.service.management_key = self.management_key
        self.service.upgrades = self.reconciler.upgrades  # rolling-upgrade start/cancel: the loop's own
        self.service.scale_planner = self.reconciler.scale_plan  # what-if: the plan a pass carries out
        self.sources = Sources(self.store, self.inventory)
        self.threads: list[threading.Thread] = []
        self.exporter: Any = None
        self.api_cert: Certificate | None = None  # the TCP API's TLS certificate (start)

    def _setup_balancer(self) -> None:
        if not self.cfg.haproxy_enabled:
            return
        from localvmss.balancer import HAProxyBalancer

        self.balancer = HAProxyBalancer(self.cfg, self.store)

    def start(self) -> None:
        self.api_cert = self._api_certificate()  # a bad given certificate stops the start here
        start_event_loop()
        self.inventory.prepare_all()
        self.metadata.start()
        self.metadata_proxies.ensure_running()
        for name, host in self.inventory.hosts.items():
            try:
                host.register_lifecycle_events(lambda _dom, _event: self.reconciler.wake())
            except LocalVMSSError as exc:
                log.warning("no lifecycle events from %s: %s", name, exc.message)
        for row in self.store.hosts():
            if row.accel_reason:
                log.info("accelerator: %s", row.accel_reason)
        self.registry.register(InstanceCollector(self.sources.instance_samples))
        self.registry.register(ScaleSetCollector(self.sources.scale_set_samples))
        self.registry.register(StatusCollector(StatusSource(self.store).snapshot))
        self.exporter, port = start_exporter(self.registry, self.cfg.exporter_address, self.cfg.exporter_port)
        log.info("exporter on %s:%d", self.cfg.exporter_address, port)
        if self.balancer is not None:
            self.balancer.start()
            self.service.lb_validator = self.balancer.validate
            self.capacity.lb_check = self.balancer.validate
            self.service.balancer = self.balancer
        self._start_prometheus(port)
        self.reconciler.pass_hook = self._count_pass
        self._spawn("reconciler", self.reconciler.run, self.stop_event)
        self._spawn("health", self.monitor.run, self.stop_event)
        self._spawn("supervisor", self._supervise)
        if self.notifier.watchdog_s:
            self._spawn("watchdog", self._watchdog, self.notifier.watchdog_s)
        if self.autoscaler is not None:
            self._spawn("autoscaler", self.autoscaler.run, self.stop_event)

    def _start_prometheus(self, exporter_port: int) -> None:
        from localvmss.metrics.prometheus import PrometheusServer

        self.guest_sd_path = self.cfg.state_dir / "prometheus" / "guests.json"
        self.guest_sd_path.parent.mkdir(parents=True, exist_ok=True)
        self.sources.write_guest_targets(str(self.guest_sd_path))
        if self.cfg.prometheus_url:
            url = self.cfg.prometheus_url
        else:
            extra = {}
            if self.balancer is not None:
                extra["haproxy"] = [f"127.0.0.1:{self.cfg.haproxy_stats_port}"]
            self.prometheus = PrometheusServer(
                self.cfg.state_dir / "prometheus",
                listen=f"127.0.0.1:{self.cfg.prometheus_port}",
                scrape_interval_s=self.cfg.scrape_interval_s,
                exporter_targets=[f"{self.cfg.exporter_address}:{exporter_port}"],
                file_sd_paths={"localvmss-guest": self.guest_sd_path},
                extra_static=extra,
                binary=self.cfg.prometheus_binary,
            )
            left = children.recorded(self.cfg.state_dir, "prometheus")
            if left is None or not self.prometheus.adopt(left):
                self.prometheus.start()
            children.record(self.cfg.state_dir, "prometheus", self.prometheus.pid)
            url = self.prometheus.url
        log.info("prometheus at %s", url)
        self.prometheus_url = url
        from localvmss.autoscaler import Autoscaler

        self.autoscaler = Autoscaler(
            self.store,
            url,
            self.cfg.autoscale_interval_s,
            self.reconciler.wake,
            capacity=self.capacity,
            metrics=self.metrics,
        )
        self.service.autoscaler = self.autoscaler

    def _spawn(self, name: str, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _count_pass(self, report: Any) -> None:
        self.metadata.recheck()  # the pass may have scheduled a terminate notice: held requests see it now
        self.passes += 1
        self.last_pass_end = time.monotonic()
        self.metrics.observe_reconcile(report.duration_s)
        for _ in report.errors:
            self.metrics.error("reconcile")
        if self.notifier.enabled and self.last_pass_end - self._status_sent >= STATUS_EVERY_S:
            self._status_sent = self.last_pass_end
            self.notifier.status(self.status_line(report.duration_s))

    def status_line(self, pass_s: float | None = None) -> str:
        """What ``systemctl status`` shows: sets, instances, the last pass."""
        sets = self.store.scale_sets()
        instances = self.store.instances()
        healthy = sum(1 for inst in instances if inst.health == "healthy")
        last = f"; pass {self.passes} took {pass_s * 1000:.0f} ms" if pass_s is not None else ""
        return f"{len(sets)} scale sets, {len(instances)} instances ({healthy} healthy){last}"

    def _watchdog(self, period_s: float) -> None:
        """WATCHDOG=1 at half systemd's period, only while reconcile passes keep finishing: a
        pass stuck longer than ``watchdog_pass_s`` (a hung libvirt call) withholds the ping."""
        stuck_logged = False
        while not self.stop_event.wait(period_s / 2):
            since = time.monotonic() - self.last_pass_end
            if since < self.cfg.watchdog_pass_s:
                self.notifier.watchdog()
                stuck_logged = False
            elif not stuck_logged:
                log.error(
                    "no reconcile pass has finished for %.0f s (watchdog_pass_s %.0f): withholding the watchdog "
                    "ping so systemd restarts the daemon (HAProxy and the guests keep serving)",
                    since,
                    self.cfg.watchdog_pass_s,
                )
                stuck_logged = True

    def reload(self) -> tuple[dict[str, Any], list[str]]:
        """Re-read the configuration file (SIGHUP, ``systemctl reload``): live keys change now,
        added ``[[hosts]]`` join; the rest is named as needing a restart. A bad file changes
        nothing. Returns (what changed, what needs a restart)."""
        with self._reload_lock:
            self.notifier.reloading()
            try:
                new = load_config(self.config_path)
                live, restart = reload_changes(self.cfg, new)
                for host_cfg in live.pop("hosts", []):
                    self.inventory.add_host(host_cfg)
                    self.cfg.hosts = [*self.cfg.hosts, host_cfg]
                    log.info("reload: host %s joined", host_cfg.name)
                for key, value in live.items():
                    setattr(self.cfg, key, value)
                self.monitor.interval_s = self.cfg.health_interval_s
                if self.autoscaler is not None:
                    self.autoscaler.interval_s = self.cfg.autoscale_interval_s
                if "log_format" in live or "log_level" in live:
                    configure_logging(getattr(logging, self.cfg.log_level.upper()), self.cfg.log_format)
                log.info(
                    "reload: %s%s",
                    ", ".join(f"{k} = {v!r}" for k, v in live.items()) or "no live change",
                    f"; changed but only a restart applies: {', '.join(restart)}" if restart else "",
                )
                self.reconciler.wake()
                return live, restart
            except LocalVMSSError as exc:
                log.error("reload refused, the running configuration stays: %s", exc.message)
                return {}, []
            finally:
                self.notifier.ready(self.status_line())

    def _supervise(self) -> None:
        """Every 2 s, each step on its own: one that fails (a full disk cannot take the guest
        targets file) must not keep HAProxy or Prometheus from being started again. A failure is
        logged once, in one line, until it changes or the step works again."""
        steps: list[tuple[str, Callable[[], None]]] = [
            ("writing the guest metrics targets", lambda: self.sources.write_guest_targets(str(self.guest_sd_path))),
            ("supervising prometheus", self._supervise_prometheus),
            ("supervising haproxy", self._supervise_haproxy),
            ("supervising the metadata proxies", self.metadata_proxies.ensure_running),
            ("returning freed memory to the system", MallocTrim()),
        ]
        failing: dict[str, str] = {}
        while not self.stop_event.wait(2.0):
            run_supervisor_steps(steps, failing)

    def _supervise_prometheus(self) -> None:
        if self.prometheus is not None and self.prometheus.ensure_running():
            children.record(self.cfg.state_dir, "prometheus", self.prometheus.pid)
            log.warning("prometheus had stopped; restarted it")

    def _supervise_haproxy(self) -> None:
        if self.balancer is not None and self.balancer.ensure_running():
            log.warning("haproxy had stopped; restarted it with its backends")
            self.reconciler.wake()

    def serve(self) -> None:
        """Serve the API until SIGTERM/SIGINT, then stop everything. The unix socket speaks plain
        HTTP (its mode says who may use it); the TCP socket has a server of its own, because TLS
        (``api_tls``) is for it alone. Both run in one event loop and stop together."""
        app = create_app(self.service, self.cfg.api_token)
        listeners: list[tuple[_Server, list[socket.socket]]] = []

        def listening() -> None:  # once every server listens
            if all(server.started for server, _ in listeners):
                self._listening()

        # No proxy headers: who is a local client must not be decided by what a client claims.
        options: dict[str, Any] = {"log_level": "warning", "access_log": False, "log_config": None}
        options.update(UVICORN_OPTIONS)
        listeners.append((_Server(uvicorn.Config(app, **options), listening), [self._unix_socket()]))
        if self.cfg.api_tcp:
            host, _, port = self.cfg.api_tcp.rpartition(":")
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((host, int(port)))
            tls: dict[str, Any] = {}
            if self.api_cert is not None:
                tls = {"ssl_certfile": str(self.api_cert.cert), "ssl_keyfile": str(self.api_cert.key)}
            # The app's lifespan (if it ever has one) runs once, with the unix socket's server.
            tcp_config = uvicorn.Config(app, lifespan="off", **options, **tls)
            listeners.append((_Server(tcp_config, listening), [tcp]))

        def stop(signum: int, _frame: object) -> None:
            log.info("signal %d: stopping", signum)
            self.notifier.stopping()
            for server, _ in listeners:
                server.request_exit()

        def reload(_signum: int, _frame: object) -> None:
            threading.Thread(target=self.reload, name="reload", daemon=True).start()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, reload)
        try:
            asyncio.run(_serve_all(listeners))
        finally:
            self.shutdown()

    def _api_certificate(self) -> Certificate | None:
        """The TCP API's certificate (made, reused or given), or None without TLS; InvalidSpec
        for a given one that cannot be used. Asked before anything starts."""
        if not self.cfg.api_tcp or not self.cfg.api_tls:
            return None
        host = self.cfg.api_tcp.rpartition(":")[0]
        # Made or checked by a child process: cryptography never loads in the daemon (tlsfiles).
        cert = certificate_from_child(self.cfg.state_dir, host, self.cfg.api_tls_cert, self.cfg.api_tls_key)
        if cert.made:
            log.info("made a self-signed TLS certificate %s for the TCP API, valid until %s", cert.cert, cert.not_after)
        return cert

    def _listening(self) -> None:
        """The API accepts connections: only now is the daemon ready for systemd."""
        log.info("localvmssd %s serving on %s", __version__, self.cfg.api_socket)
        if self.cfg.api_tcp and self.api_cert is not None:
            log.info(
                "TCP API on https://%s, certificate %s (SHA-256 fingerprint %s)",
                self.cfg.api_tcp,
                self.api_cert.cert,
                self.api_cert.fingerprint,
            )
        elif self.cfg.api_tcp:
            log.warning(
                "TCP API on http://%s without TLS (api_tls = false): Azure's SDKs refuse to send a bearer token "
                "over plain HTTP",
                self.cfg.api_tcp,
            )
        self.notifier.ready(self.status_line())

    def _unix_socket(self) -> socket.socket:
        path = self.cfg.api_socket
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
        if self.cfg.api_socket_group:
            os.chown(path, -1, _group_id(self.cfg.api_socket_group))
        os.chmod(path, 0o660)
        return sock

    def shutdown(self) -> None:
        """Stop the control plane only: HAProxy and Prometheus keep serving for the next daemon.
        Loops first, then the workers (bounded), and the store last, so no worker writes to a
        closed database."""
        self.notifier.stopping()
        self.stop_event.set()
        self.reconciler.wake()
        for thread in self.threads:
            thread.join(15)
        self.reconciler.stop()
        self.metadata.stop()
        if self.exporter is not None:
            self.exporter.stop()
        self.store.close()
        os.close(self._lock_fd)
        log.info("stopped (HAProxy and Prometheus keep running)")


async def _serve_all(listeners: list[tuple[_Server, list[socket.socket]]]) -> None:
    """Run every server until each has stopped; one that fails takes the others down with it."""
    try:
        await asyncio.gather(*(server.serve(sockets=sockets) for server, sockets in listeners))
    finally:
        for server, _ in listeners:
            server.request_exit()


class _Server(uvicorn.Server):
    """uvicorn, minus its signal capture (it re-raises SIGTERM after serving, which would kill the
    process before the daemon stops its children; the daemon handles the signals itself), plus a
    call once its sockets listen, and a main loop that wakes once a second instead of ten times
    (``API_TICK_S``; ``request_exit`` wakes it at once)."""

    def __init__(self, config: uvicorn.Config, on_listening: Any) -> None:
        super().__init__(config)
        self._on_listening = on_listening
        self._loop: asyncio.AbstractEventLoop | None = None
        self._exit_requested: asyncio.Event | None = None

    async def main_loop(self) -> None:
        """uvicorn's loop sleeps 0.1 s between ticks (its Date header every 10th, the exit flag
        every one): 10 wake-ups a second, 0.17 % of a core idle (issue 16). Here each tick
        refreshes the Date header (counter 0) and waits up to ``API_TICK_S`` or a stop."""
        self._loop = asyncio.get_running_loop()
        self._exit_requested = asyncio.Event()
        while not await self.on_tick(0):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exit_requested.wait(), API_TICK_S)

    def request_exit(self) -> None:
        """Stop serving (from a signal handler or another thread): the loop wakes now."""
        self.should_exit = True
        loop, event = self._loop, self._exit_requested
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed already
                loop.call_soon_threadsafe(event.set)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_listening()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """As uvicorn's, but idle TLS connections are dropped first: closed politely, each waits
        for the client's close_notify, which an idle keep-alive client never sends, so the stop
        would wait asyncio's ssl_shutdown_timeout (30 s). Requests in flight still finish."""
        if self.config.is_ssl:
            for connection in list(self.server_state.connections):
                cycle = getattr(connection, "cycle", None)
                transport = getattr(connection, "transport", None)
                if transport is not None and (cycle is None or cycle.response_complete):
                    transport.abort()
        await super().shutdown(sockets)


def _group_id(name: str) -> int:
    import grp

    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise InvalidSpec(
            f"api_socket_group {name!r} is not a group on this machine (groupadd --system {name})"
        ) from None


def stop_data_plane(cfg: DaemonConfig) -> list[str]:
    """Stop the HAProxy, Prometheus and metadata proxies of this state directory (for good: an uninstall, the
    demo's teardown). Refused while a daemon runs on it, which would only start them again."""
    fd = lock_state_dir(cfg.state_dir)
    try:
        stopped = []
        from localvmss.lb.haproxy import LoadBalancer

        lb = LoadBalancer(cfg.state_dir / "haproxy", cfg.haproxy_binary, cfg.haproxy_stats_port)
        if lb.master_pid is not None or lb.is_running():
            stopped.append("haproxy")
        lb.stop()
        if children.stop(cfg.state_dir, "prometheus"):
            stopped.append("prometheus")
        stopped += [f"metadata proxy of {h}" for h in stop_all(cfg.state_dir)]
        return stopped
    finally:
        os.close(fd)


def _database_command(cfg: DaemonConfig, check: bool, backup: Path | None) -> int:
    store = Store(cfg.db_path)
    try:
        if backup is not None:
            store.backup(backup)
            print(f"localvmssd: state database {cfg.db_path} backed up to {backup}")
        if check:
            problems = store.check()
            if problems:
                print(
                    f"localvmssd: state database {cfg.db_path} is damaged: {'; '.join(problems[:5])}", file=sys.stderr
                )
                return 1
            print(f"localvmssd: state database {cfg.db_path} is sound")
        return 0
    finally:
        store.close()


def version_text() -> str:
    """``--version``: ours and what we run on (read from package metadata: no libvirt import)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        libvirt_python = version("libvirt-python")
    except PackageNotFoundError:
        libvirt_python = "not installed"
    return f"localvmssd {__version__} (Python {sys.version.split()[0]}, libvirt-python {libvirt_python})"


def check_config(cfg: DaemonConfig, path: Path | None) -> list[str]:
    """``--check-config``: what a start would refuse before touching anything (the file was
    parsed already); returns the problems, each one line."""
    import shutil

    problems = []
    if cfg.api_socket_group:
        try:
            _group_id(cfg.api_socket_group)
        except InvalidSpec as exc:
            problems.append(exc.message)
    if cfg.api_tcp and cfg.api_tls and cfg.api_tls_cert is not None and cfg.api_tls_key is not None:
        from localvmss.tlscert import given_certificate

        try:
            given_certificate(cfg.api_tls_cert, cfg.api_tls_key)
        except InvalidSpec as exc:
            problems.append(exc.message)
    if cfg.haproxy_enabled and shutil.which(cfg.haproxy_binary) is None:
        problems.append(f"haproxy_binary {cfg.haproxy_binary!r} is not found (apt-get install haproxy)")
    if cfg.prometheus_url is None and shutil.which(cfg.prometheus_binary) is None:
        problems.append(f"prometheus_binary {cfg.prometheus_binary!r} is not found (apt-get install prometheus)")
    return problems


def limit_malloc_arenas(env: Mapping[str, str] | None = None, libc: Any = None, arenas: int = MALLOC_ARENAS) -> str:
    """Cap glibc's malloc arenas (``mallopt(M_ARENA_MAX)``) before the daemon starts its threads,
    as ``MALLOC_ARENA_MAX`` in the systemd unit does from the process's start. A value the
    environment sets is left as it is; a C library without mallopt (musl) is left alone.
    Returns what was done, for the log."""
    given = (os.environ if env is None else env).get("MALLOC_ARENA_MAX")
    if given:
        return f"malloc arenas: MALLOC_ARENA_MAX={given} from the environment"
    try:
        mallopt = (libc if libc is not None else ctypes.CDLL(None)).mallopt
    except (OSError, AttributeError):
        return "malloc arenas: not capped (no mallopt in this C library)"
    if not mallopt(ctypes.c_int(M_ARENA_MAX), ctypes.c_int(arenas)):
        return "malloc arenas: not capped (mallopt refused M_ARENA_MAX)"
    return f"malloc arenas: at most {arenas}"


# How often the supervisor hands freed heap memory back to the kernel (MallocTrim).
MALLOC_TRIM_INTERVAL_S = 60.0


class MallocTrim:
    """glibc's ``malloc_trim(0)`` at most once per ``interval_s``, as a supervisor step: it gives
    the kernel back the pages of freed memory malloc still holds (start-up's temporary objects
    first: ~3 MiB of RSS after the imports alone) for well under a millisecond. A C library
    without malloc_trim (musl) makes this a no-op."""

    def __init__(
        self, interval_s: float = MALLOC_TRIM_INTERVAL_S, libc: Any = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        try:
            self._trim: Any = (libc if libc is not None else ctypes.CDLL(None)).malloc_trim
        except (OSError, AttributeError):
            self._trim = None
        self.interval_s = interval_s
        self._clock = clock
        self._last: float | None = None

    def __call__(self) -> None:
        if self._trim is None:
            return
        now = self._clock()
        if self._last is not None and now - self._last < self.interval_s:
            return
        self._last = now
        self._trim(ctypes.c_size_t(0))


def enable_crash_traces() -> None:
    """A crash in native code (libvirt, the C library) prints every thread's Python stack to
    stderr (the journal under systemd) before the process dies: without it a segfault leaves no
    word at all in the daemon's log, only a line in the kernel's."""
    faulthandler.enable(all_threads=True)


def main(argv: list[str] | None = None) -> int:
    enable_crash_traces()
    arenas = limit_malloc_arenas()  # before any thread exists
    parser = argparse.ArgumentParser(prog="localvmssd", description="localvmss daemon")
    parser.add_argument("--config", type=Path, default=None, help="TOML configuration file")
    parser.add_argument("--version", action="version", version=version_text())
    parser.add_argument("--debug", action="store_true", help="verbose logs with tracebacks")
    parser.add_argument(
        "--check-config", action="store_true", help="validate the configuration (file and LOCALVMSSD_*), then exit"
    )
    parser.add_argument(
        "--stop-data-plane",
        action="store_true",
        help="stop the HAProxy and Prometheus this state directory's daemon left running, then exit",
    )
    parser.add_argument("--check-db", action="store_true", help="check the state database's integrity, then exit")
    parser.add_argument("--backup-db", type=Path, metavar="PATH", help="write a consistent copy of the state database")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except LocalVMSSError as exc:
        print(f"localvmssd: {exc.message}", file=sys.stderr)
        return exc.exit_code
    configure_logging(logging.DEBUG if args.debug else getattr(logging, cfg.log_level.upper()), cfg.log_format)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    log.debug("%s", arenas)
    try:
        if args.check_config:
            problems = check_config(cfg, args.config)
            where = args.config or "defaults (no file)"
            for problem in problems:
                print(f"localvmssd: {problem}", file=sys.stderr)
            if problems:
                return InvalidSpec.exit_code
            names = ", ".join(f"{h.name} ({h.uri})" for h in cfg.hosts)
            print(f"localvmssd: configuration {where} is valid: hosts {names}; API on {cfg.api_socket}")
            return 0
        if args.stop_data_plane:
            stopped = stop_data_plane(cfg)
            print(f"localvmssd: stopped {', '.join(stopped) or 'nothing (none was running)'}")
            return 0
        if args.check_db or args.backup_db:
            return _database_command(cfg, args.check_db, args.backup_db)
        daemon = Daemon(cfg, args.config)
        daemon.start()
    except LocalVMSSError as exc:
        print(f"localvmssd: {exc.message}", file=sys.stderr)
        return exc.exit_code
    daemon.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
