"""Load-balancer frontend ports must be ports HAProxy can bind now and at every reload: not the
daemon's own listeners, not another set's, not in the kernel's ephemeral range (unless
reserved), not something else's listener. The set's own current ports stay fine on update."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from localvmss.config import DaemonConfig
from localvmss.errors import InvalidSpec
from localvmss.lb.hostports import listening_tcp_ports, read_port_range, read_reserved_ports
from localvmss.lb.spec import HostPorts, check_host_ports, parse_lb_rule, parse_nat_pool, parse_probe
from localvmss.lb.spec import LoadBalancerSpec as Spec
from tests.unit.servicefake import TablePorts, api_client, make_service, refused, snapshot, uniform_body

HOST = HostPorts(
    holders={9464: "the daemon's metrics exporter (exporter_port)", 8090: "scale set 'api'"},
    ephemeral=(32768, 60999),
    ephemeral_reserved=frozenset({50000, 50001}),
    listening={8082: "pid 812 (nginx)", 8081: "pid 900 (haproxy)"},
)


def spec(rules: list[str], nat: str | None = None) -> Spec:
    return Spec(tuple(parse_lb_rule(r) for r in rules), parse_probe("tcp:80"), parse_nat_pool(nat) if nat else None)


@pytest.mark.parametrize(
    ("lb", "own", "words"),
    [
        (spec(["8080:80"]), set(), None),
        (spec(["9464:80"]), set(), "frontend port 9464 is already used by the daemon's metrics exporter"),
        (spec(["8090:80"]), set(), "frontend port 8090 is already used by scale set 'api'"),
        (spec(["8082:80"]), set(), "frontend port 8082 is already listened on by pid 812 (nginx)"),
        (spec(["8081:80"]), set(), "frontend port 8081 is already listened on by pid 900 (haproxy)"),
        (spec(["8081:80"]), {8081}, None),  # the set's own frontend: HAProxy holds it already
        (spec(["40000:80"]), set(), "frontend port 40000 lies in the kernel's ephemeral port range 32768-60999"),
        (spec(["40000:80"]), {40000}, None),  # kept as it was
        (spec(["32768:80"]), set(), "ephemeral"),
        (spec(["60999:80"]), set(), "ephemeral"),
        (spec(["32767:80"]), set(), None),
        (spec(["61000:80"]), set(), None),
        (spec([], "50000-50001:22"), set(), None),  # reserved with net.ipv4.ip_local_reserved_ports
        (spec([], "50000-50002:22"), set(), "NAT pool port 50002 (of 50000-50002) lies in the kernel's ephemeral"),
        (spec(["8080:80"], "9460-9470:22"), set(), "NAT pool port 9464 (of 9460-9470) is already used by the daemon"),
    ],
)
def test_check_host_ports(lb: Spec, own: set[int], words: str | None) -> None:
    if words is None:
        assert check_host_ports(lb, HOST, own=own) is lb
        return
    with pytest.raises(InvalidSpec) as err:
        check_host_ports(lb, HOST, own=own)
    assert words in err.value.message and "\n" not in err.value.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [("32768\t60999\n", (32768, 60999)), ("1024 65535", (1024, 65535)), ("junk", (32768, 60999))],
)
def test_port_range_file(tmp_path: Path, text: str, expected: tuple[int, int]) -> None:
    path = tmp_path / "ip_local_port_range"
    path.write_text(text)
    assert read_port_range(path) == expected
    assert read_port_range(tmp_path / "missing") == (32768, 60999)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("\n", set()), ("8080\n", {8080}), ("8080,50000-50002\n", {8080, 50000, 50001, 50002}), ("x,7", {7})],
)
def test_reserved_ports_file(tmp_path: Path, text: str, expected: set[int]) -> None:
    path = tmp_path / "ip_local_reserved_ports"
    path.write_text(text)
    assert read_reserved_ports(path) == expected


def test_listening_ports_come_from_this_namespace() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert port in listening_tcp_ports()


CFG = DaemonConfig(
    exporter_port=9464,
    prometheus_port=9490,
    haproxy_stats_port=9480,
    api_tcp="127.0.0.1:8470",
    api_token="t",
)


def lb_body(rule: int | None = 8081, nat: tuple[int, int] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"loadBalancingRules": [], "probes": [{"protocol": "Tcp", "port": 80}]}
    if rule is not None:
        body["loadBalancingRules"].append({"protocol": "Tcp", "frontendPort": rule, "backendPort": 80})
    if nat is not None:
        body["inboundNatPools"] = [
            {"protocol": "Tcp", "frontendPortRangeStart": nat[0], "frontendPortRangeEnd": nat[1], "backendPort": 22}
        ]
    return body


@pytest.mark.parametrize(
    ("lb", "words"),
    [
        (lb_body(9464), "frontend port 9464 is already used by the daemon's metrics exporter (exporter_port)"),
        (lb_body(9490), "frontend port 9490 is already used by the daemon's Prometheus (prometheus_port)"),
        (lb_body(9480), "frontend port 9480 is already used by HAProxy's stats listener (haproxy_stats_port)"),
        (lb_body(8470), "frontend port 8470 is already used by the daemon's TCP API (api_tcp)"),
        (lb_body(None, (9475, 9485)), "NAT pool port 9480 (of 9475-9485) is already used by HAProxy's stats"),
        (lb_body(45000), "frontend port 45000 lies in the kernel's ephemeral port range 32768-60999"),
        (lb_body(None, (50000, 50009)), "NAT pool port 50000 (of 50000-50009) lies in the kernel's ephemeral"),
        (lb_body(8082), "frontend port 8082 is already listened on by pid 812 (nginx)"),
        (lb_body(8100), "frontend port 8100 is already used by scale set 'api'"),
    ],
)
def test_set_with_a_port_the_host_cannot_give_is_refused_and_changes_nothing(
    tmp_path: Path, lb: dict[str, Any], words: str
) -> None:
    h = make_service(tmp_path, CFG, TablePorts(listening={8082: "pid 812 (nginx)"}))
    client = api_client(h)
    assert client.put("/scaleSets/api", json=uniform_body(1, lb=lb_body(8100))).status_code == 201
    assert client.put("/scaleSets/web", json=uniform_body(2, lb=lb_body(8081))).status_code == 201
    before = snapshot(h.store)
    refused(client.put("/scaleSets/new", json=uniform_body(2, lb=lb)), 400, words)  # create
    refused(client.put("/scaleSets/web", json=uniform_body(2, lb=lb)), 400, words)  # update
    assert snapshot(h.store) == before


def test_own_ports_stay_fine_on_update(tmp_path: Path) -> None:
    """HAProxy listens on the set's own ports; a set stored before the ephemeral rule keeps its."""
    h = make_service(tmp_path, CFG)
    client = api_client(h)
    h.service.put_set("web", uniform_body(2, lb=lb_body(8081)))
    h.ports.listening = {8081: "pid 900 (haproxy)"}
    model = h.store.scale_set("web").model
    model["load_balancer"] = lb_body(8081, (50000, 50009))  # as an older version stored it
    h.store.update_scale_set("web", model=model)
    resp = client.put("/scaleSets/web", json=uniform_body(3, lb=lb_body(8081, (50000, 50009))))
    assert resp.status_code == 200, resp.text
    # A port the set does not hold yet is checked as for a new set.
    refused(client.put("/scaleSets/web", json=uniform_body(3, lb=lb_body(8081, (50000, 50010)))), 400, "50010")


