"""``localvmss``: the command line, shaped like ``az vmss``.

Each command is a thin call of the REST API. Long operations wait with a progress display until
the set has converged, unless ``--no-wait``. Errors are one line on stderr with the exit code of
their kind (``--debug`` shows the traceback).

az's words work unchanged but for the program's name: the set commands are also under ``vmss``
(the same command objects), ``group`` and ``config`` are az's, ``monitor autoscale`` is the
``autoscale`` group, and the global arguments, ``-n`` and ``-g`` are given to the whole tree by
``localvmss.cli.azargs.install`` once everything is registered (docs/CLI.md).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from localvmss.cli import azargs
from localvmss.cli.autoscale_cmds import autoscale
from localvmss.cli.azflags import (
    ValuesOption,
    apply_set,
    az_bool,
    instance_id_option,
    instance_ids_option,
    parse_set,
    values_option,
)
from localvmss.cli.azflags import custom_data as custom_data_of
from localvmss.cli.azflags import instance_ids as instance_ids_of
from localvmss.cli.client import api_path
from localvmss.cli.context import Ctx, pass_ctx
from localvmss.cli.day2_cmds import COMMANDS as DAY2_COMMANDS
from localvmss.cli.group_cmds import COMMANDS as GROUP_COMMANDS
from localvmss.cli.output import (
    INSTANCE_COLUMNS,
    PLAN_COLUMNS,
    SET_COLUMNS,
    STANDBY_COLUMNS,
    emit,
    err_console,
    status_code,
)
from localvmss.cli.standby_cmds import standby_pool
from localvmss.cli.upgrade_cmds import COMMANDS as UPGRADE_COMMANDS
from localvmss.cli.upgrade_cmds import rolling_policy_options
from localvmss.cli.wait_cmds import wait
from localvmss.cli.waiting import wait_for_power, wait_for_set, wait_for_vm_gone
from localvmss.errors import InvalidSpec, LocalVMSSError
from localvmss.lifecycle import ACTIONS, InstanceAction, check_options
from localvmss.model import PowerState
from localvmss.spec import RepairAction, without_computed

REPAIR_ACTIONS = [a.value for a in RepairAction]  # automaticRepairsPolicy.repairAction


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="localvmss", prog_name="localvmss")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Azure-style virtual machine scale sets on your own libvirt/QEMU hosts.

    az's commands work with 'localvmss' for 'az': 'localvmss vmss create -g web-rg -n web ...'.
    """
    azargs.ctx_of(ctx)  # the global options given so far made it, or it is made now


cli.add_command(autoscale)  # localvmss.cli.autoscale_cmds: 'az monitor autoscale'
for _day2 in DAY2_COMMANDS:  # localvmss.cli.day2_cmds: watch, boot-diagnostics, activity-log
    cli.add_command(_day2)
for _upgrade in UPGRADE_COMMANDS:  # localvmss.cli.upgrade_cmds: rolling-upgrade, get-os-upgrade-history
    cli.add_command(_upgrade)
cli.add_command(standby_pool)  # localvmss.cli.standby_cmds: 'az standby-vm-pool'
for _group_cmd in GROUP_COMMANDS:  # localvmss.cli.group_cmds: 'az group', 'az config'
    cli.add_command(_group_cmd)
cli.add_command(wait)  # localvmss.cli.wait_cmds: 'az vmss wait'
_ValuesOption = ValuesOption  # the name this module used before azflags


# -- scale sets -------------------------------------------------------------------------------
def _read_key(value: str | None) -> list[str]:
    if not value:
        return []
    path = Path(value).expanduser()
    if value.startswith(("ssh-", "ecdsa-", "sk-")):
        return [value.strip()]
    if not path.is_file():
        raise InvalidSpec(f"--ssh-key-values {value!r} is neither a public key nor a readable file")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _keys(values: tuple[str, ...], generate: bool) -> list[str]:
    """az's ``--ssh-key-values`` (key texts or files, space-separated) and ``--generate-ssh-keys``
    (~/.ssh/id_rsa.pub, made with ssh-keygen if there is none, as az does)."""
    keys: list[str] = []
    for value in values:
        keys.extend(_read_key(value))
    if generate and not keys:
        keys.extend(_read_key(str(_generated_key())))
    return keys


def _generated_key() -> Path:
    ssh = Path.home() / ".ssh"
    public = ssh / "id_rsa.pub"
    if public.is_file():
        return public
    ssh.mkdir(mode=0o700, exist_ok=True)
    try:
        done = subprocess.run(
            ["ssh-keygen", "-q", "-t", "rsa", "-b", "3072", "-N", "", "-f", str(ssh / "id_rsa")],
            capture_output=True,
            text=True,
            check=False,
        )
    except FileNotFoundError:
        raise InvalidSpec("--generate-ssh-keys needs ssh-keygen (openssh-client); or give --ssh-key-values") from None
    if done.returncode != 0 or not public.is_file():
        raise InvalidSpec(f"ssh-keygen could not make {public}: {done.stderr.strip() or done.returncode}")
    click.echo(f"SSH key files {ssh / 'id_rsa'} and {public} have been generated", err=True)
    return public


def _lb_json(lb_rules: tuple[str, ...], probe: str | None, nat_pool: str | None) -> dict[str, Any] | None:
    if not lb_rules and not nat_pool:
        return None
    from localvmss.lb.spec import LoadBalancerSpec, parse_lb_rule, parse_nat_pool, parse_probe

    spec = LoadBalancerSpec(
        rules=tuple(parse_lb_rule(r) for r in lb_rules),
        probe=parse_probe(probe or "http:/healthz"),
        nat_pool=parse_nat_pool(nat_pool) if nat_pool else None,
    )
    return spec.to_json()


TERMINATE_TIME_HELP = (
    "minutes (az's unit; 5-15 in Azure, 0-15 here; a decimal or ISO-8601 such as PT60S is taken too) the "
    "guest has to acknowledge the Terminate notice before its instance is deleted; enables the notice"
)


