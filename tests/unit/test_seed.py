"""NoCloud seed ISOs: contents read back with pycdlib, the guest's parser agrees, bad input is refused."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import pycdlib
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from localvmss.errors import InvalidSpec
from localvmss.virt.seed import StaticNetwork, build_nocloud_seed, normalize_ssh_public_key

META_DATA_AWK = Path(__file__).resolve().parents[2] / "images/guest/rootfs/usr/lib/localvmss/meta-data.awk"
CLOUD_YAML_AWK = Path(__file__).resolve().parents[2] / "images/cloud/rootfs/usr/lib/nocloud/yaml.awk"
STATIC = StaticNetwork("198.18.0.3/24", "198.18.0.1", "52:54:00:12:00:03")


def openssh_public(
    private: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
) -> str:
    return (
        private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    )


# Fixed keys where a test id shows them: every pytest-xdist worker must collect the same ids.
ED25519 = openssh_public(ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
RSA = openssh_public(rsa.generate_private_key(public_exponent=65537, key_size=2048))
ECDSA = openssh_public(ec.derive_private_key(0x10CA1F55, ec.SECP256R1()))


def read_iso(
    data: bytes, names: tuple[str, ...] = ("meta-data", "user-data")
) -> tuple[pycdlib.PyCdlib, dict[str, bytes]]:
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(data))
    files = {}
    for name in names:
        out = io.BytesIO()
        iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
        joliet = io.BytesIO()
        iso.get_file_from_iso_fp(joliet, joliet_path=f"/{name}")
        assert joliet.getvalue() == out.getvalue()
        files[name] = out.getvalue()
    return iso, files


def test_seed_has_label_extensions_and_files() -> None:
    user_data = b"#!/bin/sh\necho hello > /root/hello\n"
    iso, files = read_iso(build_nocloud_seed("i-0", "web-0", [f"{ED25519} alice@laptop"], user_data))
    assert iso.pvd.volume_identifier.rstrip(b" ") == b"cidata"
    assert iso.has_rock_ridge() and iso.has_joliet()
    assert files["user-data"] == user_data
    assert files["meta-data"].decode() == (
        f"instance-id: 'i-0'\nlocal-hostname: 'web-0'\npublic-keys:\n  - '{ED25519} alice@laptop'\n"
    )
    iso.close()


def test_small_seed_is_padded_for_findfs() -> None:
    """busybox findfs identifies nothing on a device shorter than 68 KiB."""
    seed = build_nocloud_seed("i-0", "web-0", [ED25519], None)
    assert len(seed) >= 256 * 1024 and len(seed) % 2048 == 0


def test_large_user_data_is_kept_whole() -> None:
    user_data = b"#!/bin/sh\n" + b"# padding\n" * 50_000
    _, files = read_iso(build_nocloud_seed("i-0", "web-0", [], user_data))
    assert files["user-data"] == user_data


def test_no_user_data_is_an_empty_cloud_config() -> None:
    _, files = read_iso(build_nocloud_seed("i-0", "web-0", [ED25519], None))
    assert files["user-data"] == b"#cloud-config\n"


def test_no_keys_leaves_out_public_keys() -> None:
    _, files = read_iso(build_nocloud_seed("i-0", "web-0", [], None))
    assert b"public-keys" not in files["meta-data"]


def test_numeric_and_boolean_looking_names_are_quoted() -> None:
    """YAML would read unquoted 0123 as a number and `no` as false; quoting keeps them strings."""
    _, files = read_iso(build_nocloud_seed("0123", "no", [], None))
    assert files["meta-data"].decode() == "instance-id: '0123'\nlocal-hostname: 'no'\n"


@pytest.mark.skipif(shutil.which("busybox") is None, reason="busybox (the guest's awk) is not installed")
def test_guest_parser_reads_what_seed_writes(tmp_path: Path) -> None:
    keys = [f"{ED25519} alice@laptop", RSA, f"{ECDSA} ci key (2024-01-01)"]
    _, files = read_iso(build_nocloud_seed("i-7", "web-7", keys, None, admin_username="azureuser"))
    (tmp_path / "meta-data").write_bytes(files["meta-data"])
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(
        ["busybox", "awk", "-v", f"out={out}", "-f", str(META_DATA_AWK), str(tmp_path / "meta-data")],
        check=True,
    )
    assert (out / "instance-id").read_text() == "i-7\n"
    assert (out / "hostname").read_text() == "web-7\n"
    assert (out / "authorized_keys").read_text() == "".join(f"{k}\n" for k in keys)
    assert (out / "admin-username").read_text() == "azureuser\n"


@pytest.mark.parametrize("user", ["Azure", "1user", "a b", "x" * 33, "user'; rm -rf /", ""])
def test_a_bad_admin_username_is_refused(user: str) -> None:
    with pytest.raises(InvalidSpec, match="adminUsername"):
        build_nocloud_seed("i-7", "web-7", [], None, admin_username=user)


def test_root_needs_no_admin_line() -> None:
    _, files = read_iso(build_nocloud_seed("i-7", "web-7", [], None, admin_username="root"))
    assert b"admin" not in files["meta-data"]


def test_keys_are_normalized() -> None:
    key_type, blob = ED25519.split()
    assert normalize_ssh_public_key(f"  {key_type}   {blob}   me@host \n") == f"{key_type} {blob} me@host"
    assert normalize_ssh_public_key(RSA) == RSA


@pytest.mark.parametrize("name", ["", "Web-0", "-web", "web_0", "web.0", "a" * 64, "web-0\n", "wéb"])
def test_bad_hostname_is_refused(name: str) -> None:
    with pytest.raises(InvalidSpec, match="hostname"):
        build_nocloud_seed("i-0", name, [], None)


@pytest.mark.parametrize("instance_id", ["", "I-0", "i 0", "i/0", "a" * 64])
def test_bad_instance_id_is_refused(instance_id: str) -> None:
    with pytest.raises(InvalidSpec, match="instance-id"):
        build_nocloud_seed(instance_id, "web-0", [], None)


def test_longest_allowed_name_is_accepted() -> None:
    build_nocloud_seed("a" * 63, "0" * 63, [], None)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "one line"),
        ("ssh-ed25519", "one line"),
        (f"{ED25519}\n{RSA}", "one line"),
        (f"{ED25519} me\r", "one line"),
        (f'command="/bin/sh" {ED25519}', "not supported"),
        ("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "not supported"),
        ("ssh-ed25519 AAAA!!notbase64", "base64"),
        (f"ssh-rsa {ED25519.split()[1]}", "does not hold a ssh-rsa key"),
        (f"ssh-ed25519 {ED25519.split()[1][:12]}", "does not hold"),
        (f"{ED25519} it's mine", "comment"),
        (f"{ED25519} $(reboot)", "comment"),
        (f"{ED25519} a;b", "comment"),
        (f"{ED25519} {'x' * 201}", "comment"),
    ],
)
def test_bad_key_is_refused(key: str, message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        build_nocloud_seed("i-0", "web-0", [key], None)


def test_user_data_must_be_bytes() -> None:
    with pytest.raises(InvalidSpec, match="user-data"):
        build_nocloud_seed("i-0", "web-0", [], "#!/bin/sh\n")  # type: ignore[arg-type]


def iso_names(data: bytes) -> set[str]:
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(data))
    try:
        return {child.rock_ridge.name().decode() for child in iso.list_children(rr_path="/") if child.rock_ridge}
    finally:
        iso.close()


def test_a_dhcp_seed_has_no_network_config() -> None:
    seed = build_nocloud_seed("i-0", "web-0", [], None)
    assert "network-config" not in iso_names(seed)
    assert b"localvmss-address" not in read_iso(seed)[1]["meta-data"]


def test_a_static_address_is_in_network_config_and_meta_data() -> None:
    _, files = read_iso(build_nocloud_seed("i-0", "web-0", [], None, network=STATIC), NAMES_WITH_NETWORK)
    assert files["network-config"].decode() == (
        "version: 2\n"
        "ethernets:\n"
        "  eth0:\n"
        "    match:\n"
        "      macaddress: '52:54:00:12:00:03'\n"
        "    dhcp4: false\n"
        "    addresses:\n"
        "      - '198.18.0.3/24'\n"
        "    gateway4: '198.18.0.1'\n"
        "    nameservers:\n"
        "      addresses:\n"
        "        - '198.18.0.1'\n"
    )
    assert files["meta-data"].decode() == (
        "instance-id: 'i-0'\nlocal-hostname: 'web-0'\n"
        "localvmss-address: '198.18.0.3/24'\nlocalvmss-gateway: '198.18.0.1'\n"
    )


NAMES_WITH_NETWORK = ("meta-data", "user-data", "network-config")


@pytest.mark.skipif(shutil.which("busybox") is None, reason="busybox (the guests' awk) is not installed")
def test_both_guests_read_the_static_address(tmp_path: Path) -> None:
    """The base image reads meta-data (meta-data.awk), the cloud image network-config (yaml.awk)."""
    _, files = read_iso(build_nocloud_seed("i-0", "web-0", [], None, network=STATIC), NAMES_WITH_NETWORK)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(
        ["busybox", "awk", "-v", f"out={out}", "-f", str(META_DATA_AWK), str(tmp_path / "meta-data")], check=True
    )
    assert (out / "static-address").read_text() == "198.18.0.3/24\n"
    assert (out / "static-gateway").read_text() == "198.18.0.1\n"
    flat = subprocess.run(
        ["busybox", "awk", "-f", str(CLOUD_YAML_AWK), str(tmp_path / "network-config")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert dict(line.split("\t", 1) for line in flat.splitlines()) == {
        "version": "2",
        "ethernets.eth0.match.macaddress": "52:54:00:12:00:03",
        "ethernets.eth0.dhcp4": "false",
        "ethernets.eth0.addresses.0": "198.18.0.3/24",
        "ethernets.eth0.gateway4": "198.18.0.1",
        "ethernets.eth0.nameservers.addresses.0": "198.18.0.1",
    }


@pytest.mark.parametrize(
    ("address", "gateway", "mac", "error"),
    [
        ("198.18.0.3", "198.18.0.1", "52:54:00:12:00:03", "not another address"),
        ("198.18.0.3/24", "198.18.1.1", "52:54:00:12:00:03", "not another address"),
        ("198.18.0.3/24", "198.18.0.3", "52:54:00:12:00:03", "not another address"),
        ("198.18.0.300/24", "198.18.0.1", "52:54:00:12:00:03", "static address"),
        ("198.18.0.3/24", "gw", "52:54:00:12:00:03", "static address"),
        ("198.18.0.3/24", "198.18.0.1", "52:54:00:12:00:0G", "MAC"),
        ("198.18.0.3/24", "198.18.0.1", "52:54:00:12:00:03' x", "MAC"),
    ],
)
def test_a_bad_static_network_is_refused(address: str, gateway: str, mac: str, error: str) -> None:
    with pytest.raises(InvalidSpec, match=error):
        StaticNetwork(address, gateway, mac)
