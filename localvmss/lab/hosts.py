"""Lab hosts: private libvirt hosts inside network namespaces on this machine.

Used by the test harness and by the demo so that guest traffic never leaves namespaces we made.
A lab host is a network namespace plus a private mount namespace in which its own ``virtlogd``
and ``libvirtd`` run with their own /etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/log/libvirt
and /var/cache/libvirt (bind-mounted from a state directory). Every host of a lab joins a "rack"
bridge in the root namespace (198.19.<slot>.0/24). Guests of host k live on
198.18.<16*slot+k>.0/24, routed from the root namespace through the host's rack address, so
HAProxy and Prometheus on loopback reach them and nothing else can. A lab owns a slot (a lock
file) so several labs (parallel test runs) never collide.

Who can drive a lab host: only root. libvirtd listens on no TCP or TLS port (no ``--listen``,
``listen_tcp = 0``); its only sockets are the unix ones in the state directory, mode 0700 owned
by root (read-write, read-only and admin alike), so the daemon, the tests and the demo reach it
as ``LabHost.socket_uri`` (``qemu+unix:///system?socket=<state>/run/libvirt-sock``). Before,
libvirtd listened on its rack address with ``auth_tcp = "none"`` and any local user could
define a domain with any host file as its disk.

QEMU runs unprivileged: as Debian's ``libvirt-qemu`` user and group (with its supplementary
group ``kvm`` for /dev/kvm), as on a stock Debian host. ``security_driver = "none"`` turns off
AppArmor confinement only; libvirt's DAC driver still runs, and with ``dynamic_ownership = 1``
it chowns each guest's overlay, seed, base image (backing chain) and kernel/initrd volumes to
that user before QEMU starts (``remember_owner`` puts the owner back afterwards). QEMU only
opens paths under the host's own bind-mounted /var/lib/libvirt, /run/libvirt and
/var/log/libvirt, whose mount roots are 0755 (0711 for /var/cache/libvirt, as on Debian); the
parents of the state directory (/var/lib/localvmss-lab/<tag>/h<k>) are never traversed from
inside. Serial logs are written by virtlogd (root) and read by root from outside.

Run as a module: ``python -m localvmss.lab up --tag demo --hosts 1`` / ``down --tag demo`` /
``gc`` (tear down labs whose owner died).
"""

from __future__ import annotations

import argparse
import fcntl
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

LAB_ROOT = Path(os.environ.get("LOCALVMSS_LAB_ROOT", "/var/lib/localvmss-lab"))
MAX_SLOTS = 15
HOSTS_PER_LAB = 8

BIND_DIRS = {
    "etc": "/etc/libvirt",
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "log": "/var/log/libvirt",
    "cache": "/var/cache/libvirt",
}

# Modes of the bind-mount roots, as Debian's packages make the real directories.
BIND_DIR_MODES = {"etc": 0o755, "run": 0o755, "lib": 0o755, "log": 0o755, "cache": 0o711}

QEMU_USER = "libvirt-qemu"
QEMU_GROUP = "libvirt-qemu"

QEMU_CONF_OVERRIDES = f"""
# localvmss lab host overrides: QEMU unprivileged, libvirt's DAC driver labels its files
user = "{QEMU_USER}"
group = "{QEMU_GROUP}"
dynamic_ownership = 1
remember_owner = 1
security_driver = "none"
"""

# Only root reaches a lab host's libvirtd, and only through its unix sockets.
LIBVIRTD_CONF_OVERRIDES = """
# localvmss lab host: no network listener; unix sockets for root only
listen_tls = 0
listen_tcp = 0
unix_sock_group = "root"
unix_sock_rw_perms = "0700"
unix_sock_ro_perms = "0700"
unix_sock_admin_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
"""


class LabError(RuntimeError):
    """A lab host could not be made or removed; the message says which step failed."""


