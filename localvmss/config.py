"""Daemon configuration: a TOML file (``/etc/localvmss/localvmssd.toml`` by default), then
``LOCALVMSSD_*`` environment overrides, then the API token from a file or a systemd credential.

Every field has a default that works on a single Linux host with libvirt's ``default`` network,
so the file is optional; the demo and the tests write their own. The models are pydantic, strict
for the file (TOML has real types: ``"yes"`` is not a boolean, ``2.5`` is not a count) and lax
for the environment, where every value is a string; every refusal is one line naming the key.

Why not pydantic-settings: a settings class reads the environment whenever one is constructed
(tests, ``Service``), which makes a config a function of ambient state; here only ``load_config``
reads it, once, and says which variable a bad value came from.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from localvmss.addressing import parse_static_range
from localvmss.errors import InvalidSpec
from localvmss.hosturi import check_config_host_uri
from localvmss.model import DEFAULT_RESOURCE_GROUP, validate_name, validate_resource_group

DEFAULT_CONFIG_PATH = Path("/etc/localvmss/localvmssd.toml")
ENV_PREFIX = "LOCALVMSSD_"
CREDENTIAL_NAME = "api_token"  # systemd: LoadCredential=api_token:/etc/localvmss/api-token


class HostConfig(BaseModel):
    """One ``[[hosts]]`` entry: a libvirt host the daemon places instances on."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)

    name: str
    uri: str = "qemu:///system"
    zone: str | None = None
    network: str = "default"
    # libvirt's log directory on that host (serial consoles are logged there), and the same
    # directory as the daemon can read it (None: not readable from here, e.g. a remote host).
    serial_log_dir: str = "/var/log/libvirt/qemu"
    serial_log_read_dir: str | None = "/var/log/libvirt/qemu"
    # The network namespace the host's libvirt network lives in, where its guests' metadata
    # proxy runs (None: the root namespace for a local libvirtd; a remote host gets none).
    metadata_netns: str | None = None
    # "FIRST-LAST": hand out addresses from this part of the network's subnet, outside its DHCP
    # range, told to each guest in its seed instead of pinned by a DHCP host entry (see
    # localvmss.addressing; None: from the DHCP range, with a reservation each).
    static_addresses: str | None = None

    @field_validator("static_addresses")
    @classmethod
    def _static_addresses(cls, value: str | None) -> str | None:
        if value is not None:
            parse_static_range(value)
        return value

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return validate_name(value, "host name")

    @model_validator(mode="after")
    def _uri(self) -> HostConfig:
        check_config_host_uri(self.uri, f"uri of [[hosts]] {self.name!r}")
        return self


