#!/usr/bin/env bash
# The server-side figures behind BENCHMARKS.md's "Issue 8, third pass": how
# many advisory lock/unlock pairs one server runs per second when they arrive
# one statement at a time over many connections, against pipelined (eight
# pairs in one \startpipeline … \endpipeline) or eight keys per statement over
# two connections. No pinlock code involved; needs pgbench 14+.
# Usage: docs/pgbench-pipelining.sh [pgbench connection options]
set -euo pipefail
conn=("$@")
[ ${#conn[@]} -gt 0 ] || conn=(-h 127.0.0.1 -U postgres postgres)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
sets=$(for i in 0 1 2 3 4 5 6 7; do echo "\\set k$i random(1, 1000000)"; done)
keys=":k0,:k1,:k2,:k3,:k4,:k5,:k6,:k7"
printf '\\set k random(1, 1000000)\nSELECT pg_advisory_lock(:k);\nSELECT pg_advisory_unlock(:k);\n' > "$dir/one.sql"
{
    echo "$sets"; echo '\startpipeline'
    for i in 0 1 2 3 4 5 6 7; do echo "SELECT pg_try_advisory_lock(:k$i);"; done
    for i in 0 1 2 3 4 5 6 7; do echo "SELECT pg_advisory_unlock(:k$i);"; done
    echo '\endpipeline'
} > "$dir/pipelined.sql"
{
    echo "$sets"
    echo "SELECT pg_try_advisory_lock(k) FROM unnest(ARRAY[$keys]::int8[]) k;"
    echo "SELECT pg_advisory_unlock(k) FROM unnest(ARRAY[$keys]::int8[]) k;"
} > "$dir/batched.sql"
run() { # name clients pairs-per-transaction
    local tps
    tps=$(cd "$dir" && pgbench "${conn[@]}" -n -M prepared -T 5 -c "$2" -j 2 -f "$1.sql" 2>/dev/null |
        awk '/^tps/ {print int($3)}')
    printf '%-10s -c %-2d  %6d transactions/s  %7d pairs/s\n' "$1" "$2" "$tps" $((tps * $3))
}
run one 16 1
run pipelined 2 8
run batched 2 8
