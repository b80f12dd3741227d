"""A scale set's load balancer: rules, health probe and inbound NAT pool, with their checks.

Pure data and validation (no HAProxy here), so the API and CLI can reject a bad load balancer
before anything is created. Shapes follow Azure's load balancer (loadBalancingRules, probes,
inboundNatPools) so a person who knows Azure recognises them.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from localvmss.errors import InvalidSpec

PORT_MIN = 1
PORT_MAX = 65535
INTERVAL_RANGE = (1, 300)
THRESHOLD_RANGE = (1, 100)
PATH_MAX = 255

# A probe path goes verbatim into "option httpchk GET <path>" and into the request line of the
# daemon's own HTTP probe: anything that would split or quote the config line (whitespace,
# quotes of any kind, '#', backslash, control characters) or is not ASCII is refused. Used with
# fullmatch: "$" would also match before a trailing newline.
_PATH_PATTERN = re.compile(r"/[A-Za-z0-9._~!$&()*+,;=:@%/?-]*")
_BAD_PATH_CHARS = re.compile(r"[\s\x00-\x1f\x7f\"'`#\\]")

ProbeProtocol = Literal["tcp", "http"]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_port(value: object, what: str) -> int:
    """``value`` if it is a TCP port number (1-65535), else InvalidSpec naming ``what``."""
    if not _is_int(value) or not PORT_MIN <= value <= PORT_MAX:  # type: ignore[operator]
        raise InvalidSpec(f"{what} {value!r} must be an integer from {PORT_MIN} to {PORT_MAX}")
    return value  # type: ignore[return-value]


def _check_range(value: object, what: str, bounds: tuple[int, int]) -> int:
    low, high = bounds
    if not _is_int(value) or not low <= value <= high:  # type: ignore[operator]
        raise InvalidSpec(f"{what} {value!r} must be an integer from {low} to {high}")
    return value  # type: ignore[return-value]


def _parse_int(text: str, what: str) -> int:
    text = text.strip()
    if not re.fullmatch(r"[0-9]{1,6}", text):
        raise InvalidSpec(f"{what} {text!r} is not a port number")
    return int(text)


def check_probe_path(path: object, what: str = "probe path") -> str:
    """A probe path: printable ASCII URL characters starting with '/', at most PATH_MAX long, with
    no whitespace, quotes (' " `), '#', backslash or control characters; else InvalidSpec.

    The one rule for both probes (the load balancer's and the scale set's health probe).
    """
    if not isinstance(path, str) or not path.startswith("/"):
        raise InvalidSpec(f"{what} {path!r} must start with '/'")
    if len(path) > PATH_MAX:
        raise InvalidSpec(f"{what} {path[:40]!r}... is {len(path)} characters long; the limit is {PATH_MAX}")
    if _BAD_PATH_CHARS.search(path):
        raise InvalidSpec(f"{what} {path!r} must not contain whitespace, quotes, '#', '\\' or control characters")
    if not _PATH_PATTERN.fullmatch(path):
        raise InvalidSpec(f"{what} {path!r} must be ASCII URL characters: letters, digits and -._~!$&()*+,;=:@%/?")
    return path


@dataclass(frozen=True)
class LbRule:
    """One TCP load-balancing rule: frontend_port on the bind address -> backend_port on members."""

    frontend_port: int
    backend_port: int

    def __post_init__(self) -> None:
        check_port(self.frontend_port, "rule frontend port")
        check_port(self.backend_port, "rule backend port")


@dataclass(frozen=True)
class HealthProbe:
    """How HAProxy decides a member may take traffic.

    ``port`` None means "each rule's backend port" (what ``http:/healthz`` says). Thresholds are
    consecutive results: healthy_threshold successes bring a member in (HAProxy ``rise``),
    unhealthy_threshold failures take it out (``fall``).
    """

    protocol: ProbeProtocol
    port: int | None = None
    path: str = "/"
    interval_seconds: int = 2
    healthy_threshold: int = 2
    unhealthy_threshold: int = 2

    def __post_init__(self) -> None:
        if self.protocol not in ("tcp", "http"):
            raise InvalidSpec(f"probe protocol {self.protocol!r} must be 'tcp' or 'http'")
        if self.port is not None:
            check_port(self.port, "probe port")
        if self.protocol == "http":
            check_probe_path(self.path)
        elif self.path != "/":
            raise InvalidSpec(f"probe path {self.path!r} only applies to http probes")
        _check_range(self.interval_seconds, "probe intervalInSeconds", INTERVAL_RANGE)
        _check_range(self.healthy_threshold, "probe healthy threshold (probeThreshold)", THRESHOLD_RANGE)
        _check_range(self.unhealthy_threshold, "probe unhealthy threshold (numberOfProbes)", THRESHOLD_RANGE)


@dataclass(frozen=True)
class NatPool:
    """Inbound NAT: each member gets one stable port of the range, forwarded to backend_port."""

    frontend_port_start: int
    frontend_port_end: int
    backend_port: int

    def __post_init__(self) -> None:
        check_port(self.frontend_port_start, "NAT pool start port")
        check_port(self.frontend_port_end, "NAT pool end port")
        check_port(self.backend_port, "NAT pool backend port")
        if self.frontend_port_end < self.frontend_port_start:
            raise InvalidSpec(
                f"NAT pool range {self.frontend_port_start}-{self.frontend_port_end} ends before it starts"
            )

    @property
    def size(self) -> int:
        return self.frontend_port_end - self.frontend_port_start + 1

    def ports(self) -> range:
        return range(self.frontend_port_start, self.frontend_port_end + 1)

    def __contains__(self, port: object) -> bool:
        return _is_int(port) and self.frontend_port_start <= port <= self.frontend_port_end  # type: ignore[operator]


@dataclass(frozen=True)
class LoadBalancerSpec:
    """Everything a set asks of the load balancer. Immutable, so it can be compared for changes."""

    rules: tuple[LbRule, ...]
    probe: HealthProbe
    nat_pool: NatPool | None = None
    bind_address: str = "127.0.0.1"

    def __post_init__(self) -> None:
        # Accept any iterable of rules but store a tuple, so equality and hashing work.
        object.__setattr__(self, "rules", tuple(self.rules))
        for rule in self.rules:
            if not isinstance(rule, LbRule):
                raise InvalidSpec(f"rule {rule!r} is not a load-balancing rule")
        try:
            ipaddress.ip_address(self.bind_address)
        except (ValueError, TypeError):
            raise InvalidSpec(f"bind address {self.bind_address!r} is not an IP address") from None

    def backend_ports(self) -> list[int]:
        """Distinct backend ports, sorted: one HAProxy backend per port."""
        return sorted({r.backend_port for r in self.rules})

    def frontend_ports(self) -> set[int]:
        """Every port this set listens on: rule frontends and the whole NAT range."""
        ports = {r.frontend_port for r in self.rules}
        if self.nat_pool is not None:
            ports.update(self.nat_pool.ports())
        return ports

    def probe_port_for(self, backend_port: int) -> int:
        return self.probe.port if self.probe.port is not None else backend_port

    def to_json(self) -> dict[str, Any]:
        return to_json(self)


@dataclass(frozen=True)
class Member:
    """One instance as the load balancer sees it.

    ``ready`` is the caller's word that the instance serves; HAProxy still probes it and takes it
    out of rotation when the probe fails. ``nat_port`` is the instance's port from the NAT pool
    (allocation.free_nat_port chooses it), kept for the instance's life.
    """

    instance_id: int
    address: str
    ready: bool = True
    nat_port: int | None = None

    def __post_init__(self) -> None:
        if not _is_int(self.instance_id) or not 0 <= self.instance_id < 1_000_000:
            raise InvalidSpec(f"instance id {self.instance_id!r} must be an integer from 0 to 999999")
        try:
            ipaddress.ip_address(self.address)
        except (ValueError, TypeError):
            raise InvalidSpec(f"instance {self.instance_id} address {self.address!r} is not an IP address") from None
        if not isinstance(self.ready, bool):
            raise InvalidSpec(f"instance {self.instance_id} ready flag {self.ready!r} must be a boolean")
        if self.nat_port is not None:
            check_port(self.nat_port, f"instance {self.instance_id} NAT port")


def validate_members(spec: LoadBalancerSpec, members: Iterable[Member]) -> tuple[Member, ...]:
    """Members sorted by instance id; ids, addresses and NAT ports unique, NAT ports in the pool."""
    result = tuple(sorted(members, key=lambda m: m.instance_id))
    ids: set[int] = set()
    nat_ports: dict[int, int] = {}
    for m in result:
        if not isinstance(m, Member):
            raise InvalidSpec(f"member {m!r} is not a load balancer member")
        if m.instance_id in ids:
            raise InvalidSpec(f"instance {m.instance_id} is listed more than once")
        ids.add(m.instance_id)
        if spec.nat_pool is None:
            if m.nat_port is not None:
                raise InvalidSpec(f"instance {m.instance_id} has NAT port {m.nat_port} but the set has no NAT pool")
            continue
        if m.nat_port is None:
            raise InvalidSpec(f"instance {m.instance_id} has no NAT port but the set has a NAT pool")
        if m.nat_port not in spec.nat_pool:
            raise InvalidSpec(
                f"instance {m.instance_id} NAT port {m.nat_port} is outside the pool "
                f"{spec.nat_pool.frontend_port_start}-{spec.nat_pool.frontend_port_end}"
            )
        if m.nat_port in nat_ports:
            raise InvalidSpec(
                f"NAT port {m.nat_port} is given to both instance {nat_ports[m.nat_port]} and {m.instance_id}"
            )
        nat_ports[m.nat_port] = m.instance_id
    return result


def validate(spec: LoadBalancerSpec, *, max_capacity: int, other_sets_ports: set[int]) -> LoadBalancerSpec:
    """Cross-field checks the dataclasses cannot do alone; returns ``spec`` or raises InvalidSpec.

    ``max_capacity`` is the most instances the set may ever have (its NAT pool must cover them);
    ``other_sets_ports`` are ports already taken by other sets (and the stats listener), since all
    sets share one HAProxy and so one port space.
    """
    if not isinstance(spec, LoadBalancerSpec):
        raise InvalidSpec("load balancer specification is missing or malformed")
    if not spec.rules and spec.nat_pool is None:
        raise InvalidSpec("load balancer needs at least one load-balancing rule or an inbound NAT pool")
    seen: dict[int, LbRule] = {}
    for rule in spec.rules:
        if rule.frontend_port in seen:
            raise InvalidSpec(f"frontend port {rule.frontend_port} is used by more than one rule")
        seen[rule.frontend_port] = rule
    pool = spec.nat_pool
    if pool is not None:
        for port in seen:
            if port in pool:
                raise InvalidSpec(
                    f"frontend port {port} lies inside the NAT pool range "
                    f"{pool.frontend_port_start}-{pool.frontend_port_end}"
                )
        if pool.size < max_capacity:
            raise InvalidSpec(
                f"NAT pool range {pool.frontend_port_start}-{pool.frontend_port_end} has {pool.size} ports "
                f"but the set can have up to {max_capacity} instances"
            )
    if spec.probe.port is None and not spec.rules:
        raise InvalidSpec("a probe without a port needs at least one load-balancing rule to take it from")
    clash = sorted(spec.frontend_ports() & set(other_sets_ports))
    if clash:
        shown = ", ".join(str(p) for p in clash[:5]) + (" ..." if len(clash) > 5 else "")
        raise InvalidSpec(f"frontend port(s) {shown} already used by another scale set or the load balancer")
    return spec


@dataclass(frozen=True)
class HostPorts:
    """What the host already uses, as check_host_ports needs it (gathered by the caller, so the
    check stays pure and tests pass tables).

    ``holders``: ports the daemon itself gives out (its own listeners, other sets' frontends) ->
    who; ``ephemeral``: the kernel's range for outgoing connections (net.ipv4.ip_local_port_range)
    and ``ephemeral_reserved`` the ports it never picks from it (net.ipv4.ip_local_reserved_ports);
    ``listening``: TCP ports something in this network namespace listens on -> who.
    """

    holders: Mapping[int, str]
    ephemeral: tuple[int, int]
    ephemeral_reserved: frozenset[int] = frozenset()
    listening: Mapping[int, str] = field(default_factory=dict)


def _port_role(spec: LoadBalancerSpec, port: int) -> str:
    if spec.nat_pool is not None and port in spec.nat_pool:
        pool = spec.nat_pool
        return f"NAT pool port {port} (of {pool.frontend_port_start}-{pool.frontend_port_end})"
    return f"frontend port {port}"


def check_host_ports(spec: LoadBalancerSpec, host: HostPorts, *, own: Iterable[int] = ()) -> LoadBalancerSpec:
    """Every frontend port the set would newly listen on must be one HAProxy can bind now and at
    every later reload; returns ``spec`` or raises InvalidSpec naming the port and its holder.

    ``own`` are the ports the set's current frontends hold already (HAProxy's own listeners): an
    update keeps them as they are. A port in the ephemeral range may be taken by any outgoing
    connection at the moment HAProxy binds, so it is refused unless the kernel reserves it.
    """
    keep = set(own)
    low, high = host.ephemeral
    for port in sorted(spec.frontend_ports() - keep):
        what = _port_role(spec, port)
        if port in host.holders:
            raise InvalidSpec(f"{what} is already used by {host.holders[port]}")
        if low <= port <= high and port not in host.ephemeral_reserved:
            raise InvalidSpec(
                f"{what} lies in the kernel's ephemeral port range {low}-{high} (net.ipv4.ip_local_port_range), "
                "where outgoing connections take their local ports; use ports outside it or reserve them "
                "with net.ipv4.ip_local_reserved_ports"
            )
        if port in host.listening:
            raise InvalidSpec(f"{what} is already listened on by {host.listening[port]}")
    return spec


def stored_frontend_ports(body: object) -> set[int]:
    """The ports a stored load balancer (its to_json shape) listens on, read leniently: a spec
    stored by an older version may not pass today's checks but still holds its ports."""
    ports: set[int] = set()
    if not isinstance(body, Mapping):
        return ports
    for rule in body.get("loadBalancingRules") or []:
        if isinstance(rule, Mapping) and _is_int(rule.get("frontendPort")):
            ports.add(rule["frontendPort"])
    pools = body.get("inboundNatPools") or ([body["inboundNatPool"]] if body.get("inboundNatPool") else [])
    for pool in pools:
        if isinstance(pool, Mapping):
            start, end = pool.get("frontendPortRangeStart"), pool.get("frontendPortRangeEnd")
            if isinstance(start, int) and isinstance(end, int) and PORT_MIN <= start <= end <= PORT_MAX:
                ports.update(range(start, end + 1))
    return ports


# ---- CLI-style parsers ---------------------------------------------------------------------


def parse_lb_rule(text: str) -> LbRule:
    """``"80:8080"`` (frontend:backend) or ``"80"`` (same port both sides)."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidSpec("load-balancing rule is empty; expected FRONTEND_PORT:BACKEND_PORT, e.g. 80:80")
    parts = text.strip().split(":")
    if len(parts) == 1:
        port = _parse_int(parts[0], "rule port")
        return LbRule(port, port)
    if len(parts) != 2:
        raise InvalidSpec(f"load-balancing rule {text!r} must look like FRONTEND_PORT:BACKEND_PORT, e.g. 80:80")
    return LbRule(_parse_int(parts[0], "rule frontend port"), _parse_int(parts[1], "rule backend port"))


def parse_probe(
    text: str,
    *,
    interval_seconds: int = 2,
    healthy_threshold: int = 2,
    unhealthy_threshold: int = 2,
) -> HealthProbe:
    """``"tcp:22"``, ``"http:/healthz"``, ``"http:8080/healthz"``, ``"http:/healthz:8080"``, ``"http:8080"``.

    Without a port an http probe checks each rule's backend port.
    """
    if not isinstance(text, str) or ":" not in text:
        raise InvalidSpec(f"probe {text!r} must look like tcp:PORT, http:/PATH or http:PORT/PATH")
    proto, _, rest = text.strip().partition(":")
    proto = proto.strip().lower()
    common = (interval_seconds, healthy_threshold, unhealthy_threshold)
    if proto == "tcp":
        return HealthProbe("tcp", _parse_int(rest, "probe port"), "/", *common)
    if proto == "http":
        if not rest:
            raise InvalidSpec(f"probe {text!r} needs a path or port after 'http:', e.g. http:/healthz")
        slash = rest.find("/")
        port_text, path = (rest, "/") if slash < 0 else (rest[:slash], rest[slash:])
        trailing = re.search(r":([0-9]{1,6})\Z", path)  # \Z: "$" would match before a newline
        if trailing and not port_text:  # the CLI's documented form http:/path:PORT
            port_text, path = trailing.group(1), path[: trailing.start()] or "/"
        port = _parse_int(port_text, "probe port") if port_text else None
        return HealthProbe("http", port, path, *common)
    raise InvalidSpec(f"probe protocol {proto!r} must be 'tcp' or 'http'")


def parse_nat_pool(text: str) -> NatPool:
    """``"50000-50119:22"``: frontend port range, then the members' backend port."""
    match = re.fullmatch(r"\s*([0-9]+)\s*-\s*([0-9]+)\s*:\s*([0-9]+)\s*", text or "")
    if not match:
        raise InvalidSpec(f"NAT pool {text!r} must look like START-END:BACKEND_PORT, e.g. 50000-50119:22")
    start, end, backend = (_parse_int(g, "NAT pool port") for g in match.groups())
    return NatPool(start, end, backend)


# ---- Azure-ish JSON ------------------------------------------------------------------------


def to_json(spec: LoadBalancerSpec) -> dict[str, Any]:
    """The API shape: Azure's names, one probe, at most one NAT pool.

    ``bindAddress`` and ``inboundNatPool`` (the single pool, flat) repeat what the Azure-shaped
    keys say, for the CLI and reconciler, which read those simpler keys.
    """
    probe: dict[str, Any] = {
        "protocol": spec.probe.protocol.capitalize(),
        "intervalInSeconds": spec.probe.interval_seconds,
        "numberOfProbes": spec.probe.unhealthy_threshold,
        "probeThreshold": spec.probe.healthy_threshold,
    }
    if spec.probe.port is not None:
        probe["port"] = spec.probe.port
    if spec.probe.protocol == "http":
        probe["requestPath"] = spec.probe.path
    body: dict[str, Any] = {
        "frontendIPConfiguration": {"privateIPAddress": spec.bind_address},
        "loadBalancingRules": [
            {"protocol": "Tcp", "frontendPort": r.frontend_port, "backendPort": r.backend_port} for r in spec.rules
        ],
        "probes": [probe],
        "inboundNatPools": [],
        "bindAddress": spec.bind_address,
    }
    if spec.nat_pool is not None:
        pool = {
            "protocol": "Tcp",
            "frontendPortRangeStart": spec.nat_pool.frontend_port_start,
            "frontendPortRangeEnd": spec.nat_pool.frontend_port_end,
            "backendPort": spec.nat_pool.backend_port,
        }
        body["inboundNatPools"].append(pool)
        body["inboundNatPool"] = dict(pool)
    return body


def _obj(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidSpec(f"{what} must be a JSON object")
    return value


def _list(value: object, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidSpec(f"{what} must be a JSON array")
    return value


def _tcp_only(item: Mapping[str, Any], what: str) -> None:
    proto = item.get("protocol", "Tcp")
    if not isinstance(proto, str) or proto.lower() != "tcp":
        raise InvalidSpec(f"{what} protocol {proto!r} is not supported: only Tcp")


def _required(item: Mapping[str, Any], key: str, what: str) -> Any:
    if key not in item:
        raise InvalidSpec(f"{what} is missing {key!r}")
    return item[key]


def from_json(body: object) -> LoadBalancerSpec:
    """Parse the API shape back; every problem is one InvalidSpec line naming the field."""
    data = _obj(body, "loadBalancer")
    rules = []
    for i, raw in enumerate(_list(data.get("loadBalancingRules"), "loadBalancingRules")):
        item = _obj(raw, f"loadBalancingRules[{i}]")
        _tcp_only(item, f"loadBalancingRules[{i}]")
        rules.append(
            LbRule(
                check_port(_required(item, "frontendPort", f"loadBalancingRules[{i}]"), "frontendPort"),
                check_port(_required(item, "backendPort", f"loadBalancingRules[{i}]"), "backendPort"),
            )
        )
    # No probe given: a TCP connect to each rule's backend port, as Azure's default would be.
    probes = _list(data.get("probes"), "probes") or [{"protocol": "Tcp"}]
    if len(probes) != 1:
        raise InvalidSpec(f"probes must hold exactly one probe, got {len(probes)}")
    p = _obj(probes[0], "probes[0]")
    proto = p.get("protocol", "Tcp")
    if not isinstance(proto, str) or proto.lower() not in ("tcp", "http"):
        raise InvalidSpec(f"probes[0] protocol {proto!r} must be Tcp or Http")
    probe = HealthProbe(
        "http" if proto.lower() == "http" else "tcp",
        p.get("port"),
        p.get("requestPath", "/") if proto.lower() == "http" else "/",
        p.get("intervalInSeconds", 2),
        p.get("probeThreshold", 2),
        p.get("numberOfProbes", 2),
    )
    pools = _list(data.get("inboundNatPools"), "inboundNatPools")
    if not pools and data.get("inboundNatPool") is not None:
        pools = [data["inboundNatPool"]]
    if len(pools) > 1:
        raise InvalidSpec(f"inboundNatPools may hold at most one pool, got {len(pools)}")
    nat_pool = None
    if pools:
        n = _obj(pools[0], "inboundNatPools[0]")
        _tcp_only(n, "inboundNatPools[0]")
        where = "inboundNatPools[0]"
        nat_pool = NatPool(
            check_port(_required(n, "frontendPortRangeStart", where), "frontendPortRangeStart"),
            check_port(_required(n, "frontendPortRangeEnd", where), "frontendPortRangeEnd"),
            check_port(_required(n, "backendPort", where), "backendPort"),
        )
    frontend = _obj(data.get("frontendIPConfiguration", {}), "frontendIPConfiguration")
    bind = frontend.get("privateIPAddress", data.get("bindAddress", "127.0.0.1"))
    if not isinstance(bind, str):
        raise InvalidSpec(f"frontendIPConfiguration.privateIPAddress {bind!r} must be a string")
    return LoadBalancerSpec(tuple(rules), probe, nat_pool, bind)


def member_to_json(member: Member) -> dict[str, Any]:
    return {
        "instanceId": member.instance_id,
        "address": member.address,
        "ready": member.ready,
        "natPort": member.nat_port,
    }


def member_from_json(data: object) -> Member:
    item = _obj(data, "member")
    return Member(
        _required(item, "instanceId", "member"),
        _required(item, "address", "member"),
        item.get("ready", True),
        item.get("natPort"),
    )


__all__ = [
    "HealthProbe",
    "HostPorts",
    "LbRule",
    "LoadBalancerSpec",
    "Member",
    "NatPool",
    "check_host_ports",
    "check_port",
    "check_probe_path",
    "from_json",
    "member_from_json",
    "member_to_json",
    "parse_lb_rule",
    "parse_nat_pool",
    "parse_probe",
    "stored_frontend_ports",
    "to_json",
    "validate",
    "validate_members",
]
