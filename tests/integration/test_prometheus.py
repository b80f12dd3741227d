"""A real Prometheus on loopback scraping a real in-process exporter and a stand-in guest endpoint.

One Prometheus serves the whole module (start-up is the slow part); every port is picked by the
kernel (port 0) and every file lives under a per-run temporary directory, so parallel runs do not
collide. Everything started here is stopped by pid at the end.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from prometheus_client import CollectorRegistry

from localvmss.errors import InvalidSpec, TemporaryError
from localvmss.metrics.exporter import InstanceCollector, InstanceSample, start_exporter
from localvmss.metrics.file_sd import write_file_sd
from localvmss.metrics.prometheus import GUEST_JOB, PrometheusClient, PrometheusServer
from localvmss.virt.stats import DomainStats

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus binary not installed")

SCRAPE_S = 1.0
CPU_SPEEDS = {0: 0.5, 1: 1.0}  # CPU seconds per second of the two fixture instances
GUEST_TEXT = (
    "# TYPE node_cpu_seconds_total counter\n"
    'node_cpu_seconds_total{cpu="0",mode="idle"} 100\n'
    'node_cpu_seconds_total{cpu="0",mode="user"} 20\n'
    "# TYPE node_memory_MemTotal_bytes gauge\n"
    "node_memory_MemTotal_bytes 536870912\n"
    "# TYPE node_memory_MemAvailable_bytes gauge\n"
    "node_memory_MemAvailable_bytes 268435456\n"
)

T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], timeout: float, what: str) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.25)


class _GuestHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path in ("/cgi-bin/metrics", "/metrics"):
            body = GUEST_TEXT.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_error(404)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
        pass


def _instance_source(started: float) -> Callable[[], Iterable[InstanceSample]]:
    """Fixture instances whose CPU counters advance at CPU_SPEEDS against the wall clock."""

    def source() -> list[InstanceSample]:
        elapsed = time.monotonic() - started
        return [
            InstanceSample(
                "web",
                iid,
                "host-a",
                iid % 2,
                DomainStats(
                    name=f"lvmss-web-{iid}",
                    state=1,
                    cpu_seconds=1000.0 + speed * elapsed,
                    vcpus=2,
                    memory_bytes=512 * 2**20,
                    rss_bytes=200 * 2**20,
                    available_bytes=None,
                    usable_bytes=None,
                    disk_read_bytes=0,
                    disk_write_bytes=0,
                    net_rx_bytes=0,
                    net_tx_bytes=0,
                ),
            )
            for iid, speed in CPU_SPEEDS.items()
        ]

    return source


@dataclass
class Lab:
    server: PrometheusServer
    client: PrometheusClient
    guest_port: int
    guest_sd: Path


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    base = tmp_path_factory.mktemp("prometheus")
    registry = CollectorRegistry()
    registry.register(InstanceCollector(_instance_source(time.monotonic())))
    exporter, exporter_port = start_exporter(registry, "127.0.0.1", 0)

    guest = ThreadingHTTPServer(("127.0.0.1", 0), _GuestHandler)
    guest_thread = threading.Thread(target=guest.serve_forever, daemon=True)
    guest_thread.start()

    guest_sd = base / "sd" / "guests.json"
    server = PrometheusServer(
        base / "data",
        listen="127.0.0.1:0",
        scrape_interval_s=SCRAPE_S,
        exporter_targets=[f"127.0.0.1:{exporter_port}"],
        file_sd_paths={GUEST_JOB: guest_sd},
    )
    client: PrometheusClient | None = None
    try:
        server.start()
        client = server.client(timeout=5.0)
        yield Lab(server, client, guest.server_address[1], guest_sd)
    finally:
        if client is not None:
            client.close()
        pid = server.pid
        server.stop()
        if pid is not None:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)  # reaped and gone
        guest.shutdown()
        guest.server_close()
        guest_thread.join(5)
        exporter.stop()


def test_generated_config_passes_promtool(tmp_path: Path) -> None:
    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed")
    server = PrometheusServer(
        tmp_path,
        scrape_interval_s=2,
        exporter_targets=["127.0.0.1:9000"],
        file_sd_paths={GUEST_JOB: tmp_path / "sd" / "guests.json"},
        extra_static={"haproxy": ["127.0.0.1:8404"]},
    )
    server.check_config()
    config = server.render_config()
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"localvmss", GUEST_JOB, "haproxy"}
    assert jobs[GUEST_JOB]["metrics_path"] == "/cgi-bin/metrics"
    assert config["global"]["scrape_interval"] == "2s"
    assert (tmp_path / "sd" / "guests.json").read_text().strip() == "[]"


RULES = Path(__file__).resolve().parents[2] / "prometheus" / "localvmss-rules.yml"


def test_shipped_rules_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed")
    done = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr or done.stdout
    assert "SUCCESS" in done.stdout, done.stdout


def test_the_config_names_a_copy_of_the_shipped_rules(tmp_path: Path) -> None:
    server = PrometheusServer(tmp_path / "data", exporter_targets=["127.0.0.1:9000"])
    assert server.rule_sources == [RULES], "a checkout finds its own prometheus/ folder"
    server.write_config()
    [copy] = server.render_config()["rule_files"]
    assert Path(copy).parent == tmp_path / "data" / "rules"
    assert Path(copy).read_bytes() == RULES.read_bytes()
    assert "rule_files" not in PrometheusServer(tmp_path / "other", rule_files=[]).render_config()


def test_the_server_evaluates_every_rule(lab: Lab) -> None:
    """Every recording and alerting rule of the shipped file is loaded and evaluates without error
    (health "ok"; "err" would carry Prometheus's reason)."""

    def rules() -> list[dict[str, object]] | None:
        groups = httpx.get(f"{lab.server.url}/api/v1/rules", timeout=5).json()["data"]["groups"]
        found = [rule for group in groups for rule in group["rules"]]
        return found if found and all(r["health"] != "unknown" for r in found) else None

    found = wait_for(rules, 30, "the rules' first evaluation")
    names = {str(r["name"]) for r in found}
    assert {"localvmss:scale_set_degraded", "LocalvmssHostUnavailable", "LocalvmssInstanceUnhealthy"} <= names
    assert {"LocalvmssCapacityBelowMinimum", "LocalvmssAutomaticRepairsSuspended"} <= names
    bad = {str(r["name"]): r.get("lastError") for r in found if r["health"] != "ok"}
    assert bad == {}


def test_server_is_ready_on_loopback(lab: Lab) -> None:
    assert lab.server.running()
    assert lab.server.url.startswith("http://127.0.0.1:")
    assert lab.server.port and lab.server.port > 0
    assert lab.client.ready()


def test_cpu_rate_from_the_exporter(lab: Lab) -> None:
    expr = 'rate(localvmss_instance_cpu_seconds_total{scale_set="web"}[5s])'
    last: dict[str, float] = {}

    def rates_match() -> bool:
        last.clear()
        last.update({labels["instance_id"]: value for labels, value in lab.client.query(expr)})
        return len(last) == 2 and all(
            math.isclose(last[str(iid)], speed, rel_tol=0.1) for iid, speed in CPU_SPEEDS.items()
        )

    deadline = time.monotonic() + 20
    while not rates_match():
        if time.monotonic() > deadline:
            pytest.fail(f"rate() never matched {CPU_SPEEDS}; last answer {last}")
        time.sleep(0.5)
    total = lab.client.query_scalar(f"sum({expr})")
    assert total is not None and math.isclose(total, sum(CPU_SPEEDS.values()), rel_tol=0.1)

    series = lab.client.query('localvmss_instance_vcpus{instance_id="1"}')
    assert series[0][0]["job"] == "localvmss"
    assert series[0][0]["host"] == "host-a" and series[0][0]["fault_domain"] == "1"


def test_file_sd_target_is_scraped_without_restart(lab: Lab) -> None:
    pid = lab.server.pid
    write_file_sd(lab.guest_sd, [(f"127.0.0.1:{lab.guest_port}", {"scale_set": "web", "instance_id": "0"})])

    def guest_memory() -> float | None:
        return lab.client.query_scalar(
            f'node_memory_MemAvailable_bytes{{job="{GUEST_JOB}",scale_set="web",instance_id="0"}}'
        )

    assert wait_for(guest_memory, 25, "the guest endpoint to be scraped") == 268435456
    assert lab.client.query_scalar(f'up{{job="{GUEST_JOB}"}}') == 1.0
    assert lab.server.pid == pid


def test_validate_uses_prometheus_parser(lab: Lab) -> None:
    with pytest.raises(InvalidSpec) as info:
        lab.client.validate("rate(foo[")
    assert info.value.message.startswith("PromQL rejected by Prometheus: ")
    assert "parse error" in info.value.message
    assert "invalid parameter" not in info.value.message  # just Prometheus's parser message
    lab.client.validate('avg(rate(localvmss_instance_cpu_seconds_total{scale_set="web"}[1m]))')
    with pytest.raises(InvalidSpec, match="PromQL rejected"):
        lab.client.query("sum(")


def test_query_scalar_unknown_is_none(lab: Lab) -> None:
    assert lab.client.query_scalar("localvmss_no_such_metric") is None
    assert lab.client.query_scalar("0/0") is None  # NaN
    assert lab.client.query_scalar("vector(3)") == 3.0
    at = datetime.now(UTC) - timedelta(seconds=1)
    assert lab.client.query_scalar("scalar(vector(2))", at) == 2.0
    with pytest.raises(InvalidSpec, match="2 series"):
        lab.client.query_scalar("localvmss_instance_vcpus")
    with pytest.raises(InvalidSpec, match="matrix"):
        lab.client.query("localvmss_instance_vcpus[1m]")


def test_query_range_returns_points(lab: Lab) -> None:
    wait_for(lambda: lab.client.query("localvmss_instance_vcpus"), 10, "a first scrape")
    end = datetime.now(UTC)
    series = lab.client.query_range("localvmss_instance_vcpus", end - timedelta(seconds=10), end, 1)
    assert {labels["instance_id"] for labels, _ in series} == {"0", "1"}
    for _labels, points in series:
        assert points
        assert all(value == 2.0 for _ts, value in points)
        assert all(end.timestamp() - 11 <= ts <= end.timestamp() + 1 for ts, _ in points)
    with pytest.raises(InvalidSpec):
        lab.client.query_range("up", end, end - timedelta(seconds=5), 1)


def test_reload_adds_a_static_job(lab: Lab) -> None:
    pid = lab.server.pid
    lab.server.extra_static = {"guest-static": [f"127.0.0.1:{lab.guest_port}"]}
    lab.server.reload()
    assert wait_for(lambda: lab.client.query_scalar('up{job="guest-static"}'), 20, "the new job") == 1.0
    assert lab.server.pid == pid


def test_unreachable_prometheus_is_a_temporary_error() -> None:
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with PrometheusClient(f"http://127.0.0.1:{port}", timeout=2) as client:
        assert not client.ready()
        with pytest.raises(TemporaryError, match="unreachable while evaluating"):
            client.query("up")
        with pytest.raises(TemporaryError, match="unreachable while validating"):
            client.validate("up")


def test_a_new_daemon_adopts_the_running_prometheus(lab: Lab) -> None:
    """The data plane outlives the daemon: a second PrometheusServer over the same data directory
    (what a restarted daemon makes) takes the running process over, same pid, same port."""
    pid, url = lab.server.pid, lab.server.url
    assert pid is not None
    successor = PrometheusServer(
        lab.server.data_dir,
        listen="127.0.0.1:0",
        scrape_interval_s=SCRAPE_S,
        exporter_targets=lab.server.exporter_targets,
        file_sd_paths=lab.server.file_sd_paths,
    )
    assert successor.adopt(pid) is True
    assert (successor.pid, successor.url, successor.running()) == (pid, url, True)
    assert successor.ensure_running() is False, "an adopted Prometheus that runs is not restarted"
    assert successor.client(timeout=5.0).ready()
    assert successor.adopt(os.getpid()) is False, "a process that is not ours is never adopted"


def test_ensure_running_restarts_on_the_same_port(lab: Lab) -> None:
    """Runs last in this module: it kills the shared server (our own child, by pid)."""
    assert lab.server.ensure_running() is False
    url, pid = lab.server.url, lab.server.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not lab.server.running(), 10, "prometheus to die")
    assert lab.server.ensure_running() is True
    assert lab.server.pid != pid
    assert lab.server.url == url
    assert lab.client.ready()
