#!/usr/bin/env bash
# The server-side figures behind BENCHMARKS.md's "Tail latency" and "Entity
# mapping" sections, measured with pgbench (no pinlock code involved):
#   nextval      the fencing-token sequence alone
#   lock_unlock  a bare pg_advisory_lock + pg_advisory_unlock pair
#   find_key     reading an existing entity mapping
#   upsert_key   the upsert of an existing entity mapping
# Needs pgbench and a database pinlock has migrated.
# Usage: docs/pgbench-checks.sh [psql/pgbench connection options]
set -euo pipefail
conn=("$@")
[ ${#conn[@]} -gt 0 ] || conn=(-h 127.0.0.1 -U postgres test)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
entity=$(psql "${conn[@]}" -qtAc \
    "INSERT INTO pinlock.entity_keys (entity) VALUES (gen_random_uuid()) RETURNING entity")

run() { # name transactions sql
    echo "$3" > "$dir/$1.sql"
    (cd "$dir" && pgbench "${conn[@]}" -n -M prepared -t "$2" -f "$1.sql" -l --log-prefix="log_$1" >/dev/null 2>&1)
    # Column 3 of pgbench's per-transaction log is the latency in µs.
    cat "$dir/log_$1".* | awk '{print $3}' | sort -n | awk -v name="$1" '
        { v[NR] = $1; if ($1 > 1000) slow++ }
        END { printf "%-12s n=%d  p50 %d µs  p95 %d µs  p99 %d µs  above 1 ms %.1f %%\n",
                     name, NR, v[int(NR * 0.5)], v[int(NR * 0.95)], v[int(NR * 0.99)], 100 * slow / NR }'
}

run nextval 3200 "SELECT nextval('pinlock.fence');"
run lock_unlock 3200 "SELECT pg_advisory_lock(4611686018427387904); SELECT pg_advisory_unlock(4611686018427387904);"
run find_key 1000 "SELECT key FROM pinlock.entity_keys WHERE entity = '$entity';"
run upsert_key 1000 "INSERT INTO pinlock.entity_keys (entity) VALUES ('$entity')
    ON CONFLICT (entity) DO UPDATE SET entity = EXCLUDED.entity RETURNING key;"
