"""Load balancer specification: parsers, field checks, cross checks, JSON shape."""

from __future__ import annotations

from typing import Any

import pytest

from localvmss.errors import InvalidSpec
from localvmss.lb.spec import (
    HealthProbe,
    LbRule,
    LoadBalancerSpec,
    Member,
    NatPool,
    from_json,
    member_from_json,
    member_to_json,
    parse_lb_rule,
    parse_nat_pool,
    parse_probe,
    to_json,
    validate,
    validate_members,
)

HTTP = HealthProbe("http", None, "/healthz")


def one_line(exc: pytest.ExceptionInfo[InvalidSpec]) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg
    return msg


# ---- parse_lb_rule --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("80:80", LbRule(80, 80)),
        ("8080:80", LbRule(8080, 80)),
        ("443", LbRule(443, 443)),
        (" 1:65535 ", LbRule(1, 65535)),
    ],
)
def test_parse_lb_rule(text: str, rule: LbRule) -> None:
    assert parse_lb_rule(text) == rule


@pytest.mark.parametrize(
    "text", ["", " ", "80:", ":80", "0:80", "80:0", "80:65536", "a:b", "80:80:80", "-1:80", "8o:80"]
)
def test_parse_lb_rule_rejects(text: str) -> None:
    with pytest.raises(InvalidSpec) as exc:
        parse_lb_rule(text)
    one_line(exc)


# ---- parse_probe ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "protocol", "port", "path"),
    [
        ("http:/healthz", "http", None, "/healthz"),
        ("HTTP:/healthz", "http", None, "/healthz"),
        ("http:8080/healthz", "http", 8080, "/healthz"),
        ("http:/healthz:8080", "http", 8080, "/healthz"),
        ("http:8080", "http", 8080, "/"),
        ("http:/", "http", None, "/"),
        ("http:/a/b?x=1&y=%20", "http", None, "/a/b?x=1&y=%20"),
        ("tcp:22", "tcp", 22, "/"),
    ],
)
def test_parse_probe(text: str, protocol: str, port: int | None, path: str) -> None:
    probe = parse_probe(text)
    assert (probe.protocol, probe.port, probe.path) == (protocol, port, path)
    assert (probe.interval_seconds, probe.healthy_threshold, probe.unhealthy_threshold) == (2, 2, 2)


def test_parse_probe_takes_thresholds() -> None:
    p = parse_probe("tcp:22", interval_seconds=5, healthy_threshold=3, unhealthy_threshold=4)
    assert (p.interval_seconds, p.healthy_threshold, p.unhealthy_threshold) == (5, 3, 4)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "tcp",
        "tcp:",
        "tcp:0",
        "tcp:65536",
        "tcp:ssh",
        "udp:53",
        "http:",
        "http:healthz",
        "http:/a b",
        "http:/a\tb",
        "http:/a\nb",
        "http:/a\x00b",
        "http:/a\x7fb",
        'http:/a"b',
        "http:/a#b",
        "http:/a\\b",
        "http:99999/x",
        "http:/" + "a" * 300,
    ],
)
def test_parse_probe_rejects(text: str) -> None:
    with pytest.raises(InvalidSpec) as exc:
        parse_probe(text)
    one_line(exc)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"interval_seconds": 0},
        {"interval_seconds": 301},
        {"interval_seconds": 2.5},
        {"interval_seconds": True},
        {"healthy_threshold": 0},
        {"healthy_threshold": 101},
        {"unhealthy_threshold": 0},
        {"unhealthy_threshold": -1},
        {"unhealthy_threshold": "2"},
    ],
)
def test_probe_rejects_nonsense_thresholds(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidSpec) as exc:
        HealthProbe("http", 80, "/", **kwargs)
    one_line(exc)


def test_probe_path_needs_slash_and_only_for_http() -> None:
    with pytest.raises(InvalidSpec, match="must start with '/'"):
        HealthProbe("http", 80, "healthz")
    with pytest.raises(InvalidSpec, match="only applies to http"):
        HealthProbe("tcp", 22, "/x")
    with pytest.raises(InvalidSpec, match="'tcp' or 'http'"):
        HealthProbe("https", 443)  # type: ignore[arg-type]


