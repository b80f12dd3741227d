"""The Vagrant lab without booting it: `vagrant validate` of vagrant/Vagrantfile with the real
vagrant and vagrant-libvirt (no network, no box), the Ruby inventory loader against Python's own
reading and against a table of bad inventories, and every file the Vagrantfile hands the machines
checked with the tool that will read it (localvmss's config loader and `--check-config`, libvirt's
network schema, `ssh -G`, `ssh-keygen -F`, rsync, `systemd-analyze verify`, bash). The generated
network is started by a real libvirtd of the test harness, and the static-route helper runs in a
network namespace made here. Booting the lab needs nested
virtualisation and a box download, so it is not done here (vagrant/README.md says how).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from localvmss.config import load_config
from localvmss.lab.testbed import Testbed

REPO = Path(__file__).resolve().parents[2]
VAGRANT_DIR = REPO / "vagrant"
LIB = VAGRANT_DIR / "lib" / "localvmss_lab.rb"
INVENTORY = VAGRANT_DIR / "inventory.json"
PROVISION = VAGRANT_DIR / "provision"
NETWORK_RNG = Path("/usr/share/libvirt/schemas/network.rng")


def _need(tool: str, package: str = "vagrant") -> str:
    """The tool's path; a failure (not a skip) when it is missing, since `make setup` installs it."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed: run 'make setup' (scripts/packages.txt has {package}, which brings it)")
    return path


@pytest.fixture(scope="module")
def vagrant() -> str:
    return _need("vagrant")


@pytest.fixture(scope="module")
def ruby() -> str:
    return _need("ruby")


def _vagrant_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAGRANT_", "LOCALVMSS_VAGRANT_"))}
    env.update(
        VAGRANT_HOME=str(tmp / "vagrant-home"),
        VAGRANT_DEFAULT_PROVIDER="libvirt",
        VAGRANT_CHECKPOINT_DISABLE="1",  # no version check against the network
        VAGRANT_DOTFILE_PATH=str(tmp / "dotfile"),  # not vagrant/.vagrant in the checkout
        LOCALVMSS_VAGRANT_STATE=str(tmp / "state"),
    )
    env.update(extra)
    return env


def _offline(cmd: list[str]) -> list[str]:
    """As root, run in a fresh network namespace with no interface up: proof nothing is fetched."""
    if os.geteuid() == 0 and shutil.which("unshare"):
        return ["unshare", "--net", "--", *cmd]
    return cmd