def _terminate_notification(current: dict[str, Any], time: str | None, enable: bool | None) -> dict[str, Any]:
    """terminateNotificationProfile from az's flags over ``current``: a time enables the notice
    unless ``--enable-terminate-notification false`` says otherwise. {} when neither is given."""
    if time is None and enable is None:
        return {}
    out = dict(current)
    if time is not None:
        text = time.strip()
        if text[:2].upper() == "PT":
            out["notBeforeTimeout"] = text.upper()
        else:
            try:
                minutes = float(text)
            except ValueError:
                raise InvalidSpec(f"--terminate-notification-time {time!r} must be minutes (e.g. 5) or PT60S") from None
            whole = int(minutes)
            out["notBeforeTimeout"] = f"PT{whole}M" if minutes == whole else f"PT{round(minutes * 60)}S"
    out["enable"] = enable if enable is not None else True
    out.setdefault("notBeforeTimeout", "PT5M")
    return out


def _terminate_notification_options(fn: Any) -> Any:
    """``--terminate-notification-time`` and ``--enable-terminate-notification``, as az has them
    on both ``create`` and ``update``."""
    fn = click.option(
        "--enable-terminate-notification",
        type=click.BOOL,
        is_flag=False,
        flag_value=True,
        default=None,
        help="send the guest a Terminate scheduled event before its instance is deleted [true|false]",
    )(fn)
    return click.option("--terminate-notification-time", help=TERMINATE_TIME_HELP)(fn)


def _ssh_options(fn: Any) -> Any:
    """az's key flags: ``--ssh-key-values`` (also the older ``--ssh-key-value``),
    ``--generate-ssh-keys`` and ``--admin-username``."""
    fn = click.option("--admin-username", help="the guest user the keys are for (az's; root here by default)")(fn)
    fn = click.option(
        "--generate-ssh-keys", is_flag=True, help="use ~/.ssh/id_rsa.pub, made with ssh-keygen if missing"
    )(fn)
    return values_option(
        "--ssh-key-values",
        "--ssh-key-value",
        "ssh_key_values",
        help="public keys or files holding them, space-separated",
    )(fn)


CHOICE = {"case_sensitive": False}


@cli.command("create")
@click.argument("name")
@click.option("--image", help="image name (see 'localvmss image list')")
@click.option("--instance-count", type=int, default=2, show_default=True)
@click.option("--vm-sku", "--vm-size", "vm_size", default="Standard_B1ls", show_default=True, help="see list-skus")
@click.option("--vcpus", type=int)
@click.option("--memory-mib", type=int)
@click.option(
    "--orchestration-mode", default="Uniform", show_default=True, help="Uniform (ScaleSetVM) or Flexible (VM)"
)
@click.option("--computer-name-prefix")
@click.option("--custom-data", help="cloud-init user-data: a file, or the text itself (as az takes it)")
@_ssh_options
@click.option("--platform-fault-domain-count", type=int)
@click.option("--fault-domain-mapping", type=click.Choice(["host", "numa"]))
@values_option("--zones", help="zones, as in az: --zones 1 2 3")
@az_bool("--zone-balance", default=False, help="spread instances evenly over the zones")
@click.option(
    "--upgrade-policy-mode", type=click.Choice(["Manual", "Automatic", "Rolling"], **CHOICE), default="Manual"
)
@click.option("--scale-in-policy", type=click.Choice(["Default", "NewestVM", "OldestVM"], **CHOICE), default="Default")
@az_bool(
    "--prioritize-unhealthy-vms",
    default=False,
    help="scale-in removes unhealthy and inactive instances first (scaleInPolicy.prioritizeUnhealthyVMs)",
)
@click.option(
    "--overprovision/--disable-overprovision",
    default=False,
    show_default=True,
    help="Uniform: a scale-out boots extra instances, keeps the first to become healthy and removes the rest "
    "before they take traffic. Off by default here (Azure's default is on because its extras are free; "
    "here every extra is a real boot on your hosts)",
)
@az_bool(
    "--template-clones",
    help="Uniform: new instances are restored from a warm template of the model instead of booted "
    "(docs/WARM-CLONES.md)",
)
@click.option("--lb-rule", "lb_rules", multiple=True, help="FRONTEND:BACKEND port (TCP); repeat for several")
@click.option("--health-probe", help="http:/path[:port] or tcp:PORT (default http:/healthz)")
@click.option("--nat-pool", help="FIRST-LAST:BACKENDPORT, e.g. 50000-50119:22")
@az_bool("--enable-automatic-repairs", default=False, help="replace (or restart) instances that stay unhealthy")
@click.option("--automatic-repairs-grace-period", default="PT10M", show_default=True, help="PT0S..PT90M")
@click.option(
    "--automatic-repairs-action",
    type=click.Choice(REPAIR_ACTIONS, case_sensitive=False),
    default="Replace",
    show_default=True,
    help="what a repair does to an instance that stayed unhealthy",
)
@_terminate_notification_options
@click.option("--no-wait", is_flag=True)
@rolling_policy_options
@pass_ctx
def create(
    c: Ctx,
    name: str,
    image: str | None,
    instance_count: int,
    vm_size: str,
    vcpus: int | None,
    memory_mib: int | None,
    orchestration_mode: str,
    computer_name_prefix: str | None,
    custom_data: str | None,
    ssh_key_values: tuple[str, ...],
    generate_ssh_keys: bool,
    admin_username: str | None,
    platform_fault_domain_count: int | None,
    fault_domain_mapping: str | None,
    zones: tuple[str, ...],
    zone_balance: bool,
    upgrade_policy_mode: str,
    scale_in_policy: str,
    prioritize_unhealthy_vms: bool,
    overprovision: bool,
    template_clones: bool | None,
    lb_rules: tuple[str, ...],
    health_probe: str | None,
    nat_pool: str | None,
    enable_automatic_repairs: bool,
    automatic_repairs_grace_period: str,
    automatic_repairs_action: str,
    terminate_notification_time: str | None,
    enable_terminate_notification: bool | None,
    no_wait: bool,
    rolling_policy: dict[str, Any],
) -> None:
    """Create a scale set."""
    custom_data_b64 = custom_data_of(custom_data)
    flexible = orchestration_mode.strip().lower() in ("flexible", "vm")
    props: dict[str, Any] = {
        "orchestrationMode": orchestration_mode,
        "upgradePolicy": {
            "mode": upgrade_policy_mode,
            "rollingUpgradePolicy": rolling_policy,
        },
        "scaleInPolicy": {"rules": [scale_in_policy], "prioritizeUnhealthyVMs": prioritize_unhealthy_vms},
        "zoneBalance": zone_balance,
        "automaticRepairsPolicy": {
            "enabled": enable_automatic_repairs,
            "gracePeriod": automatic_repairs_grace_period,
            "repairAction": automatic_repairs_action,
        },
    }
    if overprovision:
        props["overprovision"] = True
    if template_clones is not None:
        props["templateClones"] = {"enabled": template_clones}
    if platform_fault_domain_count is not None:
        props["platformFaultDomainCount"] = platform_fault_domain_count
    if fault_domain_mapping:
        props["faultDomainMapping"] = fault_domain_mapping
    if image or not flexible:
        os_profile: dict[str, Any] = {
            "linuxConfiguration": {
                "ssh": {"publicKeys": [{"keyData": k} for k in _keys(ssh_key_values, generate_ssh_keys)]}
            },
        }
        if admin_username:
            os_profile["adminUsername"] = admin_username
        if computer_name_prefix:
            os_profile["computerNamePrefix"] = computer_name_prefix
        if custom_data:
            os_profile["customData"] = custom_data_b64
        network: dict[str, Any] = {}
        if health_probe:
            from localvmss.lb.spec import parse_probe

            p = parse_probe(health_probe)
            backend = int(lb_rules[0].rsplit(":", 1)[-1]) if lb_rules else 80
            network["healthProbe"] = {"protocol": p.protocol, "port": p.port or backend, "path": p.path}
        lb = _lb_json(lb_rules, health_probe, nat_pool)
        if lb is not None:
            network["loadBalancer"] = lb
        size: dict[str, Any] = {}
        if vcpus is not None:
            size["vCPUsAvailable"] = vcpus
        if memory_mib is not None:
            size["memoryMiB"] = memory_mib
        props["virtualMachineProfile"] = {
            "storageProfile": {"imageReference": {"id": image or ""}},
            "hardwareProfile": {"vmSizeProperties": size},
            "osProfile": os_profile,
            "networkProfile": network,
        }
    notice = _terminate_notification({}, terminate_notification_time, enable_terminate_notification)
    if notice:
        vmp = props.setdefault("virtualMachineProfile", {})
        vmp["scheduledEventsProfile"] = {"terminateNotificationProfile": notice}
    body: dict[str, Any] = {
        "sku": {"name": vm_size, "capacity": 0 if flexible else instance_count},
        "properties": props,
    }
    if zones:
        body["zones"] = list(zones)
    result = c.client.put(api_path("scaleSets", name), body, headers={"If-None-Match": "*"})
    if not no_wait:
        wait_for_set(c, name)
        result = c.client.get(api_path("scaleSets", name))
    emit(c, result, SET_COLUMNS)


