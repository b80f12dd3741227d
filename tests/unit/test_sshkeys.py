"""SSH public keys are checked where they enter (scale-set model, Flexible VM body), by the same
rule the seed uses: a bad key is refused with one line and nothing is created or changed."""

from __future__ import annotations

import base64
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from localvmss.errors import InvalidSpec
from localvmss.sshkeys import MAX_KEY_CHARS, check_ssh_public_key
from localvmss.virt import seed
from tests.unit.servicefake import api_client, make_service, refused, snapshot, uniform_body


def openssh(private: Any) -> str:
    raw = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return str(raw.decode())


def blob_of(key_type: str, rest: bytes = b"\x00\x00\x00\x20" + b"k" * 32) -> str:
    raw = struct.pack(">I", len(key_type)) + key_type.encode() + rest
    return base64.b64encode(raw).decode()


# Fixed keys where a test id shows them: every pytest-xdist worker must collect the same ids.
ED25519 = openssh(ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32))))
RSA = openssh(rsa.generate_private_key(public_exponent=65537, key_size=2048))
P256 = openssh(ec.derive_private_key(0x10CA1F55, ec.SECP256R1()))
P384 = openssh(ec.derive_private_key(0x10CA1F55, ec.SECP384R1()))
P521 = openssh(ec.derive_private_key(0x10CA1F55, ec.SECP521R1()))
SK_ED = f"sk-ssh-ed25519@openssh.com {blob_of('sk-ssh-ed25519@openssh.com')} yubikey"
SK_EC = f"sk-ecdsa-sha2-nistp256@openssh.com {blob_of('sk-ecdsa-sha2-nistp256@openssh.com')}"

