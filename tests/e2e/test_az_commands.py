"""``az vmss`` and ``az monitor autoscale`` lines from Microsoft's documentation, run unchanged.

Each row of ``LINES`` is a command line as Microsoft documents it (the Azure CLI's own help
examples, ``az ... --help``, and the scale-set tutorials on learn.microsoft.com), with where it
comes from. The test runs it with ``az`` replaced by ``localvmss`` and the resource names
replaced (resource group, scale set, image, the instance ids and autoscale names the example
invents), and nothing else; then it checks what the line did against the daemon's API and
libvirt itself, not only the exit code. The lines run in order on one small Uniform set made by
the first ``vmss create`` line (2 instances, at most 3 at once) in a resource group of its own.

README.md's table "az command lines that work unchanged" is this table (``test_readme_lists_every_line``).
"""

from __future__ import annotations

import functools
import json
import re
import shlex
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from localvmss.cli.client import ApiClient
from localvmss.errors import NotFound
from localvmss.lab.testbed import DaemonProcess, Testbed
from tests.conftest import IMAGE_NAME, Cli
from tests.e2e.helpers import instances, libvirt_view, wait_until

# Where each line is, at the commit it was read from (the learn.microsoft.com articles of the same
# names are built from azure-compute-docs; azure-cli's _help.py is what `az ... --help` prints).
SOURCES = {
    "tutorial-create-and-manage-cli": "https://github.com/MicrosoftDocs/azure-compute-docs/blob/0c6223e9484d9281f960129ff81c76e16e2eb2cf/articles/virtual-machine-scale-sets/tutorial-create-and-manage-cli.md",
    "tutorial-autoscale-cli": "https://github.com/MicrosoftDocs/azure-compute-docs/blob/0c6223e9484d9281f960129ff81c76e16e2eb2cf/articles/virtual-machine-scale-sets/tutorial-autoscale-cli.md",
    "tutorial-modify-scale-sets-cli": "https://github.com/MicrosoftDocs/azure-compute-docs/blob/412c17b36b230a1f56bb12651909c8dd58f9aead/articles/virtual-machine-scale-sets/tutorial-modify-scale-sets-cli.md",
    "quick-create-cli": "https://github.com/MicrosoftDocs/azure-compute-docs/blob/0958a656d3f891a2ea680eed864ffaa566b2bb97/articles/virtual-machine-scale-sets/quick-create-cli.md",
    "azure-cli vm/_help.py": "https://github.com/Azure/azure-cli/blob/003e1342e4da234327511c127c762c032301a442/src/azure-cli/azure/cli/command_modules/vm/_help.py",
    "azure-cli monitor/_help.py": "https://github.com/Azure/azure-cli/blob/00cc26c5c31ab6faf1a2dfb543c9220423556b87/src/azure-cli/azure/cli/command_modules/monitor/_help.py",
}

# The documents' own names for the resource group and the scale set, replaced by the test's.
GROUP_WORDS = {"myResourceGroup", "MyResourceGroup", "$MY_RESOURCE_GROUP_NAME", "{myrg}"}
SET_WORDS = {"myScaleSet", "MyScaleSet", "$MY_SCALE_SET_NAME", "$SCALE_SET_NAME", "MyVMSS"}
SECOND_IMAGE = "base2"  # `vmss update --set ...imageReference.id=imageID` moves the set to it
AUTOSCALE = "autoscale"  # the tutorial's own name for its autoscale setting, kept
ZERO_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"


