#!/bin/bash
# Pickles that attack the interpreter's bounds: memory amplification, quadratic paths,
# NUL bytes in globals and unbounded depth.
#
#   tests/sh/hostile_pickle.sh    (env: DORA_BIN or BIN = the binary, PY or PYTHON = python3)
#
# tests/py/gen_hostile_pickle.py writes the .pt files (real torch.save-layout zips) and a
# manifest. Each file runs as `inspect F` and, where its tensor fits the valid pair, as
# `analyze --base base.pt -o OUT run.pt F`, in a fresh output folder as cwd. A "fail" case
# must exit 1 naming the file and what is wrong, and leave nothing in the output folder; an
# "ok" case (valid but expensive to read) must exit 0 (and analyze must write OUT). Neither
# may crash, time out or draw a sanitizer report. Bounds: "rss" cases stay under 64 MiB of
# peak RSS (256 MiB when the binary is an ASan build, BIN containing build-san); "time"
# cases finish within 8 s (40 s under ASan), where they take about 0.3 s.
# Prints `PASS hostile_pickle/<case>/<command>` or `FAIL ...: <why>`; exits 1 on any FAIL.

set -u
SUITE=hostile_pickle
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

if [ ! -x "$BIN" ]; then
    fail binary "$BIN not found or not executable"
    finish
fi
C=$TMP/corpus
if ! "$PY" "$TP/gen_hostile_pickle.py" "$C" >"$LOG/generate.err" 2>&1; then
    fail generate "gen_hostile_pickle.py failed: $(peek "$LOG/generate.err")"
    finish
fi
case $BIN in
*build-san*) RSS_MAX=$((256 * 1024)) TIME_MAX=40 ;;
*) RSS_MAX=$((64 * 1024)) TIME_MAX=8 ;;
esac
VBASE=$C/valid/base.pt
VRUN=$C/valid/run.pt

# check LABEL EXPECT BOUND ALL -- CMD...  (ALL: strings split by \x1f; @OUT@ = the output file)
N=0
check() {
    local label=$1 expect=$2 bound=$3 all=$4 file=$5
    shift 6
    N=$((N + 1))
    local od=$TMP/out/$N err=$LOG/$N.err rss=$LOG/$N.rss why="" args=() a limit=60
    mkdir -p "$od"
    for a in "$@"; do args+=("${a//@OUT@/$od/out.h5}"); done
    [ "$bound" = time ] && limit=$TIME_MAX
    local t0 t1
    t0=$(date +%s.%N)
    (cd "$od" && exec timeout -k 5 "$limit" /usr/bin/time -f "%M" -o "$rss" "${args[@]}") \
        >/dev/null 2>"$err"
    local rc=$?
    t1=$(date +%s.%N)
    local secs
    secs=$(echo "$t1 - $t0" | bc)
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        why="timed out ($limit s)"
    elif [ $rc -ge 128 ]; then
        why="killed by signal $((rc - 128))"
    elif grep -qE 'Sanitizer|runtime error:' "$err"; then
        why="sanitizer report: $(grep -m1 -E 'Sanitizer|runtime error:' "$err")"
    elif [ "$expect" = ok ] && [ $rc -ne 0 ]; then
        why="exit status $rc, expected 0"
    elif [ "$expect" = fail ] && [ $rc -ne 1 ]; then
        why="exit status $rc, expected 1"
    fi
    if [ -z "$why" ] && [ "$expect" = fail ]; then
        grep -qF -- "$(basename "$file")" "$err" || why="stderr does not name the file"
        if [ -z "$why" ] && [ -n "$all" ]; then
            local s list
            IFS=$'\x1f' read -r -a list <<<"$all"
            for s in "${list[@]}"; do
                grep -qF -- "$s" "$err" || { why="stderr does not say '$s'"; break; }
            done
        fi
        if [ -z "$why" ]; then
            local left
            left=$(find "$od" -mindepth 1 -printf "%P " 2>/dev/null)
            [ -z "$left" ] || why="left behind in the output folder: $left"
        fi
    fi
    if [ -z "$why" ] && [ "$expect" = ok ] && [ "${args[1]}" = analyze ] && [ ! -s "$od/out.h5" ]; then
        why="no output file"
    fi
    # /usr/bin/time writes "Command exited with non-zero status N" before the number
    local kib
    kib=$(tail -1 "$rss" 2>/dev/null)
    if [ -z "$why" ] && [ "$bound" = rss ]; then
        case $kib in
        '' | *[!0-9]*) why="no peak RSS measured" ;;
        *) [ "$kib" -le "$RSS_MAX" ] || why="peak RSS $kib KiB, over $RSS_MAX KiB" ;;
        esac
    fi
    if [ -z "$why" ] && [ "$bound" = time ] && [ "$(echo "$secs > $TIME_MAX" | bc)" = 1 ]; then
        why="took $secs s, over $TIME_MAX s"
    fi
    if [ -z "$why" ]; then
        pass "$label"
    else
        fail "$label" "$why [rss ${kib:-?} KiB, ${secs} s; stderr: $(peek "$err" 200)]"
    fi
}

"$PY" - "$C/manifest.json" >"$TMP/cases.tsv" <<'EOF'
import json, sys
for c in json.load(open(sys.argv[1])):
    print("\t".join([c["name"], c["path"], c["expect"], c["bound"] or "-",
                     "\x1f".join(c["stderr_all"]) or "-", "1" if c["analyze"] else "0"]))
EOF

while IFS=$'\t' read -r name path expect bound all analyze; do
    p=$C/$path
    [ "$bound" = "-" ] && bound=""
    [ "$all" = "-" ] && all=""
    check "$name/inspect" "$expect" "$bound" "$all" "$p" -- "$BIN" inspect "$p"
    if [ "$analyze" = 1 ]; then
        check "$name/as-run" "$expect" "$bound" "$all" "$p" -- \
            "$BIN" analyze --base "$VBASE" -o @OUT@ "$VRUN" "$p"
    fi
done <"$TMP/cases.tsv"

# the valid pair itself must analyse (else every as-run case above proves nothing)
check valid-pair ok "" "" "$VRUN" -- "$BIN" analyze --base "$VBASE" -o @OUT@ "$VRUN"
finish
