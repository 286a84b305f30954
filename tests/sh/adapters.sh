#!/bin/bash
# LoRA / DoRA adapter runs: bin/dora-analyze against an independent float64 reference.
#
#   tests/sh/adapters.sh     (env: DORA_BIN or BIN = the binary, PY or PYTHON = python with
#                             numpy/h5py, default /usr/bin/python3)
#
# Generates adapter runs with tests/py/gen_adapters.py in a temporary folder (PEFT LoRA,
# rsLoRA with rank_pattern/alpha_pattern, DoRA, fan_in_fan_out, embedding + conv +
# modules_to_save, the DoRA paper's format, a full fine-tuning run), analyses each run
# alone and all of them in one command, checks every number with tests/py/check_adapters.py,
# then the error cases (tests/py/gen_adapters.py --errors: bad/cases.tsv), each of which must
# exit 1 with a message naming the file (and the module) and leave no output file.
# Prints `PASS adapters/<name>` or `FAIL adapters/<name>: <why>`; exits 1 on any FAIL.

set -u
SUITE=adapters
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
OUT=$TMP/out
D=$TMP/data
mkdir -p "$OUT"
RTOL=1e-9   # relative tolerance of every dM / dD against the float64 reference

# check LABEL H5 CHECK_ARGS... : the reference checker; PASS/FAIL with the worst errors
check() {
    local label=$1 h5=$2
    shift 2
    if "$PY" "$TP/check_adapters.py" --data "$D" --h5 "$h5" --rtol "$RTOL" "$@" \
        >"$LOG/$label.check" 2>&1; then
        pass "$label"
        grep '^worst' "$LOG/$label.check" | sed "s/^/    $label: /"
        return 0
    fi
    fail "$label" "check_adapters: $(grep -m3 -E '^FAIL|Error' "$LOG/$label.check" | tr '\n' ' ')"
    grep -E '^FAIL|Error|^worst' "$LOG/$label.check" | head -12 | sed 's/^/    /'
    return 1
}

# analyze_ok LABEL H5 ANALYZE_ARGS... : runs analyze -o H5 and wants exit 0 and the file
analyze_ok() { writes_ok "$1" "$2" analyze "${@:3}"; }

if [ ! -x "$BIN" ]; then
    fail binary "$BIN not found or not executable (run make)"
    finish
fi

# ---------------------------------------------------------------- generate
if "$PY" "$TP/gen_adapters.py" "$D" --seed 7 --errors >"$LOG/gen.out" 2>&1; then
    pass generate
else
    fail generate "$(peek "$LOG/gen.out")"
    finish
fi

# ---------------------------------------------------------------- each run alone
ADAPTER_RUNS=(lora rslora dora fifo embconv dorapaper dorafifo)
for r in "${ADAPTER_RUNS[@]}" ft; do
    analyze_ok "run-$r" "$OUT/$r.h5" --base "$D/base" -j 2 "$r=$D/$r" || continue
    check "run-$r" "$OUT/$r.h5" --runs "$r" --exact-runs --tsv "$LOG/run-$r.out"
done

# notes about the final adapter of the run folder
if grep -q "byte-identical" "$LOG/run-lora.err" 2>/dev/null; then
    pass final-identical-noted
else
    fail final-identical-noted "no note that lora's final adapter is checkpoint-400: $(peek "$LOG/run-lora.err")"
fi
if grep -q "step 40" "$LOG/run-dora.err" 2>/dev/null; then
    pass final-max-steps-noted
else
    fail final-max-steps-noted "no note of dora's final step 40: $(peek "$LOG/run-dora.err")"
fi

# ---------------------------------------------------------------- per attention head
# The generated base has no config.json: no heads, and a note that says which keys settle it.
if grep -q "no per-head values: the base has no config.json" "$LOG/run-lora.err" 2>/dev/null &&
    "$PY" -c "import h5py, sys; sys.exit('heads' in h5py.File(sys.argv[1])['runs/lora'])" "$OUT/lora.h5"; then
    pass heads-no-config
else
    fail heads-no-config "heads written, or no note: $(peek "$LOG/run-lora.err")"
