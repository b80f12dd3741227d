"""The daemon's configuration: environment overrides, the token's sources, what a reload changes,
and the notify protocol's own parsing. The file's type checks are in test_api_and_config.py."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from localvmss.config import DaemonConfig, HostConfig, env_overrides, load_config, reload_changes
from localvmss.errors import InvalidSpec
from localvmss.sdnotify import Notifier, watchdog_interval


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"LOCALVMSSD_MEMORY_OVERCOMMIT": "1.2"}, {"memory_overcommit": 1.2}),
        ({"LOCALVMSSD_MAX_PARALLEL_BOOTS": "2"}, {"max_parallel_boots": 2}),
        ({"LOCALVMSSD_HAPROXY_ENABLED": "false"}, {"haproxy_enabled": False}),
        ({"LOCALVMSSD_STATE_DIR": "/srv/lvmss"}, {"state_dir": "/srv/lvmss"}),
        ({"LOCALVMSSD_PROMETHEUS_URL": ""}, {"prometheus_url": None}),
        ({"LOCALVMSSD_LOG_FORMAT": "json"}, {"log_format": "json"}),
        (
            {"LOCALVMSSD_HOSTS": '[{"name": "h1", "uri": "qemu:///system"}]'},
            {"hosts": [{"name": "h1", "uri": "qemu:///system"}]},
        ),
        ({"PATH": "/bin", "LOCALVMSS_OTHER": "x"}, {}),
    ],
)
def test_environment_overrides_are_parsed_by_the_keys_type(environ: dict, expected: dict) -> None:
    assert env_overrides(environ) == expected


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"LOCALVMSSD_BOGUS": "1"}, "unknown configuration variable LOCALVMSSD_BOGUS"),
        ({"LOCALVMSSD_MAX_PARALLEL_BOOTS": "many"}, "LOCALVMSSD_MAX_PARALLEL_BOOTS='many'"),
        ({"LOCALVMSSD_HAPROXY_ENABLED": "perhaps"}, "LOCALVMSSD_HAPROXY_ENABLED"),
        ({"LOCALVMSSD_HOSTS": "[{"}, "LOCALVMSSD_HOSTS must be JSON"),
        ({"LOCALVMSSD_LOG_FORMAT": "xml"}, "LOCALVMSSD_LOG_FORMAT"),
    ],
)
def test_bad_environment_overrides_are_refused(environ: dict, message: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        env_overrides(environ)
    assert message in err.value.message


def test_environment_wins_over_the_file_and_is_validated_with_it(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("memory_overcommit = 1.5\nmax_parallel_boots = 3\n")
    cfg = load_config(path, {"LOCALVMSSD_MEMORY_OVERCOMMIT": "1.1"})
    assert (cfg.memory_overcommit, cfg.max_parallel_boots) == (1.1, 3)
    with pytest.raises(InvalidSpec, match="max_parallel_boots"):
        load_config(path, {"LOCALVMSSD_MAX_PARALLEL_BOOTS": "0"})


def _token_file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_the_token_comes_from_a_file_or_a_systemd_credential(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    token = _token_file(tmp_path, "token", "s3cret-token-value\n")
    conf.write_text(f'api_tcp = "127.0.0.1:8470"\napi_token_file = "{token}"\n')
    assert load_config(conf, {}).api_token == "s3cret-token-value"

    creds = tmp_path / "creds"
    creds.mkdir()
    _token_file(creds, "api_token", "from-the-credential\n")
    conf.write_text('api_tcp = "127.0.0.1:8470"\n')
    assert load_config(conf, {"CREDENTIALS_DIRECTORY": str(creds)}).api_token == "from-the-credential"


@pytest.mark.parametrize(
    ("lines", "credential", "message"),
    [
        ('api_tcp = "127.0.0.1:8470"\n', False, "api_tcp needs a token"),
        ('api_token = "in-the-file-too"\napi_token_file = "{token}"\n', False, "given 2 ways"),
        ('api_token = "in-the-file-too"\n', True, "given 2 ways"),
        ('api_token_file = "{missing}"\n', False, "cannot be read"),
        ('api_token_file = "{short}"\n', False, "at least 8 characters"),
    ],
)
def test_token_sources_that_are_missing_short_or_doubled_are_refused(
    tmp_path: Path, lines: str, credential: bool, message: str
) -> None:
    token = _token_file(tmp_path, "token", "a-good-long-token\n")
    short = _token_file(tmp_path, "short", "abc\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    if credential:
        _token_file(creds, "api_token", "credential-token\n")
    conf = tmp_path / "c.toml"
    conf.write_text(lines.format(token=token, short=short, missing=tmp_path / "none"))
    with pytest.raises(InvalidSpec) as err:
        load_config(conf, {"CREDENTIALS_DIRECTORY": str(creds)})
    assert message in err.value.message


H1 = HostConfig(name="h1")
H2 = HostConfig(name="h2", uri="qemu+ssh://root@rack2/system")


@pytest.mark.parametrize(
    ("old", "new", "live", "restart"),
    [
        ({}, {}, {}, []),
        ({}, {"memory_overcommit": 1.1, "drain_timeout_s": 5.0}, {"memory_overcommit": 1.1, "drain_timeout_s": 5}, []),
        ({}, {"log_level": "debug"}, {"log_level": "debug"}, []),
        ({}, {"max_parallel_boots": 8}, {}, ["max_parallel_boots"]),
        ({}, {"exporter_port": 9999, "state_dir": Path("/srv")}, {}, ["state_dir", "exporter_port"]),
        ({"hosts": [H1]}, {"hosts": [H1, H2]}, {"hosts": [H2]}, []),
        ({"hosts": [H1, H2]}, {"hosts": [H1]}, {}, ["hosts"]),
        ({"hosts": [H1]}, {"hosts": [HostConfig(name="h1", zone="2")]}, {}, ["hosts"]),
        ({"hosts": [H1]}, {"hosts": [H2]}, {"hosts": [H2]}, ["hosts"]),
    ],
)
def test_a_reload_changes_live_keys_and_names_the_rest(old: dict, new: dict, live: dict, restart: list) -> None:
    assert reload_changes(DaemonConfig(**old), DaemonConfig(**new)) == (live, restart)


@pytest.mark.parametrize(
    ("environ", "pid", "expected"),
    [
        ({}, 10, None),
        ({"WATCHDOG_USEC": "30000000"}, 10, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "10"}, 10, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "11"}, 10, None),
        ({"WATCHDOG_USEC": "0"}, 10, None),
        ({"WATCHDOG_USEC": "soon"}, 10, None),
    ],
)
def test_the_watchdog_period_is_systemds_for_this_process_only(environ: dict, pid: int, expected: float | None) -> None:
    assert watchdog_interval(environ, pid) == expected


def test_notifications_are_datagrams_on_the_notify_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        notifier = Notifier({"NOTIFY_SOCKET": str(path)})
        notifier.ready("2 scale sets")
        notifier.reloading()
        assert listener.recv(4096) == b"READY=1\nSTATUS=2 scale sets"
        fields = listener.recv(4096).decode().split("\n")
        assert fields[0] == "RELOADING=1" and fields[1].startswith("MONOTONIC_USEC=") and fields[1][15:].isdigit()
    assert Notifier({}).send("READY=1") is False
    assert Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")}).send("READY=1") is False
