"""The base image boots on a lab host through localvmss.virt alone (no daemon), end to end.

One guest, made the way the provisioner makes instances but step by step so every step is
checked: a private storage pool, the image's disk/kernel/initrd uploaded as volumes, a qcow2
overlay backed by the disk volume (no copy), a NoCloud seed with a fresh ed25519 key and a
user-data script, a MAC/IP reservation in the lab network, and a domain whose type comes from
the real accelerator probe. The test then talks to the guest from the host namespace (which
routes to the lab's guest network): HTTP ``/healthz`` and ``/``, SSH with the seed's key, the
user-data's traces and the serial console's ready line. Finally everything is removed and the
test checks through libvirt that nothing of it is left.
"""

from __future__ import annotations

import hashlib
import io
import ipaddress
import re
import time
import urllib.error
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from localvmss.errors import LocalVMSSError
from localvmss.inventory import read_manifest
from localvmss.lab import testbed as lab_testbed  # a module alias: pytest would try to collect 'Testbed'
from localvmss.model import PowerState
from localvmss.virt.accel import probe_accelerator
from localvmss.virt.domainxml import InstanceDomain, build_domain_xml
from localvmss.virt.host import Host
from localvmss.virt.seed import build_nocloud_seed

BOOT_TIMEOUT_S = 240.0
# Never through a proxy from the environment: guests are only reachable directly.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_get(url: str, timeout: float = 3.0) -> tuple[int, str]:
    try:
        with _OPENER.open(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fresh_ed25519() -> tuple[paramiko.PKey, str]:
    """A new key pair: the paramiko private key and the OpenSSH public key line."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return paramiko.Ed25519Key.from_private_key(io.StringIO(pem)), f"{public.decode()} boottest@localvmss"


def test_base_image_boots_serves_and_cleans_up(testbed: lab_testbed.Testbed, image_dir: Path) -> None:
    assert testbed.lab is not None
    lab_host = testbed.lab.hosts[0]
    uid = uuid.uuid4().hex[:8]
    pool = f"lvmss-boottest-{uid}"
    pool_path = f"/var/lib/libvirt/{pool}"  # the lab host's private /var/lib/libvirt
    pool_dir_outside = Path(lab_host.state_dir) / "lib" / pool  # the same directory seen from here
    domain = f"boottest-{uid}"
    hostname = domain
    vol_disk, vol_kernel, vol_initrd = f"{domain}-base.qcow2", f"{domain}-vmlinux", f"{domain}-initrd"
    vol_overlay, vol_seed = f"{domain}-os.qcow2", f"{domain}-seed.iso"
    serial_log = Path(lab_host.state_dir) / "log" / "qemu" / f"{domain}-serial.log"

    manifest = read_manifest(image_dir)
    assert manifest.get("kernel") and manifest.get("initrd"), "the base image boots by direct kernel boot"

    # An address near the top of the DHCP range (the daemon allocates from the bottom and skips
    # reserved addresses), with the MAC derived from it as the daemon derives it.
    net = ipaddress.ip_network(lab_host.guest_network)
    ip = str(net.network_address + 240 + int(uid, 16) % 10)
    mac = "52:54:00:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(ip).packed[1:])

    pkey, public_key = fresh_ed25519()
    token = uuid.uuid4().hex
    user_data = (
        "#!/bin/sh\n"
        f'echo "ran as uid $(id -u) in $(pwd) token={token}" > /root/user-data-marker\n'
        f"echo user-data-stdout-{token}\n"
    ).encode()

    host = Host(lab_host.name, lab_host.socket_uri)
    cleanup_errors: list[str] = []
    try:
        # -- storage: pool, base volumes, overlay -------------------------------------------
        host.ensure_pool(pool, pool_path)
        host.upload_file(pool, vol_disk, str(image_dir / manifest["disk"]), "qcow2")
        host.upload_file(pool, vol_kernel, str(image_dir / manifest["kernel"]), "raw")
        host.upload_file(pool, vol_initrd, str(image_dir / manifest["initrd"]), "raw")
        base_path = host.volume_path(pool, vol_disk)
        assert base_path == f"{pool_path}/{vol_disk}"

        overlay_path = host.create_overlay(pool, vol_overlay, vol_disk)
        assert host.volume_backing_path(pool, vol_overlay) == base_path, "the overlay must be backed by the base"
        conn = libvirt.open(lab_host.socket_uri)
        try:
            over = conn.storageVolLookupByPath(overlay_path)
            base = conn.storageVolLookupByPath(base_path)
            _, over_capacity, over_alloc = over.info()
            _, base_capacity, base_alloc = base.info()
        finally:
            conn.close()
        assert over_capacity == base_capacity == int(manifest["virtual_size_bytes"])
        assert over_alloc < 1 << 20, f"a fresh overlay holds no data ({over_alloc} bytes allocated)"
        assert over_alloc < base_alloc / 4, "the overlay is not a copy of the base"
        assert (pool_dir_outside / vol_overlay).stat().st_size < 1 << 20

        # -- seed, address, accelerator, domain ---------------------------------------------
        seed = build_nocloud_seed(domain, hostname, [public_key], user_data, admin_username="azureuser")
        host.upload_bytes(pool, vol_seed, seed, "raw")
        host.reserve_address(lab_host.network_name, mac, ip, hostname)
        assert (mac, ip) in host.network_layout(lab_host.network_name)[4]

        kernel_path = host.volume_path(pool, vol_kernel)
        choice = probe_accelerator(host, kernel_path)
        assert choice.domain_type in ("qemu", "kvm"), choice
        # A sentence a user can read: several words, naming the host and what it chose.
        assert len(choice.reason.split()) >= 5 and lab_host.name in choice.reason, choice.reason
        assert ("QEMU" in choice.reason) if choice.domain_type == "qemu" else ("KVM" in choice.reason)
        print(f"accelerator: {choice.domain_type} ({choice.reason})")  # on the project machines: qemu

        xml = build_domain_xml(
            InstanceDomain(
                name=domain,
                domain_type=choice.domain_type,
                vcpus=1,
                memory_mib=256,
                pool=pool,
                os_volume=vol_overlay,
                seed_volume=vol_seed,
                network=lab_host.network_name,
                mac=mac,
                kernel_path=kernel_path,
                initrd_path=host.volume_path(pool, vol_initrd),
                cmdline=manifest["cmdline"],
                serial_log=f"/var/log/libvirt/qemu/{domain}-serial.log",
            )
        )
        started = time.monotonic()
        host.define_domain(xml)
        host.start(domain)
        assert ET.fromstring(host.domain_xml(domain)).get("type") == choice.domain_type

        # -- the guest serves ---------------------------------------------------------------
        deadline = started + BOOT_TIMEOUT_S
        status, body = 0, ""
        while time.monotonic() < deadline:
            status, body = http_get(f"http://{ip}/healthz")
            if status == 200:
                break
            if host.power_state(domain) != PowerState.RUNNING:
                pytest.fail(f"guest stopped before serving; serial console:\n{serial_log.read_text(errors='replace')}")
            time.sleep(0.5)
        else:
            pytest.fail(f"/healthz of {ip} not 200 within {BOOT_TIMEOUT_S:.0f} s (last: {status} {body[:200]})")
        print(f"domain create to /healthz 200: {time.monotonic() - started:.1f} s")

        status, body = http_get(f"http://{ip}/")
        assert (status, body.strip()) == (200, hostname)

        ssh = paramiko.SSHClient()
        ssh.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # a brand-new guest: no known key yet
        try:
            ssh.connect(ip, username="root", pkey=pkey, allow_agent=False, look_for_keys=False, timeout=30)
            _, stdout, stderr = ssh.exec_command(
                "hostname; cat /proc/cpuinfo | head -1; cat /root/user-data-marker; cat /var/log/user-data.log",
                timeout=30,
            )
            out = stdout.read().decode()
            assert stdout.channel.recv_exit_status() == 0, stderr.read().decode()
        finally:
            ssh.close()
        ssh = paramiko.SSHClient()
        ssh.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        try:  # adminUsername: a login of its own, with the seed's keys
            ssh.connect(ip, username="azureuser", pkey=pkey, allow_agent=False, look_for_keys=False, timeout=30)
            _, admin_out, _ = ssh.exec_command("id -un; echo $HOME", timeout=30)
            assert admin_out.read().decode().split() == ["azureuser", "/home/azureuser"]
        finally:
            ssh.close()
        lines = out.splitlines()
        assert lines[0] == hostname, out
        assert re.match(r"processor\s*:\s*0$", lines[1]), out
        assert lines[2] == f"ran as uid 0 in /root token={token}", "user-data ran once, as root, in /root"
        assert f"user-data-stdout-{token}" in lines[3:], "user-data's output is in /var/log/user-data.log"

        # The ready line follows /healthz turning 200 immediately; allow the console a moment.
        ready = f"localvmss-guest: ready hostname={hostname} ip={ip}"
        for _ in range(40):
            if ready in serial_log.read_text(errors="replace").splitlines():
                break
            time.sleep(0.25)
        else:
            pytest.fail(f"no {ready!r} line on the serial console:\n{serial_log.read_text(errors='replace')[-3000:]}")

        # Guest writes went to the overlay; the base volume is byte for byte the image's disk.
        assert sha256_of(pool_dir_outside / vol_disk) == manifest["files"][manifest["disk"]]
        conn = libvirt.open(lab_host.socket_uri)
        try:
            assert conn.storageVolLookupByPath(overlay_path).info()[2] > over_alloc, "the guest wrote to its overlay"
        finally:
            conn.close()
    finally:
        cleanup_errors = _clean_up(host, lab_host.socket_uri, lab_host.network_name, domain, pool, mac)
        host.close()

    # -- nothing of it is left in libvirt ---------------------------------------------------
    assert not cleanup_errors, f"clean-up failed: {cleanup_errors}"
    conn = libvirt.open(lab_host.socket_uri)
    try:
        assert domain not in [d.name() for d in conn.listAllDomains(0)]
        assert pool not in [p.name() for p in conn.listAllStoragePools(0)]
        for other in conn.listAllStoragePools(0):
            other.refresh(0)
            assert not [v for v in other.listVolumes() if v.startswith(domain)], f"volumes left in {other.name()}"
        net_xml = ET.fromstring(conn.networkLookupByName(lab_host.network_name).XMLDesc(0))
        hosts = [(h.get("mac"), h.get("ip")) for h in net_xml.iterfind("ip/dhcp/host")]
        assert not [h for h in hosts if h[0] == mac or h[1] == ip], hosts
    finally:
        conn.close()
    assert not pool_dir_outside.exists(), "the pool's directory is removed with the pool"


def _clean_up(host: Host, uri: str, network: str, domain: str, pool: str, mac: str) -> list[str]:
    """Remove everything the test made, each step on its own so one failure does not skip the rest.

    Returns the failures (checked after the test body, so they never hide the body's own failure).
    """

    def delete_volumes() -> None:
        for volume in host.volume_names(pool, prefix=domain):
            host.delete_volume(pool, volume)

    steps = [lambda: host.undefine(domain), delete_volumes, lambda: host.release_address(network, mac)]
    errors = []
    for step in steps:
        try:
            step()
        except LocalVMSSError as exc:
            errors.append(exc.message)
    # Host has no call to remove a pool; do it through libvirt.
    conn = libvirt.open(uri)
    try:
        p = conn.storagePoolLookupByName(pool)
        if p.isActive():
            p.destroy()
        p.delete(0)  # removes the (now empty) directory
        p.undefine()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
            errors.append(str(exc))
    finally:
        conn.close()
    return errors