@cli.command("list")
@pass_ctx
def list_sets(c: Ctx) -> None:
    """List scale sets."""
    emit(c, c.client.get("/scaleSets")["value"], SET_COLUMNS)


@cli.command("show")
@click.argument("name")
@pass_ctx
def show(c: Ctx, name: str) -> None:
    """Show a scale set (the whole model with -o json)."""
    data = c.client.get(api_path("scaleSets", name))
    if c.output == "json":
        emit(c, data)
        return
    emit(c, data, SET_COLUMNS)
    props = data["properties"]
    vmp = props.get("virtualMachineProfile") or {}
    lb = (vmp.get("networkProfile") or {}).get("loadBalancer")
    click.echo(
        f"fault domains: {props['platformFaultDomainCount']} ({props['faultDomainMapping']}), "
        f"zones: {data['zones'] or 'regional'}, scale-in: {props['scaleInPolicy']['rules'][0]}, "
        f"model version: {props.get('modelVersion')}"
    )
    if lb:
        click.echo(f"load balancer: {json.dumps(lb)}")
    repairs_policy = props.get("automaticRepairsPolicy") or {}
    if repairs_policy.get("enabled"):
        services = c.client.get(api_path("scaleSets", name, "instanceView")).get("orchestrationServices", [])
        state: dict[str, Any] = next((s for s in services if s["serviceName"] == "AutomaticRepairs"), {})
        reason = f" ({state['reason']})" if state.get("reason") else ""
        click.echo(
            f"automatic repairs: {repairs_policy.get('repairAction')} after {repairs_policy.get('gracePeriod')}, "
            f"{state.get('serviceState', 'NotRunning')}{reason}"
        )


@cli.command("scale")
@click.argument("name")
@click.option("--new-capacity", type=int, required=True)
@click.option(
    "--what-if",
    is_flag=True,
    help="print which instances would be created or removed, in order and why, and change nothing "
    "(the plan the daemon carries out)",
)
@click.option("--no-wait", is_flag=True)
@pass_ctx
def scale(c: Ctx, name: str, new_capacity: int, what_if: bool, no_wait: bool) -> None:
    """Change the number of instances."""
    body = {"sku": {"capacity": new_capacity}}
    if what_if:
        plan = c.client.patch(api_path("scaleSets", name) + "?whatIf=true", body)
        emit(c, plan["changes"] if c.output != "json" else plan, PLAN_COLUMNS)
        if c.output != "json":
            if not plan["changes"]:
                click.echo(f"no changes: nothing to create or remove to reach capacity {new_capacity}")
            for note in plan["notes"]:
                click.echo(f"note: {note}")
        return
    result = c.client.patch(api_path("scaleSets", name), body)
    if not no_wait:
        wait_for_set(c, name)
        result = c.client.get(api_path("scaleSets", name))
    emit(c, result, SET_COLUMNS)


