"""Render haproxy.cfg from the desired state of every scale set, write it atomically, check it.

The configuration file is the durable copy of the load balancer: every member that exists is
written into it, because servers added only through the runtime API vanish on a reload or a
restart (HAProxy's management guide says so for "add server"). Rendering is a pure function of
the desired state, so the same state always gives the same file (golden tests rely on it).
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from localvmss.errors import InvalidSpec, LocalVMSSError
from localvmss.lb.runtime import AdminState
from localvmss.lb.spec import LoadBalancerSpec, Member

ADMIN_SOCKET = "admin.sock"
MASTER_SOCKET = "master.sock"
CONFIG_FILE = "haproxy.cfg"
SERVER_STATE_FILE = "server-state"
UNIX_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL

# Bounded so an old worker left by a reload cannot keep long-lived TCP sessions (and their
# memory) forever; long enough for ordinary HTTP requests to finish on the old worker.
HARD_STOP_AFTER = "60s"


class ConfigError(LocalVMSSError):
    """HAProxy refused a rendered configuration: a bug in rendering or an unusable host setting."""

    code = "LoadBalancerConfigError"


@dataclass(frozen=True)
class SetState:
    """What one scale set wants from the load balancer right now.

    ``draining`` holds instance ids being drained before removal: they stay in HAProxy (so their
    open connections finish) but take no new connections, and a fresh process starts them
    disabled.
    """

    spec: LoadBalancerSpec
    members: tuple[Member, ...]
    draining: frozenset[int] = field(default_factory=frozenset)

    def member(self, instance_id: int) -> Member | None:
        for m in self.members:
            if m.instance_id == instance_id:
                return m
        return None

    def admin_state(self, member: Member) -> AdminState:
        """The HAProxy administrative state this member should have: ready, drain or maint."""
        if not member.ready:
            return "maint"
        if member.instance_id in self.draining:
            return "drain"
        return "ready"

    def nat_map(self) -> tuple[tuple[int, int, str], ...]:
        """(instance id, NAT port, address) of every NAT listener: a change needs a reload."""
        return tuple((m.instance_id, m.nat_port, m.address) for m in self.members if m.nat_port is not None)


# ---- names: all derived here so config, runtime calls and parsing agree --------------------


def frontend_name(set_name: str, frontend_port: int) -> str:
    return f"lvmss-{set_name}-{frontend_port}"


def backend_name(set_name: str, backend_port: int) -> str:
    return f"lvmss-{set_name}-{backend_port}"


def nat_listen_name(set_name: str, instance_id: int) -> str:
    return f"lvmss-{set_name}-nat-{instance_id}"


def server_name(instance_id: int) -> str:
    return f"i{instance_id}"


def server_id(instance_id: int) -> int:
    """A fixed numeric server id (instance id + 1, ids start at 1).

    The server-state file matches servers across reloads; fixed ids keep a dynamic server and
    its later config line the same server.
    """
    return instance_id + 1


def instance_of_server(name: str) -> int | None:
    """The instance id in a server name we made (``i12``); None for anything else (str.isdigit
    would take "i²", which int() then refuses)."""
    if re.fullmatch(r"i(?:0|[1-9][0-9]*)", name):
        return int(name[1:])
    return None


def expected_proxies(set_name: str, state: SetState) -> set[str]:
    """Every proxy name (frontend, backend, listen) the set's config section declares."""
    names = {frontend_name(set_name, r.frontend_port) for r in state.spec.rules}
    names |= {backend_name(set_name, p) for p in state.spec.backend_ports()}
    names |= {nat_listen_name(set_name, m.instance_id) for m in state.members if m.nat_port is not None}
    return names


def _addr(address: str, port: int) -> str:
    # HAProxy takes the last ':' as the port separator, so IPv6 needs no brackets.
    return f"{address}:{port}"


def check_options(spec: LoadBalancerSpec, backend_port: int) -> list[str]:
    """Health-check keywords for one server line.

    Spelled out on every server (not only in default-server) because servers added through the
    runtime API do not inherit default-server settings (management guide, "add server").
    """
    probe = spec.probe
    opts = [
        "check",
        f"inter {probe.interval_seconds}s",
        f"rise {probe.healthy_threshold}",
        f"fall {probe.unhealthy_threshold}",
    ]
    check_port = spec.probe_port_for(backend_port)
    if check_port != backend_port:
        opts.append(f"port {check_port}")
    return opts


def server_args(
    spec: LoadBalancerSpec,
    backend_port: int,
    member: Member,
    *,
    namespace: str | None = None,
    dynamic: bool = False,
) -> list[str]:
    """The words after ``server <name>`` in the config file, or in ``add server`` if ``dynamic``.

    Both give the server the same settings; the config line leaves the check timing to the
    backend's default-server line, the runtime command must spell it out.
    """
    args = [_addr(member.address, backend_port), f"id {server_id(member.instance_id)}"]
    if dynamic:
        args += check_options(spec, backend_port)
    else:
        args.append("check")
        check_port = spec.probe_port_for(backend_port)
        if check_port != backend_port:
            args.append(f"port {check_port}")
    if namespace:
        args.append(f"namespace {namespace}")
    return args


