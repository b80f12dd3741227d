# Reads NoCloud meta-data as written by localvmss/virt/seed.py (a small subset of YAML: top-level
# `key: 'value'` and a `public-keys:` list of quoted strings) into files under `out`. Unknown keys
# are ignored; `localvmss-metadata-port` is the metadata service's port when it is not 80,
# `localvmss-admin-username` the set's adminUsername when it is not root, and `localvmss-address`
# (a.b.c.d/prefix) with `localvmss-gateway` a static address to set instead of asking DHCP.
function unquote(v) {
    sub(/^[ \t]+/, "", v)
    sub(/[ \t\r]+$/, "", v)
    if (v ~ /^'.*'$/) {
        v = substr(v, 2, length(v) - 2)
        gsub(/''/, "'", v)
    } else if (v ~ /^".*"$/) {
        v = substr(v, 2, length(v) - 2)
    }
    return v
}
/^[A-Za-z_-]+:/ {
    key = $0
    sub(/:.*/, "", key)
    value = $0
    sub(/^[^:]*:/, "", value)
    value = unquote(value)
    in_keys = (key == "public-keys")
    if (key == "instance-id") print value > (out "/instance-id")
    else if (key == "local-hostname") print value > (out "/hostname")
    else if (key == "localvmss-metadata-port" && value ~ /^[0-9]+$/) print value > (out "/metadata-port")
    else if (key == "localvmss-admin-username" && value ~ /^[a-z_][a-z0-9_-]*$/) print value > (out "/admin-username")
    else if (key == "localvmss-address" && value ~ /^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+\/[0-9]+$/) print value > (out "/static-address")
    else if (key == "localvmss-gateway" && value ~ /^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$/) print value > (out "/static-gateway")
    else if (in_keys && value != "") print value > (out "/authorized_keys")
    next
}
in_keys && /^[ \t]*- / {
    value = $0
    sub(/^[ \t]*- /, "", value)
    print unquote(value) > (out "/authorized_keys")
    next
}
/^[^ \t#]/ { in_keys = 0 }