@cli.command("update")
@click.argument("name")
@instance_id_option(
    required=False, help="with --protect-from-scale-in/--protect-from-scale-set-actions: that instance's protection"
)
@az_bool("--protect-from-scale-in", help="(with --instance-id) scale-in never removes the instance")
@az_bool("--protect-from-scale-set-actions", help="(with --instance-id) set-wide actions leave the instance alone")
@values_option(
    "--set",
    "set_values",
    help="az's generic update: PATH=VALUE, space-separated; paths as 'show -o json' has them under properties "
    "(sku.* and zones at the top); with --instance-id, the instance's (protectionPolicy.protectFromScaleIn=true)",
)
@click.option("--image")
@click.option("--custom-data", help="cloud-init user-data: a file, or the text itself")
@click.option("--upgrade-policy-mode", type=click.Choice(["Manual", "Automatic", "Rolling"], **CHOICE))
@click.option("--orchestration-mode", help="(cannot be changed: given only to get the clear error)")
@click.option("--scale-in-policy", type=click.Choice(["Default", "NewestVM", "OldestVM"], **CHOICE))
@az_bool("--prioritize-unhealthy-vms", help="scale-in removes unhealthy and inactive instances first")
@click.option(
    "--overprovision/--disable-overprovision",
    default=None,
    help="Uniform: boot extras on scale-out, keep the first healthy (off unless turned on)",
)
@az_bool("--template-clones", help="new instances restored from a warm template of the model instead of booted")
@az_bool("--enable-automatic-repairs", help="replace (or restart) instances that stay unhealthy")
@click.option("--automatic-repairs-grace-period", help="PT0S..PT90M")
@click.option("--automatic-repairs-action", type=click.Choice(REPAIR_ACTIONS, case_sensitive=False))
@_terminate_notification_options
@click.option(
    "--force-deletion",
    type=click.BOOL,
    is_flag=False,
    flag_value=True,
    default=None,
    help="scale-in deletes its instances without the terminate notice and its wait "
    "(scaleInPolicy.forceDeletion) [true|false]",
)
@click.option("--no-wait", is_flag=True)
@rolling_policy_options
@pass_ctx
def update(
    c: Ctx,
    name: str,
    instance_id: str | None,
    protect_from_scale_in: bool | None,
    protect_from_scale_set_actions: bool | None,
    set_values: tuple[str, ...],
    image: str | None,
    custom_data: str | None,
    upgrade_policy_mode: str | None,
    orchestration_mode: str | None,
    scale_in_policy: str | None,
    prioritize_unhealthy_vms: bool | None,
    overprovision: bool | None,
    template_clones: bool | None,
    enable_automatic_repairs: bool | None,
    automatic_repairs_grace_period: str | None,
    automatic_repairs_action: str | None,
    terminate_notification_time: str | None,
    enable_terminate_notification: bool | None,
    force_deletion: bool | None,
    no_wait: bool,
    rolling_policy: dict[str, Any],
) -> None:
    """Update the model (a new model version) or the upgrade policy; with --instance-id, that
    instance's protection (az vmss update --instance-id 0 --protect-from-scale-in true)."""
    protection = (protect_from_scale_in, protect_from_scale_set_actions)
    assignments = parse_set(set_values)
    if instance_id is not None or protection != (None, None):
        if instance_id is None or (protection == (None, None) and not assignments):
            raise InvalidSpec(
                "--protect-from-scale-in/--protect-from-scale-set-actions go with --instance-id "
                "(or --instance-id with --set protectionPolicy.NAME=true|false)"
            )
        _update_instance(c, name, instance_id, protection, assignments)
        return
    current = c.client.get(api_path("scaleSets", name))
    body = {k: current[k] for k in ("sku", "zones")}
    props = without_computed(current["properties"])
    if orchestration_mode:
        props["orchestrationMode"] = orchestration_mode
    if upgrade_policy_mode:
        props["upgradePolicy"]["mode"] = upgrade_policy_mode
    props["upgradePolicy"]["rollingUpgradePolicy"].update(rolling_policy)
    if scale_in_policy:
        props["scaleInPolicy"]["rules"] = [scale_in_policy]
    if prioritize_unhealthy_vms is not None:
        props["scaleInPolicy"]["prioritizeUnhealthyVMs"] = prioritize_unhealthy_vms
    if overprovision is not None:
        props["overprovision"] = overprovision
    if template_clones is not None:
        props["templateClones"] = {"enabled": template_clones}
    if force_deletion is not None:
        props["scaleInPolicy"]["forceDeletion"] = force_deletion
    events = (props.get("virtualMachineProfile") or {}).get("scheduledEventsProfile") or {}
    notice = _terminate_notification(
        events.get("terminateNotificationProfile") or {}, terminate_notification_time, enable_terminate_notification
    )
    if notice:
        vmp_now = props.setdefault("virtualMachineProfile", None) or {}
        props["virtualMachineProfile"] = {**vmp_now, "scheduledEventsProfile": {"terminateNotificationProfile": notice}}
    repairs_policy = props.setdefault("automaticRepairsPolicy", {})
    for key, value in (
        ("enabled", enable_automatic_repairs),
        ("gracePeriod", automatic_repairs_grace_period),
        ("repairAction", automatic_repairs_action),
    ):
        if value is not None:
            repairs_policy[key] = value
    vmp = props.get("virtualMachineProfile")
    if vmp:
        if vmp["osProfile"].get("customData") == "(set)" and not custom_data:
            raise InvalidSpec("this set has custom data; give --custom-data again to update its model")
        if image:
            vmp["storageProfile"]["imageReference"]["id"] = image
        if custom_data:
            vmp["osProfile"]["customData"] = custom_data_of(custom_data)
        vmp["osProfile"] = {k: v for k, v in vmp["osProfile"].items() if v is not None}
        vmp["networkProfile"] = {k: v for k, v in vmp["networkProfile"].items() if v is not None}
    elif image:
        raise InvalidSpec("model updates are not supported in VM orchestration mode")
    body["sku"] = {"name": body["sku"]["name"], "capacity": body["sku"]["capacity"]}
    body["properties"] = props
    for keys, value in assignments:  # az's --set, last: it wins over the flags, as in az
        apply_set(body if keys[0] in ("sku", "zones", "tags") else props, keys, value)
    result = c.client.put(api_path("scaleSets", name), body)
    if not no_wait:
        wait_for_set(c, name)
    emit(c, result, SET_COLUMNS)


@cli.command("delete")
@click.argument("name")
@click.option("--no-wait", is_flag=True)
@pass_ctx
def delete(c: Ctx, name: str, no_wait: bool) -> None:
    """Delete a scale set and (Uniform) all its instances."""
    c.client.delete(api_path("scaleSets", name))
    if not no_wait:
        wait_for_set(c, name, gone=True)


