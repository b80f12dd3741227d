"""Warm template clones end to end, under steady load through HAProxy.

A set with ``templateClones`` boots one hidden builder per host, saves it as the template of its
model version and removes the builder; scale-outs 0 -> 1 -> 2 (the second under load) then
restore both instances from the templates instead of booting them: each serves through HAProxy
under its own computer name and address (never the template's), its instance view says it came
from a template clone, and the activity log says how long it took. A model update replaces the
templates (the old version's volumes are gone from libvirt); deleting the set removes every
template volume. No request fails.
"""

from __future__ import annotations

import time
from pathlib import Path

from localvmss.cli.client import ApiClient
from localvmss.lab.testbed import Testbed, free_port
from localvmss.virt.host import Host
from tests.conftest import Cli
from tests.e2e.helpers import POOL, backend_names, create_set, instances, libvirt_view, wait_until
from tests.e2e.load import Load


def _template_volumes(testbed: Testbed, name: str) -> dict[str, list[str]]:
    """Host -> the set's template volumes libvirt holds there."""
    assert testbed.lab is not None
    out: dict[str, list[str]] = {}
    for lab_host in testbed.lab.hosts:
        host = Host(lab_host.name, lab_host.socket_uri)
        try:
            out[lab_host.name] = sorted(host.volume_names(POOL, f"lvmss-tmpl-{name}-", refresh=True))
        finally:
            host.close()
    return out


def _activity(api: ApiClient, name: str) -> list[str]:
    return [a["message"] for a in api.get(f"/scaleSets/{name}/activityLog")["value"]]


def _templates_saved(api: ApiClient, name: str, version: int, hosts: int) -> bool:
    saved = [m for m in _activity(api, name) if f"warm template of model version {version} on" in m]
    return len(saved) >= hosts


def test_new_instances_are_restored_from_warm_templates_and_serve(
    cli: Cli, api: ApiClient, testbed: Testbed, name: str, tmp_path: Path
) -> None:
    assert testbed.lab is not None
    hosts = len(testbed.lab.hosts)
    port = free_port()
    create_set(
        cli,
        name,
        0,
        "--platform-fault-domain-count",
        "2",
        "--template-clones",
        "true",
        port=port,
        timeout=600,
    )
    try:
        wait_until(lambda: _templates_saved(api, name, 1, hosts), 600, "a template on every host", 0.5)
        wait_until(lambda: libvirt_view(testbed, name)["domains"] == {}, 120, "the builders removed")
        volumes = _template_volumes(testbed, name)
        assert all(len(v) == 2 for v in volumes.values()), volumes  # state + disk on each host
        assert instances(api, name) == []

        # The first clone, then a second one under load (a set of 0 serves nobody: no load yet).
        cli.ok("scale", name, "--new-capacity", "1", timeout=300)
        first = instances(api, name)[0]["properties"]["osProfile"]["computerName"]
        wait_until(lambda: backend_names(port, 5) == {first}, 60, "the first clone serving", 0.2)
        with Load(port, threads=2) as load:
            time.sleep(2)
            started = time.monotonic()
            cli.ok("scale", name, "--new-capacity", "2", timeout=300)
            took = time.monotonic() - started
            members = {i["instanceId"]: i for i in instances(api, name)}
            assert len(members) == 2
            names = {i["properties"]["osProfile"]["computerName"] for i in members.values()}
            wait_until(lambda: names <= set(load.result.answers), 60, "both clones serving", 0.2)
            time.sleep(1)
        print(f"\nscale 1->2 by template clone: CLI returned in {took:.2f} s; load {dict(load.result.answers)}")
        assert load.result.failed == 0, load.result.failures[:10]
        assert set(load.result.answers) == names, f"only the members answer: {dict(load.result.answers)}"
        origins = {i["properties"].get("origin") for i in members.values()}
        assert origins == {"template clone"}, origins
        restored = [m for m in _activity(api, name) if "restored from a warm template" in m]
        assert len(restored) == 2, _activity(api, name)[:10]
        for line in restored:
            print(line)
        addresses = {i["properties"]["networkProfile"]["privateIpAddress"] for i in members.values()}
        assert len(addresses) == 2

        # A model update: templates of the new version replace the old ones.
        data = tmp_path / "user-data"
        data.write_text("#cloud-config\n# model v2\n")
        cli.ok("update", name, "--custom-data", str(data), timeout=300)
        wait_until(lambda: _templates_saved(api, name, 2, hosts), 600, "templates of version 2", 0.5)
        wait_until(
            lambda: all(v and all("-v2" in vol for vol in v) for v in _template_volumes(testbed, name).values()),
            120,
            "the version 1 templates removed",
        )
    finally:
        api.delete(f"/scaleSets/{name}")
        wait_until(lambda: libvirt_view(testbed, name)["domains"] == {}, 180, f"{name} deleted")
    wait_until(lambda: not any(_template_volumes(testbed, name).values()), 120, "every template volume removed")
