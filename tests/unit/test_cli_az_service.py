"""az-shaped command lines against the real Service in-process (tests.unit.servicefake behind the
real REST API): what the CLI sends for az's spellings is what the daemon accepts, and what it
answers comes out in each format. No reconciler runs, so every command here is --no-wait or a read."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from localvmss.api.app import create_app
from localvmss.cli import client as client_module
from localvmss.cli import output as output_module
from localvmss.cli.main import cli
from tests.unit.servicefake import Harness, make_service

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHxzOa5BZ3e7QEy6b2Lc8iAAdhc1JtcXyJ7/k0x4oJHS test@host"


@pytest.fixture
def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    from fastapi.testclient import TestClient

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for var in ("LOCALVMSS_DEFAULTS_GROUP", "AZURE_DEFAULTS_GROUP", "AZURE_CORE_OUTPUT", "LOCALVMSS_CORE_OUTPUT"):
        monkeypatch.delenv(var, raising=False)
    h = make_service(tmp_path)
    app = TestClient(create_app(h.service, token="t"))
    monkeypatch.setenv("LOCALVMSS_TOKEN", "t")
    monkeypatch.setattr(client_module.httpx, "HTTPTransport", lambda **_kw: app._transport)
    yield h
    output_module.err_console.quiet = False


def run(args: list[str]) -> Any:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def test_vmss_create_with_azs_spellings_is_accepted(harness: Harness, tmp_path: Path) -> None:
    (tmp_path / "k.pub").write_text(KEY + "\n")
    out = run(
        [
            "vmss",
            "create",
            "-n",
            "web",
            "--image",
            "base",
            "--instance-count",
            "3",
            "--vm-sku",
            "Standard_B1ls",
            "--admin-username",
            "root",
            "--ssh-key-values",
            str(tmp_path / "k.pub"),
            "--custom-data",
            "#cloud-config",
            "--zone-balance",
            "false",
            "--upgrade-policy-mode",
            "manual",
            "--no-wait",
            "-o",
            "json",
        ]
    )
    created = json.loads(out.stdout)
    assert created["name"] == "web" and created["sku"]["capacity"] == 3
    assert [s.name for s in harness.store.scale_sets()] == ["web"]


def test_reads_in_every_format(harness: Harness) -> None:
    run(["vmss", "create", "-n", "web", "--image", "base", "--no-wait", "-o", "none"])
    assert run(["vmss", "list", "-o", "tsv", "--query", "[].name"]).stdout == "web\n"
    assert run(["vmss", "list", "--query", "[].sku.capacity", "-o", "json"]).stdout.split() == ["[", "2", "]"]
    assert yaml.safe_load(run(["vmss", "show", "-n", "web", "-o", "yaml"]).stdout)["name"] == "web"
    assert run(["vmss", "show", "-n", "web", "-o", "yamlc", "--query", "name"]).stdout == "web\n...\n"
    assert "web" in run(["vmss", "list"]).stdout  # the table


def test_scale_and_delete_no_wait(harness: Harness) -> None:
    run(["vmss", "create", "-n", "web", "--image", "base", "--no-wait", "-o", "none"])
    run(["vmss", "scale", "-n", "web", "--new-capacity", "4", "--no-wait", "-o", "none"])
    assert run(["vmss", "show", "-n", "web", "-o", "tsv", "--query", "sku.capacity"]).stdout == "4\n"
    run(["vmss", "delete", "-n", "web", "--no-wait"])
    assert (
        run(["vmss", "list", "-o", "tsv", "--query", "[?properties.provisioningState != 'Deleting'].name"]).stdout == ""
    )


def code_of(args: list[str]) -> int:
    from localvmss.errors import LocalVMSSError

    result = CliRunner().invoke(cli, args)
    return result.exception.exit_code if isinstance(result.exception, LocalVMSSError) else result.exit_code


def test_resource_groups_scope_the_set(harness: Harness) -> None:
    run(["group", "create", "-n", "rg1", "-l", "lab", "-o", "none"])
    assert "rg1" in run(["group", "list", "-o", "tsv", "--query", "[].name"]).stdout.split()
    assert code_of(["vmss", "create", "-g", "nope", "-n", "web", "--image", "base", "--no-wait"]) == 3
    assert harness.store.scale_sets() == []  # a refused create changed nothing
    run(["vmss", "create", "-g", "rg1", "-n", "web", "--image", "base", "--no-wait", "-o", "none"])
    assert run(["vmss", "show", "-g", "rg1", "-n", "web", "-o", "tsv", "--query", "resourceGroup"]).stdout == "rg1\n"
    assert run(["vmss", "show", "-n", "web", "-o", "tsv", "--query", "resourceGroup"]).stdout == "rg1\n"
    assert code_of(["vmss", "show", "-g", "other", "-n", "web"]) == 3
    assert run(["vmss", "list", "-g", "rg1", "-o", "tsv", "--query", "[].name"]).stdout == "web\n"
    assert code_of(["group", "delete", "-n", "rg1", "--yes", "--no-wait"]) == 4  # still holds web
    assert run(["group", "exists", "-n", "rg1"]).stdout == "true\n"


def test_defaults_group_is_sent(harness: Harness) -> None:
    run(["group", "create", "-n", "rg2", "-o", "none"])
    run(["config", "set", "defaults.group=rg2"])
    run(["vmss", "create", "-n", "web", "--image", "base", "--no-wait", "-o", "none"])
    assert run(["vmss", "show", "-n", "web", "-o", "tsv", "--query", "resourceGroup"]).stdout == "rg2\n"


def test_list_skus_from_the_daemon(harness: Harness) -> None:
    names = run(["vmss", "list-skus", "-o", "tsv", "--query", "[].name"]).stdout.split()
    assert "Standard_B1ls" in names


def test_connection_info_without_a_nat_pool_gives_private_addresses(harness: Harness) -> None:
    from tests.unit.servicefake import add_instances, uniform_body

    harness.service.put_set("web", uniform_body(2))
    add_instances(harness.store, "web", 2)
    out = json.loads(run(["vmss", "list-instance-connection-info", "-n", "web", "-o", "json"]).stdout)
    assert out == {"instance 0": "198.18.1.10:22", "instance 1": "198.18.1.11:22"}
