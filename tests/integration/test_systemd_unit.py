"""The systemd unit as systemd itself judges it (offline: systemd need not be PID 1 here), and
`make install`'s layout. The daemon's side of the notify protocol is tests/e2e/test_systemd.py."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from localvmss.config import load_config

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "localvmssd.service"
INSTALLED_BINARY = "/usr/local/sbin/localvmssd"


def _unit_pointing_at_this_checkout(tmp_path: Path) -> Path:
    """The unit with ExecStart at this checkout's venv: `verify` checks that the binary exists,
    and a test must not install into /usr/local."""
    text = UNIT.read_text()
    assert f"ExecStart={INSTALLED_BINARY} " in text
    local = tmp_path / "localvmssd.service"
    local.write_text(text.replace(f"ExecStart={INSTALLED_BINARY} ", f"ExecStart={ROOT}/.venv/bin/localvmssd "))
    return local


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    done = subprocess.run(
        ["systemd-analyze", "verify", str(_unit_pointing_at_this_checkout(tmp_path))], capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr


def test_systemd_analyze_security_rates_the_unit_at_most_4(tmp_path: Path) -> None:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(_unit_pointing_at_this_checkout(tmp_path))],
        capture_output=True,
        text=True,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert match, done.stdout[-500:] + done.stderr
    print(f"systemd-analyze security: {match.group(1)}")
    assert float(match.group(1)) <= 4.0, done.stdout


def test_the_unit_says_what_the_daemon_does() -> None:
    """Directives the daemon's behaviour depends on (a change here needs a change there)."""
    lines = {
        line.split("=", 1)[0]: line.split("=", 1)[1]
        for line in UNIT.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert lines["Type"] == "notify" and lines["NotifyAccess"] == "main"
    assert lines["KillMode"] == "process"  # HAProxy and Prometheus outlive the daemon
    assert "libvirtd.service" in lines["Wants"] and "Requires" not in lines
    assert lines["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert int(lines["WatchdogSec"]) > 0


def test_make_install_lays_out_the_unit_links_and_config_without_overwriting(tmp_path: Path) -> None:
    dest = tmp_path / "root"
    env = {**os.environ, "DESTDIR": str(dest)}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "install")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (dest / "etc/systemd/system/localvmssd.service").read_text() == UNIT.read_text()
    assert os.readlink(dest / "usr/local/sbin/localvmssd") == str(ROOT / ".venv/bin/localvmssd")
    assert os.readlink(dest / "usr/local/bin/localvmss") == str(ROOT / ".venv/bin/localvmss")
    assert (dest / "usr/local/share/localvmss/prometheus/localvmss-rules.yml").is_file()
    assert (dest / "usr/local/share/localvmss/dashboards/localvmss.json").is_file()
    config = dest / "etc/localvmss/localvmssd.toml"
    assert load_config(config, {}).hosts[0].name == "local"
    config.write_text('# mine\nstate_dir = "/srv/lvmss"\n')
    again = subprocess.run(["bash", str(ROOT / "scripts" / "install")], env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "keeping the existing" in again.stdout
    assert config.read_text() == '# mine\nstate_dir = "/srv/lvmss"\n'


def test_check_config_and_version_answer_without_starting(tmp_path: Path) -> None:
    daemon = [str(ROOT / ".venv/bin/localvmssd")]
    version = subprocess.run([*daemon, "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("localvmssd ") and "libvirt-python" in version.stdout
    example = ROOT / "systemd" / "localvmssd.toml.example"
    ok = subprocess.run([*daemon, "--config", str(example), "--check-config"], capture_output=True, text=True)
    assert ok.returncode == 0 and "is valid" in ok.stdout, ok.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("memory_overcommit = 'lots'\n")
    refused = subprocess.run([*daemon, "--config", str(bad), "--check-config"], capture_output=True, text=True)
    assert refused.returncode == 2 and "memory_overcommit" in refused.stderr and refused.stderr.count("\n") == 1
    env = {**os.environ, "LOCALVMSSD_API_SOCKET_GROUP": "no-such-group-here"}
    group = subprocess.run(
        [*daemon, "--config", str(example), "--check-config"], capture_output=True, text=True, env=env
    )
    assert group.returncode == 2 and "no-such-group-here" in group.stderr
