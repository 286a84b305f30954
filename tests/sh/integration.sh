#!/bin/bash
# End-to-end tests of bin/dora-analyze against an independent Python reference.
#
#   tests/sh/integration.sh    (env: DORA_BIN or BIN = the binary, PY or PYTHON = python with numpy/h5py/pandas,
#                               REALDATA=folder of real checkpoints, default ../shared/realdata
#                               next to the repo root)
#
# Generates seeded runs with tests/py/gen_runs.py, analyses them in several
# ways and checks every result with tests/py/check_h5.py (numbers recomputed
# in float64 from the files; layout; TSV/CSV). Then usage errors (exit 2),
# --help, inspect, and the real files of REALDATA.
# Prints `PASS integration/<name>` or `FAIL integration/<name>: <why>`; exits 1 on any FAIL.

set -u
SUITE=integration
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
D=$TMP/data

# expect_ok LABEL : RC 0 expected
expect_ok() {
    crashed "$1" && return 1
    if [ $RC -ne 0 ]; then
        fail "$1" "exit $RC, expected 0: $(peek "$LOG/$1.err")"
        return 1
    fi
    return 0
}

# analyze_check LABEL OUT CHECK_ARGS -- ANALYZE_ARGS : run analyze (stdout = TSV) then check_h5
analyze_check() {
    local label=$1 out=$2
    shift 2
    local cargs=()
    while [ "$1" != "--" ]; do cargs+=("$1"); shift; done
    shift
    run "$label" "$BIN" analyze -o "$out" "$@"
    expect_ok "$label" || return 1
    if [ ! -s "$out" ]; then fail "$label" "no output file $out"; return 1; fi
    if "$PY" "$TP/check_h5.py" --out "$out" "${cargs[@]}" >"$LOG/$label.check" 2>&1; then
        pass "$label"
        return 0
    fi
    fail "$label" "check_h5: $(grep -m3 -E 'FAIL|Error|error' "$LOG/$label.check" | tr '\n' ' ')"
    sed 's/^/    /' "$LOG/$label.check" | grep -v '^    worst' | head -20
    return 1
}

# same_numbers A.h5 B.h5 : delta_m, delta_d, zero_rows, steps, modules bitwise equal in every run
same_numbers() {
    "$PY" - "$1" "$2" <<'EOF'
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
ra, rb = sorted(a["runs"]), sorted(b["runs"])
if ra != rb:
    sys.exit(f"runs {ra} vs {rb}")
for r in ra:
    for k in ("steps", "modules", "delta_m", "delta_d", "zero_rows", "rows", "cols", "layer"):
        x, y = a[f"runs/{r}/{k}"][()], b[f"runs/{r}/{k}"][()]
        if x.shape != y.shape or not (x.tobytes() == y.tobytes() if x.dtype.kind != "O" else list(x) == list(y)):
            sys.exit(f"{r}/{k} differs")
EOF
}

if [ ! -x "$BIN" ]; then
    fail binary "$BIN not found or not executable"
    echo "integration: $NPASS passed, $NFAIL failed"
    exit 1
fi

# ---------------------------------------------------------------- generated runs
if "$PY" "$TP/gen_runs.py" "$D" --seed 11 >"$LOG/gen.out" 2>&1; then
    pass gen-runs
else
    fail gen-runs "$(peek "$LOG/gen.out")"
    echo "integration: $NPASS passed, $NFAIL failed"
    exit 1
fi
RUNS=("$D/ft-bf16" "$D/ft-f32-tiny" "$D/ft-f16" "$D/ft-zero-rows")
RTOL=(--rtol ft-f32-tiny=1e-3)

analyze_check analyze-j1 "$TMP/j1.h5" --base "$D/base" --tsv "$LOG/analyze-j1.out" "${RTOL[@]}" "${RUNS[@]}" -- \
    --base "$D/base" -j 1 "${RUNS[@]}"