@dataclass
class Run:
    """What a line's check sees: the daemon, libvirt, the names, and the line's result."""

    api: ApiClient
    testbed: Testbed
    group: str
    set: str
    result: subprocess.CompletedProcess[str] | None = None
    kept: dict[str, Any] = field(default_factory=dict)  # what an earlier step saw, for later ones

    def view(self) -> dict[str, Any]:
        return dict(self.api.get(f"/scaleSets/{self.set}"))

    def ids(self) -> list[str]:
        return sorted((i["instanceId"] for i in instances(self.api, self.set)), key=int)

    def power(self, iid: str) -> str:
        statuses = self.api.get(f"/scaleSets/{self.set}/virtualMachines/{iid}/instanceView")["statuses"]
        return next(s["code"] for s in statuses if s["code"].startswith("PowerState/"))

    def domain(self, iid: str) -> str | None:
        """libvirt's own state of the instance's domain ('running', 'stopped'), None if undefined."""
        found = libvirt_view(self.testbed, self.set)["domains"].get(f"lvmss-{self.set}-{iid}")
        return found[1] if found else None

    def boot_id(self, iid: str) -> str:
        out = self.api.post(
            f"/scaleSets/{self.set}/virtualMachines/{iid}/runCommand", {"script": "cat /proc/sys/kernel/random/boot_id"}
        )
        assert out["exitCode"] == 0, out
        return str(out["stdout"]).strip()

    def setting(self) -> dict[str, Any]:
        return dict(self.api.get(f"/scaleSets/{self.set}/autoscale"))

    def resource_id(self) -> str:
        shown = str(self.view().get("id", ""))
        sub = shown.split("/")[2] if shown.startswith("/subscriptions/") else ZERO_SUBSCRIPTION
        group = f"/subscriptions/{sub}/resourceGroups/{self.group}"
        return f"{group}/providers/Microsoft.Compute/virtualMachineScaleSets/{self.set}"

    def stdout_json(self) -> Any:
        """The line's output as JSON, or None when it printed a table (localvmss's default
        output is a table where az's is JSON; the checks take either)."""
        assert self.result is not None
        try:
            return json.loads(self.result.stdout)
        except ValueError:
            return None

    @property
    def out(self) -> str:
        assert self.result is not None
        return self.result.stdout


Check = Callable[[Run], None]


@dataclass(frozen=True)
class Line:
    """One documented line: where it is, the line itself, and what must be true after it."""

    source: str
    az: str
    check: Check
    adapt: tuple[tuple[str, str], ...] = ()  # literal replacements: an example's own ids and names
    before: Check | None = None  # what the check compares against, read before the line runs
    counted: bool = True  # False: a repeat of a line already in the table, run for the sequence

    def localvmss(self) -> str:
        """The line as README shows it: the program's name and the example's ids adapted."""
        text = self.az
        for old, new in self.adapt:
            assert old in text, (old, text)
            text = text.replace(old, new)
        assert text.startswith("az "), text
        return "localvmss " + text[3:]

    def argv(self, run: Run) -> list[str]:
        """What the test runs: ``localvmss``'s words with the test's group and set names."""
        words = shlex.split(self.localvmss())[1:]
        out = []
        for w in words:
            if w in GROUP_WORDS:
                out.append(run.group)
            elif w in SET_WORDS:
                out.append(run.set)
            elif w == "{resource-id}":
                out.append(run.resource_id())
            else:
                out.append(w)
        return out


# ================================================================================ the checks
def group_exists(r: Run) -> None:
    shown = r.api.get(f"/resourceGroups/{r.group}")
    assert shown["name"].lower() == r.group.lower(), shown


def created(r: Run) -> None:
    v = r.view()
    props = v["properties"]
    assert props["orchestrationMode"] == "Uniform", "a set with an upgrade policy is a Uniform set"
    assert props["upgradePolicy"]["mode"] == "Automatic" and v["sku"]["capacity"] == 2, v
    assert v.get("resourceGroup", "").lower() == r.group.lower(), v
    assert props["virtualMachineProfile"]["storageProfile"]["imageReference"]["id"] == IMAGE_NAME
    os_profile = props["virtualMachineProfile"]["osProfile"]
    made = (Path(r.kept["home"]) / ".ssh" / "id_rsa.pub").read_text().split()[:2]
    keys = [
        k["keyData"].split()[:2] for k in os_profile.get("linuxConfiguration", {}).get("ssh", {}).get("publicKeys", [])
    ]
    assert made in keys, f"--generate-ssh-keys made ~/.ssh/id_rsa.pub and put it into the model: {os_profile}"
    assert os_profile.get("adminUsername") == "azureuser", f"--admin-username azureuser: {os_profile}"
    assert r.ids() == ["0", "1"]
    assert {r.domain("0"), r.domain("1")} == {"running"}, "two guests run in libvirt"


