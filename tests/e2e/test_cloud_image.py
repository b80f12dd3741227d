"""A self-booting cloud image end to end: built by the tests from Debian packages (no download),
imported as one disk with `image import --file`, booted by firmware and extlinux from its own
partition table, configured by its cloud-init (NoCloud) from the seed, scaled to 2 behind the
real HAProxy, and its node_exporter scraped by the daemon's Prometheus at :9100/metrics."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from lxml import etree

from localvmss.autoscale.metrics_catalog import build_query
from localvmss.autoscale.settings import MetricSource
from localvmss.cli.client import ApiClient
from localvmss.lab.testbed import REPO, DaemonProcess, Testbed, free_port
from localvmss.virt.host import Host
from tests.conftest import Cli, built_image
from tests.e2e.helpers import backend_names, http_get, instances, prom_query, wait_until

CLOUD_IMAGE_DIR = REPO / ".cache" / "images" / "localvmss-cloud"
USER_DATA = """#cloud-config
write_files:
  - path: /srv/www/cloud-config.html
    permissions: '0644'
    content: |
      written by write_files
runcmd:
  - echo "runcmd on $(hostname)" > /srv/www/runcmd.html
  - [ sh, -c, "cat /var/lib/cloud/data/instance-id > /srv/www/instance-id.html" ]
"""


@pytest.fixture(scope="session")
def cloud_disk() -> Path:
    """The cloud image, rebuilt only when missing or stale (about 2 s)."""
    return built_image("build-cloud", CLOUD_IMAGE_DIR) / "disk.qcow2"


def _first_value(daemon: DaemonProcess, query: str, what: str) -> float:
    """The value of the query's first series, once it has one."""
    answered: list[dict] = []

    def has_data() -> bool:
        answered[:] = prom_query(daemon, query)
        return bool(answered)

    wait_until(has_data, 60, what)
    return float(answered[0]["value"][1])


def _domain_os(testbed: Testbed, host_name: str, domain: str) -> etree._Element:
    assert testbed.lab is not None
    lab_host = next(h for h in testbed.lab.hosts if h.name == host_name)
    host = Host(lab_host.name, lab_host.socket_uri)
    try:
        return etree.fromstring(host.domain_xml(domain).encode()).find("os")
    finally:
        host.close()


def test_cloud_image_scaled_behind_haproxy_with_node_exporter_metrics(
    cloud_disk: Path, cli: Cli, api: ApiClient, daemon: DaemonProcess, testbed: Testbed, tmp_path: Path
) -> None:
    image = f"cloud{uuid.uuid4().hex[:5]}"
    imported = json.loads(cli.ok("-o", "json", "image", "import", image, "--file", str(cloud_disk)))
    assert imported["boot"] == "disk" and imported["format"] == "qcow2", imported
    assert imported["guestMetrics"] == {"port": 9100, "path": "/metrics"}, imported
    listed = {i["name"]: i for i in json.loads(cli.ok("-o", "json", "image", "list"))}
    assert listed[image]["boot"] == "disk" and listed[image]["kernel"] is None

    name = f"cl{uuid.uuid4().hex[:6]}"
    port = free_port()
    user_data = tmp_path / "user-data"
    user_data.write_text(USER_DATA)
    cli.ok(
        "create", name, "--image", image, "--instance-count", "1", "--lb-rule", f"{port}:80",
        "--health-probe", "http:/healthz", "--computer-name-prefix", "cl", "--custom-data", str(user_data),
    )  # fmt: skip
    try:
        cli.ok("scale", name, "--new-capacity", "2")
        wait_until(lambda: api.get(f"/scaleSets/{name}")["properties"]["readyCount"] == 2, 300, "2 ready instances")
        # Both instances answer through HAProxy with the hostname cloud-init set from meta-data.
        wait_until(lambda: backend_names(port, 20) == {"cl000000", "cl000001"}, 60, "both instances in rotation")

        vms = instances(api, name)
        for vm in vms:
            # Firmware boot from the disk: no kernel, initrd or command line from the host.
            view = vm["properties"]["instanceView"]
            os_el = _domain_os(testbed, view["host"], view["domainName"])
            assert os_el.find("kernel") is None and os_el.find("boot").get("dev") == "hd"
            ip = vm["properties"]["networkProfile"]["privateIpAddress"]
            # The #cloud-config user-data ran: write_files and both forms of runcmd.
            assert http_get(f"http://{ip}/cloud-config.html") == (200, "written by write_files")
            assert http_get(f"http://{ip}/runcmd.html")[1] == f"runcmd on {view['computerName']}"
            assert http_get(f"http://{ip}/instance-id.html")[1] == view["domainName"]
        # The seed's SSH keys reached root: run-command goes over SSH with the daemon's key.
        out = api.post(f"/scaleSets/{name}/virtualMachines/1/runCommand", {"script": "cat /run/cloud-init/result.json"})
        assert json.loads(out["stdout"])["v1"]["datasource"].startswith("DataSourceNoCloud"), out

        # node_exporter's own figures, scraped at :9100/metrics through the file_sd target labels.
        addresses = {f"{vm['properties']['networkProfile']['privateIpAddress']}:9100" for vm in vms}
        selector = f'job="localvmss-guest",scale_set="{name}"'

        def scraped() -> set[str]:
            return {r["metric"]["instance"] for r in prom_query(daemon, f"node_load1{{{selector}}}")}

        wait_until(lambda: scraped() == addresses, 90, "node_exporter metrics of both instances in Prometheus")
        cpu = prom_query(daemon, f'count by (instance_id) (node_cpu_seconds_total{{{selector},mode="idle"}})')
        assert {r["metric"]["instance_id"] for r in cpu} == {"0", "1"}, cpu
        # The autoscaler's guest metrics read node_exporter's figures as they are.
        figures = {}
        grain, window = timedelta(seconds=15), timedelta(seconds=30)
        for metric in ("Guest Percentage CPU", "Guest Available Memory Bytes"):
            query = build_query(MetricSource(metric_name=metric, time_grain=grain, time_window=window), name)
            figures[metric] = _first_value(daemon, query, f"{metric} in Prometheus")
        assert 0 <= figures["Guest Percentage CPU"] <= 100, figures
        assert 0 < figures["Guest Available Memory Bytes"] < 256 << 20, figures
        print(f"\ncloud image: 2 instances behind HAProxy on :{port}, node_exporter at {sorted(addresses)}: {figures}")
    finally:
        cli("delete", name)