class DaemonConfig(BaseModel):
    """Everything ``localvmssd`` reads at start; ``LIVE_KEYS`` may change on a reload."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)

    state_dir: Path = Field(Path("/var/lib/localvmss"), strict=False)
    api_socket: Path = Field(Path("/run/localvmss/api.sock"), strict=False)
    api_socket_group: str | None = None  # the group that may use the API socket (mode 0660)
    api_tcp: str | None = None  # "127.0.0.1:8470": only with a token
    api_token: str | None = None
    api_token_file: Path | None = Field(None, strict=False)  # the token's first line
    # TLS on api_tcp (Azure's SDKs send a bearer token only over https): a certificate and key
    # made on first start under state_dir/tls unless both paths are given.
    api_tls: bool = True
    api_tls_cert: Path | None = Field(None, strict=False)
    api_tls_key: Path | None = Field(None, strict=False)
    # What ARM requests see: the one subscription this daemon answers for, the group a set
    # made without one lands in, and the location resources report.
    subscription_id: str = "00000000-0000-0000-0000-000000000000"
    default_resource_group: str = DEFAULT_RESOURCE_GROUP
    location: str = "local"
    pool_name: str = "lvmss-pool"
    pool_path: str = "/var/lib/libvirt/localvmss"
    hosts: list[HostConfig] = Field(default_factory=lambda: [HostConfig(name="local")], min_length=1)
    memory_overcommit: float = Field(1.5, gt=0)
    reconcile_interval_s: float = Field(3.0, ge=0)
    max_parallel_boots: int = Field(4, ge=1)
    boot_timeout_s: float = Field(300.0, ge=0)
    drain_timeout_s: float = Field(30.0, ge=0)
    shutdown_timeout_s: float = Field(60.0, ge=0)  # a graceful power-off waits this long, then hard
    health_interval_s: float = Field(2.0, ge=0)
    exporter_address: str = "127.0.0.1"
    exporter_port: int = Field(9464, ge=0, le=65535)
    prometheus_url: str | None = None  # None: start and supervise a local prometheus
    prometheus_port: int = Field(9490, ge=0, le=65535)
    prometheus_binary: str = "prometheus"
    scrape_interval_s: float = Field(5.0, gt=0)
    haproxy_enabled: bool = True
    haproxy_binary: str = "haproxy"
    haproxy_stats_port: int = Field(9480, ge=0, le=65535)
    autoscale_interval_s: float = Field(10.0, gt=0)
    kvm_probe: bool = True
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    watchdog_pass_s: float = Field(60.0, gt=0)  # a reconcile pass longer than this is a hang
    # The instance metadata service's port on each guest network's gateway address (guests are
    # told another port than 80 through their NoCloud seed).
    metadata_port: int = Field(80, ge=1, le=65535)

    @property
    def db_path(self) -> Path:
        return self.state_dir / "state.db"

    @model_validator(mode="after")
    def _consistent(self) -> DaemonConfig:
        if len({h.name for h in self.hosts}) != len(self.hosts):
            raise InvalidSpec("host names in [[hosts]] must be unique")
        if self.api_tcp:
            api_tcp_port(self.api_tcp)
        if (self.api_tls_cert is None) != (self.api_tls_key is None):
            raise InvalidSpec("api_tls_cert and api_tls_key go together: give both, or neither to have them made")
        validate_resource_group(self.default_resource_group)
        if not re.fullmatch(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}", self.subscription_id):
            raise InvalidSpec(f"subscription_id {self.subscription_id!r} must be a GUID")
        return self

    def own_ports(self) -> dict[int, str]:
        """TCP ports the daemon and its children listen on (port -> who), so a load-balancer
        frontend cannot take one: HAProxy would fail to bind, or steal the port first."""
        ports: dict[int, str] = {}
        if self.exporter_port:
            ports[self.exporter_port] = "the daemon's metrics exporter (exporter_port)"
        if self.prometheus_url is None and self.prometheus_port:
            ports[self.prometheus_port] = "the daemon's Prometheus (prometheus_port)"
        if self.haproxy_enabled and self.haproxy_stats_port:
            ports[self.haproxy_stats_port] = "HAProxy's stats listener (haproxy_stats_port)"
        if self.api_tcp:
            ports[api_tcp_port(self.api_tcp)] = "the daemon's TCP API (api_tcp)"
        return ports


# What a reload (SIGHUP) changes in the running daemon; everything else needs a restart.
LIVE_KEYS = frozenset(
    {
        "memory_overcommit",
        "reconcile_interval_s",
        "boot_timeout_s",
        "drain_timeout_s",
        "shutdown_timeout_s",
        "health_interval_s",
        "autoscale_interval_s",
        "log_level",
        "log_format",
        "watchdog_pass_s",
    }
)


def api_tcp_port(value: str) -> int:
    """The port of ``api_tcp`` ("HOST:PORT"); InvalidSpec if it is not one."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise InvalidSpec(f"api_tcp {value!r} must be HOST:PORT, e.g. 127.0.0.1:8470")
    return int(port)


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> DaemonConfig:
    """The file (a missing default file means all defaults), the ``LOCALVMSSD_*`` variables of
    ``environ`` over it, then the token. Raises InvalidSpec naming the file or variable."""
    environ = os.environ if environ is None else environ
    target = path or DEFAULT_CONFIG_PATH
    data: dict[str, Any] = {}
    if target.exists():
        try:
            data = tomllib.loads(target.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise InvalidSpec(f"configuration file {target} is not valid TOML: {exc}") from None
        except OSError as exc:
            raise InvalidSpec(f"configuration file {target} cannot be read: {exc.strerror}") from None
    elif path is not None:
        raise InvalidSpec(f"configuration file {target} does not exist")
    data.update(env_overrides(environ))
    cfg = config_from_dict(data)
    return _with_token(cfg, environ)


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """``LOCALVMSSD_<KEY>`` -> key: value, parsed by the key's own type (``LOCALVMSSD_HOSTS`` is
    JSON: a list of host tables). An unknown variable is refused, as an unknown key is."""
    overrides: dict[str, Any] = {}
    fields = DaemonConfig.model_fields
    for var, text in environ.items():
        if not var.startswith(ENV_PREFIX):
            continue
        key = var[len(ENV_PREFIX) :].lower()
        if key not in fields:
            raise InvalidSpec(f"unknown configuration variable {var} (no key {key!r})")
        if key == "hosts":
            try:
                overrides[key] = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InvalidSpec(f"{var} must be JSON (a list of host tables): {exc}") from None
            continue
        annotation: Any = fields[key].annotation
        if text == "" and type(None) in getattr(annotation, "__args__", ()):
            overrides[key] = None
            continue
        try:
            value = TypeAdapter(annotation).validate_python(text, strict=False)
        except ValidationError as exc:
            raise InvalidSpec(f"{var}={text!r}: {exc.errors()[0]['msg']}") from None
        overrides[key] = str(value) if isinstance(value, Path) else value
    return overrides


def _with_token(cfg: DaemonConfig, environ: Mapping[str, str]) -> DaemonConfig:
    """The token from ``api_token_file``, or the systemd credential ``api_token``; refusing two
    sources at once (which would win is a guess) and a TCP API without any."""
    sources = []
    if cfg.api_token:
        sources.append(("api_token", cfg.api_token))
    if cfg.api_token_file is not None:
        sources.append(("api_token_file", _read_token(cfg.api_token_file, "api_token_file")))
    cred_dir = environ.get("CREDENTIALS_DIRECTORY")
    if cred_dir and (Path(cred_dir) / CREDENTIAL_NAME).exists():
        sources.append(("credential", _read_token(Path(cred_dir) / CREDENTIAL_NAME, "systemd credential api_token")))
    if len(sources) > 1:
        raise InvalidSpec(f"the API token is given {len(sources)} ways ({', '.join(s for s, _ in sources)}); keep one")
    token = sources[0][1] if sources else None
    if cfg.api_tcp and not token:
        raise InvalidSpec("api_tcp needs a token (api_token, api_token_file or the systemd credential api_token)")
    cfg.api_token = token
    return cfg


def _read_token(path: Path, what: str) -> str:
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidSpec(f"{what} {path} cannot be read: {exc.strerror}") from None
    token = text.strip().splitlines()[0].strip() if text.strip() else ""
    if len(token) < 8:
        raise InvalidSpec(f"{what} {path} must hold a token of at least 8 characters on its first line")
    return token


def config_from_dict(data: dict[str, Any]) -> DaemonConfig:
    """Validate a parsed file; InvalidSpec with the first problem, naming its key. (Whether a
    TCP API has its token is ``load_config``'s check: the token may come from elsewhere.)"""
    try:
        cfg = DaemonConfig.model_validate(data)
    except ValidationError as exc:
        raise InvalidSpec(_one_line(exc)) from None
    return cfg


def _one_line(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = [str(part) for part in err["loc"]]
    kind = err["type"]
    where = f"configuration key {loc[0]!r}" if loc else "configuration"
    if loc and loc[0] == "hosts" and len(loc) > 2:
        where = f"[[hosts]] entry {int(loc[1]) + 1} key {loc[2]!r}"
    if kind == "extra_forbidden":
        if loc and loc[0] == "hosts":
            return f"bad [[hosts]] entry {int(loc[1]) + 1}: unknown key {loc[-1]!r}"
        return f"unknown configuration key {loc[0]!r}"
    if kind == "missing":
        return f"{where} is required"
    if kind == "too_short" and loc == ["hosts"]:
        return "at least one [[hosts]] entry is needed"
    if kind == "greater_than_equal" and err.get("ctx", {}).get("ge") == 0:
        return f"{where} must not be negative, not {err['input']!r}"
    if kind == "literal_error":
        return f"{where} must be {err['ctx']['expected']}, not {err['input']!r}"
    if kind.endswith("_type") or kind in {"int_from_float", "model_type", "list_type"}:
        msg = err["msg"]
        return f"{where} has the wrong type: {err['input']!r} ({msg[:1].lower()}{msg[1:]})"
    return f"{where}: {err['msg']} (got {err['input']!r})"


def reload_changes(running: DaemonConfig, new: DaemonConfig) -> tuple[dict[str, Any], list[str]]:
    """What a reload does: (live key -> new value, keys that changed but need a restart).
    Hosts added to ``[[hosts]]`` join live (the API's ``host add`` does the same); a host
    changed or removed needs a restart (or ``localvmss host remove``)."""
    live: dict[str, Any] = {}
    restart: list[str] = []
    for key in DaemonConfig.model_fields:
        old_value, new_value = getattr(running, key), getattr(new, key)
        if key == "hosts":
            old = {h.name: h for h in old_value}
            added = [h for h in new_value if h.name not in old]
            if added:
                live["hosts"] = added
            if any(h.name in old and old[h.name] != h for h in new_value) or set(old) - {h.name for h in new_value}:
                restart.append("hosts")
        elif old_value != new_value and key in LIVE_KEYS:
            live[key] = new_value
        elif old_value != new_value:
            restart.append(key)
    return live, restart