def _validate(vagrant: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _offline([vagrant, "validate"]), cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def _ruby(ruby: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ruby, str(LIB), *args], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def inventory() -> dict[str, Any]:
    return json.loads(INVENTORY.read_text())


@pytest.fixture(scope="module")
def state(ruby: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The shipped inventory prepared as the Vagrantfile prepares it: the plan and its files."""
    out = tmp_path_factory.mktemp("vagrant-state") / "state"
    done = _ruby(ruby, "prepare", str(INVENTORY), str(out))
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    plan["state_dir"] = out
    return plan


# -- vagrant validate ----------------------------------------------------------------------------


def test_vagrant_validate_passes_offline_without_a_box(vagrant: str, tmp_path: Path) -> None:
    env = _vagrant_env(tmp_path)
    plugins = subprocess.run(
        _offline([vagrant, "plugin", "list"]), env=env, capture_output=True, text=True, timeout=120
    )
    assert "vagrant-libvirt" in plugins.stdout, "vagrant-libvirt is missing: run 'make setup' " + plugins.stdout
    done = _validate(vagrant, VAGRANT_DIR, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "validated successfully" in done.stdout
    boxes = tmp_path / "vagrant-home" / "boxes"
    assert not boxes.exists() or not any(boxes.iterdir()), "validate must not download a box"
    assert (tmp_path / "dotfile").is_dir()  # vagrant's machine state went to the tmp dir
    made = sorted(p.name for p in (tmp_path / "state").iterdir())
    assert made == ["controller", "kvm1", "kvm2"]


def test_vagrant_validate_checks_the_provisioning_files_exist(vagrant: str, tmp_path: Path) -> None:
    """So a passing validate means something: a missing script is caught before any VM exists."""
    copy = tmp_path / "vagrant"
    shutil.copytree(VAGRANT_DIR, copy, ignore=shutil.ignore_patterns(".lab", ".vagrant"))
    (copy / "provision" / "routes.sh").unlink()
    done = _validate(vagrant, copy, _vagrant_env(tmp_path))
    assert done.returncode != 0
    assert "routes.sh" in done.stdout + done.stderr


def test_vagrant_refuses_a_bad_inventory_in_one_line_and_writes_nothing(vagrant: str, tmp_path: Path) -> None:
    bad = json.loads(INVENTORY.read_text())
    bad["hosts"][1]["guest_subnet"] = bad["hosts"][0]["guest_subnet"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    done = _validate(vagrant, VAGRANT_DIR, _vagrant_env(tmp_path, LOCALVMSS_VAGRANT_INVENTORY=str(path)))
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "localvmss lab: bad.json: hosts[1].guest_subnet 198.18.11.0/24 overlaps hosts[0].guest_subnet "
        "198.18.11.0/24: every subnet needs its own addresses"
    ]
    assert not (tmp_path / "state").exists()


# -- the Ruby loader reads what Python reads -----------------------------------------------------


def test_the_ruby_plan_is_the_inventory_python_reads(ruby: str, inventory: dict[str, Any]) -> None:
    done = _ruby(ruby, "plan", str(INVENTORY))
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["box"] == inventory["box"]
    assert plan["guest_network"] == inventory["guest_network"]
    assert plan["rack"]["subnet"] == inventory["rack"]["subnet"]
    assert plan["rack"]["netmask"] == str(ipaddress.ip_network(inventory["rack"]["subnet"]).netmask)
    machines = {m["name"]: m for m in plan["machines"]}
    # KVM hosts first, the controller last: a sequential `vagrant up` makes hosts before it.
    assert [m["name"] for m in plan["machines"]] == [h["name"] for h in inventory["hosts"]] + [
        inventory["controller"]["name"]
    ]
    ctl = machines[inventory["controller"]["name"]]
    assert ctl["role"] == "controller"
    assert {k: ctl[k] for k in inventory["controller"]} == inventory["controller"]
    assert ctl["routes"] == [[h["guest_subnet"], h["address"]] for h in inventory["hosts"]]
    for host in inventory["hosts"]:
        got = machines[host["name"]]
        assert got["role"] == "kvm-host"
        assert {k: got[k] for k in host} == host
        net = ipaddress.ip_network(host["guest_subnet"])
        assert got["gateway"] == str(net.network_address + 1)
        assert got["netmask"] == str(net.netmask)
        assert ipaddress.ip_address(got["dhcp_start"]) in net and ipaddress.ip_address(got["dhcp_end"]) in net
        assert ipaddress.ip_address(got["dhcp_start"]) > ipaddress.ip_address(got["gateway"])
        others = [[o["guest_subnet"], o["address"]] for o in inventory["hosts"] if o["name"] != host["name"]]
        assert got["routes"] == others


def _mutate(change: Any) -> dict[str, Any]:
    data = json.loads(INVENTORY.read_text())
    change(data)
    return data


def _set(path: tuple[Any, ...], value: Any) -> Any:
    def change(data: dict[str, Any]) -> None:
        target: Any = data
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def _drop(path: tuple[Any, ...]) -> Any:
    def change(data: dict[str, Any]) -> None:
        target: Any = data
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return change


BAD_INVENTORIES = [
    ("subnet outside the test space", _set(("hosts", 0, "guest_subnet"), "10.0.0.0/24"), "outside 198.18.0.0/15"),
    ("rack outside the test space", _set(("rack", "subnet"), "192.168.50.0/24"), "outside 198.18.0.0/15"),
    ("guest subnets overlap", _set(("hosts", 1, "guest_subnet"), "198.18.11.0/24"), "overlaps hosts[0]"),
    ("guest subnet overlaps the rack", _set(("hosts", 0, "guest_subnet"), "198.18.10.0/24"), "overlaps rack"),
    ("guest subnet not a /24", _set(("hosts", 0, "guest_subnet"), "198.18.14.0/23"), "must be a /24"),
    ("host bits set", _set(("hosts", 0, "guest_subnet"), "198.18.11.5/24"), "host bits set"),
    ("not a subnet", _set(("hosts", 0, "guest_subnet"), "198.18.11/24"), "is not an IPv4 subnet"),
    ("same name twice", _set(("hosts", 1, "name"), "kvm1"), "same name kvm1"),
    ("same address twice", _set(("hosts", 1, "address"), "198.18.10.11"), "same address"),
    ("address outside the rack", _set(("hosts", 0, "address"), "198.18.20.11"), "not in the rack subnet"),
    ("address of the Vagrant side", _set(("controller", "address"), "198.18.10.1"), "host-side address"),
    ("zone missing", _drop(("hosts", 0, "zone")), 'hosts[0] lacks "zone"'),
    ("zone not a string", _set(("hosts", 0, "zone"), 1), "hosts[0].zone must be a string"),
    ("zone with a space", _set(("hosts", 0, "zone"), "zone 1"), "hosts[0].zone"),
    ("misspelt key", _set(("hosts", 0, "zones"), ["1"]), 'unknown key "zones"'),
    ("memory not whole", _set(("hosts", 0, "memory"), 4096.5), "memory must be a whole number"),
    ("memory too small", _set(("controller", "memory"), 256), "at least 1024"),
    ("cpus as a string", _set(("hosts", 0, "cpus"), "2"), "cpus must be a whole number"),
    ("no hosts", _set(("hosts",), []), "hosts must be a list"),
    ("bad host name", _set(("hosts", 0, "name"), "KVM1"), "hosts[0].name"),
    ("name ending in '-'", _set(("hosts", 0, "name"), "kvm-"), "not ending with '-'"),
    ("shell in the network name", _set(("guest_network",), "net;reboot"), "guest_network"),
    ("shell in the box name", _set(("box",), "debian/$(id)"), "box"),
]


@pytest.mark.parametrize("change,expected", [c[1:] for c in BAD_INVENTORIES], ids=[c[0] for c in BAD_INVENTORIES])
def test_the_ruby_loader_refuses_bad_inventories_in_one_line(
    ruby: str, tmp_path: Path, change: Any, expected: str
) -> None:
    path = tmp_path / "inventory.json"
    path.write_text(json.dumps(_mutate(change)))
    out = tmp_path / "state"
    done = _ruby(ruby, "prepare", str(path), str(out))
    assert done.returncode == 2, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("localvmss lab: "), done.stderr
    assert expected in lines[0]
    assert not out.exists(), "a refused inventory must write nothing"


def test_the_ruby_loader_refuses_a_file_that_is_not_json(ruby: str, tmp_path: Path) -> None:
    path = tmp_path / "inventory.json"
    path.write_text("hosts:\n  - kvm1\n")
    done = _ruby(ruby, "plan", str(path))
    assert done.returncode == 2
    assert done.stderr.startswith("localvmss lab: ") and "is not valid JSON" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


# -- the files each machine is given -------------------------------------------------------------


def _files(state: dict[str, Any], name: str) -> Path:
    return Path(state["state_dir"]) / name


def test_the_controller_config_is_one_localvmssd_accepts(state: dict[str, Any], inventory: dict[str, Any]) -> None:
    toml = _files(state, inventory["controller"]["name"]) / "localvmssd.toml"
    cfg = load_config(toml, environ={})
    got = [(h.name, h.uri, h.network, h.zone, h.serial_log_read_dir) for h in cfg.hosts]
    want = [
        (h["name"], f"qemu+ssh://root@{h['address']}/system", inventory["guest_network"], h["zone"], "")
        for h in inventory["hosts"]
    ]
    assert got == want
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALVMSSD_")}
    daemon = Path(sys.executable).with_name("localvmssd")
    done = subprocess.run(
        [str(daemon), "--check-config", "--config", str(toml)], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "is valid" in done.stdout


def test_each_guest_network_is_a_routed_libvirt_network(state: dict[str, Any], inventory: dict[str, Any]) -> None:
    schema = etree.RelaxNG(etree.parse(str(NETWORK_RNG)))
    for host in inventory["hosts"]:
        doc = etree.parse(str(_files(state, host["name"]) / "guest-network.xml"))
        assert schema.validate(doc), schema.error_log
        net = ipaddress.ip_network(host["guest_subnet"])
        root = doc.getroot()
        assert root.findtext("name") == inventory["guest_network"]
        assert root.find("forward").get("mode") == "route"  # no NAT: the controller reaches guest IPs
        assert root.find("forward/nat") is None
        ip = root.find("ip")
        assert (ip.get("address"), ip.get("netmask")) == (str(net.network_address + 1), str(net.netmask))
        rng = ip.find("dhcp/range")
        assert ipaddress.ip_address(rng.get("start")) in net and ipaddress.ip_address(rng.get("end")) in net


def test_a_real_libvirtd_starts_the_routed_network_as_provisioning_does(
    state: dict[str, Any], inventory: dict[str, Any], testbed: Testbed
) -> None:
    """kvm-host.sh's virsh steps (net-define, net-autostart, net-start) with the generated XML
    unchanged, on a lab host of the test harness (libvirtd in its own network namespace, so the
    bridge, dnsmasq and libvirt's forwarding rules for route mode stay inside it)."""
    assert testbed.lab is not None
    lab_host = testbed.lab.hosts[0]
    host = inventory["hosts"][0]
    xml = _files(state, host["name"]) / "guest-network.xml"
    net = inventory["guest_network"]

    def virsh(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["virsh", "-c", lab_host.socket_uri, *args], capture_output=True, text=True, timeout=60)

    try:
        for step in (("net-define", str(xml)), ("net-autostart", net), ("net-start", net)):
            done = virsh(*step)
            assert done.returncode == 0, f"virsh {' '.join(step)}: {done.stderr.strip()}"
        info = virsh("net-info", net).stdout
        assert "Active:         yes" in info and "Autostart:      yes" in info, info
        live = etree.fromstring(virsh("net-dumpxml", net).stdout.encode())
        assert live.find("forward").get("mode") == "route"
        assert live.find("ip").get("address") == str(ipaddress.ip_network(host["guest_subnet"]).network_address + 1)
        addresses = subprocess.run(
            ["ip", "-n", lab_host.netns, "-4", "-o", "addr", "show", "dev", "lvmssbr0"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        assert f"{ipaddress.ip_network(host['guest_subnet']).network_address + 1}/24" in addresses
    finally:
        virsh("net-destroy", net)
        virsh("net-undefine", net)
    assert virsh("net-info", net).returncode != 0, "the network must be gone again"


def _ssh_options(config: Path, host: str) -> dict[str, str]:
    done = subprocess.run(["ssh", "-G", "-F", str(config), host], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    options: dict[str, str] = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition(" ")
        options.setdefault(key, value)
    return options


def test_the_controller_reaches_each_host_as_root_with_a_known_host_key(
    state: dict[str, Any], inventory: dict[str, Any]
) -> None:
    ctl = _files(state, inventory["controller"]["name"])
    client_pub = " ".join((ctl / "id_ed25519.pub").read_text().split()[:2])
    for host in inventory["hosts"]:
        for name in (host["name"], host["address"]):  # qemu+ssh://root@kvm1/system and @ADDR alike
            opts = _ssh_options(ctl / "ssh_config", name)
            assert opts["hostname"] == host["address"]
            assert opts["user"] == "root"
            assert opts["identityfile"] == "/etc/localvmss/ssh/id_ed25519"
            assert opts["globalknownhostsfile"] == "/etc/localvmss/ssh/known_hosts"
            assert opts["stricthostkeychecking"] == "true"
            assert opts["batchmode"] == "yes"
            found = subprocess.run(
                ["ssh-keygen", "-F", name, "-f", str(ctl / "known_hosts")], capture_output=True, text=True, timeout=30
            )
            assert found.returncode == 0, f"{name} is not in known_hosts"
            host_pub = " ".join((_files(state, host["name"]) / "ssh_host_ed25519_key.pub").read_text().split()[:2])
            assert host_pub in found.stdout
        authorized = (_files(state, host["name"]) / "authorized_keys").read_text().strip()
        assert authorized.startswith(f'from="{inventory["controller"]["address"]}",restrict,pty ')
        assert client_pub in authorized


def test_keys_are_private_and_made_once(ruby: str, state: dict[str, Any]) -> None:
    root = Path(state["state_dir"])
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    keys = sorted(root.glob("*/id_ed25519")) + sorted(root.glob("*/ssh_host_ed25519_key"))
    assert len(keys) == 3
    before = {k: k.read_bytes() for k in keys}
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    again = _ruby(ruby, "prepare", str(INVENTORY), str(root))
    assert again.returncode == 0, again.stderr
    assert {k: k.read_bytes() for k in keys} == before, "a second prepare must keep the keys"


def test_the_checkout_reaches_the_controller_without_the_lab_keys(state: dict[str, Any], tmp_path: Path) -> None:
    """The Vagrantfile's rsync excludes, given to rsync as Vagrant gives them (plus its own
    '.vagrant/'), over a tree shaped like the checkout: keys, venv and caches stay behind."""
    _need("rsync")
    src = tmp_path / "checkout"
    for rel in (
        "localvmss/daemon.py",
        "vagrant/Vagrantfile",
        "vagrant/provision/controller.sh",
        "vagrant/.lab/controller/id_ed25519",
        "vagrant/.lab/kvm1/ssh_host_ed25519_key",
        "vagrant/.vagrant/machines/kvm1/id",
        ".venv/bin/python",
        ".cache/images/localvmss-base/image.json",
        ".git/HEAD",
        "docs/.lab/kept.md",  # the excludes are anchored: only vagrant/.lab is left out
    ):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text("x")
    checkout = state["checkout"]
    assert checkout["guest_path"] == "/opt/localvmss"
    assert "\nrepo=/opt/localvmss\n" in (PROVISION / "controller.sh").read_text()  # the static script agrees
    args = ["rsync", "-a", "-n", "--out-format=%n"]
    for pattern in [".vagrant/", *checkout["exclude"]]:
        args += ["--exclude", pattern]
    done = subprocess.run([*args, f"{src}/", str(tmp_path / "dest")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    sent = {line for line in done.stdout.splitlines() if not line.endswith("/")}
    assert sent == {
        "localvmss/daemon.py",
        "vagrant/Vagrantfile",
        "vagrant/provision/controller.sh",
        "docs/.lab/kept.md",
    }


def test_routes_files_are_the_plan(state: dict[str, Any]) -> None:
    for machine in state["machines"]:
        lines = (_files(state, machine["name"]) / "routes").read_text().splitlines()
        assert [line.split() for line in lines if not line.startswith("#")] == machine["routes"]


# -- the provisioning scripts --------------------------------------------------------------------

SCRIPTS = sorted(PROVISION.glob("*.sh")) + [PROVISION / "lab-routes"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_provisioning_scripts_parse(script: Path) -> None:
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert script.read_text().startswith("#!/usr/bin/env bash\n")
    if shutil.which("shellcheck"):
        lint = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True, timeout=60)
        assert lint.returncode == 0, lint.stdout


def test_the_routes_unit_verifies(tmp_path: Path) -> None:
    _need("systemd-analyze", "systemd")
    unit = (PROVISION / "localvmss-lab-routes.service").read_text()
    assert "ExecStart=/usr/local/sbin/localvmss-lab-routes " in unit  # where routes.sh installs it
    here = tmp_path / "localvmss-lab-routes.service"
    here.write_text(unit.replace("/usr/local/sbin/localvmss-lab-routes", str(PROVISION / "lab-routes")))
    done = subprocess.run(
        ["systemd-analyze", "verify", "--recursive-errors=no", str(here)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture
def netns() -> Any:
    """A network namespace with a veth pair standing in for the rack (198.18.10.10/24)."""
    if os.geteuid() != 0:
        pytest.fail("this test needs root (a network namespace): run 'sudo make test'")
    name = f"lvmss-vgt{os.getpid() % 100000}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for cmd in (
            ["ip", "link", "add", "rack0", "type", "veth", "peer", "name", "rack1"],
            ["ip", "addr", "add", "198.18.10.10/24", "dev", "rack0"],
            ["ip", "link", "set", "rack0", "up"],
            ["ip", "link", "set", "rack1", "up"],
        ):
            subprocess.run(["ip", "netns", "exec", name, *cmd], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _routes(ns: str) -> str:
    return subprocess.run(["ip", "-n", ns, "route", "show"], capture_output=True, text=True, check=True).stdout


def _lab_routes(netns: str, routes: Path) -> subprocess.CompletedProcess[str]:
    """The provisioning's route helper, run in the test's namespace."""
    return subprocess.run(
        ["ip", "netns", "exec", netns, "bash", str(PROVISION / "lab-routes"), str(routes)],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_lab_routes_makes_the_routes_and_refuses_a_bad_file_whole(netns: str, tmp_path: Path) -> None:
    good = tmp_path / "routes"
    good.write_text("# SUBNET VIA\n198.18.11.0/24 198.18.10.11\n198.18.12.0/24 198.18.10.12\n")
    done = _lab_routes(netns, good)
    assert done.returncode == 0, done.stderr
    table = _routes(netns)
    assert "198.18.11.0/24 via 198.18.10.11 dev rack0" in table
    assert "198.18.12.0/24 via 198.18.10.12 dev rack0" in table

    bad = tmp_path / "bad"
    bad.write_text("198.18.13.0/24 198.18.10.13\n198.18.14.0/24 $(reboot)\n")
    refused = _lab_routes(netns, bad)
    assert refused.returncode == 2
    assert "line 2 is not 'SUBNET VIA'" in refused.stderr and "no route changed" in refused.stderr
    assert _routes(netns) == table, "the good first line of a bad file must not be applied"
