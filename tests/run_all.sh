#!/bin/sh
# Run every test: the C unit tests, then the integration, CLI and hostile-input
# scripts. Each reports its own results; the last line adds them up as
# "total: N passed, N failed". Exit status 1 if anything failed.
# Environment: BIN (the tool), BUILD (build folder), PYTHON (with numpy/h5py).
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top" || exit 2
BIN=${BIN:-bin/dora-analyze}
BUILD=${BUILD:-build}
PYTHON=${PYTHON:-/usr/bin/python3}
export BIN PYTHON
case "$BIN" in /*) ;; *) BIN="$top/$BIN" ;; esac
export BIN

pass=0
fail=0
log=$(mktemp)
skiplog=$(mktemp)
trap 'rm -f "$log" "$skiplog"' EXIT

for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    "$t" >"$log" 2>&1
    rc=$?
    cat "$log"
    line=$(grep -E '^[a-z_]+: [0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)
    p=$(echo "$line" | sed -E 's/.*: ([0-9]+) passed.*/\1/')
    f=$(echo "$line" | sed -E 's/.* ([0-9]+) failed$/\1/')
    if [ -z "$line" ]; then
        echo "FAIL $t: no summary line (crashed? exit $rc)"
        fail=$((fail + 1))
        continue
    fi
    [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
    pass=$((pass + p))
    fail=$((fail + f))
done

for s in tests/sh/*.sh; do
    [ -f "$s" ] || continue
    echo "== $s"
    bash "$s" >"$log" 2>&1
    rc=$?
    cat "$log"
    p=$(grep -c '^PASS ' "$log")
    f=$(grep -c '^FAIL ' "$log")
    grep '^SKIP ' "$log" >>"$skiplog"
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "FAIL $s: exit status $rc without a FAIL line"
        f=1
    fi
    pass=$((pass + p))
    fail=$((fail + f))
done

skips=$(cat "$skiplog" 2>/dev/null | wc -l)
[ "$skips" -gt 0 ] && echo "($skips check(s) skipped: see the SKIP lines above)"
echo "total: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