def lists_the_set(r: Run) -> None:
    assert r.set in r.out, r.out


def shows_the_set(r: Run) -> None:
    shown = r.stdout_json()
    if shown is None:
        row = next(ln for ln in r.out.splitlines() if ln.split()[:1] == [r.set])
        assert f" {len(r.ids())} " in f" {row} ", row
    else:
        assert shown["name"] == r.set and shown["sku"]["capacity"] == len(r.ids()), shown


def lists_instances(r: Run) -> None:
    assert r.result is not None
    rows = [ln for ln in r.result.stdout.splitlines() if re.search(rf"\b{r.set}_\d+\b", ln)]
    assert len(rows) == len(r.ids()) == 2, r.result.stdout


def connection_info(r: Run) -> None:
    """az's default set has an inbound NAT pool; this one has none, so each instance's private
    address and port 22 (reachable from its host) is what it says."""
    info = r.stdout_json() or {}
    nets = {i["instanceId"]: i["properties"]["networkProfile"] for i in instances(r.api, r.set)}
    want = {
        f"instance {iid}": f":{net['natPort']}" if net.get("natPort") else f"{net['privateIpAddress']}:22"
        for iid, net in nets.items()
    }
    assert info and set(info) == set(want) and all(info[k].endswith(want[k]) for k in want), (info, nets)


def set_instance_view(r: Run) -> None:
    shown = r.stdout_json()
    text = (json.dumps(shown) if shown is not None else r.out).lower()
    assert "succeeded" in text and "running" in text, r.out


def scaled_to(n: int) -> Check:
    def check(r: Run) -> None:
        assert r.view()["sku"]["capacity"] == n
        assert len(r.ids()) == n
        domains = libvirt_view(r.testbed, r.set)["domains"]
        assert sorted(domains) == sorted(f"lvmss-{r.set}-{i}" for i in r.ids()), domains
        assert all(state == "running" for _, state in domains.values()), domains

    return check


def powered(iids: tuple[str, ...] | None, code: str, domain: str | None) -> Check:
    """Every instance of ``iids`` (all if None) has ``PowerState/code`` and libvirt's ``domain``."""

    def check(r: Run) -> None:
        for iid in iids or tuple(r.ids()):
            assert r.power(iid) == f"PowerState/{code}", (iid, r.power(iid))
            wait_until(functools.partial(lambda i: r.domain(i) == domain, iid), 120, f"libvirt: {iid} {domain}")

    return check


def remember_boots(iids: tuple[str, ...] | None) -> Check:
    def before(r: Run) -> None:
        r.kept["boots"] = {iid: r.boot_id(iid) for iid in iids or tuple(r.ids())}

    return before


def rebooted(r: Run) -> None:
    for iid, boot in r.kept["boots"].items():
        assert r.power(iid) == "PowerState/running" and r.domain(iid) == "running"
        assert r.boot_id(iid) != boot, f"instance {iid} booted again"


def mark_disk(iid: str) -> Check:
    def before(r: Run) -> None:
        out = r.api.post(f"/scaleSets/{r.set}/virtualMachines/{iid}/runCommand", {"script": "touch /root/az-marker"})
        assert out["exitCode"] == 0, out

    return before


def reimaged(iid: str) -> Check:
    def check(r: Run) -> None:
        out = r.api.post(f"/scaleSets/{r.set}/virtualMachines/{iid}/runCommand", {"script": "ls /root/az-marker"})
        assert out["exitCode"] != 0, "reimage gave the instance a fresh disk from the image"
        assert r.power(iid) == "PowerState/running"

    return check


def said_hello(r: Run) -> None:
    assert r.result is not None
    assert "hello world" in r.result.stdout, r.result.stdout


def protection(iid: str, scale_in: bool, set_actions: bool) -> Check:
    def check(r: Run) -> None:
        vm = r.api.get(f"/scaleSets/{r.set}/virtualMachines/{iid}")
        policy = vm["properties"].get("protectionPolicy", {})
        assert policy.get("protectFromScaleIn", False) is scale_in, policy
        assert policy.get("protectFromScaleSetActions", False) is set_actions, policy

    return check