analyze_check analyze-j2 "$TMP/j2.h5" --base "$D/base" --tsv "$LOG/analyze-j2.out" "${RTOL[@]}" "${RUNS[@]}" -- \
    --base "$D/base" -j 2 "${RUNS[@]}"
if [ -s "$TMP/j1.h5" ] && [ -s "$TMP/j2.h5" ]; then
    if why=$(same_numbers "$TMP/j1.h5" "$TMP/j2.h5" 2>&1) && cmp -s "$LOG/analyze-j1.out" "$LOG/analyze-j2.out"; then
        pass j1-j2-identical
    else
        fail j1-j2-identical "-j 1 and -j 2 differ: ${why:-TSV differs}"
    fi
fi

# overwrite an existing output file
analyze_check overwrite "$TMP/j1.h5" --base "$D/base" "${RTOL[@]}" "$D/ft-f32-tiny" -- \
    --base "$D/base" "$D/ft-f32-tiny"

analyze_check per-row "$TMP/pr.h5" --base "$D/base" --per-row "${RTOL[@]}" "$D/ft-zero-rows" "$D/ft-f32-tiny" -- \
    --base "$D/base" --per-row -j 2 "$D/ft-zero-rows" "$D/ft-f32-tiny"

# --csv: the table goes to the file, stdout stays empty
if analyze_check csv "$TMP/csv.h5" --base "$D/base" --csv "$TMP/out.csv" "$D/ft-f16" "$D/ft-bf16" -- \
    --base "$D/base" --csv "$TMP/out.csv" "$D/ft-f16" "$D/ft-bf16"; then
    if [ -s "$LOG/csv.out" ]; then fail csv-stdout-empty "stdout: $(peek "$LOG/csv.out")"; else pass csv-stdout-empty; fi
fi

# filters (patterns that mean the same as a search or a full match, in ERE and Python)
MRE='.*self_attn[.](q|v)_proj.*'
XRE='.*layers[.]1[01][.].*'
analyze_check filters "$TMP/filt.h5" --base "$D/base" --modules "$MRE" --exclude "$XRE" --tsv "$LOG/filters.out" "$D/ft-bf16" -- \
    --base "$D/base" --modules "$MRE" --exclude "$XRE" "$D/ft-bf16"
analyze_check filter-modules-only "$TMP/filt2.h5" --base "$D/base" --modules '.*mlp.*' "$D/ft-f16" -- \
    --base "$D/base" --modules '.*mlp.*' "$D/ft-f16"
analyze_check filter-exclude-only "$TMP/filt3.h5" --base "$D/base" --exclude '.*(embed|lm_head|conv).*' "$D/ft-f16" -- \
    --base "$D/base" --exclude '.*(embed|lm_head|conv).*' "$D/ft-f16"

# naming: NAME=RUN, trailing slash, single file, single checkpoint folder (sharded),
# a folder with only a final model
analyze_check naming "$TMP/names.h5" --base "$D/base" \
    "bf=$D/ft-bf16" "$D/ft-f16/" "$D/single/ft-final.safetensors" "$D/ft-bf16/checkpoint-150" "$D/final-only" -- \
    --base "$D/base" "bf=$D/ft-bf16" "$D/ft-f16/" "$D/single/ft-final.safetensors" "$D/ft-bf16/checkpoint-150" "$D/final-only"

# odd tensor names: natural order, TSV, per_row group names (%2F, %25)
analyze_check odd-names "$TMP/odd.h5" --base "$D/odd/base.safetensors" --per-row --tsv "$LOG/odd-names.out" \
    "$D/odd/ft-odd.safetensors" -- --base "$D/odd/base.safetensors" --per-row "$D/odd/ft-odd.safetensors"

# final model at max_steps = the last checkpoint's step (README: the checkpoint is used)
analyze_check final-at-max-steps "$TMP/fmax.h5" --base "$D/base" "$D/ft-final-at-max" -- \
    --base "$D/base" "$D/ft-final-at-max"