def test_prometheus_port_is_free_when_prometheus_is_elsewhere(tmp_path: Path) -> None:
    cfg = DaemonConfig(prometheus_url="http://prom:9090", haproxy_enabled=False)
    h = make_service(tmp_path, cfg)
    assert api_client(h).put("/scaleSets/web", json=uniform_body(1, lb=lb_body(9490))).status_code == 201
    assert 9480 not in h.ports.holders and 9464 in h.ports.holders


@pytest.mark.parametrize(
    ("stored", "ports"),
    [
        (None, set()),
        ("junk", set()),
        (lb_body(8081), {8081}),
        (lb_body(8081, (20000, 20002)), {8081, 20000, 20001, 20002}),
        ({"inboundNatPool": {"frontendPortRangeStart": 5, "frontendPortRangeEnd": 6}}, {5, 6}),
        ({"loadBalancingRules": [{"frontendPort": "80"}, {"frontendPort": True}, 7]}, set()),
        ({"inboundNatPools": [{"frontendPortRangeStart": 9, "frontendPortRangeEnd": 1}]}, set()),
    ],
)
def test_stored_ports_are_read_leniently(stored: Any, ports: set[int]) -> None:
    from localvmss.lb.spec import stored_frontend_ports

    assert stored_frontend_ports(stored) == ports
