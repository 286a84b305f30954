#!/bin/bash
# Malformed-input tests for bin/dora-analyze.
#
#   tests/sh/hostile.sh            (env: DORA_BIN or BIN = the binary, PY or PYTHON = python with numpy)
#
# Generates the corpus with tests/py/gen_hostile.py, then for every case runs
# the tool (20 s timeout) and requires: exit status exactly 1 (no signal, no
# timeout, no sanitizer report), stderr naming the offending file (and the
# tensor where the manifest names one), and nothing left in the output folder
# (neither OUT.h5 nor a temp file). Each command runs with that folder as cwd.
# File cases run three ways: inspect F / analyze --base F / analyze with F as a
# run after a valid run. Run cases come after a valid run, with -j 2.
# Prints `PASS hostile/<name>` or `FAIL hostile/<name>: <why>`; exits 1 on any FAIL.

set -u
SUITE=hostile
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

if [ ! -x "$BIN" ]; then
    echo "FAIL hostile/binary: $BIN not found or not executable"
    exit 1
fi
C=$TMP/corpus
if ! "$PY" "$ROOT/tests/py/gen_hostile.py" "$C"; then
    echo "FAIL hostile/generate: gen_hostile.py failed"
    exit 1
fi
VBASE=$C/valid/base.safetensors
VRUN=$C/valid/run.safetensors

# check LABEL ANY ALL -- CMD...
#   ANY, ALL: strings separated by the unit separator \x1f (ANY may be empty)
N=0
check() {
    local label=$1 any=$2 all=$3
    shift 4
    N=$((N + 1))
    local od=$TMP/out/$N
    mkdir -p "$od"
    local err=$TMP/err.$N
    local why=""
    # substitute @OUT@ with the output file
    local args=() a
    for a in "$@"; do args+=("${a//@OUT@/$od/out.h5}"); done
    (cd "$od" && exec timeout -k 5 20 "${args[@]}") >/dev/null 2>"$err"
    local rc=$?
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        why="timed out (20 s)"
    elif [ $rc -ge 128 ]; then
        why="killed by signal $((rc - 128))"
    elif [ $rc -ne 1 ]; then
        why="exit status $rc, expected 1"
    fi
    if [ -z "$why" ] && grep -qE 'Sanitizer|runtime error:' "$err"; then
        why="sanitizer report: $(grep -m1 -E 'Sanitizer|runtime error:' "$err")"
    fi
    if [ -z "$why" ] && [ -n "$any" ]; then
        local found=0 s
        IFS=$'\x1f' read -r -a list <<<"$any"
        for s in "${list[@]}"; do
            if grep -qF -- "$s" "$err"; then found=1; break; fi
        done
        [ $found -eq 1 ] || why="stderr does not name the file (${any//$'\x1f'/ or })"
    fi
    if [ -z "$why" ] && [ -n "$all" ]; then
        local s
        IFS=$'\x1f' read -r -a list <<<"$all"
        for s in "${list[@]}"; do
            grep -qF -- "$s" "$err" || { why="stderr does not name '$s'"; break; }
        done
    fi
    if [ -z "$why" ]; then
        local left
        left=$(find "$od" -mindepth 1 -printf "%P " 2>/dev/null)
        [ -z "$left" ] || why="left behind in the output folder: $left"
    fi
    if [ -z "$why" ]; then
        echo "PASS hostile/$label"
        NPASS=$((NPASS + 1))
    else
        local first
        first=$(head -c 200 "$err" | tr '\n' ' ')
        echo "FAIL hostile/$label: $why [stderr: $first]"
        NFAIL=$((NFAIL + 1))
    fi
}

# manifest -> one line per case: name, role, path, any, all (fields split by \t)
"$PY" - "$C/manifest.json" >"$TMP/cases.tsv" <<'EOF'
import json, sys
for c in json.load(open(sys.argv[1])):
    # "-" for an empty list: tabs are IFS whitespace, empty fields would collapse
    print("\t".join([c["name"], c["role"], c["path"],
                     "\x1f".join(c["stderr_any"]) or "-", "\x1f".join(c["stderr_all"]) or "-"]))
EOF

while IFS=$'\t' read -r name role path any all; do
    p=$C/$path
    [ "$any" = "-" ] && any=""
    [ "$all" = "-" ] && all=""
    case $role in
    file)
        check "$name/inspect" "$any" "$all" -- "$BIN" inspect "$p"
        check "$name/as-base" "$any" "$all" -- "$BIN" analyze --base "$p" -o @OUT@ "$VRUN"
        check "$name/as-run" "$any" "$all" -- "$BIN" analyze --base "$VBASE" -o @OUT@ "$VRUN" "$p"
        ;;
    run)
        check "$name" "$any" "$all" -- "$BIN" analyze --base "$VBASE" -o @OUT@ -j 2 "$VRUN" "$p"
        ;;
    base)
        check "$name" "$any" "$all" -- "$BIN" analyze --base "$p" -o @OUT@ "$VRUN"
        ;;
    *)
        echo "FAIL hostile/$name: unknown role $role"
        NFAIL=$((NFAIL + 1))
        ;;
    esac
done <"$TMP/cases.tsv"

# The valid pair itself must work (else every case above passes for nothing).
od=$TMP/out/valid
mkdir -p "$od"
if (cd "$od" && timeout -k 5 20 "$BIN" analyze --base "$VBASE" -o "$od/out.h5" "$VRUN") >/dev/null 2>"$TMP/err.valid" &&
    [ -s "$od/out.h5" ]; then
    echo "PASS hostile/valid-pair"
    NPASS=$((NPASS + 1))
else
    echo "FAIL hostile/valid-pair: the valid base and run do not analyse: $(head -c 200 "$TMP/err.valid")"
    NFAIL=$((NFAIL + 1))
fi

echo "hostile: $NPASS passed, $NFAIL failed"
[ $NFAIL -eq 0 ]
