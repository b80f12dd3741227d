#!/usr/bin/env bash
# Vagrant lab provisioning of the controller (as root): localvmss from the synced checkout, SSH
# trust to the KVM hosts, the daemon's configuration and the daemon under systemd. Static: it
# takes no arguments and reads only the files the Vagrantfile wrote from inventory.json and
# uploaded to the staging directory.
set -euo pipefail
stage=/tmp/localvmss-lab
repo=/opt/localvmss
for f in id_ed25519 id_ed25519.pub known_hosts ssh_config localvmssd.toml; do
  [ -f "$stage/$f" ] || { echo "controller.sh: $stage/$f is missing (the Vagrantfile uploads it first)" >&2; exit 1; }
done
[ -f "$repo/Makefile" ] || { echo "controller.sh: no checkout at $repo (the rsync synced folder)" >&2; exit 1; }

echo "==> make setup: packages, .venv, base image, libvirtd"
make -C "$repo" setup
echo "==> make install: the systemd unit and /etc/localvmss"
make -C "$repo" install

echo "==> SSH trust: the controller's key and the KVM hosts' keys"
install -d -m 0700 /etc/localvmss/ssh
install -m 0600 "$stage/id_ed25519" /etc/localvmss/ssh/id_ed25519
install -m 0644 "$stage/id_ed25519.pub" /etc/localvmss/ssh/id_ed25519.pub
install -m 0644 "$stage/known_hosts" /etc/localvmss/ssh/known_hosts
install -d -m 0755 /etc/ssh/ssh_config.d
install -m 0644 "$stage/ssh_config" /etc/ssh/ssh_config.d/localvmss-lab.conf

echo "==> /etc/localvmss/localvmssd.toml from the inventory"
install -m 0644 "$stage/localvmssd.toml" /etc/localvmss/localvmssd.toml.new
if ! "$repo/.venv/bin/localvmssd" --check-config --config /etc/localvmss/localvmssd.toml.new; then
  rm -f /etc/localvmss/localvmssd.toml.new
  echo "controller.sh: the generated configuration was refused (above); the old one is kept" >&2
  exit 1
fi
mv -f /etc/localvmss/localvmssd.toml.new /etc/localvmss/localvmssd.toml

echo "==> localvmssd under systemd"
systemctl daemon-reload
systemctl enable --quiet localvmssd.service
systemctl restart localvmssd.service
systemctl --no-pager --lines=0 status localvmssd.service || true

rm -rf "$stage"
echo "==> controller ready: 'vagrant ssh controller', 'sudo -i', then vagrant/README.md"
