"""A whole localvmss deployment on this machine: lab hosts, their networks, and a daemon.

Shared by the demo (``python -m localvmss.lab.demo``) and the test harness, so the tests exercise
exactly what the demo runs. Guest traffic stays inside the lab's namespaces (see ``lab``).
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localvmss.cli.client import ApiClient
from localvmss.config import load_config
from localvmss.errors import LocalVMSSError
from localvmss.lab.hosts import Lab, LabHost, create_lab, destroy_lab
from localvmss.tlsfiles import default_paths
from localvmss.virt.domainxml import network_xml
from localvmss.virt.host import Host

REPO = Path(__file__).resolve().parents[2]
DEFAULT_IMAGE_DIR = REPO / ".cache" / "images" / "localvmss-base"


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port(span: int = 1) -> int:
    """A port on 127.0.0.1 that nothing listens on, with ``span - 1`` free ports after it, all
    outside the kernel's ephemeral range: the daemon refuses LB frontends inside it (an outgoing
    connection may hold such a port when HAProxy binds), and listeners fare better outside it."""
    low, high = _ephemeral_range()
    candidates = [p for p in range(10000, 65536 - span) if not (low - span < p <= high)]
    for _ in range(1000):
        start = random.choice(candidates)
        if all(_bindable(p) for p in range(start, start + span)):
            return start
    raise RuntimeError(f"no {span} free port(s) outside the ephemeral range {low}-{high} on 127.0.0.1")


def define_lab_network(host: LabHost) -> None:
    """The guest network of a lab host: bridge + DHCP in its 198.18.x.0/24, no NAT."""
    net = ipaddress.ip_network(host.guest_network)
    base = int(net.network_address)
    xml = network_xml(
        host.network_name,
        host.bridge,
        str(ipaddress.ip_address(base + 1)),
        str(net.netmask),
        str(ipaddress.ip_address(base + 10)),
        str(ipaddress.ip_address(base + 250)),
    )
    h = Host(host.name, host.socket_uri)
    try:
        h.ensure_network(host.network_name, xml)
    finally:
        h.close()


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(str(value))


@dataclass
class DaemonProcess:
    """A ``localvmssd`` started as users start it (its own process, a config file)."""

    config_path: Path
    socket_path: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def launch(self, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start the daemon process, its output appended to ``log_path``, without waiting for it
        to answer (``start`` waits); ``env`` adds to the environment (e.g. NOTIFY_SOCKET)."""
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "localvmss.daemon", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, **(env or {})},
            )
        return self.proc

    def start(self, timeout_s: float = 180.0) -> None:
        """Start the daemon and return once it answers ``/healthz``; raises RuntimeError with the
        log's tail if it exits first or does not answer within ``timeout_s``."""
        proc = self.launch()
        client = ApiClient(str(self.socket_path), timeout=5.0)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    raise RuntimeError(f"localvmssd exited at start: {self.log_tail(5)}")
                try:
                    client.get("/healthz")
                    return
                except LocalVMSSError:
                    time.sleep(0.3)
        finally:
            client.close()
        raise RuntimeError(f"localvmssd did not answer within {timeout_s:.0f} s: {self.log_tail(5)}")

    def log_tail(self, lines: int = 40, *, problems_only: bool = False) -> str:
        """The log's last lines; with ``problems_only`` its last WARNING/ERROR lines."""
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        if problems_only:
            text = [line for line in text if " WARNING " in line or " ERROR " in line]
        return "\n".join(text[-lines:])

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def kill9(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the daemon and wait for it. Its data plane (HAProxy, Prometheus) keeps
        running for the next daemon to adopt: call ``stop_data_plane`` to end it for good."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    @property
    def state_dir(self) -> Path:
        """The state directory the daemon's configuration names."""
        return load_config(self.config_path).state_dir

    def stop_data_plane(self, timeout_s: float = 60.0) -> None:
        """Stop the HAProxy, Prometheus and metadata proxies of this configuration's state directory
        (``localvmssd --stop-data-plane``; fine when none runs). For when the daemon is stopped
        for good: after ``stop``, never while the daemon runs. Raises RuntimeError with the
        command's own message if it fails or does not finish within ``timeout_s``."""
        args = [sys.executable, "-m", "localvmss.daemon", "--config", str(self.config_path), "--stop-data-plane"]
        try:
            done = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"localvmssd --stop-data-plane did not finish within {timeout_s:.0f} s") from None
        if done.returncode != 0:
            why = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
            raise RuntimeError(
                f"localvmssd --stop-data-plane --config {self.config_path} failed (exit {done.returncode}): {why}"
            )

    def tcp_api(self) -> tuple[str, str, Path | None]:
        """The TCP API as Azure's SDKs reach it: (base URL, token, certificate to trust), the URL
        https unless ``api_tls = false`` (then no certificate). LookupError without ``api_tcp``."""
        cfg = load_config(self.config_path, {})
        if not cfg.api_tcp or not cfg.api_token:
            raise LookupError(f"{self.config_path} has no api_tcp")
        if not cfg.api_tls:
            return f"http://{cfg.api_tcp}", cfg.api_token, None
        return f"https://{cfg.api_tcp}", cfg.api_token, cfg.api_tls_cert or default_paths(cfg.state_dir)[0]

    def haproxy_master_pid(self) -> int | None:
        """HAProxy's master pid from ``<state_dir>/haproxy/haproxy.pid`` (its first line);
        None when there is no such file or it holds no pid."""
        try:
            first = (self.state_dir / "haproxy" / "haproxy.pid").read_text().splitlines()[0]
            return int(first.strip())
        except (OSError, IndexError, ValueError):
            return None