def _set_section(set_name: str, state: SetState, namespace: str | None) -> list[str]:
    spec = state.spec
    out = [f"# ---- scale set {set_name} ----"]
    for rule in spec.rules:
        out += [
            f"frontend {frontend_name(set_name, rule.frontend_port)}",
            f"    bind {_addr(spec.bind_address, rule.frontend_port)}",
            f"    default_backend {backend_name(set_name, rule.backend_port)}",
            "",
        ]
    probe = spec.probe
    for port in spec.backend_ports():
        out += [f"backend {backend_name(set_name, port)}", "    balance roundrobin"]
        if probe.protocol == "http":
            out += [f"    option httpchk GET {probe.path}", "    http-check expect status 200"]
        out.append(
            f"    default-server inter {probe.interval_seconds}s rise {probe.healthy_threshold} "
            f"fall {probe.unhealthy_threshold}"
        )
        for m in state.members:
            line = f"    server {server_name(m.instance_id)} " + " ".join(
                server_args(spec, port, m, namespace=namespace)
            )
            # A fresh process must not send traffic to a member that is not ready or is being
            # drained; the runtime re-sync after start sets the exact state again.
            if state.admin_state(m) != "ready":
                line += " disabled"
            out.append(line)
        out.append("")
    if spec.nat_pool is not None:
        for m in state.members:
            if m.nat_port is None:
                continue
            ns = f" namespace {namespace}" if namespace else ""
            out += [
                f"listen {nat_listen_name(set_name, m.instance_id)}",
                f"    bind {_addr(spec.bind_address, m.nat_port)}",
                # NAT is for interactive sessions (SSH): an idle minute must not cut them.
                "    timeout client 1h",
                "    timeout server 1h",
                f"    server {server_name(m.instance_id)} "
                f"{_addr(m.address, spec.nat_pool.backend_port)} id {server_id(m.instance_id)}{ns}",
                "",
            ]
    return out


def render_config(
    sets: Mapping[str, SetState],
    *,
    run_dir: Path | str,
    stats_port: int,
    stats_address: str = "127.0.0.1",
    namespace: str | None = None,
) -> str:
    """The whole haproxy.cfg for every scale set, sets in name order."""
    run = Path(run_dir)
    admin = run / ADMIN_SOCKET
    if len(str(admin)) > UNIX_PATH_MAX:
        raise InvalidSpec(f"run directory {run} is too long for a unix socket path (max {UNIX_PATH_MAX})")
    lines = [
        "# Generated by localvmss: edits are overwritten.",
        "global",
        "    master-worker",
        f"    stats socket {admin} mode 600 level admin expose-fd listeners",
        "    stats timeout 30s",
        f"    server-state-file {run / SERVER_STATE_FILE}",
        f"    hard-stop-after {HARD_STOP_AFTER}",
        "    maxconn 4096",
        # Into haproxy.log (HAProxy's stderr): only connections that ended abnormally, with
        # HAProxy's termination state (see dontlog-normal below), so a dropped one can be traced.
        "    log stderr format raw local0 info",
        "",
        "defaults",
        "    mode tcp",
        "    timeout connect 3s",
        "    timeout client 60s",
        "    timeout server 60s",
        "    timeout queue 5s",
        # A connection refused by a member that just went away is retried on another one.
        "    retries 2",
        "    option redispatch",
        "    load-server-state-from-file global",
        "    log global",
        "    option tcplog",
        "    option dontlog-normal",
        "",
        "frontend lvmss-stats",
        "    mode http",
        f"    bind {_addr(stats_address, stats_port)}",
        "    timeout client 10s",
        "    timeout http-request 5s",
        "    http-request use-service prometheus-exporter if { path /metrics }",
        "    stats enable",
        "    stats uri /stats",
        "    stats refresh 10s",
        "",
    ]
    for name in sorted(sets):
        lines += _set_section(name, sets[name], namespace)
    return "\n".join(lines).rstrip("\n") + "\n"


def atomic_write(path: Path, text: str, mode: int = 0o600) -> None:
    """Write via a temporary file in the same directory and rename: readers never see half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


_ALERT_PREFIX = re.compile(r"^\[ALERT\]\s*\(\d+\)\s*:\s*(config\s*:\s*)?")


def _alerts(output: str, path: str) -> str:
    """HAProxy's specific complaints on one line, without its generic summary lines."""
    found = []
    for line in output.splitlines():
        if not line.startswith("[ALERT]"):
            continue
        text = _ALERT_PREFIX.sub("", line).replace(f"[{path}:", "[line ").strip()
        if text.startswith(("Error(s) found", "Fatal errors found")):
            continue
        found.append(text)
    return "; ".join(found[:3]) or " ".join(output.split())[:300] or "no reason given"


def check_config_text(text: str, *, haproxy_binary: str = "haproxy", work_dir: Path | None = None) -> None:
    """Run ``haproxy -c`` on ``text``; raise ConfigError with HAProxy's own complaint."""
    fd, tmp = tempfile.mkstemp(prefix=".check-", suffix=".cfg", dir=work_dir)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        try:
            proc = subprocess.run(
                [haproxy_binary, "-c", "-f", tmp],
                capture_output=True,
                text=True,
                timeout=30,
            )
        except FileNotFoundError:
            raise ConfigError(f"HAProxy binary {haproxy_binary!r} was not found") from None
        except subprocess.TimeoutExpired:
            raise ConfigError("checking the HAProxy configuration took more than 30 s") from None
        if proc.returncode != 0:
            raise ConfigError(
                f"HAProxy rejected the generated configuration: {_alerts(proc.stdout + proc.stderr, tmp)}"
            )
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass


def write_config(path: Path, text: str, *, haproxy_binary: str = "haproxy", check: bool = True) -> None:
    """Check then atomically replace the config file, so a bad render never reaches disk."""
    if check:
        check_config_text(text, haproxy_binary=haproxy_binary, work_dir=path.parent)
    atomic_write(path, text)