# ---- parse_nat_pool -------------------------------------------------------------------------


def test_parse_nat_pool() -> None:
    pool = parse_nat_pool("50000-50119:22")
    assert pool == NatPool(50000, 50119, 22)
    assert pool.size == 120 and 50000 in pool and 50119 in pool and 50120 not in pool
    assert parse_nat_pool(" 2000 - 2000 : 22 ").size == 1


@pytest.mark.parametrize(
    "text",
    [
        "",
        "50000:22",
        "50000-50119",
        "50119-50000:22",
        "a-b:22",
        "50000-70000:22",
        "0-10:22",
        "1-10:0",
        "1-2-3:4",
    ],
)
def test_parse_nat_pool_rejects(text: str) -> None:
    with pytest.raises(InvalidSpec) as exc:
        parse_nat_pool(text)
    one_line(exc)


# ---- dataclass checks -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: LbRule(0, 80),
        lambda: LbRule(80, 70000),
        lambda: LbRule(True, 80),  # type: ignore[arg-type]
        lambda: NatPool(10, 5, 22),
        lambda: LoadBalancerSpec((LbRule(80, 80),), HTTP, None, "localhost"),
        lambda: LoadBalancerSpec(("80:80",), HTTP),  # type: ignore[arg-type]
        lambda: Member(-1, "127.0.0.2"),
        lambda: Member(0, "127.0.0.300"),
        lambda: Member(0, "127.0.0.2", "yes"),  # type: ignore[arg-type]
        lambda: Member(0, "127.0.0.2", True, 0),
    ],
)
def test_dataclasses_reject_bad_fields(make: Any) -> None:
    with pytest.raises(InvalidSpec) as exc:
        make()
    one_line(exc)


def test_spec_accepts_a_list_of_rules_and_stays_hashable() -> None:
    spec = LoadBalancerSpec([LbRule(80, 80)], HTTP)  # type: ignore[arg-type]
    assert spec.rules == (LbRule(80, 80),)
    assert spec == LoadBalancerSpec((LbRule(80, 80),), HTTP)
    hash(spec)


# ---- validate -------------------------------------------------------------------------------


def spec_with(rules: list[str], nat: str | None = None, probe: HealthProbe = HTTP) -> LoadBalancerSpec:
    return LoadBalancerSpec(tuple(parse_lb_rule(r) for r in rules), probe, parse_nat_pool(nat) if nat else None)


def test_validate_accepts_a_good_spec() -> None:
    spec = spec_with(["80:80", "443:443"], "50000-50009:22")
    assert validate(spec, max_capacity=10, other_sets_ports={8080, 9480}) is spec
    assert spec.frontend_ports() == {80, 443, *range(50000, 50010)}
    assert spec.backend_ports() == [80, 443]


@pytest.mark.parametrize(
    ("spec", "capacity", "others", "fragment"),
    [
        (spec_with(["80:80", "80:8080"]), 2, set(), "more than one rule"),
        (spec_with(["50005:80"], "50000-50009:22"), 2, set(), "inside the NAT pool"),
        (spec_with(["80:80"], "50000-50009:22"), 11, set(), "up to 11 instances"),
        (spec_with(["80:80"]), 2, {80}, "already used"),
        (spec_with(["81:80"], "50000-50009:22"), 2, {50009}, "already used"),
        (LoadBalancerSpec((), HTTP), 2, set(), "at least one"),
        (LoadBalancerSpec((), HTTP, NatPool(50000, 50001, 22)), 2, set(), "probe without a port"),
    ],
)
def test_validate_rejects(spec: LoadBalancerSpec, capacity: int, others: set[int], fragment: str) -> None:
    with pytest.raises(InvalidSpec, match=fragment) as exc:
        validate(spec, max_capacity=capacity, other_sets_ports=others)
    one_line(exc)


def test_validate_nat_only_set_with_probe_port() -> None:
    spec = LoadBalancerSpec((), HealthProbe("tcp", 22), NatPool(50000, 50001, 22))
    assert validate(spec, max_capacity=2, other_sets_ports=set()) is spec


