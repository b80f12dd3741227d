"""One metadata proxy per host, supervised and adopted like HAProxy and Prometheus.

Where a host's proxy runs (``placement``): inside ``metadata_netns`` when the host entry names
one (the lab: each host's libvirtd lives in a namespace of its own), else, for a libvirtd on
this machine (``qemu:///system``, ``qemu+unix``), in the root namespace. Either way it listens
on the gateway address of the host's libvirt network only, port ``metadata_port``. A remote
host (``qemu+ssh://`` ...) has its guests' gateway on another machine, out of reach: the daemon
says once that those guests get no metadata service (their terminate notices then wait out
notBeforeTimeout). Proxies are recorded in ``children`` and keep running across daemon restarts;
``--stop-data-plane`` stops them.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from localvmss import children
from localvmss.config import DaemonConfig, HostConfig
from localvmss.errors import LocalVMSSError
from localvmss.hosturi import LOCAL_SCHEMES
from localvmss.inventory import Inventory

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placement:
    """Where a host's proxy runs: ``netns`` (None: the root namespace), or nowhere (``reason``)."""

    runs: bool
    netns: str | None = None
    reason: str = ""


def placement(host: HostConfig) -> Placement:
    if host.metadata_netns:
        return Placement(True, host.metadata_netns)
    scheme, _, rest = host.uri.partition("://")
    if scheme in LOCAL_SCHEMES and rest.startswith("/"):
        return Placement(True, None)
    return Placement(
        False,
        reason=f"host {host.name} ({host.uri}) is not on this machine and has no metadata_netns: its guests get "
        "no instance metadata service, so their terminate notices wait out notBeforeTimeout",
    )


def child_name(host: str) -> str:
    return f"metadata-proxy-{host}"


def proxy_argv(cfg: DaemonConfig, upstream: Path, host: str, where: Placement, gateway: str) -> list[str]:
    """The proxy's command line (an argv list: nothing goes through a shell)."""
    argv = [
        sys.executable,
        "-m",
        "localvmss.metadata_proxy",
        "--listen",
        f"{gateway}:{cfg.metadata_port}",
        "--upstream",
        str(upstream),
        "--host",
        host,
    ]
    return ["ip", "netns", "exec", where.netns, *argv] if where.netns else argv


class MetadataProxies:
    def __init__(self, cfg: DaemonConfig, inventory: Inventory, upstream: Path) -> None:
        self.cfg = cfg
        self.inv = inventory
        self.upstream = upstream  # the daemon's metadata socket (``metadata.socket_path``)
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._told: dict[str, str] = {}  # host -> what was last logged about it (each thing once)
        self._failed: set[str] = set()

    def _tell(self, host: str, message: str, level: int = logging.WARNING) -> None:
        if self._told.get(host) != message:
            self._told[host] = message
            log.log(level, "%s", message)

    def ensure_running(self) -> None:
        """Start (or adopt) every host's proxy that should run; called at start and by the
        supervisor. A proxy whose command line no longer matches (another port or gateway) is
        replaced."""
        for name, host_cfg in list(self.inv.configs.items()):
            where = placement(host_cfg)
            if not where.runs:
                self._tell(name, where.reason)
                continue
            try:
                gateway = self.inv.address_plan(name).gateway
            except LocalVMSSError:
                continue  # the host is not prepared yet: a later round
            argv = proxy_argv(self.cfg, self.upstream, name, where, gateway)
            proc = self._procs.get(name)
            if proc is not None:
                if proc.poll() is None and proc.args == argv:
                    continue  # ours, running as configured
                if proc.poll() is None:
                    children.stop(self.cfg.state_dir, child_name(name))  # another port or gateway now
                elif proc.returncode:
                    self._failed.add(name)
                    why = self._last_line(name)
                    self._tell(name, f"metadata proxy for host {name} exited ({proc.returncode}): {why}")
                del self._procs[name]
            else:
                pid = children.recorded(self.cfg.state_dir, child_name(name))
                if pid is not None and f"--listen {gateway}:{self.cfg.metadata_port} " in children.cmdline(pid):
                    continue  # left running by an earlier daemon: adopted
                if pid is not None:
                    children.stop(self.cfg.state_dir, child_name(name))
            self._start(name, argv, where, gateway)

    def _start(self, name: str, argv: list[str], where: Placement, gateway: str) -> None:
        log_path = self.cfg.state_dir / f"{child_name(name)}.log"
        with open(log_path, "ab") as out:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True, close_fds=True
            )
        self._procs[name] = proc
        children.record(self.cfg.state_dir, child_name(name), proc.pid)  # waits until it shows as ours
        if name not in self._failed:  # a proxy that keeps failing is told about once, not every round
            log.info(
                "metadata proxy for host %s on %s:%d%s (pid %d; log %s)",
                name,
                gateway,
                self.cfg.metadata_port,
                f" in network namespace {where.netns}" if where.netns else "",
                proc.pid,
                log_path,
            )

    def _last_line(self, name: str) -> str:
        try:
            lines = (self.cfg.state_dir / f"{child_name(name)}.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return lines[-1] if lines else "no output"


def stop_all(state_dir: Path) -> list[str]:
    """Stop every recorded proxy (``--stop-data-plane``); returns the hosts whose proxy ran."""
    prefix = child_name("")
    hosts = [p.stem[len(prefix) :] for p in (state_dir / "children").glob(f"{prefix}*.pid")]
    return [h for h in sorted(hosts) if children.stop(state_dir, child_name(h))]
