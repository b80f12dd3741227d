"""The CLI's shape: its modules import on their own, in a graph without cycles (``main``
registers the command modules; no command module imports ``main`` back), and the per-instance
action commands are the rows of ``localvmss.lifecycle.ACTIONS`` (names, help, what they wait for)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

import localvmss.cli
from localvmss.cli.azargs import GLOBALS
from localvmss.cli.client import ApiClient
from localvmss.cli.main import cli, vm
from localvmss.lifecycle import ACTIONS, InstanceAction

CLI_DIR = Path(localvmss.cli.__file__).parent
MODULES = sorted(f"localvmss.cli.{p.stem}" for p in CLI_DIR.glob("*.py") if p.stem != "__init__")


def _cli_imports(module: str) -> set[str]:
    """The ``localvmss.cli`` modules that ``module`` imports at module level (not in functions)."""
    tree = ast.parse((CLI_DIR / f"{module.rsplit('.', 1)[1]}.py").read_text())
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {name for name in found if name in MODULES}


# ================================================================================ imports
def test_the_cli_package_has_the_modules_this_test_expects() -> None:
    assert {"localvmss.cli.main", "localvmss.cli.autoscale_cmds", "localvmss.cli.condition"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_alone_in_a_fresh_interpreter(module: str) -> None:
    """A cycle shows up as an ImportError (or a half-made module) when the "wrong" module of the
    cycle is imported first; a fresh interpreter imports this one first. Also: only ``main``
    loads ``main``, so a command module never needs the module that registers it."""
    code = (
        f"import importlib, json, sys; importlib.import_module({module!r}); "
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('localvmss.cli.'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout.splitlines()[-1])
    assert module in loaded
    if module != "localvmss.cli.main":
        assert "localvmss.cli.main" not in loaded, f"importing {module} loads localvmss.cli.main"


def test_module_level_imports_inside_the_cli_have_no_cycle() -> None:
    graph = {m: _cli_imports(m) for m in MODULES}
    state: dict[str, str] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = "open"
        for dep in sorted(graph[m]):
            if state.get(dep) == "open":
                raise AssertionError("import cycle: " + " -> ".join([*path, m, dep]))
            if dep not in state:
                visit(dep, [*path, m])
        state[m] = "done"

    for m in MODULES:
        if m not in state:
            visit(m, [])
    assert all("localvmss.cli.main" not in deps for m, deps in graph.items() if m != "localvmss.cli.main")


def test_the_condition_grammar_is_its_own_module() -> None:
    from localvmss.cli import autoscale_cmds, condition

    assert autoscale_cmds.parse_condition is condition.parse_condition
    assert condition.parse_condition("Percentage CPU > 70 avg 5m")["operator"] == "GreaterThan"
    assert "localvmss.cli.autoscale_cmds" not in _cli_imports("localvmss.cli.condition")


# ========================================================================= action commands
def _flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("action", ACTIONS, ids=lambda a: a.cli_name)
def test_every_action_has_a_command_named_by_the_table(action: InstanceAction) -> None:
    command = cli.commands.get(action.cli_name)
    assert command is not None, f"no command {action.cli_name!r} for action {action.api_name!r}"
    assert action.summary in (command.help or "")
    shown = CliRunner().invoke(cli, [action.cli_name, "--help"])
    assert shown.exit_code == 0, shown.output
    assert _flat(action.summary) in _flat(shown.output)


@pytest.mark.parametrize("action", ACTIONS, ids=lambda a: a.cli_name)
def test_every_action_has_a_vm_command(action: InstanceAction) -> None:
    assert action.cli_name.removesuffix("-instances") in vm.commands


# What localvmss.cli.azargs gives every command (tested in test_cli_az_args.py), not the command's own.
_GIVEN = {d for g in GLOBALS for d in g.decls} | {"--name", "--resource-group"}


def _options(command: click.Command) -> dict[str, click.Parameter]:
    return {opt: p for p in command.params for opt in p.opts if opt.startswith("--") and not set(p.opts) & _GIVEN}


@pytest.mark.parametrize(
    ("name", "options", "ids_required"),
    [
        ("start", {"--instance-ids", "--instance-id", "--no-wait"}, False),
        ("stop", {"--instance-ids", "--instance-id", "--skip-shutdown", "--no-wait"}, False),
        ("deallocate", {"--instance-ids", "--instance-id", "--no-wait"}, False),
        ("restart", {"--instance-ids", "--instance-id", "--no-wait"}, False),
        ("reimage", {"--instance-ids", "--instance-id", "--no-wait"}, False),
        ("delete-instances", {"--instance-ids", "--no-wait"}, True),
    ],
)
def test_action_command_options(name: str, options: set[str], ids_required: bool) -> None:
    found = _options(cli.commands[name])
    assert set(found) == options
    assert found["--instance-ids"].required is ids_required
    assert found["--instance-ids"].multiple


@pytest.mark.parametrize(
    ("verb", "options"),
    [
        ("start", {"--no-wait"}),
        ("stop", {"--skip-shutdown", "--no-wait"}),
        ("deallocate", {"--no-wait"}),
        ("restart", {"--no-wait"}),
        ("reimage", {"--no-wait"}),
        ("delete", {"--no-wait"}),
    ],
)
def test_vm_action_options(verb: str, options: set[str]) -> None:
    assert set(_options(vm.commands[verb])) == options


class FakeDaemon:
    """Answers the requests an action command makes: the action, the set (converged) and
    instance views (in the power state the action reaches)."""

    def __init__(self, power: str) -> None:
        self.power = power
        self.calls: list[tuple[str, str]] = []

    def request(self, method: str, path: str, body: Any = None, headers: Any = None) -> Any:
        self.calls.append((method, path))
        if method == "POST":
            return {"instanceIds": list((body or {}).get("instanceIds") or ["0"])}
        if path.endswith("/instanceView"):
            return {"statuses": [{"code": "ProvisioningState/succeeded"}, {"code": f"PowerState/{self.power}"}]}
        if path == "/scaleSets/web":
            return {
                "sku": {"capacity": 1},
                "properties": {"provisioningState": "Succeeded", "orchestrationMode": "Uniform", "readyCount": 1},
            }
        raise AssertionError(f"unexpected request {method} {path}")


@pytest.mark.parametrize(
    ("args", "posted", "waits_for"),
    [
        (["start"], "/scaleSets/web/start", "set"),
        (["stop"], "/scaleSets/web/powerOff", "stopped"),
        (["stop", "--skip-shutdown"], "/scaleSets/web/powerOff?skipShutdown=true", "stopped"),
        (["deallocate"], "/scaleSets/web/deallocate", "deallocated"),
        (["restart"], "/scaleSets/web/restart", "set"),
        (["reimage"], "/scaleSets/web/reimage", "set"),
        (["delete-instances"], "/scaleSets/web/delete", "set"),
    ],
)
def test_action_commands_post_the_action_and_wait_for_what_it_reaches(
    monkeypatch: pytest.MonkeyPatch, args: list[str], posted: str, waits_for: str
) -> None:
    daemon = FakeDaemon(power=waits_for if waits_for != "set" else "running")
    monkeypatch.setattr(ApiClient, "request", lambda _self, *a, **kw: daemon.request(*a, **kw))
    monkeypatch.setattr("time.sleep", lambda _s: None)
    result = CliRunner().invoke(cli, ["-o", "json", args[0], "web", "--instance-ids", "0", *args[1:]])
    assert result.exit_code == 0, result.output
    assert daemon.calls[0] == ("POST", posted)
    waited = daemon.calls[1:]
    if waits_for == "set":
        assert waited == [("GET", "/scaleSets/web")]
    else:
        assert waited == [("GET", "/scaleSets/web/virtualMachines/0/instanceView")]
    assert json.loads(result.stdout) == {"instanceIds": ["0"]}


@pytest.mark.parametrize("name", [a.cli_name for a in ACTIONS])
def test_no_wait_makes_one_request(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    daemon = FakeDaemon(power="running")
    monkeypatch.setattr(ApiClient, "request", lambda _self, *a, **kw: daemon.request(*a, **kw))
    result = CliRunner().invoke(cli, [name, "web", "--instance-ids", "1", "--no-wait"])
    assert result.exit_code == 0, result.output
    assert len(daemon.calls) == 1 and daemon.calls[0][0] == "POST"


def test_delete_instances_needs_instance_ids() -> None:
    result = CliRunner().invoke(cli, ["delete-instances", "web"])
    assert result.exit_code == 2
    assert "--instance-ids" in result.output