@cli.command("list-instances")
@click.argument("name")
@click.option("--standby-pool", is_flag=True, help="list the standby-pool instances instead of the members")
@pass_ctx
def list_instances(c: Ctx, name: str, standby_pool: bool) -> None:
    """List a scale set's instances (both modes); its standby pool apart (--standby-pool)."""
    if standby_pool:
        pool = c.client.get(api_path("scaleSets", name, "standbyPool"))
        emit(c, pool["value"], STANDBY_COLUMNS)
        return
    emit(c, c.client.get(api_path("scaleSets", name, "virtualMachines"))["value"], INSTANCE_COLUMNS)
    if c.output == "table":
        view = c.client.get(api_path("scaleSets", name))["properties"]
        if "standbyPoolCount" in view:
            click.echo(
                f"standby pool: {view['standbyPoolCount']} instance(s), {view['standbyPoolStandingBy']} standing by "
                f"(not members; list them with --standby-pool)"
            )


@cli.command("get-instance-view")
@click.argument("name")
@instance_id_option(required=False, help="one instance, or '*' for all; without it: the scale set's own view")
@pass_ctx
def get_instance_view(c: Ctx, name: str, instance_id: str | None) -> None:
    """Live state of one instance (or all, --instance-id '*') as libvirt reports it; without
    --instance-id the set's view (as az): instance states and orchestration services (with -o
    table also every instance)."""
    set_view = None
    if not instance_id:
        set_view = c.client.get(api_path("scaleSets", name, "instanceView"))
        if c.output == "json":
            emit(c, set_view)
            return
    ids = (
        [instance_id]
        if instance_id and instance_id != "*"
        else [i["instanceId"] for i in c.client.get(api_path("scaleSets", name, "virtualMachines"))["value"]]
    )
    views = [
        {"instanceId": i, **c.client.get(api_path("scaleSets", name, "virtualMachines", i, "instanceView"))}
        for i in ids
    ]
    emit(
        c,
        views if not instance_id or instance_id == "*" else views[0],
        [
            ("InstanceId", lambda v: v["instanceId"]),
            ("ComputerName", lambda v: v["computerName"]),
            ("Host", lambda v: v["host"]),
            ("Zone", lambda v: v["zone"]),
            ("FD", lambda v: v["platformFaultDomain"]),
            ("UD", lambda v: v["platformUpdateDomain"]),
            ("Accel", lambda v: v["domainType"]),
            ("Power", lambda v: status_code(v, "PowerState/")),
            ("Provisioning", lambda v: status_code(v, "ProvisioningState/")),
            ("Health", lambda v: v["vmHealth"]["status"]["code"].split("/")[1]),
        ],
    )
    for service in (set_view or {}).get("orchestrationServices", []):
        reason = f" ({service['reason']})" if service.get("reason") else ""
        click.echo(f"orchestration service {service['serviceName']}: {service['serviceState']}{reason}")


@cli.command("set-orchestration-service-state")
@click.argument("name")
@click.option("--service-name", required=True, help="AutomaticRepairs")
@click.option("--action", "action", required=True, help="Suspend or Resume")
@pass_ctx
def set_orchestration_service_state(c: Ctx, name: str, service_name: str, action: str) -> None:
    """Suspend or resume a scale set's automatic repairs (as az vmss set-orchestration-service-state)."""
    view = c.client.post(
        api_path("scaleSets", name, "setOrchestrationServiceState"), {"serviceName": service_name, "action": action}
    )
    if c.output == "json":
        emit(c, view)
        return
    for service in view.get("orchestrationServices", []):
        reason = f" ({service['reason']})" if service.get("reason") else ""
        click.echo(f"{service['serviceName']}: {service['serviceState']}{reason}")


# -- per-instance actions: one command per row of localvmss.lifecycle.ACTIONS -------------------
def _power_to_await(action: InstanceAction) -> str | None:
    """The PowerState an action's command polls instance views for, or None to wait for the set.

    An action that ends ``running`` waits for the set to converge instead (running and ready:
    its health probe passed), which is what a user waiting for a start or reimage means."""
    if action.reaches is None or action.reaches is PowerState.RUNNING:
        return None
    return action.reaches.value


def _takes_skip_shutdown(action: InstanceAction) -> bool:
    """Whether the action takes --skip-shutdown, asked of the lifecycle's own check."""
    try:
        check_options(action, skip_shutdown=True)
    except InvalidSpec:
        return False
    return True


def _skip_shutdown_option(action: InstanceAction) -> Callable[[Any], Any]:
    if not _takes_skip_shutdown(action):
        return lambda f: f
    return click.option(
        "--skip-shutdown", is_flag=True, help="power off at once, without asking the guest to shut down"
    )


def _action_path(path: str, skip_shutdown: bool) -> str:
    return f"{path}?skipShutdown=true" if skip_shutdown else path


def _instances_command(action: InstanceAction) -> None:
    """``localvmss <cli_name> NAME [--instance-ids ID ...]``: the action on some or all instances,
    then the instances it touched as list-instances shows them."""
    power = _power_to_await(action)

    @cli.command(action.cli_name, help=f"{action.summary}\n\nAll instances unless --instance-ids.")
    @click.argument("name")
    @instance_ids_option(help="instance ids, space-separated, or '*'; default all")
    @_skip_shutdown_option(action)
    @click.option("--no-wait", is_flag=True)
    @pass_ctx
    def command(c: Ctx, name: str, instance_ids: tuple[str, ...], no_wait: bool, skip_shutdown: bool = False) -> None:
        ids = _ids(instance_ids)
        result = c.client.post(
            _action_path(api_path("scaleSets", name, action.api_name), skip_shutdown),
            {"instanceIds": ids} if ids else {},
        )
        if not no_wait and power is None:
            time.sleep(1.0)
            wait_for_set(c, name)
        elif not no_wait and power is not None:
            ids = result.get("instanceIds") or []
            views = {i: api_path("scaleSets", name, "virtualMachines", i, "instanceView") for i in ids}
            wait_for_power(c, views, power)
        if no_wait or c.output == "json":
            emit(c, result)
        else:  # what the action left behind, as list-instances shows it
            touched = set(result.get("instanceIds") or [])
            listed = c.client.get(api_path("scaleSets", name, "virtualMachines"))["value"]
            emit(c, [i for i in listed if i["instanceId"] in touched], INSTANCE_COLUMNS)