def test_validate_members() -> None:
    spec = spec_with(["80:80"], "50000-50002:22")
    ok = validate_members(spec, [Member(2, "127.0.0.3", True, 50001), Member(0, "127.0.0.2", True, 50000)])
    assert [m.instance_id for m in ok] == [0, 2]
    bad = [
        ([Member(0, "127.0.0.2", True, 50000), Member(0, "127.0.0.3", True, 50001)], "more than once"),
        ([Member(0, "127.0.0.2")], "no NAT port"),
        ([Member(0, "127.0.0.2", True, 50003)], "outside the pool"),
        ([Member(0, "127.0.0.2", True, 50000), Member(1, "127.0.0.3", True, 50000)], "both instance"),
    ]
    for members, fragment in bad:
        with pytest.raises(InvalidSpec, match=fragment):
            validate_members(spec, members)
    with pytest.raises(InvalidSpec, match="no NAT pool"):
        validate_members(spec_with(["80:80"]), [Member(0, "127.0.0.2", True, 50000)])


# ---- NAT ports ------------------------------------------------------------------------------


# ---- JSON -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        spec_with(["80:80", "8443:443"], "50000-50119:22"),
        spec_with(["80:80"], None, HealthProbe("tcp", 22, "/", 5, 3, 4)),
        spec_with(["80:8080"], None, HealthProbe("http", 8081, "/ready", 1, 1, 1)),
        LoadBalancerSpec((LbRule(80, 80),), HTTP, None, "::1"),
    ],
)
def test_json_round_trip(spec: LoadBalancerSpec) -> None:
    assert from_json(to_json(spec)) == spec
    assert spec.to_json() == to_json(spec)


def test_json_is_azure_shaped_with_flat_compat_keys() -> None:
    body = to_json(spec_with(["80:8080"], "50000-50119:22"))
    assert body["loadBalancingRules"] == [{"protocol": "Tcp", "frontendPort": 80, "backendPort": 8080}]
    assert body["probes"] == [
        {
            "protocol": "Http",
            "requestPath": "/healthz",
            "intervalInSeconds": 2,
            "numberOfProbes": 2,
            "probeThreshold": 2,
        }
    ]
    pool = {
        "protocol": "Tcp",
        "frontendPortRangeStart": 50000,
        "frontendPortRangeEnd": 50119,
        "backendPort": 22,
    }
    assert body["inboundNatPools"] == [pool]
    assert body["inboundNatPool"] == pool
    assert body["bindAddress"] == body["frontendIPConfiguration"]["privateIPAddress"] == "127.0.0.1"
    flat = {k: v for k, v in body.items() if k not in ("inboundNatPools", "frontendIPConfiguration")}
    assert from_json(flat) == from_json(body)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ([], "JSON object"),
        ({"probes": [{"protocol": "Tcp", "port": 22}] * 2}, "exactly one probe"),
        ({"probes": [{"protocol": "Udp", "port": 53}]}, "Tcp or Http"),
        ({"probes": [{"protocol": "Tcp", "port": "22"}]}, "probe port"),
        ({"probes": [{"protocol": "Http", "requestPath": "x"}]}, "start with '/'"),
        ({"probes": [{"protocol": "Tcp", "port": 22, "intervalInSeconds": 0}]}, "intervalInSeconds"),
        ({"probes": [{"protocol": "Tcp", "port": 22}], "loadBalancingRules": {}}, "JSON array"),
        (
            {"probes": [{"protocol": "Tcp", "port": 22}], "loadBalancingRules": [{"frontendPort": 80}]},
            "backendPort",
        ),
        (
            {"probes": [{"protocol": "Tcp", "port": 22}], "loadBalancingRules": [{"protocol": "Udp"}]},
            "only Tcp",
        ),
        (
            {"probes": [{"protocol": "Tcp", "port": 22}], "inboundNatPools": [{"frontendPortRangeStart": 1}]},
            "frontendPortRangeEnd",
        ),
        ({"probes": [{"protocol": "Tcp", "port": 22}], "bindAddress": 7}, "must be a string"),
    ],
)
def test_from_json_rejects(body: object, fragment: str) -> None:
    with pytest.raises(InvalidSpec, match=fragment) as exc:
        from_json(body)
    one_line(exc)


def test_member_json_round_trip() -> None:
    m = Member(3, "10.0.0.4", False, 50003)
    assert member_from_json(member_to_json(m)) == m
