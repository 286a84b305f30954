#!/bin/bash
# Bases saved by bitsandbytes and initial adapters in `spectrum` and `batch`, as in `analyze`:
# spectrum on a bnb-saved base (tests/py/bnb_saved.py: NF4, FP4, NF4 with double quant, int8)
# gives singular values, intruder cosines and every per-step number bit-identical to spectrum
# on that base dequantised by NumPy (tests/py/bnbwire.py plain) and written as plain
# safetensors, and differs from the base as given; spectrum of PiSSA / OLoRA runs (B0 A0
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

# refused_by CMD LABEL WANTS ARGS... : `CMD -q -o $OUT/LABEL.h5 ARGS` exits 1 with every
# '|'-separated substring of WANTS on stderr, and leaves no output
refused_by() {
    local cmd=$1 label=$2 wants=$3
    shift 3
    rm -f "$OUT/$label.h5"
    run "$label" "$BIN" "$cmd" -q -o "$OUT/$label.h5" "$@"
    crashed "$label" && return
    if [ $RC -ne 1 ]; then
        fail "$label" "exit $RC, expected 1: $(peek "$LOG/$label.err")"
        return
    fi
    local IFS='|' w
    for w in $wants; do
        if ! grep -qF -- "$w" "$LOG/$label.err"; then
            fail "$label" "message lacks '$w': $(peek "$LOG/$label.err")"
            return
        fi
    done
    if [ -n "$(leftovers "$OUT/$label.h5")" ]; then
        fail "$label" "left $(leftovers "$OUT/$label.h5")"
    else
        pass "$label"
    fi
}

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

finish
