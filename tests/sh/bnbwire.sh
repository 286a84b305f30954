#!/bin/bash
# Bases saved by bitsandbytes and initial adapters in `spectrum` and `batch`, as in `analyze`:
# spectrum on a bnb-saved base (tests/py/bnb_saved.py: NF4, FP4, NF4 with double quant, int8)
# gives singular values, intruder cosines and every per-step number bit-identical to spectrum
# on that base dequantised by NumPy (tests/py/bnbwire.py plain) and written as plain
# safetensors, and differs from the base as given; spectrum --base-quant (or a base
# quantization_config) equals it too; spectrum of PiSSA / OLoRA runs (B0 A0
# recomputed from W0) and of pissa_niter_K runs with --initial-adapter (with and without
# --base) against NumPy's SVD of s (B A - B0 A0) (within 1e-9 sigma_1); batch with such bases
# and initial adapters equals analyze; and the bad inputs (an initial adapter that does not
# fit, a corrupt quant_state or absmax): exit 1 naming the file and the tensor.
#
#   tests/sh/bnbwire.sh     (env: DORA_BIN or BIN, PY or PYTHON; see tests/lib.sh)

set -u
SUITE=bnbwire
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
. "$ROOT/tests/adapter_lib.sh"
D=$TMP/data
F=$TMP/fam
OUT=$TMP/out
mkdir -p "$OUT"

generate quant_ref.py gen "$D" --seed 3
checked bnb_saved.py saved-gen gen "$D"
checked families.py families-gen gen "$F" --seed 11

# ---- 1. spectrum on a base saved by bitsandbytes ------------------------------------------
for q in nf4 fp4 nf4-dq int8; do
    checked bnbwire.py "plain-$q" plain "$D/saved_$q" "$D/plain_$q" || continue
    writes_ok "spec-saved-$q" "$OUT/ss-$q.h5" spectrum -q --base "$D/saved_$q" \
        lora="$D/lora" ft="$D/ft" || continue
    cp "$LOG/spec-saved-$q.out" "$LOG/ss-$q.tsv"
    writes_ok "spec-plain-$q" "$OUT/sp-$q.h5" spectrum -q --base "$D/plain_$q" \
        lora="$D/lora" ft="$D/ft" || continue
    checked bnbwire.py "spec-same-$q" same "$OUT/ss-$q.h5" "$OUT/sp-$q.h5" lora ft
    if cmp -s "$LOG/ss-$q.tsv" "$LOG/spec-plain-$q.out"; then
        pass "spec-table-$q"
    else
        fail "spec-table-$q" "the tables differ"
    fi
done
# the check tells the bases apart: the base as given (not quantised) differs
if writes_ok spec-orig "$OUT/so.h5" spectrum -q --base "$D/base" lora="$D/lora" ft="$D/ft"; then
    if "$PY" "$TP/bnbwire.py" same "$OUT/ss-nf4.h5" "$OUT/so.h5" lora ft >"$LOG/so.check" 2>&1; then
        fail spec-discriminates "the saved nf4 base gave the numbers of the original base"
    else
        pass spec-discriminates
    fi
fi
run spec-note "$BIN" spectrum --base "$D/saved_nf4-dq" -o "$OUT/spec-note.h5" ft="$D/ft"
if [ $RC -eq 0 ] && grep -q "saved quantised by bitsandbytes: 6 weight(s) read dequantised" \
    "$LOG/spec-note.err"; then
    pass spec-saved-noted
else
    fail spec-saved-noted "exit $RC: $(peek "$LOG/spec-note.err")"
fi
while IFS=$'\t' read -r c wants; do
    refused_by spectrum "spec-saved-bad-$c" "$D/saved_bad/$c/model.safetensors|$wants" \
        --base "$D/saved_bad/$c" ft="$D/ft"
done <"$D/saved_bad/cases.tsv"
checked bnbwire.py bad-saved-gen bad-saved "$D/saved_nf4" "$D/bad_saved"
while IFS=$'\t' read -r c wants; do
    refused_by spectrum "spec-$c" "$wants" --base "$D/bad_saved/$c" ft="$D/ft"
    refused_by analyze "analyze-$c" "$wants" --base "$D/bad_saved/$c" lora="$D/lora"
done <"$D/bad_saved/cases.tsv"
# spectrum --base-quant Q: the round trip of the original base equals the NumPy-written saved
# base dequantised (bnb_saved.py checked it against quant_ref.py's round trip bit for bit)
for q in nf4 fp4 nf4-dq int8; do
    writes_ok "spec-quant-$q" "$OUT/sq-$q.h5" spectrum -q --base "$D/base" --base-quant "$q" \
        lora="$D/lora" &&
        checked bnbwire.py "spec-quant-same-$q" same "$OUT/sq-$q.h5" "$OUT/sp-$q.h5" lora