fi
# The same base with a config.json: q_proj 8 heads of 16 rows, k/v 2 (grouped-query);
# every per-head value against NumPy, for FT (bf16), LoRA and DoRA.
mkdir -p "$D/base-heads" "$D/base-odd"
cp "$D/base/"* "$D/base-heads/" && cp "$D/base/"* "$D/base-odd/"
echo '{"num_attention_heads": 8, "num_key_value_heads": 2, "hidden_size": 128}' >"$D/base-heads/config.json"
if analyze_ok heads "$OUT/heads.h5" --base "$D/base-heads" -j 2 ft="$D/ft" lora="$D/lora" dora="$D/dora"; then
    if "$PY" "$TP/check_heads.py" --base "$D/base-heads" --h5 "$OUT/heads.h5" ft="$D/ft" \
        lora="$D/lora" dora="$D/dora" >"$LOG/heads.check" 2>&1; then
        pass heads-numpy
        grep '^worst' "$LOG/heads.check" | sed 's/^/    heads: /'
    else
        fail heads-numpy "$(grep -m3 -E '^FAIL|Error' "$LOG/heads.check" | tr '\n' ' ')"
    fi
fi
# v rows (32) are not 3 heads x 16: only q_proj has heads, with a note naming v_proj
echo '{"num_attention_heads": 8, "num_key_value_heads": 3, "hidden_size": 128}' >"$D/base-odd/config.json"
if analyze_ok heads-odd "$OUT/heads-odd.h5" --base "$D/base-odd" lora="$D/lora"; then
    if grep -q "no per-head values for 'model.layers.0.self_attn.v_proj.weight': its 32 rows are not 3 heads" \
        "$LOG/heads-odd.err" && "$PY" -c "
import h5py, sys
m = list(h5py.File(sys.argv[1])['runs/lora/heads/modules'].asstr()[()])
sys.exit(not (m and all(x.endswith('q_proj.weight') for x in m)))" "$OUT/heads-odd.h5"; then
        pass heads-rows-not-divisible
    else
        fail heads-rows-not-divisible "$(peek "$LOG/heads-odd.err")"
    fi
fi

# heads that straddle work units: 384 f32 rows of 4096 (64 rows a unit), 8 heads of 48
mkdir -p "$D/wide"
"$PY" - "$D/wide" "$TP" <<'EOF' >"$LOG/wide.gen" 2>&1
import json, os, sys
import numpy as np
sys.path.insert(0, sys.argv[2])
import stio
d, rng, name = sys.argv[1], np.random.default_rng(3), "model.layers.0.self_attn.q_proj.weight"
w = (rng.standard_normal((384, 4096)) * 0.02).astype(np.float32)
os.makedirs(f"{d}/base", exist_ok=True)
stio.write_safetensors(f"{d}/base/model.safetensors", {name: stio.Tensor("F32", w)})
json.dump({"num_attention_heads": 8, "hidden_size": 384}, open(f"{d}/base/config.json", "w"))
for step in (10, 20):
    u = (rng.standard_normal(w.shape) * 1e-4 * step).astype(np.float32)
    stio.write_checkpoint(f"{d}/ft", step, {name: stio.Tensor("F32", w + u)})
EOF
if analyze_ok heads-wide "$OUT/wide.h5" --base "$D/wide/base" -j 3 ft="$D/wide/ft" &&
    "$PY" "$TP/check_heads.py" --base "$D/wide/base" --h5 "$OUT/wide.h5" ft="$D/wide/ft" \
        >"$LOG/wide.check" 2>&1; then
    pass heads-across-units
else
    fail heads-across-units "$(peek "$LOG/wide.gen") $(grep -m3 -E '^FAIL|Error' "$LOG/wide.check" 2>/dev/null | tr '\n' ' ')"
fi

# ---------------------------------------------------------------- all runs in one command
ALL=(ft="$D/ft")
for r in "${ADAPTER_RUNS[@]}"; do ALL+=("$r=$D/$r"); done
if analyze_ok combined "$OUT/all.h5" --base "$D/base" -j 3 "${ALL[@]}"; then
    check combined "$OUT/all.h5" --runs "ft,$(IFS=,; echo "${ADAPTER_RUNS[*]}")" \
        --exact-runs --tsv "$LOG/combined.out"
fi
# the same with one thread: bitwise the same numbers and table
if analyze_ok combined-j1 "$OUT/all-j1.h5" --base "$D/base" -j 1 "${ALL[@]}" &&
    [ -s "$OUT/all.h5" ]; then
    if why=$("$PY" - "$OUT/all.h5" "$OUT/all-j1.h5" 2>&1 <<'EOF'
import sys, h5py
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
if sorted(a["runs"]) != sorted(b["runs"]):
    sys.exit("runs differ")
for r in a["runs"]:
    for k in ("steps", "modules", "rank", "rows", "cols", "delta_m", "delta_d", "zero_rows"):
        x, y = a[f"runs/{r}/{k}"][()], b[f"runs/{r}/{k}"][()]
        same = list(x) == list(y) if x.dtype.kind == "O" else x.tobytes() == y.tobytes()
        if x.shape != y.shape or not same:
            sys.exit(f"{r}/{k} differs")
EOF
    ) && cmp -s "$LOG/combined.out" "$LOG/combined-j1.out"; then
        pass threads-identical
    else
        fail threads-identical "-j 3 and -j 1 differ: ${why:-TSV differs}"
    fi
