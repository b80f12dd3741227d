"""The load balancer against a real HAProxy 2.6, with small HTTP backends on 127.0.0.x.

Everything is loopback; each test has its own run directory and stops its HAProxy by pid.
Load is a few Python client threads for a bounded time, each request its own connection.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from localvmss.allocation import free_nat_port
from localvmss.lb import HAProxyError, LoadBalancer, Member
from localvmss.lb.config import backend_name
from localvmss.lb.spec import HealthProbe, LbRule, LoadBalancerSpec, NatPool
from tests.integration.lbhelpers import Backend, Load, free_port, free_port_range, get

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
ADDRESSES = [f"127.0.0.{i}" for i in range(2, 7)]

pytestmark = pytest.mark.skipif(not Path(HAPROXY).exists(), reason="haproxy is not installed")


def common_port(addresses: list[str]) -> int:
    """A port free on every one of these addresses (members share the backend port)."""
    for _ in range(50):
        port = free_port(addresses[0])
        try:
            for a in addresses:
                with socket.socket() as s:
                    s.bind((a, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no common free port")


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


class Env:
    def __init__(self, run_dir: Path) -> None:
        self.stats_port = free_port()
        self.lb = LoadBalancer(run_dir, HAPROXY, self.stats_port)
        self.backend_port = common_port(ADDRESSES)
        self.frontend_port = free_port()
        self.backends: dict[int, Backend] = {}
        self.pids: set[int] = set()

    def backend(self, instance_id: int) -> Backend:
        b = Backend(f"vm{instance_id}", ADDRESSES[instance_id], self.backend_port)
        self.backends[instance_id] = b
        return b

    def spec(self, *, nat_pool: NatPool | None = None, extra_rules: tuple[LbRule, ...] = ()) -> LoadBalancerSpec:
        probe = HealthProbe("http", None, "/healthz", interval_seconds=1, healthy_threshold=2, unhealthy_threshold=2)
        rules = (LbRule(self.frontend_port, self.backend_port), *extra_rules)
        return LoadBalancerSpec(rules, probe, nat_pool)

    def members(self, ids: list[int], **nat: int) -> list[Member]:
        return [Member(i, ADDRESSES[i], True, nat.get(f"n{i}")) for i in ids]

    def start(self) -> None:
        self.lb.start()
        self.remember_pids()

    def remember_pids(self) -> None:
        if self.lb.master_pid:
            self.pids.add(self.lb.master_pid)
        self.pids |= set(self.lb.worker_pids())

    def names(self, n: int, port: int | None = None) -> list[str]:
        return [get("127.0.0.1", port or self.frontend_port)[1] for _ in range(n)]


@pytest.fixture
def env() -> Iterator[Env]:
    run_dir = Path(tempfile.mkdtemp(prefix="lvmss-lb-", dir="/tmp"))
    e = Env(run_dir)
    try:
        yield e
    finally:
        e.remember_pids()
        e.lb.stop()
        for b in e.backends.values():
            b.stop()
        for pid in e.pids:  # HAProxy processes this test started, by pid only
            deadline = time.monotonic() + 5
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not _alive(pid), f"haproxy pid {pid} survived stop()"
        shutil.rmtree(run_dir, ignore_errors=True)


def test_requests_reach_every_backend_and_metrics_are_served(env: Env) -> None:
    for i in range(3):
        env.backend(i)
    env.start()
    env.lb.apply("web", env.spec(), env.members([0, 1, 2]))
    wait_until(lambda: {s.status for s in env.lb.server_states("web").values()} == {"UP"}, 10, "3 servers UP")
    assert set(env.names(12)) == {"vm0", "vm1", "vm2"}
    status, body = get("127.0.0.1", env.stats_port, "/metrics")
    assert status == 200 and "haproxy_server_status" in body and 'proxy="lvmss-web-' in body


def test_scale_2_to_4_to_1_under_load_loses_nothing(env: Env) -> None:
    for i in range(4):
        env.backend(i)
    env.start()
    spec = env.spec()
    env.lb.apply("web", spec, env.members([0, 1]))
    wait_until(lambda: len(env.lb.server_states("web")) == 2, 5, "2 servers")
    workers = env.lb.worker_pids()
    with Load("127.0.0.1", env.frontend_port, threads=3, max_seconds=25) as load:
        time.sleep(1.0)
        env.lb.apply("web", spec, env.members([0, 1, 2, 3]))
        wait_until(lambda: {"vm2", "vm3"} <= set(load.snapshot()), 5, "new members serving")
        time.sleep(1.0)
        remaining = {}
        for iid in (3, 2, 1):
            remaining[iid] = env.lb.drain("web", iid, timeout_s=5)
            env.lb.remove("web", iid)
        before = load.snapshot()
        time.sleep(1.0)
        after = load.snapshot()
    print(f"\nscale 2->4->1: sent {load.sent}, failed {load.failed}, per backend {dict(load.seen)}")
    assert load.failed == 0, dict(load.errors)
    assert load.sent > 100
    assert remaining == {3: 0, 2: 0, 1: 0}
    assert after - before == type(after)({"vm0": (after - before)["vm0"]}), "removed members still got traffic"
    assert env.lb.worker_pids() == workers, "membership changes must not reload HAProxy"
    assert set(env.lb.server_states("web")) == {0}
    assert "server i1 " not in env.lb.config_path.read_text()


def test_reload_under_load_loses_nothing(env: Env) -> None:
    for i in range(2):
        env.backend(i)
    env.start()
    env.lb.apply("web", env.spec(), env.members([0, 1]))
    wait_until(lambda: {s.status for s in env.lb.server_states("web").values()} == {"UP"}, 10, "servers UP")
    first_workers = env.lb.worker_pids()
    second_port = free_port()
    with Load("127.0.0.1", env.frontend_port, threads=3, max_seconds=25) as load:
        time.sleep(0.5)
        for _ in range(3):
            env.lb.reload()
            env.remember_pids()
            time.sleep(0.5)
        # A new rule is a new frontend: a configuration change that needs a reload.
        env.lb.apply("web", env.spec(extra_rules=(LbRule(second_port, env.backend_port),)), env.members([0, 1]))
        env.remember_pids()
        time.sleep(0.5)
    print(f"\nreloads: sent {load.sent}, failed {load.failed}, per backend {dict(load.seen)}")
    assert load.failed == 0, dict(load.errors)
    assert load.sent > 100
    assert set(load.seen) == {"vm0", "vm1"}
    assert env.lb.worker_pids() != first_workers
    states = env.lb.server_states("web")
    assert set(states) == {0, 1} and {s.status for s in states.values()} == {"UP"}
    assert set(env.names(4, second_port)) == {"vm0", "vm1"}


def test_drain_counts_connections_an_old_worker_still_serves(env: Env) -> None:
    """After a reload the new worker knows nothing of the connections the old one still serves;
    drain must wait for them too, or an instance is removed under an open connection (seen once
    in CI: one request of ~1700 lost while three members were removed, each with a reload)."""
    env.backend(0)
    env.backend(1)
    env.start()
    env.lb.apply("web", env.spec(), env.members([0, 1]))
    wait_until(lambda: {s.status for s in env.lb.server_states("web").values()} == {"UP"}, 10, "servers UP")
    # Two idle connections: in TCP mode each is joined to a member at once, one per member
    # (round robin); the members' HTTP servers wait for a request, so both stay open.
    idle = [socket.create_connection(("127.0.0.1", env.frontend_port), timeout=3) for _ in range(2)]
    try:
        wait_until(lambda: env.lb.drain("web", 1, timeout_s=0) == 1, 5, "a connection to i1")
        old_workers = env.lb.worker_pids()
        env.lb.reload()
        env.remember_pids()
        assert env.lb.worker_pids() != old_workers, "the reload made a new worker"
        assert env.lb.admin.server_sessions(backend_name("web", env.backend_port), "i1") == 0, (
            "the new worker does not see the old worker's connection"
        )
        assert env.lb.drain("web", 1, timeout_s=1.0) == 1, "drain counts the old worker's connection"
    finally:
        for sock in idle:
            sock.close()
    assert env.lb.drain("web", 1, timeout_s=10.0) == 0, "and ends once it is closed"


def test_kill_9_master_and_worker_then_ensure_running_restores(env: Env) -> None:
    for i in range(3):
        env.backend(i)
    env.start()
    env.lb.apply("web", env.spec(), env.members([0, 1]) + [Member(2, ADDRESSES[2], ready=False)])
    wait_until(lambda: env.lb.server_states("web")[0].status == "UP", 10, "server UP")
    before = {i: s.status for i, s in env.lb.server_states("web").items()}
    assert before == {0: "UP", 1: "UP", 2: "MAINT"}
    assert env.lb.ensure_running() is False
    # A dead worker takes the master down with it (HAProxy's exit-on-failure): restart.
    env.remember_pids()
    os.kill(env.lb.worker_pids()[0], signal.SIGKILL)
    assert env.lb.ensure_running() is True
    env.remember_pids()
    assert set(env.lb.server_states("web")) == {0, 1, 2}
    master, workers = env.lb.master_pid, env.lb.worker_pids()
    assert master and workers
    env.remember_pids()
    for pid in [master, *workers]:
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not any(_alive(p) for p in [*workers]) and env.lb.master_pid is None, 5, "haproxy dead")
    assert env.lb.ensure_running() is True
    env.remember_pids()
    assert env.lb.master_pid not in (None, master)
    wait_until(lambda: env.lb.server_states("web")[1].status == "UP", 10, "servers back UP")
    after = {i: s.status for i, s in env.lb.server_states("web").items()}
    assert after == before
    assert set(env.names(6)) == {"vm0", "vm1"}
    # Started "disabled" from the config file; becoming ready must still bring it in.
    env.lb.apply("web", env.spec(), env.members([0, 1, 2]))
    wait_until(lambda: env.lb.server_states("web")[2].status == "UP", 10, "vm2 UP")
    assert set(env.names(9)) == {"vm0", "vm1", "vm2"}


def test_failed_reload_keeps_the_old_config_running(env: Env) -> None:
    env.backend(0)
    env.start()
    spec = env.spec()
    env.lb.apply("web", spec, env.members([0]))
    good_config = env.lb.config_path.read_text()
    workers = env.lb.worker_pids()
    with socket.socket() as taken:  # another program holds the port the new rule wants
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = int(taken.getsockname()[1])
        with pytest.raises(HAProxyError, match="reload failed"):
            env.lb.apply("web", env.spec(extra_rules=(LbRule(busy, env.backend_port),)), env.members([0]))
    assert env.lb.config_path.read_text() == good_config
    assert env.lb.sets()["web"].spec == spec
    assert env.lb.worker_pids() == workers
    assert env.names(2) == ["vm0", "vm0"]
    env.lb.reload()  # the master recovers from the failed reload
    env.remember_pids()
    assert env.names(2) == ["vm0", "vm0"]


def test_failing_health_probe_leaves_rotation_and_comes_back(env: Env) -> None:
    b0, b1 = env.backend(0), env.backend(1)
    env.start()
    env.lb.apply("web", env.spec(), env.members([0, 1]))
    wait_until(lambda: {s.status for s in env.lb.server_states("web").values()} == {"UP"}, 10, "servers UP")
    b1.healthy = False
    wait_until(lambda: env.lb.server_states("web")[1].status == "DOWN", 10, "vm1 DOWN")
    assert env.lb.server_states("web")[1].check_status.startswith("L7STS")
    assert set(env.names(10)) == {"vm0"}
    b1.healthy = True
    wait_until(lambda: env.lb.server_states("web")[1].status == "UP", 10, "vm1 back UP")
    assert set(env.names(10)) == {"vm0", "vm1"}
    assert b0.hits and b1.hits


def test_nat_listener_reaches_the_right_backend(env: Env) -> None:
    for i in range(3):
        env.backend(i)
    env.start()
    start = free_port_range(4)
    spec = env.spec(nat_pool=NatPool(start, start + 3, env.backend_port))
    ports: dict[int, int] = {}
    for i in range(3):
        port = free_nat_port(start, start + 3, set(ports.values()))
        assert port is not None
        ports[i] = port
    assert list(ports.values()) == [start, start + 1, start + 2]
    members = [Member(i, ADDRESSES[i], True, ports[i]) for i in range(3)]
    env.lb.apply("web", spec, members)
    for i in range(3):
        assert get("127.0.0.1", ports[i])[1] == f"vm{i}"
    env.lb.drain("web", 1, timeout_s=2)
    env.lb.remove("web", 1)  # its NAT listener goes with it (config + seamless reload)
    env.remember_pids()
    with pytest.raises(OSError):
        get("127.0.0.1", ports[1], timeout=1)
    assert get("127.0.0.1", ports[2])[1] == "vm2"
    assert free_nat_port(start, start + 3, {ports[0], ports[2]}) == ports[1]


def test_a_new_daemon_adopts_the_running_haproxy(env: Env) -> None:
    env.backend(0)
    env.lb.apply("web", env.spec(), env.members([0]))  # apply starts HAProxy when needed
    env.remember_pids()
    master = env.lb.master_pid
    again = LoadBalancer(env.lb.run_dir, HAPROXY, env.stats_port)  # as after a daemon restart
    assert set(again.sets()) == {"web"} and again.members("web") == tuple(env.members([0]))
    again.start()
    assert again.master_pid == master
    assert again.ensure_running() is False
    assert set(again.server_states("web")) == {0}
    assert env.names(2) == ["vm0", "vm0"]


def test_start_failure_says_why(env: Env) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", env.stats_port))
        taken.listen(1)
        with pytest.raises(HAProxyError, match=f"cannot bind socket.*{env.stats_port}"):
            env.lb.start()
    assert env.lb.master_pid is None


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"), reason="needs root and iproute2 for a netns")
def test_members_inside_a_network_namespace(tmp_path: Path) -> None:
    """Guests live in a namespace here: servers carry ``namespace``, which "add server" refuses,
    so new members go in through a config rewrite and a seamless reload instead."""
    ns = f"lvmss-lbtest-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    procs: list[subprocess.Popen[bytes]] = []
    run_dir = Path(tempfile.mkdtemp(prefix="lvmss-lb-", dir="/tmp"))
    lb = LoadBalancer(run_dir, HAPROXY, free_port(), namespace=ns)
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        ports = []
        for i in range(2):
            site = tmp_path / f"vm{i}"
            site.mkdir()
            (site / "index.html").write_text(f"ns-vm{i}\n")
            (site / "healthz").write_text("ok\n")
            port = 18000 + i
            ports.append(port)
            procs.append(
                subprocess.Popen(
                    [
                        "ip",
                        "netns",
                        "exec",
                        ns,
                        sys.executable,
                        "-m",
                        "http.server",
                        "-b",
                        "127.0.0.1",
                        "-d",
                        str(site),
                        str(port),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        frontend = free_port()
        probe = HealthProbe("http", None, "/healthz", interval_seconds=1)
        spec = LoadBalancerSpec((LbRule(frontend, ports[0]),), probe)
        lb.apply("web", spec, [Member(0, "127.0.0.1")])
        wait_until(
            lambda: lb.server_states("web").get(0) is not None and lb.server_states("web")[0].status == "UP",
            10,
            "namespaced server UP",
        )
        assert get("127.0.0.1", frontend)[1] == "ns-vm0"
        workers = lb.worker_pids()
        spec2 = LoadBalancerSpec((LbRule(frontend, ports[0]), LbRule(free_port(), ports[1])), probe)
        lb.apply("web", spec2, [Member(0, "127.0.0.1"), Member(1, "127.0.0.1")])
        assert lb.worker_pids() != workers, "a namespaced member is added by a reload"
        assert set(lb.server_states("web")) == {0, 1}
    finally:
        lb.stop()
        for p in procs:
            p.terminate()
            p.wait(timeout=5)
        subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(run_dir, ignore_errors=True)
