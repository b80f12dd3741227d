# Shared by the nocloud scripts (sourced). Reading a flattened YAML file (see yaml.awk):
#   value FILE PATH     the value at PATH, decoded (nothing, status 1, if absent)
#   has FILE PREFIX     status 0 if PATH or anything under PATH. is present
PATH=/usr/sbin:/usr/bin:/sbin:/bin
run=/run/nocloud
cloud=/var/lib/cloud

value() {
    [ -f "$1" ] || return 1
    raw=$(awk -F '\t' -v k="$2" '$1 == k { sub(/^[^\t]*\t/, ""); print; found = 1; exit } END { exit !found }' "$1") || return 1
    printf '%b' "$raw"
}

has() {
    [ -f "$1" ] && awk -F '\t' -v k="$2" 'index($1, k ".") == 1 || $1 == k { found = 1; exit } END { exit !found }' "$1"
}

say() {
    # One line on the serial console, after a newline (firmware output does not end its line).
    printf '\nnocloud: %s\n' "$*" >/dev/console
}

# once NAME: status 0 the first time NAME is asked for this instance-id, as cloud-init's
# per-instance semaphores (/var/lib/cloud/instances/<id>/sem/) do.
once() {
    sem="$cloud/instance/sem/$1"
    [ -e "$sem" ] && return 1
    mkdir -p "$cloud/instance/sem"
    date +%s > "$sem"
}

valid_name() {
    case "$1" in
        '' | -* | *[!a-z0-9-]*) return 1 ;;
    esac
    [ "${#1}" -le 63 ]
}

# Quote one word for sh (runcmd items given as lists are argv, not shell text).
quote() {
    printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}
