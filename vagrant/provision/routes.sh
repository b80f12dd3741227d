#!/usr/bin/env bash
# Vagrant lab provisioning, every machine (as root): installs the static-route helper and its boot
# unit, then makes the routes the Vagrantfile wrote from inventory.json. Static: it reads only the
# files uploaded to the staging directory, and takes no arguments.
set -euo pipefail
stage=/tmp/localvmss-lab
for f in routes lab-routes localvmss-lab-routes.service; do
  [ -f "$stage/$f" ] || { echo "routes.sh: $stage/$f is missing (the Vagrantfile uploads it first)" >&2; exit 1; }
done
install -d -m 0755 /etc/localvmss-lab
install -m 0755 "$stage/lab-routes" /usr/local/sbin/localvmss-lab-routes
install -m 0644 "$stage/localvmss-lab-routes.service" /etc/systemd/system/localvmss-lab-routes.service
# The helper checks every line before changing a route, so a bad file leaves the old routes.
install -m 0644 "$stage/routes" /etc/localvmss-lab/routes.new
/usr/local/sbin/localvmss-lab-routes /etc/localvmss-lab/routes.new
# Routes of an earlier inventory that the new one no longer has.
if [ -f /etc/localvmss-lab/routes ]; then
  while read -r dest via _; do
    [[ -z ${dest:-} || $dest == \#* ]] && continue
    grep -qxF -- "$dest $via" /etc/localvmss-lab/routes.new || ip route del "$dest" via "$via" 2>/dev/null || true
  done </etc/localvmss-lab/routes
fi
mv -f /etc/localvmss-lab/routes.new /etc/localvmss-lab/routes
systemctl daemon-reload
systemctl enable --quiet localvmss-lab-routes.service
