#!/usr/bin/env bash
# `make bench`: every bench of bench/*/run.sh, one after the other (they
# share the machine's two cores: never in parallel), then a summary of
# each one's table.  Needs `make module` (the Makefile's bench target
# builds first).  Each bench's README.md says what it measures.
#
#   bash bench/run.sh                  every bench
#   bash bench/run.sh checkin api      some of them
set -uo pipefail
cd "$(dirname "$0")/.."

benches=("$@")
if [ ${#benches[@]} -eq 0 ]; then
    benches=()
    for d in checkin scep api apns; do
        [ -f "bench/$d/run.sh" ] && benches+=("$d")
    done
    for f in bench/*/run.sh; do
        d=$(basename "$(dirname "$f")")
        case " ${benches[*]} " in *" $d "*) ;; *) benches+=("$d") ;; esac
    done
fi

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
failed=0

for b in "${benches[@]}"; do
    if [ ! -f "bench/$b/run.sh" ]; then
        echo "bench/$b/run.sh: no such bench" >&2
        failed=1
        continue
    fi
    echo "=== bench/$b ($(date -u +%H:%M:%S), load $(cut -d' ' -f1 /proc/loadavg))"
    if bash "bench/$b/run.sh" 2>&1 | tee "$logs/$b.log"; then
        echo "=== bench/$b: done"
    else
        echo "=== bench/$b: FAILED"
        echo "FAILED" >> "$logs/$b.log"
        failed=1
    fi
done

echo
echo "=== summary"
for b in "${benches[@]}"; do
    [ -f "$logs/$b.log" ] || continue
    echo
    echo "--- bench/$b"
    # the tables each bench prints (markdown rows), else its last lines
    if grep -q '^|' "$logs/$b.log"; then
        grep '^|' "$logs/$b.log"
    else
        tail -n 5 "$logs/$b.log"
    fi
done

exit $failed