def on_second_image(r: Run) -> None:
    """The model names the new image, and the Automatic policy reimages every instance to it."""
    ref = r.view()["properties"]["virtualMachineProfile"]["storageProfile"]["imageReference"]
    assert ref["id"] == SECOND_IMAGE, ref
    wait_until(
        lambda: all(
            i["properties"]["latestModelApplied"] and i["properties"]["provisioningState"] == "Succeeded"
            for i in instances(r.api, r.set)
        ),
        600,
        "the Automatic upgrade policy to reimage every instance",
        interval=2,
    )
    for iid, boot in r.kept["boots"].items():
        assert r.boot_id(iid) != boot, f"instance {iid} was reimaged (booted again)"


def up_to_date(iid: str) -> Check:
    def check(r: Run) -> None:
        vm = r.api.get(f"/scaleSets/{r.set}/virtualMachines/{iid}")
        assert vm["properties"]["latestModelApplied"] is True and r.power(iid) == "PowerState/running"

    return check


def settled(r: Run) -> None:
    assert r.view()["properties"]["provisioningState"] == "Succeeded"


def instance_gone(iid: str) -> Check:
    def check(r: Run) -> None:
        assert iid not in r.ids()
        wait_until(lambda: r.domain(iid) is None, 120, f"libvirt to drop instance {iid}")
        assert r.view()["sku"]["capacity"] == len(r.ids())

    return check


def autoscale_created(r: Run) -> None:
    s = r.setting()
    assert s["name"] == AUTOSCALE and s["targetResourceName"] == r.set and s["enabled"] is True, s
    assert s["profiles"][0]["capacity"] == {"minimum": 2, "maximum": 10, "default": 2}, s


def has_rule(index: int, direction: str, kind: str, value: int, op: str, threshold: float, window: str) -> Check:
    def check(r: Run) -> None:
        rule = r.setting()["profiles"][0]["rules"][index]
        assert rule["scaleAction"]["direction"] == direction and rule["scaleAction"]["type"] == kind, rule
        assert rule["scaleAction"]["value"] == value, rule
        t = rule["metricTrigger"]
        assert (t["metricName"], t["operator"], t["threshold"], t["timeWindow"]) == (
            "Percentage CPU",
            op,
            threshold,
            window,
        ), t

    return check


def lists_rules(r: Run) -> None:
    assert r.result is not None
    rules = r.setting()["profiles"][0]["rules"]
    assert len(rules) == 5 and r.result.stdout.count("Percentage CPU") == 5, r.result.stdout


def has_profile(name: str, capacity: dict[str, int], kind: str) -> Check:
    def check(r: Run) -> None:
        profiles = {p["name"]: p for p in r.setting()["profiles"]}
        p = profiles[name]
        assert p["capacity"] == capacity and kind in p, p
        assert len(p["rules"]) == 5, "--copy-rules default copied the default profile's rules"

    return check


def lists_profiles(r: Run) -> None:
    assert r.result is not None
    for name in ("default", "Christmas", "weeekend"):
        assert name in r.result.stdout, r.result.stdout


def profile_gone(r: Run) -> None:
    assert "Christmas" not in {p["name"] for p in r.setting()["profiles"]}


def shows_setting(r: Run) -> None:
    shown = r.stdout_json()
    if shown is None:
        assert AUTOSCALE in r.out and r.set in r.out and "Christmas" not in r.out, r.out
    else:
        assert shown["name"] == AUTOSCALE and shown == r.setting(), shown


def default_count(n: int) -> Check:
    def check(r: Run) -> None:
        assert r.setting()["profiles"][0]["capacity"] == {"minimum": 2, "maximum": 10, "default": n}

    return check


def enabled(r: Run) -> None:
    assert r.setting()["enabled"] is True


def drop_setting(r: Run) -> None:
    """No doc line deletes a setting: the next create needs the set free of one."""
    r.api.delete(f"/scaleSets/{r.set}/autoscale")


