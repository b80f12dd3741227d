#!/usr/bin/env bash
# Vagrant lab provisioning of a KVM host (as root): libvirt, IP forwarding, the host key the
# controller already trusts, the controller's key for root, and the routed guest network.
# Static: its one argument is the network's name (checked), everything else comes from the files
# the Vagrantfile wrote from inventory.json and uploaded to the staging directory.
set -euo pipefail
stage=/tmp/localvmss-lab
net=${1:-}
[[ $net =~ ^[A-Za-z0-9_-]{1,32}$ ]] || { echo "kvm-host.sh: usage: kvm-host.sh NETWORK_NAME (letters, digits, _ or -)" >&2; exit 2; }
for f in guest-network.xml ssh_host_ed25519_key ssh_host_ed25519_key.pub authorized_keys; do
  [ -f "$stage/$f" ] || { echo "kvm-host.sh: $stage/$f is missing (the Vagrantfile uploads it first)" >&2; exit 1; }
done
export LIBVIRT_DEFAULT_URI=qemu:///system

echo "==> packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends \
  qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients dnsmasq-base iptables >/dev/null

echo "==> IP forwarding (guests are routed to the rack, not NATed)"
printf 'net.ipv4.ip_forward = 1\n' >/etc/sysctl.d/60-localvmss-lab.conf
sysctl -q -w net.ipv4.ip_forward=1

echo "==> SSH: the host key in the controller's known_hosts, the controller's key for root"
install -m 0600 "$stage/ssh_host_ed25519_key" /etc/ssh/ssh_host_ed25519_key
install -m 0644 "$stage/ssh_host_ed25519_key.pub" /etc/ssh/ssh_host_ed25519_key.pub
install -d -m 0700 /root/.ssh
touch /root/.ssh/authorized_keys
{ grep -vF localvmss-lab-controller /root/.ssh/authorized_keys || true; cat "$stage/authorized_keys"; } >/root/.ssh/authorized_keys.new
install -m 0600 /root/.ssh/authorized_keys.new /root/.ssh/authorized_keys
rm -f /root/.ssh/authorized_keys.new
systemctl restart ssh

echo "==> routed guest network $net"
install -d -m 0755 /etc/localvmss-lab
if virsh net-info "$net" >/dev/null 2>&1; then
  if ! cmp -s "$stage/guest-network.xml" /etc/localvmss-lab/guest-network.xml; then
    # The inventory changed the network: guests on the old one keep their old addresses.
    virsh net-destroy "$net" >/dev/null 2>&1 || true
    virsh net-undefine "$net"
    virsh net-define "$stage/guest-network.xml"
  fi
else
  virsh net-define "$stage/guest-network.xml"
fi
install -m 0644 "$stage/guest-network.xml" /etc/localvmss-lab/guest-network.xml
virsh net-autostart "$net" >/dev/null
info=$(virsh net-info "$net")
[[ $info =~ Active:[[:space:]]+yes ]] || virsh net-start "$net"
virsh net-info "$net"

rm -rf "$stage"