done
run spec-quant-note "$BIN" spectrum --base "$D/base" --base-quant nf4 -o "$OUT/sqn.h5" \
    lora="$D/lora"
if [ $RC -eq 0 ] && grep -q "nf4 round trip of the base for 6 adapted weight(s); 2 adapted" \
    "$LOG/spec-quant-note.err"; then
    pass spec-quant-noted
else
    fail spec-quant-noted "exit $RC: $(peek "$LOG/spec-quant-note.err")"
fi
# the base's quantization_config is followed without the option, as analyze follows it
writes_ok spec-cfg "$OUT/scfg.h5" spectrum -q --base "$D/cfg_nf4" lora="$D/lora" &&
    checked bnbwire.py spec-cfg-same same "$OUT/scfg.h5" "$OUT/sq-nf4.h5" lora
refused_by spectrum spec-quant-ft "applies to adapter runs" --base "$D/base" --base-quant nf4 \
    lora="$D/lora" ft="$D/ft"
refused_by spectrum spec-quant-twice "saved_nf4/model.safetensors|quantise it twice" \
    --base "$D/saved_nf4" --base-quant nf4 lora="$D/lora"
refused_by spectrum spec-quant-conflict "quantization_config is nf4" --base "$D/cfg_nf4" \
    --base-quant fp4 lora="$D/lora"
run spec-quant-nobase "$BIN" spectrum -q --base-quant nf4 -o "$OUT/x.h5" lora="$D/lora"
if [ $RC -eq 2 ] && grep -q -- "--base-quant.*needs --base" "$LOG/spec-quant-nobase.err"; then
    pass spec-quant-nobase
else
    fail spec-quant-nobase "exit $RC: $(peek "$LOG/spec-quant-nobase.err")"
fi

# ---- 2. PiSSA / OLoRA and pissa_niter_K in spectrum --------------------------------------
for r in pissa olora; do
    writes_ok "spec-$r" "$OUT/spec-$r.h5" spectrum -q --base "$F/base" "$r=$F/$r" &&
        checked bnbwire.py "spec-$r-ref" ref "$OUT/spec-$r.h5" "$r" --base "$F/base"
done
writes_ok spec-niter "$OUT/spec-niter.h5" spectrum -q --base "$F/base" \
    --initial-adapter "$F/niter_init" n="$F/niter_noinit" &&
    checked bnbwire.py spec-niter-ref ref "$OUT/spec-niter.h5" n --initial "$F/niter_init"
writes_ok spec-niter-nobase "$OUT/spec-niter-nb.h5" spectrum -q \
    --initial-adapter "$F/niter_init" n="$F/niter_noinit" &&
    checked bnbwire.py spec-niter-nobase-ref ref "$OUT/spec-niter-nb.h5" n --initial "$F/niter_init"
# a checkpoint-0/ in the run serves as well
writes_ok spec-niter-ck0 "$OUT/spec-niter0.h5" spectrum -q --base "$F/base" n="$F/niter" &&
    checked bnbwire.py spec-niter-ck0-ref ref "$OUT/spec-niter0.h5" n \
        --initial "$F/niter/checkpoint-0"
refused_by spectrum spec-niter-none "$F/niter_noinit/checkpoint-10/adapter_config.json|pissa_niter_4|--initial-adapter" \
    --base "$F/base" n="$F/niter_noinit"
refused_by spectrum spec-niter-none-nobase "$F/niter_noinit/checkpoint-10/adapter_config.json|--initial-adapter" \
    n="$F/niter_noinit"
refused_by spectrum spec-pissa-nobase "$F/pissa/checkpoint-10/adapter_config.json|pissa|--base" \
    n="$F/pissa"
checked bnbwire.py bad-initial-gen bad-initial "$F" "$F/bad_initial"
while IFS=$'\t' read -r c wants; do
    refused_by spectrum "spec-initial-$c" "$wants" --base "$F/base" \
        --initial-adapter "$F/bad_initial/$c" n="$F/niter_noinit"
    refused_by analyze "analyze-initial-$c" "$wants" --base "$F/base" \
        --initial-adapter "$F/bad_initial/$c" n="$F/niter_noinit"
done <"$F/bad_initial/cases.tsv"
refused_by spectrum spec-initial-missing "$F/nothing_here" --base "$F/base" \
    --initial-adapter "$F/nothing_here" n="$F/niter_noinit"

