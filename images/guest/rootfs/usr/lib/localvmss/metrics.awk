# /proc/stat and /proc/meminfo as node_exporter metrics. /proc/stat counts USER_HZ ticks (100 per
# second on Linux); /proc/meminfo counts kB.
BEGIN {
    split("user nice system idle iowait irq softirq steal", modes, " ")
    print "# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode."
    print "# TYPE node_cpu_seconds_total counter"
}
FILENAME == "/proc/stat" && $1 ~ /^cpu[0-9]+$/ {
    cpu = substr($1, 4)
    for (i = 1; i <= 8; i++)
        printf "node_cpu_seconds_total{cpu=\"%s\",mode=\"%s\"} %.2f\n", cpu, modes[i], $(i + 1) / 100
}
FILENAME == "/proc/meminfo" && ($1 == "MemTotal:" || $1 == "MemAvailable:") {
    name = "node_memory_" substr($1, 1, length($1) - 1) "_bytes"
    print "# HELP " name " Memory information field " substr($1, 1, length($1) - 1) "_bytes."
    print "# TYPE " name " gauge"
    printf "%s %.0f\n", name, $2 * 1024
}