def _run(args: list[str], *, check: bool = True, netns: str | None = None) -> subprocess.CompletedProcess[str]:
    full = (["ip", "netns", "exec", netns] + args) if netns else args
    proc = subprocess.run(full, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(full)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class LabHost:
    """One libvirt host of a lab."""

    name: str
    index: int
    netns: str
    state_dir: str
    rack_address: str
    guest_network: str  # CIDR of the libvirt network on this host
    network_name: str
    bridge: str
    libvirtd_pid: int = 0

    @property
    def socket_path(self) -> str:
        """libvirtd's read-write unix socket, seen from outside the host's mount namespace."""
        return f"{self.state_dir}/run/libvirt-sock"

    @property
    def socket_uri(self) -> str:
        """The only way to reach the host's libvirtd (root only; it listens on no TCP port)."""
        return f"qemu+unix:///system?socket={self.socket_path}"

    @property
    def uri(self) -> str:
        """The URI the daemon is configured with: the same unix socket as ``socket_uri``."""
        return self.socket_uri

    @property
    def gateway(self) -> str:
        return str(next(ipaddress.ip_network(self.guest_network).hosts()))


@dataclass
class Lab:
    """A set of lab hosts sharing one rack bridge; owns a slot lock while it lives."""

    tag: str
    slot: int
    owner_pid: int
    rack_bridge: str
    rack_gateway: str
    hosts: list[LabHost] = field(default_factory=list)

    @property
    def state_dir(self) -> Path:
        return LAB_ROOT / self.tag

    def save(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)  # libvirtd sockets and guest files: root's business only
        tmp = self.state_dir / "lab.json.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, self.state_dir / "lab.json")

    @classmethod
    def load(cls, tag: str) -> Lab | None:
        path = LAB_ROOT / tag / "lab.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        hosts = [LabHost(**h) for h in data.pop("hosts")]
        return cls(hosts=hosts, **data)


_slot_locks: dict[int, int] = {}


def _claim_slot() -> int:
    """Take the first free slot; the lock file stays locked until this process ends."""
    locks = LAB_ROOT / "slots"
    locks.mkdir(parents=True, exist_ok=True)
    # Labs that outlive their creator (the demo) hold their slot through their lab.json.
    recorded = set()
    for path in LAB_ROOT.glob("*/lab.json"):
        try:
            recorded.add(int(json.loads(path.read_text())["slot"]))
        except (OSError, ValueError, KeyError):
            continue
    for slot in range(MAX_SLOTS):
        if slot in recorded:
            continue
        fd = os.open(locks / f"{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        _slot_locks[slot] = fd
        return slot
    raise LabError(f"all {MAX_SLOTS} lab slots are in use; run 'python -m localvmss.lab gc'")


def _release_slot(slot: int) -> None:
    fd = _slot_locks.pop(slot, None)
    if fd is not None:
        os.close(fd)


def _short(tag: str) -> str:
    """Interface names are limited to 15 characters."""
    return "".join(c for c in tag if c.isalnum())[:6]


def create_lab(tag: str, host_count: int = 1) -> Lab:
    """Make a lab of ``host_count`` libvirt hosts; raises LabError (after cleaning up) on failure."""
    if not 1 <= host_count <= HOSTS_PER_LAB:
        raise LabError(f"a lab has 1 to {HOSTS_PER_LAB} hosts, not {host_count}")
    if os.geteuid() != 0:
        raise LabError("lab hosts need root (network namespaces and libvirtd): run as root")
    existing = Lab.load(tag)
    if existing is not None:
        destroy_lab(existing)
    slot = _claim_slot()
    short = _short(tag)
    lab = Lab(
        tag=tag,
        slot=slot,
        owner_pid=os.getpid(),
        rack_bridge=f"lvr{short}{slot}"[:15],
        rack_gateway=f"198.19.{slot}.1",
    )
    lab.save()
    try:
        _run(["ip", "link", "add", lab.rack_bridge, "type", "bridge"])
        _run(["ip", "addr", "add", f"{lab.rack_gateway}/24", "dev", lab.rack_bridge])
        _run(["ip", "link", "set", lab.rack_bridge, "up"])
        for k in range(1, host_count + 1):
            host = _create_host(lab, k, short)
            lab.hosts.append(host)
            lab.save()
        for host in lab.hosts:
            wait_libvirtd(host)
    except BaseException:
        destroy_lab(lab)
        raise
    return lab


def _rack_link(lab: Lab, k: int) -> str:
    """The host-side end of host ``k``'s veth to the rack bridge (the other end is its rack0)."""
    return f"lvr{lab.slot}h{k}{_short(lab.tag)}"[:15]


def _create_host(lab: Lab, k: int, short: str) -> LabHost:
    netns = f"lvmss-{lab.tag}-h{k}"
    state = lab.state_dir / f"h{k}"
    host = LabHost(
        name=f"h{k}",
        index=k,
        netns=netns,
        state_dir=str(state),
        rack_address=f"198.19.{lab.slot}.{10 + k}",
        guest_network=f"198.18.{16 * lab.slot + k}.0/24",
        network_name="lvmss-net",
        bridge=f"lvb{short}{lab.slot}h{k}"[:15],
    )
    _run(["ip", "netns", "add", netns])
    _run(["ip", "link", "set", "lo", "up"], netns=netns)
    _run(["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"], netns=netns)
    outer, inner = _rack_link(lab, k), f"lvi{lab.slot}h{k}"
    _run(["ip", "link", "add", outer, "type", "veth", "peer", "name", inner])
    _run(["ip", "link", "set", inner, "netns", netns])
    _run(["ip", "link", "set", outer, "master", lab.rack_bridge])
    _run(["ip", "link", "set", outer, "up"])
    _run(["ip", "link", "set", inner, "name", "rack0"], netns=netns)
    _run(["ip", "addr", "add", f"{host.rack_address}/24", "dev", "rack0"], netns=netns)
    _run(["ip", "link", "set", "rack0", "up"], netns=netns)
    _run(["ip", "route", "replace", host.guest_network, "via", host.rack_address])
    # Guests of other lab hosts are reachable across the rack, as in a real rack.
    for other in range(1, HOSTS_PER_LAB + 1):
        if other != k:
            _run(
                [
                    "ip",
                    "route",
                    "replace",
                    f"198.18.{16 * lab.slot + other}.0/24",
                    "via",
                    f"198.19.{lab.slot}.{10 + other}",
                ],
                netns=netns,
            )
    _prepare_state_dir(state)
    start_libvirtd(host)
    return host


def start_libvirtd(host: LabHost) -> int:
    """Start the host's virtlogd + libvirtd in its namespaces (also to bring a stopped host back);
    records and returns libvirtd's pid. The caller saves the lab."""
    state = Path(host.state_dir)
    with open(state / "libvirtd.stderr", "ab") as log:
        proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                host.netns,
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "--",
                sys.executable,
                "-m",
                "localvmss.lab",
                "_host-init",
                str(state),
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    host.libvirtd_pid = proc.pid
    return proc.pid


def _prepare_state_dir(state: Path) -> None:
    """The host's private libvirt directories: root-only state dir, Debian's modes on the
    bind-mount roots, Debian's /etc/libvirt plus the lab overrides."""
    if state.exists():
        shutil.rmtree(state)
    state.mkdir(parents=True, mode=0o700)
    os.chmod(state, 0o700)  # mkdir's mode is masked by the umask
    for sub in BIND_DIRS:
        (state / sub).mkdir()
        os.chmod(state / sub, BIND_DIR_MODES[sub])
    shutil.copytree("/etc/libvirt", state / "etc", dirs_exist_ok=True)
    # The host's own network definitions (e.g. 'default' on 192.168.122.0/24) must not come along.
    for leftover in ("qemu/networks", "qemu/autostart", "storage", "nwfilter"):
        shutil.rmtree(state / "etc" / leftover, ignore_errors=True)
    for sub in ("qemu", "storage"):
        (state / "etc" / sub).mkdir(exist_ok=True)
    for name in list((state / "etc" / "qemu").glob("*.xml")):
        name.unlink()
    with open(state / "etc" / "qemu.conf", "a") as conf:
        conf.write(QEMU_CONF_OVERRIDES)
    with open(state / "etc" / "libvirtd.conf", "a") as conf:
        conf.write(LIBVIRTD_CONF_OVERRIDES)


def host_init(state_dir: str) -> None:
    """Runs inside the lab host's namespaces: bind its private dirs, start virtlogd, exec libvirtd."""
    state = Path(state_dir)
    for sub, target in BIND_DIRS.items():
        Path(target).mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "--bind", str(state / sub), target], check=True)
    virtlogd = subprocess.Popen(["virtlogd", "-p", str(state / "run" / "virtlogd.pid")], stdin=subprocess.DEVNULL)
    (state / "virtlogd.pid").write_text(str(virtlogd.pid))
    # No --listen: the unix sockets (root only, see LIBVIRTD_CONF_OVERRIDES) are the only way in.
    os.execvp("libvirtd", ["libvirtd", "-p", str(state / "run" / "libvirtd.pid")])