BAD = [
    ("", "one line"),
    ("ssh-ed25519", "one line"),
    (f"{ED25519}\n{RSA}", "one line"),
    (f"{ED25519} me\r", "one line"),
    (f"{ED25519.split()[0]}\t{ED25519.split()[1]}", "one line"),
    (f"{ED25519} me\x1b[2J", "one line"),
    (f'command="/bin/sh" {ED25519}', "not supported"),
    ("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "not supported"),
    (f"ssh-ed25519-cert-v01@openssh.com {blob_of('ssh-ed25519-cert-v01@openssh.com')}", "not supported"),
    ("ssh-ed25519 AAAA!!notbase64", "base64"),
    (f"ssh-rsa {ED25519.split()[1]}", "does not hold a ssh-rsa key"),
    (f"ssh-ed25519 {ED25519.split()[1][:12]}", "does not hold"),
    (f"ssh-ed25519 {base64.b64encode(b'xx').decode()}", "does not hold"),
    (f"{ED25519} it's mine", "comment"),
    (f"{ED25519} $(reboot)", "comment"),
    (f"{ED25519} a;b", "comment"),
    (f"{ED25519} {'x' * 201}", "comment"),
    (f"ssh-rsa {'A' * MAX_KEY_CHARS}", "limit is"),
    (7, "must be a string"),
    (None, "must be a string"),
]


@pytest.mark.parametrize("key", [ED25519, RSA, P256, P384, P521, SK_ED, SK_EC, f"{ED25519} me@host 2026-01-01"])
def test_good_keys(key: str) -> None:
    assert check_ssh_public_key(f"  {key}\n") == key


@pytest.mark.parametrize(("key", "words"), BAD)
def test_bad_keys(key: Any, words: str) -> None:
    with pytest.raises(InvalidSpec) as err:
        check_ssh_public_key(key)
    assert words in err.value.message and "\n" not in err.value.message


def test_the_seed_uses_the_same_rule() -> None:
    assert seed.normalize_ssh_public_key is check_ssh_public_key
    with pytest.raises(InvalidSpec, match="not supported"):
        seed.build_nocloud_seed("i-0", "web-0", ["ssh-dss AAAA"], None)


def keyed(keys: list[Any]) -> dict[str, Any]:
    return {"osProfile": {"linuxConfiguration": {"ssh": {"publicKeys": [{"keyData": k} for k in keys]}}}}


@pytest.mark.parametrize(("key", "words"), BAD)
def test_scale_set_with_a_bad_key_is_refused_at_create_and_update(tmp_path: Path, key: Any, words: str) -> None:
    h = make_service(tmp_path)
    client = api_client(h)
    before = snapshot(h.store)
    expected = "keyData" if not isinstance(key, str) else words  # pydantic says what type it wants
    refused(client.put("/scaleSets/web", json=uniform_body(2, **keyed([ED25519, key]))), 400, expected)
    assert snapshot(h.store) == before
    assert client.put("/scaleSets/web", json=uniform_body(2, **keyed([ED25519]))).status_code == 201
    before = snapshot(h.store)
    refused(client.put("/scaleSets/web", json=uniform_body(2, **keyed([key]))), 400, expected)
    assert snapshot(h.store) == before


def test_scale_set_keys_are_stored_normalized(tmp_path: Path) -> None:
    h = make_service(tmp_path)
    key_type, blob = ED25519.split()
    h.service.put_set("web", uniform_body(1, **keyed([f" {key_type}   {blob}  me@host \n"])))
    assert h.store.scale_set("web").model["ssh_public_keys"] == [f"{key_type} {blob} me@host"]


IMAGE = {"storageProfile": {"imageReference": {"id": "base"}}}


def flex(h: Any) -> None:
    h.service.put_set("flex", {"properties": {"orchestrationMode": "Flexible"}})


@pytest.mark.parametrize(
    ("props", "words"),
    [
        *[(keyed([key]), words) for key, words in BAD],
        ({"osProfile": {"linuxConfiguration": {"ssh": {"publicKeys": [{"path": "/root/.ssh/x"}]}}}}, "string"),
        ({"osProfile": {"linuxConfiguration": {"ssh": {"publicKeys": "ssh-ed25519 AAAA"}}}}, "JSON array"),
        ({"osProfile": {"linuxConfiguration": {"ssh": {"publicKeys": ["ssh-ed25519 AAAA"]}}}}, "JSON object"),
        ({"osProfile": {"linuxConfiguration": {"ssh": {"publicKeys": [{"keyData": ED25519, "x": 1}]}}}}, "'x'"),
        ({"osProfile": "root"}, "osProfile must be a JSON object"),
        ({"storageProfile": []}, "storageProfile must be a JSON object"),
        ({"hardwareProfile": {"vmSize": 7}}, "vmSize"),
    ],
)
def test_flexible_vm_with_a_bad_key_or_shape_is_refused(tmp_path: Path, props: dict[str, Any], words: str) -> None:
    h = make_service(tmp_path)
    flex(h)
    before = snapshot(h.store)
    body = {"properties": {"virtualMachineScaleSet": {"id": "/scaleSets/flex"}, **IMAGE, **props}}
    refused(api_client(h).put("/virtualMachines/vm1", json=body), 400, words)
    assert snapshot(h.store) == before


@pytest.mark.parametrize(
    ("ref", "status", "words"),
    [
        ("/scaleSets/other/flex", 400, "must look like /scaleSets/NAME"),
        ("flex", 400, "must look like /scaleSets/NAME"),
        ("/scaleSets/Flex", 400, "scale set name"),
        (7, 400, "must be a string"),
        ("/scaleSets/nope", 404, "nope"),
    ],
)
def test_flexible_vm_names_its_set_exactly(tmp_path: Path, ref: Any, status: int, words: str) -> None:
    h = make_service(tmp_path)
    flex(h)
    before = snapshot(h.store)
    body = {"properties": {"virtualMachineScaleSet": {"id": ref}}}
    refused(api_client(h).put("/virtualMachines/vm1", json=body), status, words)
    assert snapshot(h.store) == before


def test_flexible_vm_with_good_keys_is_created(tmp_path: Path) -> None:
    h = make_service(tmp_path)
    flex(h)
    body = {"properties": {"virtualMachineScaleSet": {"id": "/scaleSets/flex"}, **IMAGE, **keyed([f"{RSA}\n"])}}
    resp = api_client(h).put("/virtualMachines/vm1", json=body)
    assert resp.status_code == 201, resp.text
    assert h.store.instance_by_vm_name("vm1").overrides["ssh_public_keys"] == [RSA]
