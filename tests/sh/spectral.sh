#!/bin/bash
# `dora-analyze spectrum` against an independent NumPy reference (tests/py/check_spectral.py).
#
#   tests/sh/spectral.sh     (env: DORA_BIN or BIN = the binary, PY or PYTHON = python with
#                             numpy/h5py, default /usr/bin/python3)
#
# Generates runs with tests/py/gen_adapters.py (LoRA, rsLoRA + patterns, DoRA, fan_in_fan_out,
# embedding + conv + modules_to_save, the DoRA paper's format, full weights) and with
# check_spectral.py gen (full weights with decaying and flat update spectra; a LoRA run with
# intruder dimensions; a LoRA run with a NaN), runs `spectrum` with and without the base,
# with --top, --subspace, --threshold and --compare, and on the real adapters in
# /work/shared/realdata (adapter-only), and checks every number against numpy.linalg.svd;
# then usage errors (exit 2) and bad input (exit 1, message naming the file, no output left).
# Prints `PASS spectral/<name>` or `FAIL spectral/<name>: <why>`; exits 1 on any FAIL.

set -u
SUITE=spectral
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
REAL=${DORA_REALDATA:-/work/shared/realdata}
OUT=$TMP/out
D=$TMP/data
G=$TMP/gen
mkdir -p "$OUT"

# spectrum_ok LABEL H5 ARGS... : `spectrum -o H5 ARGS`, wants exit 0 and the file
spectrum_ok() { writes_ok "$1" "$2" spectrum "${@:3}"; }

# check LABEL H5 CHECK_ARGS... : the NumPy reference (and the table against the file)
check() {
    local label=$1 h5=$2
    shift 2
    if "$PY" "$TP/check_spectral.py" check --h5 "$h5" --tsv "$LOG/$label.out" "$@" \
        >"$LOG/$label.check" 2>&1; then
        pass "$label"
        grep -E '^worst (sigma|phi|intruder)|^checked' "$LOG/$label.check" | sed "s/^/    $label: /"
        return 0
    fi
    fail "$label" "$(grep -m2 -E 'MISMATCH|Error|mismatch' "$LOG/$label.check" | tr '\n' ' ')"
    grep -E 'MISMATCH|Error|^worst' "$LOG/$label.check" | head -10 | sed 's/^/    /'
    return 1
}

# want_exit LABEL CODE SUBSTRING... ARGS... : `spectrum ARGS` must exit CODE, say every
# SUBSTRING on stderr, and leave no $OUT/bad.h5. Substrings end at "--".
want_exit() {
    local label=$1 code=$2
    shift 2
    local wants=()
    while [ "$1" != "--" ]; do
        wants+=("$1")
        shift
    done
    shift
    rm -f "$OUT/bad.h5"
    run "$label" "$BIN" spectrum "$@"
    crashed "$label" && return 1
    if [ $RC -ne "$code" ]; then
        fail "$label" "exit $RC, expected $code: $(peek "$LOG/$label.err")"
        return 1
    fi
    local w
    for w in "${wants[@]}"; do
        if ! grep -qF -- "$w" "$LOG/$label.err"; then
            fail "$label" "message lacks '$w': $(peek "$LOG/$label.err")"
            return 1
        fi
    done
    if [ -n "$(leftovers "$OUT/bad.h5")" ]; then
        fail "$label" "left $(leftovers "$OUT/bad.h5")"
        return 1
    fi
    pass "$label"
}

if [ ! -x "$BIN" ]; then
    fail binary "$BIN not found or not executable (run make)"
    finish
fi

# ---------------------------------------------------------------- generate
if "$PY" "$TP/gen_adapters.py" "$D" --seed 3 --errors >"$LOG/gen.out" 2>&1 &&
    "$PY" "$TP/check_spectral.py" gen "$G" >>"$LOG/gen.out" 2>&1; then
    pass generate
else
    fail generate "$(peek "$LOG/gen.out")"
    finish
fi

# ---------------------------------------------------------------- help
run help "$BIN" spectrum --help
if ! crashed help; then
    if [ $RC -eq 0 ] && grep -q "usage: dora-analyze spectrum" "$LOG/help.out"; then
        pass help
    else
        fail help "exit $RC: $(peek "$LOG/help.out")"
    fi
fi

# ---------------------------------------------------------------- with the base: every kind of run
ADAPTER_RUNS=(lora rslora dora fifo embconv dorapaper dorafifo pypattern)
ALL=()
for r in "${ADAPTER_RUNS[@]}"; do ALL+=("$r=$D/$r"); done
if spectrum_ok base-all "$OUT/all.h5" --base "$D/base" --compare "${ALL[@]}" "ft=$D/ft"; then
    check base-all "$OUT/all.h5" --manifest "$D/manifest.json"