fi

# ---------------------------------------------------------------- other ways to name a run
# --modules on an adapter run: only the matching adapted modules
RE='self_attn\.(q|k)_proj'
if analyze_ok modules-filter "$OUT/filter.h5" --base "$D/base" --modules "$RE" "dora=$D/dora"; then
    check modules-filter "$OUT/filter.h5" --runs dora --modules "$RE" --exact-runs
fi
# one checkpoint folder of an adapter run, default run name (the folder's)
if analyze_ok single-checkpoint "$OUT/single.h5" --base "$D/base/model.safetensors.index.json" \
    "$D/rslora/checkpoint-100/"; then
    check single-checkpoint "$OUT/single.h5" --runs checkpoint-100=rslora/checkpoint-100 --exact-runs
fi

# ---------------------------------------------------------------- PEFT pattern keys are Python regexes
# alpha_pattern {"layers\.\d+\.self_attn\.v_proj": 64}: PEFT (Python re) gives every v_proj
# alpha 64. The tool must get that right, or refuse the pattern naming the config: never
# analyse with the default alpha in silence.
run pattern-python-regex "$BIN" analyze --base "$D/base" -o "$OUT/pyp.h5" "pypattern=$D/pypattern"
if ! crashed pattern-python-regex; then
    if [ $RC -eq 0 ]; then
        check pattern-python-regex "$OUT/pyp.h5" --runs pypattern --exact-runs
    elif [ $RC -eq 1 ] && grep -qF "$D/pypattern/checkpoint-3/adapter_config.json" "$LOG/pattern-python-regex.err" &&
        grep -qF 'd+' "$LOG/pattern-python-regex.err"; then
        pass pattern-python-regex
    else
        fail pattern-python-regex "exit $RC: $(peek "$LOG/pattern-python-regex.err")"
    fi
fi

# ---------------------------------------------------------------- error cases
# bad/cases.tsv: CASE <tab> BASE <tab> RUN <tab> WANT1|WANT2...
NCASES=0
while IFS=$'\t' read -r name base runp wants; do
    NCASES=$((NCASES + 1))
    label="error-$name"
    h5="$OUT/err-$name.h5"
    run "$label" "$BIN" analyze --base "$base" -o "$h5" "bad=$runp"
    crashed "$label" && continue
    if [ $RC -ne 1 ]; then
        fail "$label" "exit $RC, expected 1: $(peek "$LOG/$label.err")"
        continue
    fi
    left=$(leftovers "$h5")
    if [ -n "$left" ]; then
        fail "$label" "output left behind: $left"
        rm -f "$h5" "$h5".tmp*
        continue
    fi
    missing=""
    IFS='|' read -r -a want <<<"$wants"
    for w in "${want[@]}"; do
        grep -qF -- "$w" "$LOG/$label.err" || missing="$missing '$w'"
    done
    if [ -n "$missing" ]; then
        fail "$label" "message lacks$missing: $(peek "$LOG/$label.err")"
        continue
    fi
    pass "$label"
done <"$D/bad/cases.tsv"
[ "$NCASES" -ge 20 ] || fail error-cases "only $NCASES cases in $D/bad/cases.tsv"

# a bad run after a good one in one command: still exit 1 and no file
run error-combined "$BIN" analyze --base "$D/base" -o "$OUT/err-combined.h5" \
    "lora=$D/lora" "bad=$D/bad/missing_module" "dora=$D/dora"
if ! crashed error-combined; then
    left=$(leftovers "$OUT/err-combined.h5")
    if [ $RC -ne 1 ]; then
        fail error-combined "exit $RC, expected 1: $(peek "$LOG/error-combined.err")"
    elif [ -n "$left" ]; then
        fail error-combined "output left behind: $left"
    elif ! grep -qF "$D/bad/missing_module/checkpoint-2/adapter_model.safetensors" "$LOG/error-combined.err"; then
        fail error-combined "message does not name the bad file: $(peek "$LOG/error-combined.err")"
    else
        pass error-combined
    fi
fi

finish
