"""az's command line, as localvmss takes it: global arguments in every position, each output
format and --query, --instance-ids forms, three-state booleans, az's spellings, -n/-g and the
configured default group, the vmss tree, vmss wait, and vm delete waiting until the VM is gone.

Requests are seen as httpx sends them (a MockTransport answering like the daemon), or answered
by the real Service in-process (tests.unit.servicefake) where the daemon's validation matters."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import click
import httpx
import pytest
import yaml
from click.testing import CliRunner

from localvmss.cli import client as client_module
from localvmss.cli import output as output_module
from localvmss.cli.azargs import GLOBALS, walk
from localvmss.cli.azflags import apply_set, instance_ids, parse_set
from localvmss.cli.client import with_group
from localvmss.cli.formats import apply_query, auto_rows, render, tsv
from localvmss.cli.main import cli, script_with_parameters, vmss
from localvmss.errors import InvalidSpec, LocalVMSSError

SET = {
    "name": "web",
    "resourceGroup": "rg1",
    "id": "/subscriptions/0/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachineScaleSets/web",
    "sku": {"name": "Standard_B1ls", "capacity": 2},
    "zones": [],
    "properties": {
        "orchestrationMode": "Uniform",
        "provisioningState": "Succeeded",
        "readyCount": 2,
        "upgradePolicy": {"mode": "Manual"},
    },
}


class Daemon:
    """Answers like localvmssd from a table of (method, path) -> list of answers (the last one
    repeats); records each request as (method, path, query, body)."""

    def __init__(self, answers: dict[tuple[str, str], list[Any]] | None = None) -> None:
        self.answers = answers or {}
        self.seen: list[tuple[str, str, dict[str, list[str]], Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        url = urlsplit(request.url.raw_path.decode())
        body = json.loads(request.content) if request.content else None
        self.seen.append((request.method, url.path, parse_qs(url.query), body))
        queue = self.answers.get((request.method, url.path))
        if queue is None:
            if request.method == "GET" and url.path == "/scaleSets":
                return httpx.Response(200, json={"value": [SET]})
            if request.method == "GET" and url.path.startswith("/scaleSets/"):
                return httpx.Response(200, json=SET)
            return httpx.Response(200, json={"status": "Accepted", "instanceIds": ["0"]})
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        status, payload = answer if isinstance(answer, tuple) else (200, answer)
        return httpx.Response(status, json=payload)


GONE = (404, {"error": {"code": "ResourceNotFound", "message": "not found"}})
OLD_GONE = (404, {"error": {"code": "NotFound", "message": "not found"}})


@pytest.fixture(autouse=True)
def clean_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No default group or output from the machine running the tests; progress shown again after."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for var in (
        "LOCALVMSS_CONFIG_FILE",
        "LOCALVMSS_DEFAULTS_GROUP",
        "AZURE_DEFAULTS_GROUP",
        "AZURE_CORE_OUTPUT",
        "LOCALVMSS_CORE_OUTPUT",
        "LOCALVMSS_URL",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr("time.sleep", lambda _s: None)
    yield
    output_module.err_console.quiet = False


@pytest.fixture
def daemon(monkeypatch: pytest.MonkeyPatch) -> Daemon:
    d = Daemon()
    monkeypatch.setattr(client_module.httpx, "HTTPTransport", lambda **_kw: httpx.MockTransport(d))
    return d


def run(args: list[str], code: int = 0) -> Any:
    """The command's result; ``code`` is the exit code main() gives (an error kind's own)."""
    result = CliRunner().invoke(cli, args)
    exc = result.exception
    got = exc.exit_code if isinstance(exc, LocalVMSSError) else result.exit_code
    assert got == code, (result.output, exc)
    return result


# ================================================================ global options anywhere
@pytest.mark.parametrize(
    "args",
    [
        ["-o", "json", "show", "web"],
        ["show", "-o", "json", "web"],
        ["show", "web", "-o", "json"],
        ["vmss", "-o", "json", "show", "web"],
        ["vmss", "show", "web", "--output", "json"],
        ["vmss", "show", "-n", "web", "-o", "json"],
        ["--output=json", "vmss", "show", "--name", "web"],
        ["-o", "table", "show", "web", "-o", "json"],  # the last one wins
    ],
)
def test_output_is_accepted_anywhere(daemon: Daemon, args: list[str]) -> None:
    assert json.loads(run(args).stdout)["name"] == "web"
    assert daemon.seen[0][:2] == ("GET", "/scaleSets/web")


@pytest.mark.parametrize(
    "args",
    [
        ["--socket", "/elsewhere.sock", "list"],
        ["list", "--socket", "/elsewhere.sock"],
        ["vmss", "--socket", "/elsewhere.sock", "list"],
        ["monitor", "autoscale", "show", "--resource", "web", "--socket", "/elsewhere.sock"],
    ],
)
def test_connection_options_anywhere(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    sockets: list[str] = []

    def transport(**kw: Any) -> httpx.MockTransport:
        sockets.append(kw["uds"])
        return httpx.MockTransport(Daemon())

    monkeypatch.setattr(client_module.httpx, "HTTPTransport", transport)
    CliRunner().invoke(cli, args)
    assert sockets == ["/elsewhere.sock"]


@pytest.mark.parametrize("position", ["root", "group", "leaf"])
def test_query_debug_verbose_and_only_show_errors_anywhere(daemon: Daemon, position: str) -> None:
    flags = ["--query", "name", "--verbose", "--only-show-errors", "-o", "tsv"]
    args = {
        "root": [*flags, "vmss", "show", "web"],
        "group": ["vmss", *flags, "show", "web"],
        "leaf": ["vmss", "show", "web", *flags],
    }[position]
    result = run(args)
    assert result.stdout == "web\n"


def test_every_command_of_the_tree_takes_every_global_option() -> None:
    for path, command in walk(cli):
        spelled = {o for p in command.params for o in p.opts}
        for spec in GLOBALS:
            long = [d for d in spec.decls if d.startswith("--")][0]
            assert long in spelled, f"{' '.join(path) or 'localvmss'} lacks {long}"


def test_a_bad_query_is_refused_before_any_request(daemon: Daemon) -> None:
    result = run(["list", "--query", "[?name=="], code=2)
    assert "JMESPath" in result.output and daemon.seen == []


def test_version() -> None:
    assert "localvmss" in run(["--version"]).stdout


# ======================================================================= output formats
DATA = [
    {"name": "web", "capacity": 2, "ok": True, "tags": {"a": "b"}, "zones": ["1", "2"], "none": None},
    {"name": "api", "capacity": 0, "ok": False, "tags": {}, "zones": [], "none": None},
]


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("json", json.dumps(DATA, indent=2) + "\n"),
        ("jsonc", json.dumps(DATA, indent=2) + "\n"),  # not a terminal: no colour
        ("yamlc", yaml.safe_dump(DATA, sort_keys=False)),
        ("tsv", "2\tweb\tNone\tTrue\t\t2\n0\tapi\tNone\tFalse\t\t0\n"),  # keys sorted, as az without --query
        ("none", ""),
    ],
)
def test_render(fmt: str, expected: str) -> None:
    assert render(DATA, fmt, color=False) == expected


def test_yaml_reads_back() -> None:
    assert yaml.safe_load(render(DATA, "yaml")) == DATA


@pytest.mark.parametrize("fmt", ["jsonc", "yamlc"])
def test_coloured_formats_colour_on_a_terminal(fmt: str) -> None:
    text = render(DATA, fmt, color=True)
    assert "\x1b[" in text and "web" in text


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("web", "web\n"),
        (3, "3\n"),
        (True, "true\n"),
        (["a", "b"], "a\nb\n"),
        ([["a", 1], ["b", 2]], "a\t1\nb\t2\n"),
        ({"b": 2, "a": 1}, "1\t2\n"),
        ({"nested": {"x": 1}, "list": [1, 2, 3], "v": "x"}, "3\t\tx\n"),
    ],
)
def test_tsv_is_azs(data: Any, expected: str) -> None:
    assert tsv(data) == expected


def test_tsv_keeps_the_order_a_query_chose() -> None:
    assert tsv(apply_query(DATA, "[].{z: name, a: capacity}")) == "web\t2\napi\t0\n"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("[].name", ["web", "api"]),
        ("[?capacity > `0`].name | [0]", "web"),
        ("length(@)", 2),
        ("[0].tags.a", "b"),
        ("[].{n: name, z: zones[0]}", [{"n": "web", "z": "1"}, {"n": "api", "z": None}]),
    ],
)
def test_query(query: str, expected: Any) -> None:
    assert apply_query(DATA, query) == expected


def test_auto_table_takes_scalars_and_leaves_out_id() -> None:
    headers, rows = auto_rows([{"id": "/x", "name": "web", "n": 1, "deep": {"a": 1}}], sort_keys=False)
    assert headers == ["Name", "N"] and rows == [["web", "1"]]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["list", "-o", "tsv", "--query", "[].name"], "web\n"),
        (["list", "-o", "tsv", "--query", "[].[name, sku.capacity]"], "web\t2\n"),
        (["list", "-o", "json", "--query", "[0].resourceGroup"], '"rg1"\n'),
        (["list", "-o", "yaml", "--query", "[].{name: name}"], "- name: web\n"),
        (["list", "-o", "none"], ""),
        (["show", "web", "-o", "none"], ""),
    ],
)
def test_formats_and_query_through_commands(daemon: Daemon, args: list[str], expected: str) -> None:
    assert run(args).stdout == expected


def test_table_with_a_query_is_azs_automatic_table(daemon: Daemon) -> None:
    out = run(["show", "web", "--query", "{Name: name, Group: resourceGroup}"]).stdout
    assert out.split() == ["Name", "Group", "web", "rg1"]  # no extra lines of the plain show


# ========================================================================= instance ids
@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ((), []),
        (("0",), ["0"]),
        (("0", "1", "2"), ["0", "1", "2"]),
        (("0,1",), ["0", "1"]),
        (("*",), ["*"]),
    ],
)
def test_instance_ids(given: tuple[str, ...], expected: list[str]) -> None:
    assert instance_ids(given) == expected


def test_star_goes_alone() -> None:
    with pytest.raises(InvalidSpec, match="goes alone"):
        instance_ids(("*", "1"))


@pytest.mark.parametrize(
    ("args", "path", "body"),
    [
        (
            ["restart", "web", "--instance-ids", "0", "1", "--no-wait"],
            "/scaleSets/web/restart",
            {"instanceIds": ["0", "1"]},
        ),
        (
            ["restart", "web", "--instance-ids", "0", "--instance-ids", "2", "--no-wait"],
            "/scaleSets/web/restart",
            {"instanceIds": ["0", "2"]},
        ),
        (["vmss", "start", "-n", "web", "--instance-ids", "*", "--no-wait"], "/scaleSets/web/start", {}),
        (
            ["vmss", "stop", "--instance-ids", "3", "-n", "web", "--no-wait"],
            "/scaleSets/web/powerOff",
            {"instanceIds": ["3"]},
        ),
        (
            ["delete-instances", "web", "--instance-ids", "*", "--no-wait"],
            "/scaleSets/web/delete",
            {"instanceIds": ["*"]},
        ),
        (
            ["update-instances", "web", "--instance-ids", "1", "2", "--no-wait"],
            "/scaleSets/web/manualUpgrade",
            {"instanceIds": ["1", "2"]},
        ),
    ],
)
def test_instance_ids_reach_the_api(daemon: Daemon, args: list[str], path: str, body: Any) -> None:
    run(args)
    assert daemon.seen[0][1] == path and daemon.seen[0][3] == body


# ===================================================================== three-state booleans
@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], {}),
        (["--protect-from-scale-in"], {"protectFromScaleIn": True}),
        (["--protect-from-scale-in", "true"], {"protectFromScaleIn": True}),
        (["--protect-from-scale-in", "false"], {"protectFromScaleIn": False}),
        (["--protect-from-scale-in", "yes"], {"protectFromScaleIn": True}),
        (["--protect-from-scale-in", "no"], {"protectFromScaleIn": False}),
        (
            ["--protect-from-scale-in", "--protect-from-scale-set-actions", "False"],
            {"protectFromScaleIn": True, "protectFromScaleSetActions": False},
        ),
    ],
)
def test_protection_booleans(daemon: Daemon, flags: list[str], expected: dict[str, bool]) -> None:
    daemon.answers[("PATCH", "/scaleSets/web/virtualMachines/0")] = [{"instanceId": "0"}]
    run(["-o", "json", "set-protection", "web", "--instance-id", "0", *flags])
    assert daemon.seen[0][3] == {"properties": {"protectionPolicy": expected}}


def test_update_instance_id_protection_is_azs_form(daemon: Daemon) -> None:
    daemon.answers[("PATCH", "/scaleSets/web/virtualMachines/0")] = [{"instanceId": "0"}]
    run(["vmss", "update", "-n", "web", "--instance-id", "0", "--protect-from-scale-in", "true", "-o", "json"])
    assert daemon.seen == [
        (
            "PATCH",
            "/scaleSets/web/virtualMachines/0",
            {},
            {"properties": {"protectionPolicy": {"protectFromScaleIn": True}}},
        )
    ]


def test_a_bad_boolean_is_refused(daemon: Daemon) -> None:
    result = run(["set-protection", "web", "--instance-id", "0", "--protect-from-scale-in", "maybe"], code=2)
    assert "maybe" in result.output and daemon.seen == []


# ================================================================ create: az's spellings
def created(daemon: Daemon, *flags: str) -> Any:
    run(["vmss", "create", "-n", "web", "--image", "base", "--no-wait", "-o", "json", *flags])
    (body,) = [b for m, p, _q, b in daemon.seen if m == "PUT"]
    return body


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHxzOa5BZ3e7QEy6b2Lc8iAAdhc1JtcXyJ7/k0x4oJHS test@host"


@pytest.mark.parametrize(
    ("flags", "read"),
    [
        (["--vm-sku", "Standard_B2s"], lambda b: b["sku"]["name"] == "Standard_B2s"),
        (["--vm-size", "Standard_B2s"], lambda b: b["sku"]["name"] == "Standard_B2s"),
        (["--zone-balance", "true", "--zones", "1", "2"], lambda b: b["properties"]["zoneBalance"] is True),
        (["--zone-balance"], lambda b: b["properties"]["zoneBalance"] is True),
        (["--zone-balance", "false"], lambda b: b["properties"]["zoneBalance"] is False),
        (["--zones", "1", "2", "3"], lambda b: b["zones"] == ["1", "2", "3"]),
        (["--upgrade-policy-mode", "rolling"], lambda b: b["properties"]["upgradePolicy"]["mode"] == "Rolling"),
        (["--enable-automatic-repairs"], lambda b: b["properties"]["automaticRepairsPolicy"]["enabled"] is True),
        (
            ["--admin-username", "azureuser"],
            lambda b: b["properties"]["virtualMachineProfile"]["osProfile"]["adminUsername"] == "azureuser",
        ),
        (
            ["--ssh-key-values", KEY],
            lambda b: (
                b["properties"]["virtualMachineProfile"]["osProfile"]["linuxConfiguration"]["ssh"]["publicKeys"]
                == [{"keyData": KEY}]
            ),
        ),
        (
            ["--custom-data", "#cloud-config\nruncmd: [true]"],
            lambda b: (
                base64.b64decode(b["properties"]["virtualMachineProfile"]["osProfile"]["customData"])
                == b"#cloud-config\nruncmd: [true]"
            ),
        ),
        (["--instance-count", "3"], lambda b: b["sku"]["capacity"] == 3),
    ],
)
def test_create_takes_azs_spellings(daemon: Daemon, flags: list[str], read: Callable[[Any], bool]) -> None:
    assert read(created(daemon, *flags))


def test_custom_data_and_keys_from_files(daemon: Daemon, tmp_path: Path) -> None:
    (tmp_path / "init.yaml").write_text("#cloud-config\n")
    (tmp_path / "k.pub").write_text(KEY + "\n")
    body = created(daemon, "--custom-data", str(tmp_path / "init.yaml"), "--ssh-key-values", str(tmp_path / "k.pub"))
    os_profile = body["properties"]["virtualMachineProfile"]["osProfile"]
    assert base64.b64decode(os_profile["customData"]) == b"#cloud-config\n"
    assert os_profile["linuxConfiguration"]["ssh"]["publicKeys"] == [{"keyData": KEY}]


def test_generate_ssh_keys_uses_the_users_key(daemon: Daemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_rsa.pub").write_text(KEY + "\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    body = created(daemon, "--generate-ssh-keys")
    keys = body["properties"]["virtualMachineProfile"]["osProfile"]["linuxConfiguration"]["ssh"]["publicKeys"]
    assert keys == [{"keyData": KEY}]


@pytest.mark.parametrize(
    ("scripts", "parameters", "expected"),
    [
        (("uptime",), (), "uptime"),
        (
            ("echo $1", "echo $GREETING"),
            ("a b", "GREETING=hi there"),
            "export GREETING='hi there'\nset -- 'a b'\necho $1\necho $GREETING",
        ),
        (("echo $1",), ("$(reboot)",), "set -- '$(reboot)'\necho $1"),
    ],
)
def test_run_command_parameters_are_data(scripts: tuple[str, ...], parameters: tuple[str, ...], expected: str) -> None:
    assert script_with_parameters(scripts, parameters) == expected


@pytest.mark.parametrize(
    "args",
    [
        [
            "vmss",
            "run-command",
            "invoke",
            "-n",
            "web",
            "--instance-id",
            "0",
            "--command-id",
            "RunShellScript",
            "--scripts",
            "echo hi",
        ],
        ["run-command", "web", "--instance-id", "0", "--scripts", "echo hi"],  # localvmss's first form
        ["run-command", "-n", "web", "--instance-id", "0", "--scripts", "echo hi", "-o", "table"],
    ],
)
def test_run_command_invoke(daemon: Daemon, args: list[str]) -> None:
    path = "/scaleSets/web/virtualMachines/0/runCommand"
    daemon.answers[("POST", path)] = [{"stdout": "hi\n", "stderr": "", "exitCode": 0}]
    assert run(args).stdout == "hi\n"
    assert daemon.seen[-1][1:] == (path, {}, {"script": "echo hi"})


def test_run_command_refuses_other_command_ids(daemon: Daemon) -> None:
    run(
        [
            "vmss",
            "run-command",
            "invoke",
            "-n",
            "web",
            "--instance-id",
            "0",
            "--command-id",
            "RunPowerShellScript",
            "--scripts",
            "dir",
        ],
        code=2,
    )
    assert daemon.seen == []


def test_list_skus(daemon: Daemon) -> None:
    sku = {
        "name": "Standard_B1s",
        "resourceType": "virtualMachineScaleSets",
        "capabilities": [{"name": "vCPUs", "value": "1"}, {"name": "MemoryGB", "value": "1"}],
    }
    daemon.answers[("GET", "/skus")] = [{"value": [sku]}]
    assert run(["vmss", "list-skus", "-o", "tsv", "--query", "[].name"]).stdout == "Standard_B1s\n"
    assert run(["list-skus"]).stdout.split()[4:] == ["Standard_B1s", "1", "1", "virtualMachineScaleSets"]


# ================================================================== -n, -g and defaults.group
def test_name_twice_differently_is_refused(daemon: Daemon) -> None:
    result = run(["show", "web", "-n", "api"], code=2)
    assert "given twice" in result.output and daemon.seen == []


@pytest.mark.parametrize(
    ("args", "path"),
    [
        (["standby-pool", "show", "-n", "web", "-o", "json"], "/scaleSets/web/standbyPool"),
        (["vmss", "rolling-upgrade", "get-latest", "-n", "web", "-o", "json"], "/scaleSets/web/rollingUpgrades/latest"),
        (["vmss", "get-os-upgrade-history", "-n", "web", "-o", "json"], "/scaleSets/web/osUpgradeHistory"),
        (
            ["vmss", "boot-diagnostics", "get-boot-log", "-n", "web", "--instance-id", "0", "-o", "json"],
            "/scaleSets/web/virtualMachines/0/bootLog",
        ),
        (["vmss", "activity-log", "-n", "web", "--max-events", "5", "-o", "json"], "/scaleSets/web/activityLog"),
        (["vm", "show", "-n", "fvm1", "-o", "json"], "/virtualMachines/fvm1"),
    ],
)
def test_dash_n_everywhere_a_set_is_named(daemon: Daemon, args: list[str], path: str) -> None:
    daemon.answers[("GET", path)] = [{"value": []}]
    run(args)
    assert daemon.seen[0][1] == path


def test_a_name_is_required(daemon: Daemon) -> None:
    assert "-n/--name" in run(["show"], code=2).output


@pytest.mark.parametrize(
    ("env", "config", "args", "group"),
    [
        ({}, None, ["show", "web"], None),
        ({}, None, ["show", "web", "-g", "rg1"], "rg1"),
        ({}, None, ["vmss", "show", "--resource-group", "rg1", "-n", "web"], "rg1"),
        ({}, "defaults.group=rg2", ["show", "web"], "rg2"),
        ({}, "defaults.group=rg2", ["show", "web", "-g", "rg1"], "rg1"),
        ({"AZURE_DEFAULTS_GROUP": "rg3"}, "defaults.group=rg2", ["show", "web"], "rg3"),
        ({"AZURE_DEFAULTS_GROUP": "rg3", "LOCALVMSS_DEFAULTS_GROUP": "rg4"}, None, ["show", "web"], "rg4"),
        ({"LOCALVMSS_DEFAULTS_GROUP": "rg4"}, None, ["monitor", "autoscale", "show", "--resource", "web"], "rg4"),
        (
            {"LOCALVMSS_DEFAULTS_GROUP": "rg4"},
            None,
            ["monitor", "autoscale", "show", "-g", "rg5", "--resource", "web"],
            "rg5",
        ),  # the autoscale commands' own -g
    ],
)
def test_resource_group_reaches_the_api(
    daemon: Daemon,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    config: str | None,
    args: list[str],
    group: str | None,
) -> None:
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    if config:
        run(["config", "set", config])
    CliRunner().invoke(cli, ["-o", "json", *args])
    assert daemon.seen, "no request"
    assert daemon.seen[0][2].get("resourceGroup") == ([group] if group else None)


@pytest.mark.parametrize(
    ("path", "group", "expected"),
    [
        ("/scaleSets/web", "g", "/scaleSets/web?resourceGroup=g"),
        ("/scaleSets", "g", "/scaleSets?resourceGroup=g"),
        ("/scaleSets/web/restart?skipShutdown=true", "g", "/scaleSets/web/restart?skipShutdown=true&resourceGroup=g"),
        ("/scaleSets/web?resourceGroup=h", "g", "/scaleSets/web?resourceGroup=h"),
        ("/virtualMachines/vm1", "a b", "/virtualMachines/vm1?resourceGroup=a+b"),
        ("/hosts/h1", "g", "/hosts/h1"),
        ("/resourceGroups/g", "g", "/resourceGroups/g"),
        ("/scaleSetsX", "g", "/scaleSetsX"),
        ("/scaleSets/web", None, "/scaleSets/web"),
    ],
)
def test_with_group(path: str, group: str | None, expected: str) -> None:
    assert with_group(path, group) == expected


def test_config_set_get_unset(tmp_path: Path) -> None:
    run(["config", "set", "defaults.group=rg2", "core.output=json"])
    assert (tmp_path / "xdg" / "localvmss" / "config").read_text().count("group = rg2") == 1
    got = json.loads(run(["config", "get", "defaults.group", "-o", "json"]).stdout)
    assert got["value"] == "rg2" and got["name"] == "group"
    run(["config", "unset", "defaults.group"])
    run(["config", "get", "defaults.group"], code=3)


def test_core_output_sets_the_default_format(daemon: Daemon) -> None:
    run(["config", "set", "core.output=json"])
    assert json.loads(run(["show", "web"]).stdout)["name"] == "web"
    assert run(["show", "web", "-o", "tsv", "--query", "name"]).stdout == "web\n"


@pytest.mark.parametrize("bad", ["defaults.group", "group=x", ".group=x", "a.b.c=x"])
def test_config_set_refuses_what_is_not_section_key_value(bad: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["config", "set", bad])
    assert result.exit_code != 0 and isinstance(result.exception, InvalidSpec)
    assert not (tmp_path / "xdg" / "localvmss" / "config").exists()


@pytest.mark.parametrize(
    ("args", "request_line"),
    [
        (
            ["group", "create", "-n", "rg1", "-l", "lab"],
            ("PUT", "/resourceGroups/rg1", {"location": "lab", "tags": {}}),
        ),
        (
            ["group", "create", "--name", "rg1", "--tags", "a=b", "c="],
            ("PUT", "/resourceGroups/rg1", {"location": "local", "tags": {"a": "b", "c": ""}}),
        ),
        (["group", "show", "-g", "rg1"], ("GET", "/resourceGroups/rg1", None)),
        (["group", "list"], ("GET", "/resourceGroups", None)),
        (["group", "delete", "-n", "rg1", "--yes", "--no-wait"], ("DELETE", "/resourceGroups/rg1", None)),
    ],
)
def test_group_commands(daemon: Daemon, args: list[str], request_line: tuple[str, str, Any]) -> None:
    daemon.answers[("GET", "/resourceGroups")] = [{"value": []}]
    run(["-o", "json", *args])
    method, path, _query, body = daemon.seen[0]
    assert (method, path, body) == request_line


def test_group_delete_waits_until_gone(daemon: Daemon) -> None:
    daemon.answers[("GET", "/resourceGroups/rg1")] = [{"name": "rg1"}, GONE]
    run(["group", "delete", "-n", "rg1", "--yes"])
    assert [m for m, *_ in daemon.seen] == ["DELETE", "GET", "GET"]


def test_group_delete_without_yes_and_without_a_terminal_is_refused(daemon: Daemon) -> None:
    run(["group", "delete", "-n", "rg1"], code=2)
    assert daemon.seen == []


# =================================================================================== vmss tree
SET_VERBS = sorted(
    set(cli.commands) - {"image", "host", "lb", "vm", "autoscale", "standby-pool", "group", "config", "vmss", "monitor"}
)


@pytest.mark.parametrize("verb", SET_VERBS)
def test_vmss_holds_the_same_command_objects(verb: str) -> None:
    assert vmss.commands[verb] is cli.commands[verb]


def test_vmss_has_azs_verbs() -> None:
    az_verbs = {
        "create",
        "list",
        "show",
        "scale",
        "update",
        "delete",
        "list-instances",
        "get-instance-view",
        "start",
        "stop",
        "deallocate",
        "restart",
        "reimage",
        "delete-instances",
        "update-instances",
        "list-instance-connection-info",
        "run-command",
        "rolling-upgrade",
        "get-os-upgrade-history",
        "boot-diagnostics",
        "list-skus",
        "wait",
        "set-orchestration-service-state",
    }
    assert az_verbs <= set(vmss.commands)


def test_monitor_autoscale_is_the_autoscale_group() -> None:
    monitor = cli.commands["monitor"]
    assert isinstance(monitor, click.Group)
    assert monitor.commands == {"autoscale": cli.commands["autoscale"]}


# ================================================================================= vmss wait
@pytest.mark.parametrize(
    ("flags", "answers", "polls"),
    [
        (["--created"], [GONE, {"properties": {"provisioningState": "Creating"}}, SET], 3),
        (["--updated"], [{"properties": {"provisioningState": "Updating"}}, SET], 2),
        (["--deleted"], [SET, SET, GONE], 3),
        (["--deleted"], [OLD_GONE], 1),  # a daemon from before ResourceNotFound
        (["--exists"], [GONE, SET], 2),
        (["--custom", "sku.capacity == `2`"], [{"sku": {"capacity": 1}}, SET], 2),
        (["--custom", "properties.readyCount"], [{"properties": {"readyCount": 0}}, SET], 2),
    ],
)
def test_vmss_wait(daemon: Daemon, flags: list[str], answers: list[Any], polls: int) -> None:
    daemon.answers[("GET", "/scaleSets/web")] = answers
    assert run(["vmss", "wait", "-n", "web", *flags, "--interval", "1"]).stdout == ""
    assert len(daemon.seen) == polls


def test_vmss_wait_times_out(daemon: Daemon) -> None:
    daemon.answers[("GET", "/scaleSets/web")] = [{"properties": {"provisioningState": "Updating"}}]
    result = run(["vmss", "wait", "-n", "web", "--updated", "--timeout", "0"], code=1)
    assert result.exit_code == 1


@pytest.mark.parametrize("flags", [[], ["--created", "--deleted"], ["--custom", "[?"]])
def test_vmss_wait_needs_one_valid_condition(daemon: Daemon, flags: list[str]) -> None:
    assert CliRunner().invoke(cli, ["vmss", "wait", "-n", "web", *flags]).exit_code != 0
    assert daemon.seen == []


def test_vmss_wait_on_an_instance(daemon: Daemon) -> None:
    daemon.answers[("GET", "/scaleSets/web/virtualMachines/1")] = [GONE]
    run(["vmss", "wait", "-n", "web", "--instance-id", "1", "--deleted"])
    assert daemon.seen[0][1] == "/scaleSets/web/virtualMachines/1"


# =========================================================================== vm delete waits
def test_vm_delete_waits_until_the_vm_is_gone(daemon: Daemon) -> None:
    daemon.answers[("DELETE", "/virtualMachines/fvm1")] = [{"status": "Accepted"}]
    daemon.answers[("GET", "/virtualMachines/fvm1")] = [{"properties": {"provisioningState": "Deleting"}}, GONE]
    run(["vm", "delete", "fvm1"])
    assert [(m, p) for m, p, *_ in daemon.seen] == [
        ("DELETE", "/virtualMachines/fvm1"),
        ("GET", "/virtualMachines/fvm1"),
        ("GET", "/virtualMachines/fvm1"),
    ]


def test_vm_delete_no_wait_makes_one_request(daemon: Daemon) -> None:
    daemon.answers[("DELETE", "/virtualMachines/fvm1")] = [{"status": "Accepted"}]
    run(["vm", "delete", "-n", "fvm1", "--no-wait"])
    assert len(daemon.seen) == 1


def test_set_delete_accepts_both_not_found_codes(daemon: Daemon) -> None:
    daemon.answers[("GET", "/scaleSets/web")] = [SET, OLD_GONE]
    run(["vmss", "delete", "-n", "web"])
    daemon.answers[("GET", "/scaleSets/web")] = [GONE]
    run(["vmss", "delete", "-n", "web"])


# ============================================================================ shell completion
def completions(words: str) -> list[str]:
    env = {"_LOCALVMSS_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(len(words.split(" ")) - 1)}
    result = CliRunner().invoke(cli, [], env=env, prog_name="localvmss")
    return [line.split(",", 1)[1] for line in result.stdout.splitlines() if line.startswith("plain,")]


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("localvmss show ", ["web"]),
        ("localvmss vmss show -n w", ["web"]),
        ("localvmss vmss show --name a", []),
        ("localvmss restart web --instance-ids ", ["*", "0", "1"]),
        ("localvmss vmss get-instance-view -n web --instance-id 1", ["1"]),
        ("localvmss vm delete ", ["fvm1"]),
        ("localvmss show web -g ", ["rg1"]),
    ],
)
def test_completion_asks_the_daemon(daemon: Daemon, words: str, expected: list[str]) -> None:
    daemon.answers[("GET", "/scaleSets/web/virtualMachines")] = [{"value": [{"instanceId": "0"}, {"instanceId": "1"}]}]
    daemon.answers[("GET", "/virtualMachines")] = [{"value": [{"name": "fvm1"}]}]
    daemon.answers[("GET", "/resourceGroups")] = [{"value": [{"name": "rg1"}]}]
    assert completions(words) == expected


def test_completion_is_silent_without_a_daemon(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCALVMSS_SOCKET", "/nonexistent/api.sock")
    env = {"_LOCALVMSS_COMPLETE": "bash_complete", "COMP_WORDS": "localvmss show ", "COMP_CWORD": "2"}
    result = CliRunner().invoke(cli, [], env=env, prog_name="localvmss")
    assert result.exit_code == 0 and result.stdout.strip() == "" and result.stderr == ""


# ================================================================ --set, --subscription, --instance-id
@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (("a.b=1",), [(["a", "b"], 1)]),
        (("protectionPolicy.protectFromScaleIn=True",), [(["protectionPolicy", "protectFromScaleIn"], True)]),
        (("x=False", "y=imageID"), [(["x"], False), (["y"], "imageID")]),
        (('tags={"a": "b"}',), [(["tags"], {"a": "b"})]),
        (("a=",), [(["a"], "")]),
    ],
)
def test_parse_set(words: tuple[str, ...], expected: list[Any]) -> None:
    assert parse_set(words) == expected


@pytest.mark.parametrize("bad", ["novalue", "a..b=1", "=1"])
def test_parse_set_refuses(bad: str) -> None:
    with pytest.raises(InvalidSpec, match="PATH=VALUE"):
        parse_set((bad,))


def test_apply_set_refuses_to_go_through_a_value() -> None:
    with pytest.raises(InvalidSpec, match="not an object"):
        apply_set({"a": 1}, ["a", "b"], 2)


def test_update_set_on_an_instance_is_azs_generic_update(daemon: Daemon) -> None:
    daemon.answers[("PATCH", "/scaleSets/web/virtualMachines/4")] = [{"instanceId": "4"}]
    run(
        [
            "vmss",
            "update",
            "--name",
            "web",
            "--resource-group",
            "rg1",
            "--instance-id",
            "4",
            "--set",
            "protectionPolicy.protectFromScaleIn=True",
            "protectionPolicy.protectFromScaleSetActions=False",
            "-o",
            "json",
        ]
    )
    method, path, query, body = daemon.seen[0]
    assert (method, path, query["resourceGroup"]) == ("PATCH", "/scaleSets/web/virtualMachines/4", ["rg1"])
    assert body == {
        "properties": {"protectionPolicy": {"protectFromScaleIn": True, "protectFromScaleSetActions": False}}
    }


def test_update_set_on_the_model(daemon: Daemon) -> None:
    current = {
        "sku": {"name": "Standard_B1ls", "capacity": 2},
        "zones": [],
        "properties": {
            "orchestrationMode": "Uniform",
            "upgradePolicy": {"mode": "Manual", "rollingUpgradePolicy": {}},
            "scaleInPolicy": {"rules": ["Default"]},
            "virtualMachineProfile": {
                "storageProfile": {"imageReference": {"id": "base"}},
                "osProfile": {"computerNamePrefix": "web"},
                "networkProfile": {},
            },
        },
    }
    daemon.answers[("GET", "/scaleSets/web")] = [current]
    run(
        [
            "vmss",
            "update",
            "-n",
            "web",
            "--set",
            "virtualMachineProfile.storageProfile.imageReference.id=img2",
            "sku.capacity=3",
            "--no-wait",
            "-o",
            "none",
        ]
    )
    (body,) = [b for m, _p, _q, b in daemon.seen if m == "PUT"]
    assert body["properties"]["virtualMachineProfile"]["storageProfile"]["imageReference"]["id"] == "img2"
    assert body["sku"]["capacity"] == 3


@pytest.mark.parametrize(
    "args",
    [
        [
            "vmss",
            "reimage",
            "--instance-id",
            "1",
            "--name",
            "web",
            "--resource-group",
            "rg1",
            "--subscription",
            "MySubscription",
            "--no-wait",
        ],
        ["--subscription", "s", "vmss", "reimage", "-n", "web", "--instance-ids", "1", "--no-wait"],
    ],
)
def test_reimage_as_azs_help_writes_it(daemon: Daemon, args: list[str]) -> None:
    run(args)
    assert daemon.seen[0][1] == "/scaleSets/web/reimage" and daemon.seen[0][3] == {"instanceIds": ["1"]}