def wait_libvirtd(host: LabHost, timeout: float = 30.0) -> None:
    """Return once the host's libvirtd answers ``virsh version`` on its unix socket; raises
    LabError if libvirtd exits first or does not answer within ``timeout``."""
    sock = Path(host.socket_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(host.libvirtd_pid):
            log = (Path(host.state_dir) / "libvirtd.stderr").read_text(errors="replace").strip()
            last = log.splitlines()[-1] if log else "no output"
            raise LabError(f"libvirtd of lab host {host.name} exited at start: {last}")
        if sock.exists():
            probe = _run(["virsh", "-c", host.socket_uri, "version"], check=False)
            if probe.returncode == 0:
                return
        time.sleep(0.2)
    raise LabError(f"libvirtd of lab host {host.name} did not answer on {host.socket_uri} within {timeout:.0f} s")


def _kill(pid: int, timeout: float = 10.0) -> None:
    if not _pid_alive(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
        except ChildProcessError:
            if not _pid_alive(pid):
                return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _read_pid(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def _destroy_host(host: LabHost) -> None:
    state = Path(host.state_dir)
    if _pid_alive(host.libvirtd_pid):
        # Destroy guests through libvirt first so qemu and dnsmasq exit cleanly.
        listing = _run(["virsh", "-c", host.socket_uri, "list", "--name"], check=False)
        for name in listing.stdout.split():
            _run(["virsh", "-c", host.socket_uri, "destroy", name], check=False)
        nets = _run(["virsh", "-c", host.socket_uri, "net-list", "--name"], check=False)
        for name in nets.stdout.split():
            _run(["virsh", "-c", host.socket_uri, "net-destroy", name], check=False)
    # Whatever is left (libvirtd gone before its guests): kill by the pid files it wrote.
    for pidfile in list((state / "run").rglob("*.pid")) if state.exists() else []:
        pid = _read_pid(pidfile)
        if pid and pid != os.getpid():
            _kill(pid)
    _kill(host.libvirtd_pid)
    _kill(_read_pid(state / "virtlogd.pid"))
    # Anything else still running inside the host's namespace (a daemon's metadata proxy whose
    # daemon never stopped its data plane) is the lab's too: it would keep the namespace alive.
    inside = _run(["ip", "netns", "pids", host.netns], check=False)
    for word in inside.stdout.split():
        if word.isdigit() and int(word) != os.getpid():
            _kill(int(word))
    _run(["ip", "netns", "del", host.netns], check=False)
    _run(["ip", "route", "del", host.guest_network], check=False)


def destroy_lab(lab: Lab) -> None:
    """Remove every host, link, route and state file of the lab; safe to call twice."""
    # Each host's rack veth is deleted here, at once, before its namespace: left to the kernel's
    # clean-up of a deleted namespace, it lingers for a while and the next lab on this slot (the
    # same link names) could not be made ("RTNETLINK answers: File exists").
    for host in lab.hosts:
        _run(["ip", "link", "del", _rack_link(lab, host.index)], check=False)
        _destroy_host(host)
    made = {host.index for host in lab.hosts}
    for k in range(1, HOSTS_PER_LAB + 1):  # hosts that were being created when a failure hit
        if k not in made:
            _run(["ip", "link", "del", _rack_link(lab, k)], check=False)
    # Hosts that were being created when a failure hit are found by their namespace names.
    known = {h.netns for h in lab.hosts}
    for ns in _run(["ip", "netns", "list"], check=False).stdout.split("\n"):
        name = ns.split(" ")[0]
        if name.startswith(f"lvmss-{lab.tag}-h") and name not in known:
            _run(["ip", "netns", "del", name], check=False)
    _run(["ip", "link", "del", lab.rack_bridge], check=False)
    shutil.rmtree(lab.state_dir, ignore_errors=True)
    _release_slot(lab.slot)


def collect_garbage() -> list[str]:
    """Tear down labs whose owner process is gone (an interrupted test run); returns their tags."""
    removed: list[str] = []
    if not LAB_ROOT.exists():
        return removed
    for path in LAB_ROOT.glob("*/lab.json"):
        lab = Lab.load(path.parent.name)
        if lab is not None and not _pid_alive(lab.owner_pid):
            destroy_lab(lab)
            removed.append(lab.tag)
    return removed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localvmss.lab", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="make a lab and keep it until 'down'")
    up.add_argument("--tag", required=True)
    up.add_argument("--hosts", type=int, default=1)
    down = sub.add_parser("down", help="remove a lab")
    down.add_argument("--tag", required=True)
    sub.add_parser("gc", help="remove labs whose owner is gone")
    init = sub.add_parser("_host-init")
    init.add_argument("state_dir")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "_host-init":
            host_init(args.state_dir)
        elif args.cmd == "up":
            lab = create_lab(args.tag, args.hosts)
            # The lab outlives this command: hand ownership to no one (gc ignores it while pid 1 lives).
            lab.owner_pid = 1
            lab.save()
            print(json.dumps(asdict(lab), indent=2))
        elif args.cmd == "down":
            found = Lab.load(args.tag)
            if found is not None:
                destroy_lab(found)
        elif args.cmd == "gc":
            for tag in collect_garbage():
                print(f"removed stale lab {tag}")
    except LabError as exc:
        print(f"localvmss lab: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