def _delete_instances_command(action: InstanceAction) -> None:
    """``localvmss delete-instances NAME --instance-ids ID ...``: the ids are required (there is
    no "delete them all" by default), and afterwards there are no instances left to show."""

    @cli.command(action.cli_name, help=action.summary)
    @click.argument("name")
    @instance_ids_option(required=True, help="instance ids, space-separated, or '*' for every one", singular=False)
    @click.option("--no-wait", is_flag=True)
    @pass_ctx
    def command(c: Ctx, name: str, instance_ids: tuple[str, ...], no_wait: bool) -> None:
        ids = instance_ids_of(instance_ids)
        if not ids:
            raise InvalidSpec("--instance-ids is empty: give ids, or '*' for every instance")
        result = c.client.post(api_path("scaleSets", name, action.api_name), {"instanceIds": ids})
        if not no_wait:
            wait_for_set(c, name)
        emit(c, result)


def _ids(given: tuple[str, ...]) -> list[str]:
    """``--instance-ids`` for an action on all by default: ``*`` is the same as none given."""
    ids = instance_ids_of(given)
    return [] if ids == ["*"] else ids


for _action in ACTIONS:
    if _action.api_name == "delete":
        _delete_instances_command(_action)
    else:
        _instances_command(_action)


@cli.command("update-instances")
@click.argument("name")
@instance_ids_option(help="instance ids, space-separated, or '*'; default all")
@click.option("--no-wait", is_flag=True)
@pass_ctx
def update_instances(c: Ctx, name: str, instance_ids: tuple[str, ...], no_wait: bool) -> None:
    """Bring instances to the latest model (manual upgrade policy)."""
    ids = _ids(instance_ids)
    result = c.client.post(api_path("scaleSets", name, "manualUpgrade"), {"instanceIds": ids} if ids else {})
    if not no_wait:
        time.sleep(1.0)
        wait_for_set(c, name)
    emit(c, result)


@cli.command("set-protection")
@click.argument("name")
@instance_id_option()
@az_bool("--protect-from-scale-in", help="scale-in never removes the instance")
@az_bool("--protect-from-scale-set-actions", help="set-wide actions leave the instance alone")
@pass_ctx
def set_protection(
    c: Ctx, name: str, instance_id: str, protect_from_scale_in: bool | None, protect_from_scale_set_actions: bool | None
) -> None:
    """Instance protection (az vmss update --instance-id ID --protect-from-scale-in ...)."""
    _protect(c, name, instance_id, protect_from_scale_in, protect_from_scale_set_actions)


def _update_instance(
    c: Ctx,
    name: str,
    instance_id: str,
    protection: tuple[bool | None, bool | None],
    assignments: list[tuple[list[str], Any]],
) -> None:
    """``update --instance-id``: the instance's protection from the flags and ``--set``."""
    props: dict[str, Any] = {}
    for key, value in zip(("protectFromScaleIn", "protectFromScaleSetActions"), protection, strict=True):
        if value is not None:
            apply_set(props, ["protectionPolicy", key], value)
    for keys, value in assignments:
        apply_set(props, keys, value)
    result = c.client.patch(api_path("scaleSets", name, "virtualMachines", instance_id), {"properties": props})
    emit(c, result, INSTANCE_COLUMNS)


def _protect(c: Ctx, name: str, instance_id: str, scale_in: bool | None, set_actions: bool | None) -> None:
    protect_from_scale_in, protect_from_scale_set_actions = scale_in, set_actions
    policy = {
        k: v
        for k, v in (
            ("protectFromScaleIn", protect_from_scale_in),
            ("protectFromScaleSetActions", protect_from_scale_set_actions),
        )
        if v is not None
    }
    result = c.client.patch(
        api_path("scaleSets", name, "virtualMachines", instance_id), {"properties": {"protectionPolicy": policy}}
    )
    emit(c, result, INSTANCE_COLUMNS)


@cli.command("list-instance-connection-info")
@click.argument("name")
@pass_ctx
def connection_info(c: Ctx, name: str) -> None:
    """address:port to SSH to, per instance: its NAT-pool port on the load balancer, or, in a set
    without an inbound NAT pool (az makes one by default, localvmss only with --nat-pool), its
    private address and port 22, reachable from the host its network is on."""
    s = c.client.get(api_path("scaleSets", name))
    lb = ((s["properties"].get("virtualMachineProfile") or {}).get("networkProfile") or {}).get("loadBalancer") or {}
    address = lb.get("bindAddress", "127.0.0.1")
    instances = c.client.get(api_path("scaleSets", name, "virtualMachines"))["value"]
    info = {
        f"instance {i['instanceId']}": f"{address}:{i['properties']['networkProfile']['natPort']}"
        for i in instances
        if i["properties"]["networkProfile"].get("natPort")
    }
    if not info and instances:
        err_console.print(f"{name} has no inbound NAT pool (--nat-pool): private addresses, from the instances' hosts")
        info = {
            f"instance {i['instanceId']}": f"{i['properties']['networkProfile']['privateIpAddress']}:22"
            for i in instances
        }
    emit(c, info)


