"""NoCloud seed ISOs: how an instance learns its identity, SSH keys and user-data.

The seed is the format cloud-init's NoCloud datasource reads (an ISO9660 volume labelled
``cidata`` with ``meta-data`` and ``user-data``), so the same seed works for the project's busybox
guest and for stock Debian/Ubuntu cloud images. It is built in memory with pycdlib: no temp files,
and no genisoimage on the host.

``meta-data`` is written as a deliberately tiny YAML subset (every value single-quoted, keys as a
list) that PyYAML in cloud-init and the guest's awk parser read identically. Quoting matters: an
unquoted ``instance-id: 0123`` or ``local-hostname: no`` would be a number or a boolean to YAML.
Inputs are validated here because the values end up in the guest's hostname, ``/etc/hosts`` and
``authorized_keys``.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface

import pycdlib

from localvmss.addressing import is_gateway_of
from localvmss.errors import InvalidSpec
from localvmss.model import DEFAULT_ADMIN_USERNAME, validate_admin_username
from localvmss.sshkeys import SSH_KEY_TYPES, check_ssh_public_key

# The one key rule lives in localvmss.sshkeys; these names stay for callers of this module.
normalize_ssh_public_key = check_ssh_public_key
__all__ = [
    "SSH_KEY_TYPES",
    "StaticNetwork",
    "build_nocloud_seed",
    "normalize_ssh_public_key",
    "render_meta_data",
    "render_network_config",
]

VOLUME_LABEL = "cidata"
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
MAC_PATTERN = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
EMPTY_USER_DATA = b"#cloud-config\n"
# Small ISOs are padded with zeros to this size: busybox's findfs reads the first 68 KiB of a device
# to identify it and finds nothing on a shorter one (genisoimage pads its ISOs by 300 KiB too).
MIN_SEED_BYTES = 256 * 1024


@dataclass(frozen=True)
class StaticNetwork:
    """An address the guest sets itself instead of asking DHCP (``localvmss.addressing``):
    ``address`` with its prefix (``198.18.0.12/24``), the ``gateway`` (also the name server: the
    network's dnsmasq) and the NIC's ``mac``."""

    address: str
    gateway: str
    mac: str

    def __post_init__(self) -> None:
        try:
            iface = IPv4Interface(self.address)
            gateway = IPv4Address(self.gateway)
        except ValueError as exc:
            raise InvalidSpec(f"static address {self.address!r} or gateway {self.gateway!r}: {exc}") from None
        if "/" not in self.address or not is_gateway_of(iface, gateway):
            raise InvalidSpec(f"gateway {self.gateway} is not another address of {self.address}'s network")
        if not MAC_PATTERN.fullmatch(self.mac):
            raise InvalidSpec(f"MAC {self.mac!r} must be six lower-case hex pairs (aa:bb:cc:dd:ee:ff)")


def build_nocloud_seed(
    instance_id: str,
    hostname: str,
    ssh_public_keys: list[str],
    user_data: bytes | None,
    metadata_port: int | None = None,
    admin_username: str = DEFAULT_ADMIN_USERNAME,
    network: StaticNetwork | None = None,
) -> bytes:
    """Return a NoCloud seed ISO (label ``cidata``, Joliet + Rock Ridge) as bytes.

    ``user_data`` is stored unchanged (the busybox guest runs it once per instance-id when it starts
    with ``#!``; cloud-init also understands ``#cloud-config``); None stores an empty cloud-config.
    ``metadata_port``: where the instance metadata service listens on the gateway when it is not
    80 (``localvmss-metadata-port`` in meta-data; cloud-init keeps unknown keys and ignores them).
    ``admin_username``: the set's adminUsername (``localvmss-admin-username`` when not root): the
    base image makes that login with the same keys; root keeps them (run-command uses it).
    ``network``: a static address, as ``network-config`` (version 2, what cloud-init reads) and as
    ``localvmss-address``/``localvmss-gateway`` in meta-data (what the base image reads); None:
    the guest asks DHCP.
    Raises InvalidSpec for a bad instance id, hostname or key.
    """
    _check_name("instance-id", instance_id)
    _check_name("hostname", hostname)
    keys = [check_ssh_public_key(key) for key in ssh_public_keys]
    if user_data is not None and not isinstance(user_data, bytes):
        raise InvalidSpec(f"user-data must be bytes or None, not {type(user_data).__name__}")
    if metadata_port is not None and not (isinstance(metadata_port, int) and 1 <= metadata_port <= 65535):
        raise InvalidSpec(f"metadata port {metadata_port!r} must be a port number 1-65535")
    validate_admin_username(admin_username)
    meta_data = render_meta_data(instance_id, hostname, keys, metadata_port, admin_username, network).encode()
    files = {"meta-data": meta_data, "user-data": EMPTY_USER_DATA if user_data is None else user_data}
    if network is not None:
        files["network-config"] = render_network_config(network).encode()
    return _iso(files)


def render_meta_data(
    instance_id: str,
    hostname: str,
    keys: list[str],
    metadata_port: int | None = None,
    admin_username: str = DEFAULT_ADMIN_USERNAME,
    network: StaticNetwork | None = None,
) -> str:
    """meta-data YAML for values already validated (so they hold no quote to escape)."""
    lines = [f"instance-id: '{instance_id}'", f"local-hostname: '{hostname}'"]
    if network is not None:
        lines += [f"localvmss-address: '{network.address}'", f"localvmss-gateway: '{network.gateway}'"]
    if metadata_port is not None and metadata_port != 80:
        lines.append(f"localvmss-metadata-port: '{metadata_port}'")
    if admin_username != DEFAULT_ADMIN_USERNAME:
        lines.append(f"localvmss-admin-username: '{admin_username}'")
    if keys:  # an empty list is left out: `public-keys: []` would be one more syntax to parse
        lines.append("public-keys:")
        lines.extend(f"  - '{key}'" for key in keys)
    return "\n".join(lines) + "\n"


def render_network_config(network: StaticNetwork) -> str:
    """NoCloud ``network-config``, version 2: the NIC with the instance's MAC gets the address,
    the default route and the name server; no DHCP."""
    return (
        "\n".join(
            [
                "version: 2",
                "ethernets:",
                "  eth0:",
                "    match:",
                f"      macaddress: '{network.mac}'",
                "    dhcp4: false",
                "    addresses:",
                f"      - '{network.address}'",
                f"    gateway4: '{network.gateway}'",
                "    nameservers:",
                "      addresses:",
                f"        - '{network.gateway}'",
            ]
        )
        + "\n"
    )


def _check_name(what: str, value: str) -> None:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise InvalidSpec(
            f"{what} {value!r} is invalid: use 1-63 lowercase letters, digits and '-', starting with a letter or digit"
        )


def _iso(files: dict[str, bytes]) -> bytes:
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident=VOLUME_LABEL, joliet=3, rock_ridge="1.09")
    for name, data in files.items():
        # ISO9660 names are upper case without '-'; Rock Ridge and Joliet carry the real name.
        iso_name = "/" + name.replace("-", "").upper() + ".;1"
        iso.add_fp(io.BytesIO(data), len(data), iso_name, rr_name=name, joliet_path=f"/{name}", file_mode=0o100444)
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue().ljust(MIN_SEED_BYTES, b"\0")
