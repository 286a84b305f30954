#!/bin/bash
# Limits of issue #14: inputs with many items (class 6) and integers at and beyond their
# range (class 9).
#
#   tests/sh/hostile_limits.sh   (env: DORA_BIN or BIN = the binary, PY or PYTHON = python with
#                                 numpy/h5py, HOSTILE_LIMITS_MODULES = module count, default
#                                 40000)
#
# tests/py/gen_hostile_limits.py writes a base of N tiny tensors (every one its own module
# kind), a full fine-tuning run of it and a LoRA adapter of all N modules with a
# rank_pattern and an alpha_pattern of 16 keys. Each analysis must finish within a CPU-time
# bound (a guard against quadratic paths, far above the linear cost: 8 s, 40 s under the
# sanitizers; the quadratic code took 16-25 s) with all N modules and N regression rows in
# the output and, for a sample of modules, dM and dD as NumPy computes them. Then the error
# cases of OUTDIR/cases.tsv (steps beyond int64, ranks beyond 2^53 and 2^63 - 1, a rank
# larger than the weight, a scale whose square overflows): each must exit 1 with a message
# naming the file and what is wrong, a peak RSS within a bound, and no output file.
# Prints `PASS hostile_limits/<name>` or `FAIL hostile_limits/<name>: <why>`.

set -u
SUITE=hostile_limits
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
D=$TMP/data
OUT=$TMP/out
mkdir -p "$OUT"
N=${HOSTILE_LIMITS_MODULES:-40000}
case $BIN in
*build-san*) CPU_MAX=40 RSS_MAX_KB=$((256 * 1024)) LIMIT=900 ;;
*) CPU_MAX=8 RSS_MAX_KB=$((64 * 1024)) LIMIT=300 ;;
esac

# timed LABEL CMD... : like run (lib.sh), with a longer timeout and the CPU seconds
# (user + sys) in CPU and the peak RSS (KiB) in RSS
timed() {
    local label=$1
    shift
    /usr/bin/time -o "$LOG/$label.time" -f "%U %S %M" \
        timeout -k 5 "$LIMIT" "$@" >"$LOG/$label.out" 2>"$LOG/$label.err"
    RC=$?
    # /usr/bin/time writes "Command exited with non-zero status N" first when N != 0
    read -r u s RSS < <(tail -1 "$LOG/$label.time")
    CPU=$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%.2f", u + s }')
}

if [ ! -x "$BIN" ]; then
    fail binary "$BIN not found or not executable (run make)"
    finish
fi

if "$PY" "$TP/gen_hostile_limits.py" "$D" --modules "$N" >"$LOG/gen.out" 2>&1; then
    pass generate
else
    fail generate "$(peek "$LOG/gen.out")"
    finish
fi

# ---------------------------------------------------------------- many modules
# many RUN : analyze the N-module run RUN against the N-tensor base
many() {
    local r=$1 label=many-$1 h5=$OUT/$1.h5
    timed "$label" "$BIN" analyze -q -j 2 --base "$D/many/base" -o "$h5" "$r=$D/many/$r"
    crashed "$label" && return
    if [ $RC -ne 0 ]; then
        fail "$label" "exit $RC, expected 0: $(peek "$LOG/$label.err")"
        return
    fi
    if awk -v c="$CPU" -v m="$CPU_MAX" 'BEGIN { exit !(c <= m) }'; then
        pass "$label-time"
        echo "    $label: $CPU s CPU for $N modules (bound $CPU_MAX s)"
    else
        fail "$label-time" "$CPU s CPU for $N modules, more than $CPU_MAX s: a quadratic path?"
    fi
    local rows
    rows=$(tail -n +2 "$LOG/$label.out" | wc -l)
    if [ "$rows" -eq "$N" ]; then
        pass "$label-table"
    else
        fail "$label-table" "$rows table rows, expected $N"
    fi
    if "$PY" - "$h5" "$r" "$D/many/expect.json" >"$LOG/$label.check" 2>&1 <<'EOF'; then
import json, sys
import h5py
h5, run, expect = sys.argv[1], sys.argv[2], json.load(open(sys.argv[3]))
bad = []
with h5py.File(h5, "r") as f:
    g = f["runs"][run]
    mods = [m.decode() if isinstance(m, bytes) else m for m in g["modules"][()]]
    if len(mods) != expect["modules"] or len(set(mods)) != len(mods):
        bad.append(f"{len(mods)} modules ({len(set(mods))} distinct), expected {expect['modules']}")
    # every module is its own kind: one regression row each
    nreg = len(f["regression"]["module_kind"])
    if nreg != expect["modules"]:
        bad.append(f"{nreg} regression rows, expected {expect['modules']}")
    idx = {m: i for i, m in enumerate(mods)}
    for name, ref in expect[run].items():
        if name not in idx:
            bad.append(f"module {name} missing")
            continue
        l = idx[name]
        for key in ("delta_m", "delta_d"):
            got, want = float(g[key][0, l]), ref[key]
            if not abs(got - want) <= 1e-6 * abs(want):
                bad.append(f"{name} {key} {got!r}, NumPy {want!r}")
        if "rank" in ref and int(g["rank"][l]) != ref["rank"]:
            bad.append(f"{name} rank {int(g['rank'][l])}, expected {ref['rank']}")
print("\n".join(bad) if bad else "ok")
sys.exit(1 if bad else 0)
EOF
        pass "$label-values"
    else
        fail "$label-values" "$(head -3 "$LOG/$label.check" | tr '\n' ' ')"
    fi
}
many ft
many lora

# ---------------------------------------------------------------- error cases
while IFS=$'\t' read -r name base runp wants unwanted; do
    [ -n "$name" ] || continue
    label=case-$name
    h5=$OUT/$name.h5
    timed "$label" "$BIN" analyze -j 2 --base "$base" -o "$h5" "$runp"
    crashed "$label" && continue
    why=""
    [ $RC -eq 1 ] || why="exit $RC, expected 1"
    msg=$(cat "$LOG/$label.err")
    if [ -z "$why" ]; then
        IFS='|' read -r -a want <<<"$wants"
        for w in "${want[@]}"; do
            case $msg in *"$w"*) ;; *) why="message lacks '$w'" && break ;; esac
        done
    fi
    if [ -z "$why" ] && [ "$unwanted" != "-" ]; then
        case $msg in *"$unwanted"*) why="message shows '$unwanted'" ;; esac
    fi
    [ -z "$why" ] && [ "$RSS" -gt "$RSS_MAX_KB" ] && why="peak RSS $RSS KiB, more than $RSS_MAX_KB KiB"
    left=$(leftovers "$h5")
    [ -z "$why" ] && [ -n "$left" ] && why="left output behind: $left"
    if [ -z "$why" ]; then
        pass "$label"
    else
        fail "$label" "$why: $(peek "$LOG/$label.err")"
    fi
done <"$D/cases.tsv"

finish
