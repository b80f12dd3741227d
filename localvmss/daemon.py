"""``localvmssd``: the daemon. Wires the store, hosts, reconciler, health monitor, load balancer,
exporter, Prometheus and autoscaler together and serves the REST API.

Threads: the reconcile loop, the health monitor, libvirt's event loop (events only wake the
reconciler), a supervisor (HAProxy, Prometheus, guest scrape targets) and the API server in the
main thread. SIGTERM/SIGINT stop the API server, then every loop.

The data plane never depends on the control plane: HAProxy and Prometheus keep running when the
daemon stops or crashes, and the next daemon adopts them; only ``--stop-data-plane`` stops them.
One daemon per state directory: a lock taken before anything else is touched turns a second
daemon away before it can disturb the first one's processes.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry

from localvmss import __version__, children
from localvmss.api.app import UVICORN_OPTIONS, create_app
from localvmss.capacity import CapacityRule
from localvmss.config import DaemonConfig, load_config
from localvmss.errors import Conflict, LocalVMSSError
from localvmss.inventory import Inventory
from localvmss.metrics.exporter import DaemonMetrics, InstanceCollector, ScaleSetCollector, start_exporter
from localvmss.metrics.sources import Sources
from localvmss.monitor import HealthMonitor
from localvmss.provision import Provisioner
from localvmss.reconciler import Reconciler
from localvmss.runcommand import ManagementKey
from localvmss.service import Service
from localvmss.store import Store
from localvmss.virt.host import start_event_loop

log = logging.getLogger("localvmssd")

LOCK_FILE = "localvmssd.lock"


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


class Daemon:
    """Everything the daemon runs; ``start()`` then ``serve()``; tests may drive parts directly."""

    def __init__(self, cfg: DaemonConfig) -> None:
        self.cfg = cfg
        self.stop_event = threading.Event()
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
        )
        self.monitor = HealthMonitor(self.store, cfg.health_interval_s, self.reconciler.wake)
        self.service = Service(
            cfg,
            self.store,
            self.inventory,
            wake=self.reconciler.wake,
            allocator=self.reconciler.alloc,
            capacity=self.capacity,
        )
        self.service.management_key = self.management_key
        self.sources = Sources(self.store, self.inventory)
        self.threads: list[threading.Thread] = []
        self.exporter: Any = None

    def _setup_balancer(self) -> None:
        if not self.cfg.haproxy_enabled:
            return
        from localvmss.balancer import HAProxyBalancer

        self.balancer = HAProxyBalancer(self.cfg, self.store)

    def start(self) -> None:
        start_event_loop()
        self.inventory.prepare_all()
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
            self.store, url, self.cfg.autoscale_interval_s, self.reconciler.wake, capacity=self.capacity
        )
        self.service.autoscaler = self.autoscaler

    def _spawn(self, name: str, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _count_pass(self, report: Any) -> None:
        self.metrics.observe_reconcile(report.duration_s)
        for _ in report.errors:
            self.metrics.error("reconcile")

    def _supervise(self) -> None:
        while not self.stop_event.wait(2.0):
            try:
                self.sources.write_guest_targets(str(self.guest_sd_path))
                if self.prometheus is not None and self.prometheus.ensure_running():
                    children.record(self.cfg.state_dir, "prometheus", self.prometheus.pid)
                    log.warning("prometheus had stopped; restarted it")
                if self.balancer is not None and self.balancer.ensure_running():
                    log.warning("haproxy had stopped; restarted it with its backends")
                    self.reconciler.wake()
            except Exception:
                log.exception("supervisor pass failed")

    def serve(self) -> None:
        """Serve the API until SIGTERM/SIGINT, then stop everything."""
        sockets = [self._unix_socket()]
        if self.cfg.api_tcp:
            host, _, port = self.cfg.api_tcp.rpartition(":")
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((host, int(port)))
            sockets.append(tcp)
        app = create_app(self.service, self.cfg.api_token)
        # No proxy headers: who is a local client must not be decided by what a client claims.
        server = _Server(uvicorn.Config(app, log_level="warning", access_log=False, **UVICORN_OPTIONS))

        def stop(signum: int, _frame: object) -> None:
            log.info("signal %d: stopping", signum)
            server.should_exit = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        _notify("READY=1")
        log.info("localvmssd %s serving on %s", __version__, self.cfg.api_socket)
        try:
            server.run(sockets=sockets)
        finally:
            self.shutdown()

    def _unix_socket(self) -> socket.socket:
        path = self.cfg.api_socket
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
        os.chmod(path, 0o660)
        return sock

    def shutdown(self) -> None:
        """Stop the control plane only: HAProxy and Prometheus keep serving for the next daemon.
        Loops first, then the workers (bounded), and the store last, so no worker writes to a
        closed database."""
        _notify("STOPPING=1")
        self.stop_event.set()
        self.reconciler.wake()
        for thread in self.threads:
            thread.join(15)
        self.reconciler.stop()
        if self.exporter is not None:
            self.exporter.stop()
        self.store.close()
        os.close(self._lock_fd)
        log.info("stopped (HAProxy and Prometheus keep running)")


class _Server(uvicorn.Server):
    """uvicorn, minus its signal capture: it re-raises SIGTERM after serving, which would kill the
    process before the daemon stops its children; the daemon handles the signals itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _notify(message: str) -> None:
    """sd_notify without a dependency: one datagram to $NOTIFY_SOCKET when systemd asks for it."""
    target = os.environ.get("NOTIFY_SOCKET")
    if not target:
        return
    if target.startswith("@"):
        target = "\0" + target[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(target)
            sock.sendall(message.encode())
        except OSError:
            pass


def stop_data_plane(cfg: DaemonConfig) -> list[str]:
    """Stop the HAProxy and Prometheus of this state directory (for good: an uninstall, the
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="localvmssd", description="localvmss daemon")
    parser.add_argument("--config", type=Path, default=None, help="TOML configuration file")
    parser.add_argument("--debug", action="store_true", help="verbose logs with tracebacks")
    parser.add_argument(
        "--stop-data-plane",
        action="store_true",
        help="stop the HAProxy and Prometheus this state directory's daemon left running, then exit",
    )
    parser.add_argument("--check-db", action="store_true", help="check the state database's integrity, then exit")
    parser.add_argument("--backup-db", type=Path, metavar="PATH", help="write a consistent copy of the state database")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        cfg = load_config(args.config)
        if args.stop_data_plane:
            stopped = stop_data_plane(cfg)
            print(f"localvmssd: stopped {', '.join(stopped) or 'nothing (none was running)'}")
            return 0
        if args.check_db or args.backup_db:
            return _database_command(cfg, args.check_db, args.backup_db)
        daemon = Daemon(cfg)
        daemon.start()
    except LocalVMSSError as exc:
        print(f"localvmssd: {exc.message}", file=sys.stderr)
        return exc.exit_code
    daemon.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