def created_by_id(r: Run) -> None:
    s = r.setting()
    assert s["name"] == r.set, "a setting made without --name is named after its resource, as in az"
    assert s["profiles"][0]["capacity"] == {"minimum": 2, "maximum": 5, "default": 3}, s


def one_rule_by_resource_name(r: Run) -> None:
    assert [x["scaleAction"]["value"] for x in r.setting()["profiles"][0]["rules"]] == [1]


def group_gone(r: Run) -> None:
    def gone() -> bool:
        try:
            r.api.get(f"/resourceGroups/{r.group}")
        except NotFound:
            return True
        return False

    wait_until(gone, 60, f"resource group {r.group} to go")


def delete_set_first(r: Run) -> None:
    """No doc line deletes a lone scale set (az's lines delete the whole group); a group here is
    deleted only once empty, so the set goes first, through the API."""
    r.api.delete(f"/scaleSets/{r.set}")
    wait_until(lambda: not libvirt_view(r.testbed, r.set)["domains"], 300, "the set's domains to go")

    def gone() -> bool:
        try:
            r.api.get(f"/scaleSets/{r.set}")
        except NotFound:
            return True
        return False

    wait_until(gone, 120, "the set to go")


ID1 = ("1",)

# ================================================================================= the table
LINES: list[Line] = [
    Line("tutorial-create-and-manage-cli", "az group create --name myResourceGroup --location eastus", group_exists),
    Line(
        "quick-create-cli",
        "az vmss create --resource-group $MY_RESOURCE_GROUP_NAME --name $MY_SCALE_SET_NAME --image Debian11 "
        "--upgrade-policy-mode automatic --admin-username azureuser --generate-ssh-keys",
        created,
        adapt=(("Debian11", IMAGE_NAME),),
    ),
    Line("azure-cli vm/_help.py", "az vmss list --resource-group MyResourceGroup", lists_the_set),
    Line(
        "tutorial-modify-scale-sets-cli",
        "az vmss show --resource-group $MY_RESOURCE_GROUP_NAME --name $SCALE_SET_NAME",
        shows_the_set,
    ),
    Line(
        "tutorial-autoscale-cli",
        "az vmss list-instances --resource-group $MY_RESOURCE_GROUP_NAME --name $MY_SCALE_SET_NAME --output table",
        lists_instances,
    ),
    Line(
        "azure-cli vm/_help.py",
        "az vmss list-instance-connection-info --name MyScaleSet --resource-group MyResourceGroup",
        connection_info,
    ),
    Line(
        "azure-cli vm/_help.py",
        "az vmss get-instance-view --name MyScaleSet --resource-group MyResourceGroup",
        set_instance_view,
    ),
    Line(
        "tutorial-create-and-manage-cli",
        "az vmss scale --resource-group myResourceGroup --name myScaleSet --new-capacity 3",
        scaled_to(3),
    ),
    Line(
        "azure-cli vm/_help.py",
        "az vmss stop --instance-ids 1 --name MyScaleSet --resource-group MyResourceGroup",
        powered(ID1, "stopped", "stopped"),
    ),
    Line(
        "azure-cli vm/_help.py",
        "az vmss start --instance-ids 1 --name MyScaleSet --resource-group MyResourceGroup",
        powered(ID1, "running", "running"),
    ),
    Line(
        "azure-cli vm/_help.py",
        "az vmss restart --instance-ids 1 --name MyScaleSet --resource-group MyResourceGroup",
        rebooted,
        before=remember_boots(ID1),
    ),
    Line(
        "azure-cli vm/_help.py",
        "az vmss stop --name MyScaleSet --resource-group MyResourceGroup --skip-shutdown",
        powered(None, "stopped", "stopped"),
    ),
    Line(
        "tutorial-create-and-manage-cli",
        "az vmss start --resource-group myResourceGroup --name myScaleSet",
        powered(None, "running", "running"),
    ),
    Line(
        "tutorial-create-and-manage-cli",
        "az vmss stop --resource-group myResourceGroup --name myScaleSet",
        powered(None, "stopped", "stopped"),
    ),
    Line(
        "tutorial-create-and-manage-cli",
        "az vmss start --resource-group myResourceGroup --name myScaleSet",
        powered(None, "running", "running"),
        counted=False,
    ),
    Line(
        "azure-cli vm/_help.py",
        "az vmss deallocate --instance-ids 1 --name MyScaleSet --resource-group MyResourceGroup",
        powered(ID1, "deallocated", None),
    ),
    Line(
        "azure-cli vm/_help.py",
        "az vmss start --instance-ids 1 --name MyScaleSet --resource-group MyResourceGroup",
        powered(ID1, "running", "running"),
        counted=False,
    ),
    Line(
        "tutorial-create-and-manage-cli",
        "az vmss restart --resource-group myResourceGroup --name myScaleSet",
        rebooted,
        before=remember_boots(None),
    ),
    Line(
        "azure-cli vm/_help.py",
        "az vmss reimage --instance-id 1 --name MyScaleSet --resource-group MyResourceGroup "
        "--subscription MySubscription",
        reimaged("1"),
        before=mark_disk("1"),
    ),
    Line(
        "azure-cli vm/_help.py",
        "az vmss run-command invoke -g MyResourceGroup -n MyVMSS --command-id RunShellScript "
        "--instance-id 4 --scripts 'echo $1 $2' --parameters hello world",
        said_hello,
        adapt=(("--instance-id 4", "--instance-id 0"),),
    ),
    Line(
        "tutorial-modify-scale-sets-cli",
        'az vmss update --name $SCALE_SET_NAME --resource-group $MY_RESOURCE_GROUP_NAME --instance-id "$INSTANCE_ID" '
        "--protect-from-scale-set-actions False --protect-from-scale-in",
        protection("0", scale_in=True, set_actions=False),
        adapt=(('"$INSTANCE_ID"', "0"),),
    ),
    Line(
        "azure-cli vm/_help.py",
        "az vmss update --name MyScaleSet --resource-group MyResourceGroup --instance-id 4 "
        "--set protectionPolicy.protectFromScaleIn=True protectionPolicy.protectFromScaleSetActions=False",
        protection("2", scale_in=True, set_actions=False),
        adapt=(("--instance-id 4", "--instance-id 2"),),
    ),
    Line(
        "azure-cli vm/_help.py",
        "az vmss update --name MyScaleSet --resource-group MyResourceGroup "
        "--set virtualMachineProfile.storageProfile.imageReference.id=imageID",
        on_second_image,
        adapt=(("=imageID", f"={SECOND_IMAGE}"),),
        before=remember_boots(None),
    ),
    Line("azure-cli vm/_help.py", "az vmss wait --updated --name MyScaleSet --resource-group MyResourceGroup", settled),
    Line(
        "azure-cli vm/_help.py",
        "az vmss update-instances --instance-ids 1 --name MyScaleSet --resource-group MyResourceGroup",
        up_to_date("1"),
    ),
    Line(
        "azure-cli vm/_help.py",
        "az vmss wait --updated --instance-id 1 --name MyScaleSet --resource-group MyResourceGroup",
        up_to_date("1"),
    ),
    Line(
        "azure-cli vm/_help.py",
        "az vmss delete-instances --instance-ids 0 --name MyScaleSet --resource-group MyResourceGroup",
        instance_gone("1"),
        adapt=(("--instance-ids 0", "--instance-ids 1"),),
    ),
    Line(
        "azure-cli vm/_help.py",
        "az vmss wait --created --name MyScaleSet --resource-group MyResourceGroup",
        scaled_to(2),
    ),
    # ----------------------------------------------------------------------------- autoscale
    Line(
        "tutorial-autoscale-cli",
        "az monitor autoscale create --resource-group $MY_RESOURCE_GROUP_NAME --resource $MY_SCALE_SET_NAME "
        "--resource-type Microsoft.Compute/virtualMachineScaleSets --name autoscale --min-count 2 --max-count 10 "
        "--count 2",
        autoscale_created,
    ),
    Line(
        "tutorial-autoscale-cli",
        "az monitor autoscale rule create --resource-group $MY_RESOURCE_GROUP_NAME --autoscale-name autoscale "
        '--condition "Percentage CPU > 70 avg 5m" --scale out 3',
        has_rule(0, "Increase", "ChangeCount", 3, "GreaterThan", 70, "PT5M"),
    ),
    Line(
        "tutorial-autoscale-cli",
        "az monitor autoscale rule create --resource-group $MY_RESOURCE_GROUP_NAME --autoscale-name autoscale "
        '--condition "Percentage CPU < 30 avg 5m" --scale in 1',
        has_rule(1, "Decrease", "ChangeCount", 1, "LessThan", 30, "PT5M"),
    ),
    Line(
        "azure-cli monitor/_help.py",
        "az monitor autoscale rule create -g {myrg} --autoscale-name {myvmss} "
        '--scale to 5 --condition "Percentage CPU > 75 avg 10m"',
        has_rule(2, "Increase", "ExactCount", 5, "GreaterThan", 75, "PT10M"),
        adapt=(("{myvmss}", AUTOSCALE),),
    ),
    Line(
        "azure-cli monitor/_help.py",
        "az monitor autoscale rule create -g {myrg} --autoscale-name {myvmss} "
        '--scale out 2 --condition "Percentage CPU > 75 avg 5m"',
        has_rule(3, "Increase", "ChangeCount", 2, "GreaterThan", 75, "PT5M"),
        adapt=(("{myvmss}", AUTOSCALE),),
    ),
    Line(
        "azure-cli monitor/_help.py",
        "az monitor autoscale rule create -g {myrg} --autoscale-name {myvmss} "
        '--scale in 50% --condition "Percentage CPU < 25 avg 15m"',
        has_rule(4, "Decrease", "PercentChangeCount", 50, "LessThan", 25, "PT15M"),
        adapt=(("{myvmss}", AUTOSCALE),),
    ),
    Line(
        "azure-cli monitor/_help.py",
        "az monitor autoscale rule list --autoscale-name MyAutoscale --resource-group MyResourceGroup",
        lists_rules,
        adapt=(("MyAutoscale", AUTOSCALE),),
    ),
    Line(
        "azure-cli monitor/_help.py",
        "az monitor autoscale profile create -g {myrg} --autoscale-name {name} -n Christmas --copy-rules default "
        '--min-count 3 --count 6 --max-count 10 --start 2018-12-24 --end 2018-12-26 --timezone "Pacific Standard Time"',
        has_profile("Christmas", {"minimum": 3, "maximum": 10, "default": 6}, "fixedDate"),
        adapt=(("{name}", AUTOSCALE),),
    ),
    Line(
        "azure-cli monitor/_help.py",
        "az monitor autoscale profile create -g {myrg} --autoscale-name {name} -n weeekend --copy-rules default "
        '--min-count 1 --count 2 --max-count 2 --recurrence week sat sun --timezone "Pacific Standard Time"',
        has_profile("weeekend", {"minimum": 1, "maximum": 2, "default": 2}, "recurrence"),
        adapt=(("{name}", AUTOSCALE),),
    ),
    Line(
        "azure-cli monitor/_help.py",
        "az monitor autoscale profile list --autoscale-name MyAutoscale --resource-group MyResourceGroup",
        lists_profiles,
        adapt=(("MyAutoscale", AUTOSCALE),),
    ),
    Line(
        "azure-cli monitor/_help.py",
        "az monitor autoscale profile delete --autoscale-name MyAutoscale --name MyAutoscaleProfile "
        "--resource-group MyResourceGroup",
        profile_gone,
        adapt=(("MyAutoscale ", f"{AUTOSCALE} "), ("MyAutoscaleProfile", "Christmas")),
    ),
    Line(
        "azure-cli monitor/_help.py",
        "az monitor autoscale show --name MyAutoscaleSettings --resource-group MyResourceGroup",
        shows_setting,
        adapt=(("MyAutoscaleSettings", AUTOSCALE),),
    ),
    Line(
        "azure-cli monitor/_help.py",
        "az monitor autoscale update -g {myrg} -n {autoscale-name} --count 3",
        default_count(3),
        adapt=(("{autoscale-name}", AUTOSCALE),),
    ),
    Line(
        "azure-cli monitor/_help.py",
        "az monitor autoscale update --enabled true --name weeekend --resource-group MyResourceGroup",
        enabled,
        adapt=(("--name weeekend", f"--name {AUTOSCALE}"),),
    ),
    Line(
        "azure-cli monitor/_help.py",
        "az monitor autoscale create -g {myrg} --resource {resource-id} --min-count 2 --count 3 --max-count 5",
        created_by_id,
        before=drop_setting,
    ),
    Line(
        "azure-cli monitor/_help.py",
        "az monitor autoscale rule create -g {myrg} --autoscale-name {name} "
        '--scale out 1 --condition "Percentage CPU > 75 avg 5m"',
        one_rule_by_resource_name,
        adapt=(("{name}", "myScaleSet"),),  # the setting above has its set's name, as in az
    ),
    Line(
        "quick-create-cli",
        "az group delete --name myResourceGroup --yes --no-wait",
        group_gone,
        before=delete_set_first,
    ),
]