class _InvokeByDefault(click.Group):
    """``run-command NAME --instance-id ...`` (localvmss's first form) still means ``invoke``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in ("-h", "--help") and not set(args) & set(self.commands):
            args = ["invoke", *args]
        return super().parse_args(ctx, args)


@cli.group("run-command", cls=_InvokeByDefault)
def run_command() -> None:
    """Run a script in an instance (az vmss run-command)."""


RUN_COMMAND_IDS = ("RunShellScript",)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def script_with_parameters(scripts: tuple[str, ...], parameters: tuple[str, ...]) -> str:
    """The script run in the guest: az's ``--scripts`` lines, with ``--parameters`` as RunShellScript
    passes them: ``NAME=VALUE`` exported, the others the positional ``$1 $2 ...``; every value
    shell-quoted, so a parameter is data, never script."""
    named = [p.partition("=") for p in parameters if _ENV_NAME.fullmatch(p.partition("=")[0]) and "=" in p]
    positional = [p for p in parameters if not (_ENV_NAME.fullmatch(p.partition("=")[0]) and "=" in p)]
    prologue = [f"export {key}={shlex.quote(value)}" for key, _, value in named]
    if positional:
        prologue.append("set -- " + " ".join(shlex.quote(p) for p in positional))
    return "\n".join([*prologue, *scripts])


@run_command.command("invoke")
@click.argument("name")
@instance_id_option()
@click.option(
    "--command-id", default="RunShellScript", show_default=True, help="RunShellScript (the one Linux id here)"
)
@values_option("--scripts", required=True, help="script lines, space-separated (each one line of the script)")
@values_option("--parameters", help="NAME=VALUE (exported) or VALUE ($1, $2 ...), space-separated")
@pass_ctx
def run_command_invoke(
    c: Ctx, name: str, instance_id: str, command_id: str, scripts: tuple[str, ...], parameters: tuple[str, ...]
) -> None:
    """Run a script in an instance over SSH with the daemon's key (az vmss run-command invoke);
    exits with the script's status."""
    if command_id.lower() not in (i.lower() for i in RUN_COMMAND_IDS):
        raise InvalidSpec(f"--command-id {command_id!r} is not supported; use {', '.join(RUN_COMMAND_IDS)}")
    result = c.client.post(
        api_path("scaleSets", name, "virtualMachines", instance_id, "runCommand"),
        {"script": script_with_parameters(scripts, parameters)},
    )
    if c.output == "json":
        emit(c, {**result, "value": _run_command_status(result)})
    else:
        click.echo(result["stdout"], nl=False)
        if result["stderr"]:
            click.echo(result["stderr"], nl=False, err=True)
    if result["exitCode"]:
        sys.exit(result["exitCode"])