# base as a file, as a sharded folder, in BF16: same numbers for the first two
analyze_check base-file "$TMP/bfile.h5" --base "$D/base/model.safetensors" "$D/ft-f16" "$D/ft-zero-rows" -- \
    --base "$D/base/model.safetensors" "$D/ft-f16" "$D/ft-zero-rows"
analyze_check base-sharded "$TMP/bsh.h5" --base "$D/base-sharded" "$D/ft-f16" "$D/ft-zero-rows" -- \
    --base "$D/base-sharded" "$D/ft-f16" "$D/ft-zero-rows"
if [ -s "$TMP/bfile.h5" ] && [ -s "$TMP/bsh.h5" ]; then
    if why=$(same_numbers "$TMP/bfile.h5" "$TMP/bsh.h5" 2>&1); then pass base-sharded-identical
    else fail base-sharded-identical "$why"; fi
fi
analyze_check base-bf16 "$TMP/bbf.h5" --base "$D/base-bf16" "$D/ft-bf16" -- --base "$D/base-bf16" "$D/ft-bf16"
# the HF hub cache layout: snapshot files are symlinks into ../../blobs/
HUB=$(echo "$D"/base-hub/models--org--tiny-llama/snapshots/*)
analyze_check base-hub-cache "$TMP/bhub.h5" --base "$HUB" "$D/ft-f16" "$D/ft-zero-rows" -- \
    --base "$HUB" "$D/ft-f16" "$D/ft-zero-rows"
if [ -s "$TMP/bfile.h5" ] && [ -s "$TMP/bhub.h5" ]; then
    if why=$(same_numbers "$TMP/bfile.h5" "$TMP/bhub.h5" 2>&1); then pass base-hub-cache-identical
    else fail base-hub-cache-identical "$why"; fi
fi

# ---------------------------------------------------------------- usage errors: exit 2, no output
usage() {
    local label=usage-$1
    shift
    rm -f "$TMP/u.h5"
    run "$label" "$@"
    crashed "$label" && return
    if [ $RC -ne 2 ]; then fail "$label" "exit $RC, expected 2: $(peek "$LOG/$label.err")"
    elif [ ! -s "$LOG/$label.err" ]; then fail "$label" "no message on stderr"
    elif [ -e "$TMP/u.h5" ]; then fail "$label" "output file written"
    else pass "$label"; fi
}
B=(--base "$D/base")
R=$D/ft-f16
usage unknown-option "$BIN" analyze "${B[@]}" -o "$TMP/u.h5" --frobnicate "$R"
usage missing-o "$BIN" analyze "${B[@]}" "$R"
usage o-without-value "$BIN" analyze "${B[@]}" "$R" -o
usage missing-base "$BIN" analyze -o "$TMP/u.h5" "$R"
usage j-zero "$BIN" analyze "${B[@]}" -o "$TMP/u.h5" -j 0 "$R"
usage j-negative "$BIN" analyze "${B[@]}" -o "$TMP/u.h5" -j -1 "$R"
usage j-text "$BIN" analyze "${B[@]}" -o "$TMP/u.h5" -j abc "$R"
usage j-trailing "$BIN" analyze "${B[@]}" -o "$TMP/u.h5" -j 2x "$R"
usage j-huge "$BIN" analyze "${B[@]}" -o "$TMP/u.h5" -j 99999999999999999999 "$R"
usage no-runs "$BIN" analyze "${B[@]}" -o "$TMP/u.h5"
usage bad-regex-modules "$BIN" analyze "${B[@]}" -o "$TMP/u.h5" --modules '[' "$R"
usage bad-regex-exclude "$BIN" analyze "${B[@]}" -o "$TMP/u.h5" --exclude 'a(' "$R"
usage no-subcommand "$BIN"
usage unknown-subcommand "$BIN" frobnicate
usage inspect-no-path "$BIN" inspect

# --help on each subcommand: exit 0, text on stdout
for h in "top:--help" "analyze:analyze --help" "inspect:inspect --help"; do
    label=help-${h%%:*}
    # shellcheck disable=SC2086
    run "$label" "$BIN" ${h#*:}
    if crashed "$label"; then :
    elif [ $RC -ne 0 ]; then fail "$label" "exit $RC"
    elif [ ! -s "$LOG/$label.out" ]; then fail "$label" "nothing on stdout"
    else pass "$label"; fi
done

# an output folder that does not exist: a failure (1), not a crash
run out-missing-dir "$BIN" analyze "${B[@]}" -o "$TMP/no/such/dir/out.h5" "$R"
if crashed out-missing-dir; then :
elif [ $RC -ne 1 ]; then fail out-missing-dir "exit $RC, expected 1"
else pass out-missing-dir; fi

# ---------------------------------------------------------------- signals
# README: on SIGINT/SIGTERM the temporary file is removed. A ~2 s job (600
# checkpoints symlinked to one 32 MB file, --per-row, -j 1) gets a signal at
# several moments; afterwards the output folder must hold nothing, or (if the
# job won the race) a complete OUT.h5, with exit 0 or the signal's (it came after the
# rename).
"$PY" - "$BIN" "$TMP/sig" "$TP" >"$LOG/signals.out" 2>&1 <<'EOF2'
import os, signal, subprocess, sys, time
import h5py
import numpy as np
sys.path.insert(0, sys.argv[3])
import stio
binary, d = sys.argv[1], sys.argv[2]
os.makedirs(d)
rng = np.random.default_rng(0)
b = {f"l.{i}.w": rng.normal(0, 1, (1024, 2048)).astype(np.float32) for i in range(4)}
stio.write_safetensors(os.path.join(d, "base.safetensors"), b)
stio.write_safetensors(os.path.join(d, "ck.safetensors"), {k: v * 1.01 for k, v in b.items()})
run = os.path.join(d, "run")
for s in range(1, 601):
    c = os.path.join(run, f"checkpoint-{s}")
    os.makedirs(c)
    os.symlink(os.path.join(d, "ck.safetensors"), os.path.join(c, "model.safetensors"))
for sig, delay in ((signal.SIGTERM, 0.3), (signal.SIGINT, 1.0), (signal.SIGTERM, 1.8), (signal.SIGINT, 2.3)):
    out = os.path.join(d, f"out-{sig.name}-{delay}")
    os.makedirs(out)
    p = subprocess.Popen([binary, "analyze", "-q", "-j", "1", "--per-row", "--base",
                          os.path.join(d, "base.safetensors"), "-o", os.path.join(out, "o.h5"), run],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(delay)
    p.send_signal(sig)
    try:
        _, err = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        print(f"FAIL {sig.name} at {delay} s: still running 30 s later")
        continue
    left = sorted(os.listdir(out))
    label = f"{sig.name} at {delay} s (exit {p.returncode})"

    def complete():
        try:
            with h5py.File(os.path.join(out, "o.h5"), "r") as f:
                return f["runs/run/delta_m"].shape == (600, 4)
        except Exception:
            return False
    if p.returncode == 0:
        print(("ok " if left == ["o.h5"] and complete() else "FAIL ") + label + f": finished first; left {left}")
    elif p.returncode in (-sig, 128 + sig, 1):
        # nothing left; or the signal came after the output was renamed into place (the
        # job won the race and died of the signal on its way out): the whole file
        ok = not left or (left == ["o.h5"] and complete())
        print(("ok " if ok else "FAIL ") + label + f": left {left}")
    else:
        print(f"FAIL {label}: unexpected exit; stderr {err[:200]!r}")
EOF2
if grep -q '^FAIL' "$LOG/signals.out" || ! grep -q '^ok' "$LOG/signals.out"; then
    fail signals "$(grep -v '^ok' "$LOG/signals.out" | head -3 | tr '\n' ' ')"
else
    pass signals
fi
rm -rf "$TMP/sig"

# ---------------------------------------------------------------- inspect
# inspect_ok LABEL PATH : exit 0 and check_inspect agrees
inspect_ok() {
    run "$1" "$BIN" inspect "$2"
    expect_ok "$1" || return
    if "$PY" "$TP/check_inspect.py" "$2" "$LOG/$1.out" >"$LOG/$1.check" 2>&1; then pass "$1"
    else fail "$1" "$(head -3 "$LOG/$1.check" | tr '\n' ' ')"; fi
}
inspect_ok inspect-file "$D/base/model.safetensors"
inspect_ok inspect-bf16-shard "$D/base-bf16/model-00001-of-00002.safetensors"
inspect_ok inspect-trainer "$D/ft-bf16"
inspect_ok inspect-trainer-noextra "$D/ft-f16"

# ---------------------------------------------------------------- real files
if [ ! -d "$REALDATA" ]; then
    # CI lays shared/ beside the clone, so there its absence is a failure
    if [ -n "${CI:-}" ]; then fail realdata "REALDATA=$REALDATA not found"
    else echo "SKIP integration/realdata: REALDATA=$REALDATA not found (set REALDATA)"; fi
else
    n=0
    for f in "$REALDATA"/hf-safetensors/samples/*.safetensors "$REALDATA"/cloneofsimo-lora/example_loras/*.safetensors \
        "$REALDATA"/torchtune/gemma_hf_checkpoint.safetensors; do
        n=$((n + 1))
        inspect_ok "real-inspect-$(basename "$(dirname "$f")")-$(basename "$f" .safetensors)" "$f"
    done
    run real-inspect-sharded-gemma "$BIN" inspect "$REALDATA/sharded-gemma-tiny"
    if expect_ok real-inspect-sharded-gemma; then
        if grep -q 'model.layers.0.self_attn.q_proj.weight' "$LOG/real-inspect-sharded-gemma.out" ||
            grep -q 'model-0000[12]-of-00002' "$LOG/real-inspect-sharded-gemma.out"; then
            pass real-inspect-sharded-gemma
        else
            fail real-inspect-sharded-gemma "lists neither tensors nor shards: $(peek "$LOG/real-inspect-sharded-gemma.out")"
        fi
    fi
    # other real files (PEFT, TRL, MLX with "__metadata__": null, mixed F32/BF16, F64)
    for f in "$REALDATA"/mlx-examples/llms/adapters/adapters.safetensors \
        "$REALDATA"/fms-hf-tuning/tests/artifacts/tuned_llama_with_added_tokens/adapter_model.safetensors \
        "$REALDATA"/trl/kto_anthropic_hh/checkpoint-500/adapter_model.safetensors \
        "$REALDATA"/peft/examples/monteclora_finetuning/monteclora-roberta-mrpc/checkpoint-230/adapter_model.safetensors \
        "$REALDATA"/safetensors-cpp/gen/model.safetensors; do
        rel=${f#"$REALDATA"/}
        inspect_ok "real-inspect-extra-${rel%%/*}" "$f"
    done
    abuse=$REALDATA/safetensors-cpp/test/safetensors_abuse_attempt_1.safetensors
    run real-abuse "$BIN" inspect "$abuse"
    if crashed real-abuse; then :
    elif [ $RC -ne 1 ]; then fail real-abuse "exit $RC, expected 1"
    elif ! grep -qF safetensors_abuse_attempt_1 "$LOG/real-abuse.err"; then fail real-abuse "stderr does not name the file"
    else pass real-abuse; fi
    # same bytes, sharded: dM = dD = 0 exactly
    G=$REALDATA/torchtune/gemma_hf_checkpoint.safetensors
    analyze_check real-gemma-zero "$TMP/gemma.h5" --base "$G" --exact-zero --tsv "$LOG/real-gemma-zero.out" \
        "$REALDATA/sharded-gemma-tiny" -- --base "$G" "$REALDATA/sharded-gemma-tiny"
    analyze_check real-gemma-zero-j2 "$TMP/gemma2.h5" --base "$REALDATA/sharded-gemma-tiny" --exact-zero "$G" -- \
        --base "$REALDATA/sharded-gemma-tiny" -j 2 "$G"
fi

echo "integration: $NPASS passed, $NFAIL failed"
[ $NFAIL -eq 0 ]