# =================================================================================== the run
@pytest.fixture(scope="module")
def run(
    daemon: DaemonProcess, testbed: Testbed, image_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Run]:
    """One resource group and set name for the whole table; the set is removed at the end."""
    import uuid

    api = ApiClient(str(daemon.socket_path))
    api.put(f"/images/{SECOND_IMAGE}", {"sourceDirectory": str(image_dir)})
    suffix = uuid.uuid4().hex[:6]
    r = Run(api=api, testbed=testbed, group=f"azdocs{suffix}", set=f"az{suffix}")
    home = tmp_path_factory.mktemp("azhome")  # --generate-ssh-keys writes ~/.ssh; config lives in ~ too
    r.kept["cli"], r.kept["home"] = Cli(daemon.socket_path), home
    r.kept["cli"].env["HOME"] = str(home)
    try:
        yield r
    finally:
        for path in (f"/scaleSets/{r.set}/autoscale", f"/scaleSets/{r.set}"):
            try:
                api.delete(path)
            except Exception:
                pass
        try:
            wait_until(lambda: not libvirt_view(testbed, r.set)["domains"], 300, "cleanup of the set")
            api.delete(f"/resourceGroups/{r.group}")
        except Exception:
            pass
        api.close()


def _name(i_line: tuple[int, Line]) -> str:
    i, line = i_line
    return f"{i:02d} " + " ".join(line.az.split()[1:4])