# ---- 3. batch: a bnb-saved base, initial_adapter, kohya folders ---------------------------
# manifests live in $TMP/m: their relative paths start from there
M=$TMP/m
mkdir -p "$M"
manifest() { "$PY" "$TP/bnbwire.py" manifest "$M/$1.json" "$2"; }
# batch_ok LABEL MANIFEST : `batch -j 2 MANIFEST` exits 0
batch_ok() {
    run "$1" "$BIN" batch -j 2 "$M/$2.json"
    crashed "$1" && return 1
    if [ $RC -ne 0 ]; then
        fail "$1" "exit $RC: $(peek "$LOG/$1.err" 600)"
        return 1
    fi
    pass "$1"
}
# batch_refused LABEL MANIFEST WANTS : batch exits 1 with each '|'-separated WANTS on stderr
batch_refused() {
    run "$1" "$BIN" batch -j 2 "$M/$2.json"
    crashed "$1" && return
    local IFS='|' w
    if [ $RC -ne 1 ]; then
        fail "$1" "exit $RC, expected 1: $(peek "$LOG/$1.err" 600)"
        return
    fi
    for w in $3; do
        if ! grep -qF -- "$w" "$LOG/$1.err"; then
            fail "$1" "message lacks '$w': $(peek "$LOG/$1.err" 600)"
            return
        fi
    done
    pass "$1"
}
same_h5() { # LABEL A.h5 B.h5 RUN... : check_h5_same.py (batch's file first)
    local label=$1
    shift
    checked check_h5_same.py "$label" "$@"
}

for q in nf4-dq int8; do
    manifest "saved-$q" '{"name": "s", "base": "../data/saved_'"$q"'", "output": "../out/b-saved-'"$q"'.h5",
        "runs": [{"name": "lora", "path": "../data/lora"}, {"name": "fifo", "path": "../data/fifo"}]}'
    if batch_ok "batch-saved-$q" "saved-$q" &&
        writes_ok "analyze-saved-$q" "$OUT/a-saved-$q.h5" analyze -q --base "$D/saved_$q" \
            lora="$D/lora" fifo="$D/fifo"; then
        same_h5 "batch-saved-same-$q" "$OUT/b-saved-$q.h5" "$OUT/a-saved-$q.h5" lora fifo
        checked quant_ref.py "batch-saved-ref-$q" check --data "$D" --h5 "$OUT/b-saved-$q.h5" \
            --run lora --quant "$q" --skip ""
    fi
done
if grep -q "study 's': .*saved quantised by bitsandbytes: 6 weight(s) read dequantised" \
    "$LOG/batch-saved-nf4-dq.err"; then
    pass batch-saved-noted
else
    fail batch-saved-noted "no note: $(peek "$LOG/batch-saved-nf4-dq.err")"
fi
# the comparison tells the bases apart
writes_ok analyze-orig "$OUT/a-orig.h5" analyze -q --base "$D/base" lora="$D/lora" fifo="$D/fifo"
if "$PY" "$TP/check_h5_same.py" "$OUT/b-saved-nf4-dq.h5" "$OUT/a-orig.h5" lora >/dev/null 2>&1; then
    fail batch-saved-discriminates "the saved base gave the original base's numbers"
else
    pass batch-saved-discriminates
fi
manifest saved-twice '{"name": "s", "base": "../data/saved_nf4", "output": "../out/b-twice.h5",
    "base_quant": "nf4", "runs": [{"name": "lora", "path": "../data/lora"}]}'
batch_refused batch-saved-twice saved-twice "saved_nf4/model.safetensors|quantise it twice"
n=0
for bad in "saved_bad/absmax=lacks its .absmax" "saved_bad/json=is not a JSON object" \
    "bad_saved/absmax_len=absmax is 4 float32 values"; do
    n=$((n + 1))
    b=$D/${bad%%=*}
    manifest "saved-bad-$n" '{"name": "s", "base": "'"$b"'", "output": "../out/b-bad'$n'.h5",
        "runs": [{"name": "lora", "path": "../data/lora"}]}'
    batch_refused "batch-saved-bad-$(basename "$b")" "saved-bad-$n" \
        "$b/model.safetensors|model.layers.0.|${bad#*=}"
done

# initial_adapter: per run, relative to the manifest's folder; the same numbers as analyze
manifest niter '{"name": "n", "base": "../fam/base", "output": "../out/b-niter.h5",
    "runs": [{"name": "niter_noinit", "path": "../fam/niter_noinit",
              "initial_adapter": "../fam/niter_init"},
             {"name": "niter", "path": "../fam/niter"}, {"name": "pissa", "path": "../fam/pissa"}]}'
if batch_ok batch-niter niter &&
    writes_ok analyze-niter "$OUT/a-niter.h5" analyze -q --base "$F/base" --initial-adapter \
        "$F/niter_init" niter_noinit="$F/niter_noinit" niter="$F/niter" pissa="$F/pissa"; then
    same_h5 batch-niter-same "$OUT/b-niter.h5" "$OUT/a-niter.h5" niter_noinit niter pissa
    checked families.py batch-niter-ref check --data "$F" --h5 "$OUT/b-niter.h5" \
        --runs niter_noinit,niter,pissa