def _run_command_status(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``value`` az prints for a Linux RunShellScript: one status whose message holds both streams."""
    return [
        {
            "code": "ProvisioningState/succeeded",
            "displayStatus": "Provisioning succeeded",
            "level": "Info",
            "message": f"Enable succeeded: \n[stdout]\n{result['stdout']}\n[stderr]\n{result['stderr']}",
        }
    ]


@cli.command("list-skus")
@click.argument("name", required=False)
@pass_ctx
def list_skus(c: Ctx, name: str | None) -> None:
    """The VM sizes a set can use (az vmss list-skus); NAME, when given, must be a set."""
    if name:
        c.client.get(api_path("scaleSets", name))
    emit(
        c,
        c.client.get("/skus")["value"],
        [
            ("Name", lambda s: s["name"]),
            ("vCPUs", lambda s: _capability(s, "vCPUs")),
            ("MemoryGB", lambda s: _capability(s, "MemoryGB")),
            ("ResourceType", lambda s: s.get("resourceType")),
        ],
    )


def _capability(sku: dict[str, Any], name: str) -> Any:
    return next((cap["value"] for cap in sku.get("capabilities", []) if cap.get("name") == name), None)


# -- images and hosts -------------------------------------------------------------------------
@cli.group("image")
def image() -> None:
    """Base images."""


@image.command("list")
@pass_ctx
def image_list(c: Ctx) -> None:
    emit(
        c,
        c.client.get("/images")["value"],
        [
            ("Name", lambda i: i["name"]),
            ("Boot", lambda i: i.get("boot", "")),
            ("Kernel", lambda i: i["kernel"]),
            ("VirtualSize", lambda i: f"{(i['virtualSizeBytes'] or 0) >> 20} MiB"),
            ("GuestMetrics", lambda i: ":{port}{path}".format(**i["guestMetrics"]) if i.get("guestMetrics") else ""),
            ("Source", lambda i: i["source"]),
        ],
    )


@image.command("import")
@click.argument("name")
@click.argument("directory", required=False, type=click.Path(exists=True, file_okay=False))
@click.option(
    "--file",
    "disk_file",
    type=click.Path(exists=True, dir_okay=False),
    help="a qcow2 or raw disk that boots itself (a cloud image with cloud-init), instead of DIRECTORY",
)
@click.option("--metrics-port", type=click.IntRange(1, 65535), help="guest metrics port [9100 for --file, else 80]")
@click.option("--metrics-path", help="guest metrics path [/metrics for --file, else /cgi-bin/metrics]")
@pass_ctx
def image_import(
    c: Ctx,
    name: str,
    directory: str | None,
    disk_file: str | None,
    metrics_port: int | None,
    metrics_path: str | None,
) -> None:
    """Import an image into every host's storage pool: a DIRECTORY (image.json, disk, kernel,
    initrd) or, with --file, a single self-booting disk."""
    if (directory is None) == (disk_file is None):
        raise click.UsageError("give an image DIRECTORY or --file DISK (one of them)")
    body: dict[str, Any] = (
        {"sourceFile": str(Path(disk_file).resolve())}
        if disk_file is not None
        else {"sourceDirectory": str(Path(str(directory)).resolve())}
    )
    metrics = {k: v for k, v in (("port", metrics_port), ("path", metrics_path)) if v is not None}
    if metrics:
        body["guestMetrics"] = metrics
    emit(c, c.client.put(api_path("images", name), body))


@image.command("build")
@click.option("--out", default=".cache/images/localvmss-base", show_default=True)
def image_build(out: str) -> None:
    """Build the small base image from Debian packages (images/build-base)."""
    import subprocess

    builder = Path(__file__).resolve().parents[2] / "images" / "build-base"
    if not builder.exists():
        raise InvalidSpec(f"image builder not found at {builder} (run from a source checkout)")
    sys.exit(subprocess.call([sys.executable, str(builder), "--out", out]))


@cli.group("host")
def host() -> None:
    """Hosts in the inventory."""


@host.command("list")
@pass_ctx
def host_list(c: Ctx) -> None:
    emit(
        c,
        c.client.get("/hosts")["value"],
        [
            ("Name", lambda h: h["name"]),
            ("URI", lambda h: h["uri"]),
            ("Zone", lambda h: h["zone"]),
            ("Available", lambda h: h["available"]),
            ("Accel", lambda h: h["domainType"]),
            ("CPUs", lambda h: h.get("cpus")),
            ("FreeMiB", lambda h: (h.get("freeMemoryBytes") or 0) >> 20),
            ("NUMA", lambda h: h.get("numaCells")),
            ("Why", lambda h: h["accelerator"] or h["message"]),
        ],
    )


@cli.group("lb")
def lb() -> None:
    """The HAProxy load balancer."""


@lb.command("reload")
@pass_ctx
def lb_reload(c: Ctx) -> None:
    """Seamless reload of HAProxy (connections are kept, every server stays)."""
    emit(c, c.client.post("/loadBalancer/reload"))


@host.command("add")
@click.argument("name")
@click.option("--uri", required=True, help="libvirt URI, e.g. qemu+ssh://root@rack2/system")
@click.option("--zone")
@click.option("--network", default="default", show_default=True, help="libvirt network with a DHCP range")
@click.option(
    "--static-addresses",
    metavar="FIRST-LAST",
    help="hand out these addresses (the network's subnet, outside its DHCP range) without DHCP reservations",
)
@pass_ctx
def host_add(c: Ctx, name: str, uri: str, zone: str | None, network: str, static_addresses: str | None) -> None:
    """Add a libvirt host to the inventory (it must answer)."""
    body: dict[str, Any] = {"uri": uri, "network": network}
    if zone:
        body["zone"] = zone
    if static_addresses:
        body["staticAddresses"] = static_addresses
    emit(c, c.client.put(api_path("hosts", name), body))


@host.command("remove")
@click.argument("name")
@pass_ctx
def host_remove(c: Ctx, name: str) -> None:
    """Remove a host added with 'host add' (it must hold no instances)."""
    emit(c, c.client.delete(api_path("hosts", name)))


# -- Flexible-mode VMs --------------------------------------------------------------------------
@cli.group("vm")
def vm() -> None:
    """Standalone VMs of Flexible (VM orchestration mode) scale sets."""


@vm.command("create")
@click.argument("name")
@click.option("--vmss", required=True, help="the Flexible scale set the VM is created into")
@click.option("--image")
@click.option("--size", help="see list-skus")
@click.option("--platform-fault-domain", type=int)
@click.option("--zone")
@_ssh_options
@click.option("--no-start", is_flag=True, help="define the VM but do not start it")
@click.option("--no-wait", is_flag=True)
@pass_ctx
def vm_create(
    c: Ctx,
    name: str,
    vmss: str,
    image: str | None,
    size: str | None,
    platform_fault_domain: int | None,
    zone: str | None,
    ssh_key_values: tuple[str, ...],
    generate_ssh_keys: bool,
    admin_username: str | None,
    no_start: bool,
    no_wait: bool,
) -> None:
    """Create a VM into a Flexible scale set (the only way a VM joins a set)."""
    props: dict[str, Any] = {"virtualMachineScaleSet": {"id": f"/scaleSets/{vmss}"}}
    if no_start:
        props["initialPowerState"] = "stopped"
    if image:
        props["storageProfile"] = {"imageReference": {"id": image}}
    if size:
        props["hardwareProfile"] = {"vmSize": size}
    if platform_fault_domain is not None:
        props["platformFaultDomain"] = platform_fault_domain
    keys = _keys(ssh_key_values, generate_ssh_keys)
    if keys or admin_username:
        props["osProfile"] = {"linuxConfiguration": {"ssh": {"publicKeys": [{"keyData": k} for k in keys]}}}
        if admin_username:
            props["osProfile"]["adminUsername"] = admin_username
    body: dict[str, Any] = {"properties": props}
    if zone:
        body["zones"] = [zone]
    result = c.client.put(api_path("virtualMachines", name), body)
    if not no_wait:
        wait_for_set(c, vmss)
        result = c.client.get(api_path("virtualMachines", name))
    emit(c, result, INSTANCE_COLUMNS)


@vm.command("list")
@pass_ctx
def vm_list(c: Ctx) -> None:
    emit(c, c.client.get("/virtualMachines")["value"], INSTANCE_COLUMNS)


@vm.command("show")
@click.argument("name")
@pass_ctx
def vm_show(c: Ctx, name: str) -> None:
    emit(c, c.client.get(api_path("virtualMachines", name)), INSTANCE_COLUMNS)


def _vm_verb(action: InstanceAction) -> str:
    """The vm group's verb for an action: the set command's, without ``-instances``."""
    return action.cli_name.removesuffix("-instances")


def _vm_action(action: InstanceAction) -> None:
    verb = _vm_verb(action)
    power = _power_to_await(action)

    @vm.command(verb, help=f"{verb.capitalize()} a VM.")
    @click.argument("name")
    @_skip_shutdown_option(action)
    @click.option("--no-wait", is_flag=True)
    @pass_ctx
    def command(c: Ctx, name: str, no_wait: bool, skip_shutdown: bool = False) -> None:
        if action.api_name == "delete":
            result = c.client.delete(api_path("virtualMachines", name))
            if not no_wait:  # its set can be deleted once this returns
                wait_for_vm_gone(c, name)
            emit(c, result)
            return
        result = c.client.post(_action_path(api_path("virtualMachines", name, action.api_name), skip_shutdown))
        if not no_wait and power is not None:
            wait_for_power(c, {name: api_path("virtualMachines", name)}, power)
        if no_wait or c.output == "json":
            emit(c, result)
        else:
            emit(c, c.client.get(api_path("virtualMachines", name)), INSTANCE_COLUMNS)


for _action in ACTIONS:
    _vm_action(_action)


# -- az's groups over the same commands --------------------------------------------------------
# Not under 'vmss': what az has elsewhere (or localvmss alone) and the groups made below.
_NOT_VMSS = {"image", "host", "lb", "vm", "autoscale", "standby-pool", "group", "config"}


@cli.group("vmss")
def vmss() -> None:
    """The scale-set commands under az's words: 'localvmss vmss create ...' is 'az vmss create ...'."""


for _name, _command in list(cli.commands.items()):
    if _name not in _NOT_VMSS | {"vmss"}:
        vmss.add_command(_command, _name)


@cli.group("monitor")
def monitor() -> None:
    """az monitor: autoscale settings ('monitor autoscale' is the 'autoscale' group)."""


monitor.add_command(autoscale, "autoscale")
azargs.install(cli)

_errors = Console(stderr=True)  # errors show even with --only-show-errors (progress does not)


def main() -> None:
    debug = "--debug" in sys.argv
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except LocalVMSSError as exc:
        if debug:
            raise
        _errors.print(f"[red]error:[/red] {exc.message}", highlight=False, soft_wrap=True, markup=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