fi

# ---------------------------------------------------------------- threads and memory
# modules decomposed one at a time (-j 1, or a budget that fits none but the one
# alone) or on three threads: the same file, dataset for dataset
same_file() { # LABEL A.h5 B.h5
    "$PY" - "$2" "$3" >"$LOG/$1.cmp" 2>&1 <<'PYEOF'
import sys, h5py, numpy as np
a, b = h5py.File(sys.argv[1]), h5py.File(sys.argv[2])
names = []
a.visit(lambda n: names.append(n) if isinstance(a[n], h5py.Dataset) else None)
bad = [n for n in names if n not in b or not np.array_equal(a[n][()], b[n][()])]
print(len(names), "datasets;", "differ:", bad)
sys.exit(1 if bad or not names else 0)
PYEOF
}
if [ -s "$OUT/all.h5" ]; then
    for v in "j1:-j 1" "j3:-j 3" "mem:-j 2 --mem 1K"; do
        label=threads-${v%%:*}
        # shellcheck disable=SC2086
        if spectrum_ok "$label" "$OUT/$label.h5" ${v#*:} --base "$D/base" --compare "${ALL[@]}" \
            "ft=$D/ft"; then
            if same_file "$label" "$OUT/all.h5" "$OUT/$label.h5"; then
                pass "$label-same"
            else
                fail "$label-same" "$(peek "$LOG/$label.cmp")"
            fi
        fi
    done
fi

# ---------------------------------------------------------------- the base's SVDs kept: --cache
# a first run computes and keeps them, a second takes them from the folder; a file
# flipped, cut short or of another tensor is a note and computed again; every file
# is the one without a cache, dataset for dataset
cache_run() { # LABEL WANT-NOTE
    local label=$1 want=$2
    if spectrum_ok "$label" "$OUT/$label.h5" --cache "$TMP/cache" --base "$D/base" \
        --compare "${ALL[@]}" "ft=$D/ft"; then
        if ! grep -q -- "$want" "$LOG/$label.err"; then
            fail "$label-note" "no note '$want': $(peek "$LOG/$label.err" 600)"
        elif same_file "$label" "$OUT/all.h5" "$OUT/$label.h5"; then
            pass "$label-same"
        else
            fail "$label-same" "$(peek "$LOG/$label.cmp")"
        fi
    fi
}
if [ -s "$OUT/all.h5" ]; then
    mkdir -p "$TMP/cache"
    cache_run cache-first "0 from the cache"
    ncache=$(find "$TMP/cache" -name 'w0-*.svd' | wc -l)
    if [ "$ncache" -ge 3 ]; then pass cache-files; else fail cache-files "$ncache file(s)"; fi
    cache_run cache-second "$ncache from the cache '$TMP/cache', 0 computed"
    f=$(find "$TMP/cache" -name 'w0-*.svd' | sort | head -n 1)
    "$PY" -c 'import sys; p=sys.argv[1]; b=bytearray(open(p,"rb").read()); b[len(b)//2]^=1; open(p,"wb").write(b)' "$f"
    cache_run cache-flipped "checksum that does not hold"
    truncate -s -9 "$f"
    cache_run cache-cut "not what its header says"
    g=$(find "$TMP/cache" -name 'w0-*.svd' | sort | sed -n 2p)
    cp "$g" "$f"
    cache_run cache-other "the key of another tensor"
fi
want_exit usage-cache-missing 2 "--cache '$TMP/no-such-cache' is not a folder" -- \
    --cache "$TMP/no-such-cache" -o "$OUT/bad.h5" "$D/lora"

# ---------------------------------------------------------------- adapter-only
if spectrum_ok adapter-only "$OUT/nobase.h5" "${ALL[@]}"; then
    check adapter-only "$OUT/nobase.h5" --manifest "$D/manifest.json"
    e=$LOG/adapter-only.err
    if grep -q "intruder dimensions are not computed" "$e" && grep -q "low-rank part" "$e" &&
        grep -q "modules_to_save" "$e" && grep -q "lm_head.weight" "$e"; then
        pass adapter-only-notes
    else
        fail adapter-only-notes "notes on intruders / DoRA / modules_to_save missing: $(peek "$e" 500)"
    fi
fi
run quiet "$BIN" spectrum -q -o "$OUT/quiet.h5" "embconv=$D/embconv"
if ! crashed quiet; then
    if [ $RC -eq 0 ] && [ ! -s "$LOG/quiet.err" ]; then
        pass quiet
    else
        fail quiet "exit $RC, stderr: $(peek "$LOG/quiet.err")"
    fi
fi

# ---------------------------------------------------------------- --top, --subspace, --compare
if spectrum_ok top-compare "$OUT/top.h5" --base "$D/base" --top 5 --subspace 3 --compare \
    "lora=$D/lora" "lora2=$D/lora" "pypattern=$D/pypattern" "ft=$D/ft" "dora=$D/dora"; then
    check top-compare "$OUT/top.h5"
fi
# --modules / --exclude
if spectrum_ok filters "$OUT/filt.h5" --modules 'self_attn' --exclude 'layers\.1\.' \
    "rslora=$D/rslora"; then
    if "$PY" - "$OUT/filt.h5" >"$LOG/filters.py" 2>&1 <<'EOF'
import sys, h5py
m = [x.decode() for x in h5py.File(sys.argv[1], "r")["runs/rslora/modules"][:]]
assert m and all("self_attn" in x and "layers.1." not in x for x in m), m
assert len(m) == 8, m
EOF
    then
        check filters "$OUT/filt.h5"
    else
        fail filters "$(peek "$LOG/filters.py")"
    fi
fi

# ---------------------------------------------------------------- dense: randomised and partial SVD
# dense.weight (decaying spectrum) converges in the randomised method (4); flat.weight
# (flat spectrum) makes it give up and use LAPACK gesvdx (3)
if spectrum_ok randomised "$OUT/ftd.h5" --base "$G/base.safetensors" --top 5 --subspace 4 \
    "$G/ftd"; then
    check randomised "$OUT/ftd.h5" --expect-method dense.weight=4 --expect-method flat.weight=3
fi
if spectrum_ok exact "$OUT/ftd-exact.h5" --base "$G/base.safetensors" --top 5 --subspace 4 \
    --exact "$G/ftd"; then
    check exact "$OUT/ftd-exact.h5" --expect-method dense.weight=3 --expect-method flat.weight=3
fi
if spectrum_ok dense-full "$OUT/ftd-full.h5" --base "$G/base.safetensors" "$G/ftd"; then
    check dense-full "$OUT/ftd-full.h5" --expect-method dense.weight=2 --expect-method flat.weight=2
fi

# ---------------------------------------------------------------- intruder dimensions
for t in 0.5 0.3; do
    if spectrum_ok "intruders-$t" "$OUT/intr-$t.h5" --base "$G/base.safetensors" \
        --threshold "$t" "$G/intr"; then
        if check "intruders-$t" "$OUT/intr-$t.h5"; then
            n=$(awk -F'\t' '$3 == 2 { print $12 }' "$LOG/intruders-$t.out")
            if [ -n "$n" ] && [ "$n" -ge 1 ]; then
                pass "intruders-$t-found"
            else
                fail "intruders-$t-found" "expected intruders at step 2 (update 3x ||W0||), got '$n'"
            fi
        fi
    fi
done

# ---------------------------------------------------------------- real adapters, no base
if [ -d "$REAL/trl/kto_anthropic_hh" ] && [ -d "$REAL/peft/examples/monteclora_finetuning" ]; then
    if spectrum_ok realdata "$OUT/real.h5" "kto=$REAL/trl/kto_anthropic_hh" \
        "mrpc=$REAL/peft/examples/monteclora_finetuning/monteclora-roberta-mrpc"; then
        check realdata "$OUT/real.h5" --sample 2
        if grep -q "classifier.dense.weight" "$LOG/realdata.err"; then
            pass realdata-saved-noted
        else
            fail realdata-saved-noted "no note on the modules_to_save left out: $(peek "$LOG/realdata.err")"
        fi
    fi
else
    echo "SKIP spectral/realdata: $REAL not found"
fi

# ---------------------------------------------------------------- the checker can fail
if [ -s "$OUT/all.h5" ]; then
    ok=1
    for what in sigma intruders phi; do
        cp "$OUT/all.h5" "$OUT/broken.h5"
        "$PY" - "$OUT/broken.h5" "$what" <<'EOF'
import sys, h5py
with h5py.File(sys.argv[1], "r+") as f:
    g = f["runs/dora"]
    m = g["modules"][0].decode()
    if sys.argv[2] == "sigma":
        d = g["spectrum"][m]["sigma"]
        d[1, 3] = d[1, 3] * (1 + 1e-5)
    elif sys.argv[2] == "intruders":
        g["intruders"][2, 0] = g["intruders"][2, 0] + 1
    else:
        d = g["spectrum"][m]["phi"]
        d[0, 1, 1] = d[0, 1, 1] + 1e-5
EOF
        if "$PY" "$TP/check_spectral.py" check --h5 "$OUT/broken.h5" >"$LOG/broken-$what" 2>&1; then
            ok=0
            fail checker-detects "a changed $what passed the check"
        fi
    done
    [ $ok -eq 1 ] && pass checker-detects
fi

# ---------------------------------------------------------------- usage errors: exit 2
want_exit usage-no-output 2 "-o OUT.h5 is required" -- "lora=$D/lora"
want_exit usage-no-run 2 "no run given" -- -o "$OUT/bad.h5"
want_exit usage-unknown-option 2 "unknown option '--frobnicate'" -- --frobnicate -o "$OUT/bad.h5" "$D/lora"
want_exit usage-top-zero 2 "--top" -- --top 0 -o "$OUT/bad.h5" "$D/lora"
want_exit usage-top-text 2 "--top" -- --top 5x -o "$OUT/bad.h5" "$D/lora"
want_exit usage-threshold-zero 2 "--threshold" -- --threshold 0 -o "$OUT/bad.h5" "$D/lora"
want_exit usage-threshold-big 2 "--threshold" -- --threshold 1.5 -o "$OUT/bad.h5" "$D/lora"
want_exit usage-threshold-nan 2 "--threshold" -- --threshold nan -o "$OUT/bad.h5" "$D/lora"
want_exit usage-subspace 2 "--subspace" -- --subspace 257 -o "$OUT/bad.h5" "$D/lora"
want_exit usage-jobs 2 "-j wants" -- -j 0 -o "$OUT/bad.h5" "$D/lora"
want_exit usage-mem 2 "--mem wants" -- --mem 8X -o "$OUT/bad.h5" "$D/lora"
want_exit usage-mem-zero 2 "--mem wants" -- --mem 0 -o "$OUT/bad.h5" "$D/lora"
want_exit usage-missing-value 2 "needs a value" -- -o "$OUT/bad.h5" "$D/lora" --top
want_exit usage-compare-one 2 "--compare needs at least two runs" -- --compare -o "$OUT/bad.h5" "$D/lora"
want_exit usage-bad-regex 2 "--modules '('" -- --modules '(' -o "$OUT/bad.h5" "$D/lora"
want_exit usage-duplicate-names 2 "two runs are named 'x'" -- -o "$OUT/bad.h5" "x=$D/lora" "x=$D/dora"
want_exit usage-ft-without-base 2 "$D/ft" "--base" -- -o "$OUT/bad.h5" "$D/lora" "$D/ft"

# ---------------------------------------------------------------- bad input: exit 1, naming the file
want_exit nan-in-factor 1 "$G/nan/checkpoint-2/adapter_model.safetensors" "lora_B" "NaN" -- \
    -o "$OUT/bad.h5" "$G/nan"
want_exit missing-run 1 "$TMP/no-such-run" -- -o "$OUT/bad.h5" "$TMP/no-such-run"
want_exit missing-out-folder 1 "$TMP/no-such-dir" -- -o "$TMP/no-such-dir/x.h5" "$D/lora"
want_exit missing-base 1 "$TMP/no-such-base" -- --base "$TMP/no-such-base" -o "$OUT/bad.h5" "$D/lora"
want_exit filters-leave-nothing 1 "no module to analyse" -- --modules 'nothing-matches' \
    -o "$OUT/bad.h5" "$D/lora"
# gen_adapters' broken runs: CASE <tab> BASE <tab> RUN <tab> WANT1|WANT2...
NCASES=0
while IFS=$'\t' read -r name base runp wants; do
    NCASES=$((NCASES + 1))
    IFS='|' read -r -a w <<<"$wants"
    want_exit "error-$name" 1 "${w[@]}" -- --base "$base" -o "$OUT/bad.h5" "bad=$runp"
done <"$D/bad/cases.tsv"
[ "$NCASES" -ge 10 ] || fail error-cases "only $NCASES error cases in $D/bad/cases.tsv"
# adapter-only on broken adapters (no base): the same file named
want_exit error-truncated-no-base 1 "$D/bad/weights_truncated/checkpoint-2/adapter_model.safetensors" -- \
    -o "$OUT/bad.h5" "$D/bad/weights_truncated"
want_exit error-config-no-base 1 "$D/bad/config_malformed/checkpoint-2/adapter_config.json" -- \
    -o "$OUT/bad.h5" "$D/bad/config_malformed"

finish