@pytest.mark.parametrize("i_line", list(enumerate(LINES)), ids=_name)
def test_az_line(run: Run, i_line: tuple[int, Line]) -> None:
    """The documented line exits 0 and does what Azure's does (checked against API and libvirt)."""
    _, line = i_line
    if line.before is not None:
        line.before(run)
    argv = line.argv(run)
    cli: Cli = run.kept["cli"]
    run.result = cli(*argv, timeout=900)
    assert run.result.returncode == 0, (
        f"{line.localvmss()}\n(run as: localvmss {shlex.join(argv)})\nexit {run.result.returncode}: "
        f"{run.result.stderr.strip()}"
    )
    line.check(run)


# ================================================================================== the README
def readme_rows() -> list[str]:
    """The README's table rows, made from LINES (counted lines only), and its source links."""

    def cell(text: str) -> str:
        return "`" + text.replace("|", "\\|") + "`"

    rows = [f"| {cell(line.az)} | {cell(line.localvmss())} | [{line.source}] |" for line in LINES if line.counted]
    return [*rows, "", *(f"[{key}]: {url}" for key, url in SOURCES.items())]


def test_readme_lists_every_line() -> None:
    """README.md's section shows exactly these lines (regenerate: python -m tests.e2e.test_az_commands)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [row for row in readme_rows() if row not in readme]
    assert not missing, "README.md lacks:\n" + "\n".join(missing)
    assert sum(1 for line in LINES if line.counted) >= 25


if __name__ == "__main__":
    print("\n".join(readme_rows()))