@dataclass
class Testbed:
    __test__ = False  # not a pytest test class, despite the name
    tag: str
    host_count: int = 1
    root: Path = Path("/var/lib/localvmss-lab")
    zones: list[str | None] = field(default_factory=list)
    lab: Lab | None = None

    def up(self) -> Lab:
        self.lab = create_lab(self.tag, self.host_count)
        try:
            for host in self.lab.hosts:
                define_lab_network(host)
        except BaseException:
            destroy_lab(self.lab)
            raise
        return self.lab

    def down(self) -> None:
        if self.lab is not None:
            destroy_lab(self.lab)
            self.lab = None

    def host_entries(self) -> list[dict[str, Any]]:
        assert self.lab is not None
        entries = []
        for i, host in enumerate(self.lab.hosts):
            entry: dict[str, Any] = {
                "name": host.name,
                "uri": host.socket_uri,  # root-only unix socket: the lab libvirtd has no TCP listener
                "network": host.network_name,
                "serial_log_dir": "/var/log/libvirt/qemu",
                "serial_log_read_dir": f"{host.state_dir}/log/qemu",
                # The metadata proxy listens on the guest network's gateway inside the host's namespace.
                "metadata_netns": host.netns,
            }
            zone = self.zones[i] if i < len(self.zones) else None
            if zone:
                entry["zone"] = zone
            entries.append(entry)
        return entries

    def static_addresses(self, host: LabHost) -> str:
        """The part of a lab host's /24 outside its DHCP range (.10-.250) that a daemon may hand
        out as static addresses (``HostConfig.static_addresses``): .2-.9."""
        base = int(ipaddress.ip_network(host.guest_network).network_address)
        return f"{ipaddress.ip_address(base + 2)}-{ipaddress.ip_address(base + 9)}"

    def write_config(
        self, state_dir: Path, host_settings: dict[str, dict[str, Any]] | None = None, **settings: Any
    ) -> Path:
        """A daemon configuration for this lab; ``settings`` override the defaults, and
        ``host_settings`` (host name -> keys) those of its ``[[hosts]]`` entries."""
        state_dir.mkdir(parents=True, exist_ok=True)
        values: dict[str, Any] = {
            "state_dir": str(state_dir),
            "api_socket": str(state_dir / "api.sock"),
            "exporter_port": free_port(),
            "prometheus_port": free_port(),
            "haproxy_stats_port": free_port(),
            # Per daemon, so that two daemons on one lab never share a proxy (guests learn it from the seed).
            "metadata_port": free_port(),
            "scrape_interval_s": 2.0,
            "reconcile_interval_s": 2.0,
            "health_interval_s": 1.0,
            "autoscale_interval_s": 2.0,
        }
        values.update(settings)
        lines = ["# written by localvmss.lab.testbed"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items() if v is not None]
        for entry in self.host_entries():
            entry.update((host_settings or {}).get(entry["name"], {}))
            lines.append("")
            lines.append("[[hosts]]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in entry.items()]
        path = state_dir / "localvmssd.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def daemon(
        self, state_dir: Path, host_settings: dict[str, dict[str, Any]] | None = None, **settings: Any
    ) -> DaemonProcess:
        config = self.write_config(state_dir, host_settings, **settings)
        return DaemonProcess(config, state_dir / "api.sock", state_dir / "localvmssd.log")

    def serial_log(self, host_name: str, domain: str) -> str:
        """One guest's serial console since its last start (libvirt truncates it on each start)."""
        host = next((h for h in self.lab.hosts if h.name == host_name), None) if self.lab else None
        if host is None:
            raise LookupError(f"no lab host {host_name!r}")
        return (_serial_dir(host) / f"{domain}-serial.log").read_text(errors="replace")

    def serial_logs(self) -> dict[str, str]:
        """Every guest serial log of the lab (for failure reports)."""
        out: dict[str, str] = {}
        if self.lab is None:
            return out
        for host in self.lab.hosts:
            for path in sorted(_serial_dir(host).glob("*-serial.log")):
                out[f"{host.name}/{path.name}"] = path.read_text(errors="replace")[-4000:]
        return out


def _serial_dir(host: LabHost) -> Path:
    """Where the lab host's libvirt writes guest serial logs, seen from outside its namespace."""
    return Path(host.state_dir, "log", "qemu")
