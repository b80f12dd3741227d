"""The README's main command: a demo scale set of 2 serving through HAProxy on 127.0.0.1.

``python -m localvmss.lab.demo up`` makes a one-host lab (libvirtd in its own network namespace, so
guest traffic never leaves this machine), starts ``localvmssd`` on it as users start it, imports
the base image, creates the set ``demo`` with a load-balancing rule 127.0.0.1:8080 -> :80 and an
SSH NAT pool 127.0.0.1:20000+ -> :22, waits until it serves, and prints how to reach it.
``down`` removes all of it. The demo keeps running between the two.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from localvmss.cli.client import ApiClient
from localvmss.errors import LocalVMSSError
from localvmss.lab.hosts import Lab, LabError, destroy_lab
from localvmss.lab.testbed import DEFAULT_IMAGE_DIR, DaemonProcess, Testbed

TAG = "demo"
STATE = Path("/var/lib/localvmss-demo")
LB_PORT = 8080
NAT_START = 20000  # below the kernel's ephemeral range (32768-60999), which the daemon refuses


def _cli(*args: str) -> int:
    exe = Path(sys.executable).parent / "localvmss"
    env = {**os.environ, "LOCALVMSS_SOCKET": str(STATE / "api.sock")}
    return subprocess.call([str(exe), *args], env=env)


def up(count: int) -> int:
    if os.geteuid() != 0:
        print("localvmss demo: run as root (sudo make demo)", file=sys.stderr)
        return 1
    down(quiet=True)
    STATE.mkdir(parents=True, exist_ok=True)
    key = STATE / "demo_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    print("==> making a lab host (libvirtd in network namespace lvmss-demo-h1)")
    testbed = Testbed(TAG, 1)
    lab = testbed.up()
    lab.owner_pid = 1  # outlives this command until 'make demo-down'
    lab.save()
    daemon = testbed.daemon(STATE, exporter_port=9464, prometheus_port=9490, haproxy_stats_port=9480)
    print(f"==> starting localvmssd (log {daemon.log_path})")
    daemon.start()
    (STATE / "localvmssd.pid").write_text(str(daemon.pid))
    client = ApiClient(str(daemon.socket_path))
    client.put("/images/base", {"sourceDirectory": str(DEFAULT_IMAGE_DIR)})
    for host in client.get("/hosts")["value"]:
        print(f"==> {host['accelerator']}")
    print(f"==> creating scale set 'demo' with {count} instances")
    code = _cli(
        "create",
        "demo",
        "--image",
        "base",
        "--instance-count",
        str(count),
        "--lb-rule",
        f"{LB_PORT}:80",
        "--health-probe",
        "http:/healthz",
        "--nat-pool",
        f"{NAT_START}-{NAT_START + 99}:22",
        "--ssh-key-value",
        f"{key}.pub",
        "--computer-name-prefix",
        "demo",
    )
    if code != 0:
        print(f"localvmss demo: creating the scale set failed; daemon log: {daemon.log_path}", file=sys.stderr)
        return code
    _cli("list-instances", "demo")
    seen = set()
    for _ in range(20):
        with urllib.request.urlopen(f"http://127.0.0.1:{LB_PORT}/", timeout=5) as resp:
            seen.add(resp.read().decode().strip())
    print(f"\n==> 20 requests to http://127.0.0.1:{LB_PORT}/ were answered by: {', '.join(sorted(seen))}")
    info = {
        i["instanceId"]: i["properties"]["networkProfile"]["natPort"]
        for i in client.get("/scaleSets/demo/virtualMachines")["value"]
    }
    sock = daemon.socket_path
    print(f"""
The demo scale set is serving. Try:
  curl http://127.0.0.1:{LB_PORT}/                      # answered by each instance in turn
  export LOCALVMSS_SOCKET={sock}
  .venv/bin/localvmss list-instances demo
  .venv/bin/localvmss scale demo --new-capacity 3
  .venv/bin/localvmss get-instance-view demo
  .venv/bin/localvmss run-command demo --instance-id 0 --scripts 'uptime'
  ssh -i {key} -p {next(iter(info.values()))} root@127.0.0.1   # instance 0 through the NAT pool
  .venv/bin/localvmss list-instance-connection-info demo
Guests live in 198.18.x.0/24 inside network namespace {lab.hosts[0].netns}; HAProxy on
127.0.0.1 forwards to them. Prometheus: http://127.0.0.1:9490  HAProxy stats: http://127.0.0.1:9480/stats
Remove everything with: make demo-down""")
    client.close()
    return 0


def _daemon() -> DaemonProcess:
    """The demo daemon as ``Testbed.daemon`` made it (config, socket and log in STATE)."""
    return DaemonProcess(STATE / "localvmssd.toml", STATE / "api.sock", STATE / "localvmssd.log")


def down(quiet: bool = False) -> int:
    failed = False
    pidfile = STATE / "localvmssd.pid"
    if pidfile.exists():
        pid = int(pidfile.read_text() or 0)
        cmdline = Path(f"/proc/{pid}/cmdline")
        if pid and cmdline.exists() and b"localvmss.daemon" in cmdline.read_bytes():
            try:
                client = ApiClient(str(STATE / "api.sock"), timeout=10)
                client.delete("/scaleSets/demo")
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    try:
                        client.get("/scaleSets/demo")
                        time.sleep(1)
                    except LocalVMSSError:
                        break
            except LocalVMSSError:
                pass
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if not cmdline.exists():
                    break
                time.sleep(0.2)
        pidfile.unlink()
    # HAProxy and Prometheus outlive the daemon (a new one adopts them): end them for good.
    # Also when the daemon had died already (its data plane may still hold 8080).
    if (STATE / "localvmssd.toml").exists():
        try:
            _daemon().stop_data_plane()
        except RuntimeError as exc:
            print(f"localvmss demo: {exc}", file=sys.stderr)
            failed = True
    lab = Lab.load(TAG)
    if lab is not None:
        try:
            destroy_lab(lab)
        except LabError as exc:
            print(f"localvmss demo: {exc}", file=sys.stderr)
            return 1
    if failed:
        # Keep STATE: its config is what 'localvmssd --stop-data-plane' needs to try again.
        return 1
    shutil.rmtree(STATE, ignore_errors=True)
    if not quiet:
        print("demo removed")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localvmss.lab.demo", description="localvmss demo scale set")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up")
    p_up.add_argument("--instances", type=int, default=2)
    sub.add_parser("down")
    args = parser.parse_args(argv)
    try:
        return up(args.instances) if args.cmd == "up" else down()
    except (LocalVMSSError, LabError, RuntimeError) as exc:
        print(f"localvmss demo: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