fi
# nothing is redone the second time; a changed initial adapter redoes the run's units
run batch-niter-again "$BIN" batch -v "$M/niter.json"
if [ $RC -eq 0 ] && grep -q "unit(s), 0 analysed" "$LOG/batch-niter-again.err"; then
    pass batch-niter-resumed
else
    fail batch-niter-resumed "exit $RC: $(grep -m1 "study 'n'" "$LOG/batch-niter-again.err")"
fi
touch -d '2001-01-01' "$F/niter_init/adapter_model.safetensors"
run batch-niter-changed "$BIN" batch -v "$M/niter.json"
if [ $RC -eq 0 ] && grep -q "study 'n': complete: .* 0 up to date" "$LOG/batch-niter-changed.err"; then
    pass batch-initial-fingerprint
else
    fail batch-initial-fingerprint "exit $RC: $(grep -m1 "study 'n'" "$LOG/batch-niter-changed.err")"
fi
manifest niter-none '{"name": "n", "base": "../fam/base", "output": "../out/b-none.h5",
    "runs": [{"name": "n", "path": "../fam/niter_noinit"}]}'
run batch-niter-none "$BIN" batch -j 2 "$M/niter-none.json"
if [ $RC -eq 1 ] && grep -qF -- "--initial-adapter" "$LOG/batch-niter-none.err" &&
    grep -qF "initial_adapter" "$LOG/batch-niter-none.err"; then
    pass batch-niter-none
else
    fail batch-niter-none "exit $RC: $(peek "$LOG/batch-niter-none.err" 600)"
fi
n=0
while IFS=$'\t' read -r c wants; do
    n=$((n + 1))
    manifest "init-bad-$n" '{"name": "n", "base": "../fam/base", "output": "../out/b-ib'$n'.h5",
        "runs": [{"name": "n", "path": "../fam/niter_noinit", "initial_adapter": "../fam/bad_initial/'"$c"'"}]}'
    batch_refused "batch-initial-$c" "init-bad-$n" "$wants"
done <"$F/bad_initial/cases.tsv"
manifest init-missing '{"name": "n", "base": "../fam/base", "output": "../out/b-im.h5",
    "runs": [{"name": "n", "path": "../fam/niter_noinit", "initial_adapter": "../fam/nothing"}]}'
batch_refused batch-initial-missing init-missing "fam/nothing|initial_adapter of run 'n'"
manifest init-type '{"name": "n", "base": "../fam/base", "output": "../out/b-it.h5",
    "runs": [{"name": "n", "path": "../fam/niter_noinit", "initial_adapter": 3}]}'
run batch-initial-type "$BIN" batch "$M/init-type.json"
if [ $RC -eq 2 ] && grep -q "runs\[0\].*initial_adapter" "$LOG/batch-initial-type.err"; then
    pass batch-initial-type
else
    fail batch-initial-type "exit $RC: $(peek "$LOG/batch-initial-type.err")"
fi

# kohya folders and files: batch prints every note analyze prints about them
K=$TMP/kohya
if "$PY" "$TP/kohya.py" gen "$K" --seed 5 >"$LOG/kohya-gen.out" 2>&1; then
    manifest kohya '{"name": "k", "base": "../kohya/base", "output": "../out/b-kohya.h5",
        "runs": [{"name": "lora", "path": "../kohya/lora"}, {"name": "depoch", "path": "../kohya/depoch"},
                 {"name": "drow", "path": "../kohya/drow.safetensors"}]}'
    if batch_ok batch-kohya kohya &&
        writes_ok analyze-kohya "$OUT/a-kohya.h5" analyze --base "$K/base" lora="$K/lora" \
            depoch="$K/depoch" drow="$K/drow.safetensors"; then
        same_h5 batch-kohya-same "$OUT/b-kohya.h5" "$OUT/a-kohya.h5" lora depoch drow
        sed -n "s/^dora-analyze: note: \(run '[^']*': \)\{0,1\}//p" "$LOG/analyze-kohya.err" |
            sort >"$LOG/kohya-a.notes"
        sed -n "s/^dora-analyze: note: study 'k', run '[^']*': //p" "$LOG/batch-kohya.err" |
            sort >"$LOG/kohya-b.notes"
        if [ -s "$LOG/kohya-a.notes" ] && grep -q "ss_steps" "$LOG/kohya-a.notes" &&
            cmp -s "$LOG/kohya-a.notes" "$LOG/kohya-b.notes"; then
            pass batch-kohya-notes
        else
            fail batch-kohya-notes "$(diff "$LOG/kohya-a.notes" "$LOG/kohya-b.notes" | head -3 | tr '\n' ' ')"
        fi
    fi
else
    fail kohya-gen "$(peek "$LOG/kohya-gen.out")"
fi

finish
