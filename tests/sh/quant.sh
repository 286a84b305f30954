#!/bin/bash
# --base-quant: W0 is the bitsandbytes round trip of the base (NF4, FP4, double quant, LLM.int8),
# checked against tests/py/quant_ref.py's NumPy re-implementation: the per-row norms of every
# quantised W0 (m0) within 2e-15 relative, which one ulp of any dequantised value would exceed
# tenfold (so W0 is bit-identical), and dM / dD within 1e-9. Then the base's config.json
# (quantization_config followed without asking, llm_int8_skip_modules, conflicts, other
# methods), the note for an adapter whose base looks quantised, bases saved by bitsandbytes
# (tests/py/bnb_saved.py: read dequantised, W0 bit-identical as above), and the errors.
#
#   tests/sh/quant.sh     (env: DORA_BIN or BIN, PY or PYTHON; see tests/lib.sh)

set -u
SUITE=quant
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
. "$ROOT/tests/adapter_lib.sh"
D=$TMP/data
OUT=$TMP/out
mkdir -p "$OUT"

generate quant_ref.py gen "$D" --seed 3

# check LABEL H5 RUN QUANT [SKIP] : the reference checker
check() {
    if "$PY" "$TP/quant_ref.py" check --data "$D" --h5 "$2" --run "$3" --quant "$4" \
        --skip "${5:-}" >"$LOG/$1.check" 2>&1; then
        pass "$1"
        sed "s/^/    $1: /" "$LOG/$1.check" | tail -1
    else
        fail "$1" "$(grep -m3 -E '^FAIL|Error' "$LOG/$1.check" | tr '\n' ' ')"
    fi
}


for q in nf4 fp4 nf4-dq fp4-dq int8; do
    writes_ok "lora-$q" "$OUT/lora-$q.h5" analyze -q --per-row -j 2 --base "$D/base" \
        --base-quant "$q" lora="$D/lora" fifo="$D/fifo" &&
        check "lora-$q" "$OUT/lora-$q.h5" lora,fifo "$q"
done
# the checker tells the quantisations apart (it fails on the wrong one)
if "$PY" "$TP/quant_ref.py" check --data "$D" --h5 "$OUT/lora-nf4.h5" --run lora --quant fp4 \
    >"$LOG/wrong.check" 2>&1; then
    fail checker-discriminates "an nf4 result passed as fp4"
else
    pass checker-discriminates
fi

# the note about what was quantised: 6 nn.Linear weights, the embedding and lm_head kept
run note "$BIN" analyze --base "$D/base" --base-quant nf4 -o "$OUT/note.h5" lora="$D/lora"
if [ $RC -eq 0 ] && grep -q "nf4 round trip of the base for 6 adapted weight(s); 2 adapted" \
    "$LOG/note.err"; then
    pass quantised-noted
else
    fail quantised-noted "exit $RC, no note of 6 quantised and 2 kept: $(peek "$LOG/note.err")"
fi

# the base's config.json: followed without --base-quant, the same numbers as --base-quant nf4
if writes_ok cfg-nf4 "$OUT/cfg-nf4.h5" analyze -q --per-row --base "$D/cfg_nf4" lora="$D/lora"; then
    check cfg-nf4 "$OUT/cfg-nf4.h5" lora nf4
    run cfg-same-table "$BIN" analyze -q --base "$D/cfg_nf4" -o "$OUT/cfg2.h5" lora="$D/lora"
    run opt-same-table "$BIN" analyze -q --base "$D/base" --base-quant nf4 -o "$OUT/opt2.h5" \
        lora="$D/lora"
    if cmp -s "$LOG/cfg-same-table.out" "$LOG/opt-same-table.out"; then
        pass cfg-same-as-option
    else
        fail cfg-same-as-option "the tables differ"
    fi
fi
# double quant with llm_int8_skip_modules: down_proj stays as given
writes_ok cfg-skip "$OUT/cfg-skip.h5" analyze -q --per-row --base "$D/cfg_skip" lora="$D/lora" &&
    check cfg-skip "$OUT/cfg-skip.h5" lora nf4-dq down_proj
# the same option as the config is fine; a different one is ambiguous
writes_ok cfg-agree "$OUT/cfg-agree.h5" analyze -q --base "$D/cfg_nf4" --base-quant nf4 \
    lora="$D/lora"
refused cfg-conflict "quantization_config is nf4" --base "$D/cfg_nf4" --base-quant fp4 \
    lora="$D/lora"
refused cfg-gptq "quant_method 'gptq' is not supported" --base "$D/cfg_gptq" lora="$D/lora"
refused cfg-both "both of load_in_4bit and load_in_8bit" --base "$D/cfg_both" lora="$D/lora"
refused f64-base "model.layers.0.self_attn.q_proj.weight' is F64" --base "$D/base_f64" \
    --base-quant nf4 lora="$D/lora"
refused ft-run "applies to adapter runs" --base "$D/base" --base-quant int8 ft="$D/ft"

# a base saved by bitsandbytes (packed 4-bit with absmax / quant_map / quant_state, or int8
# with SCB): read dequantised, W0 bit-identical to the round trip of the original weights
if "$PY" "$TP/bnb_saved.py" gen "$D" >"$LOG/saved-gen.out" 2>&1; then
    pass saved-generate
    for q in nf4 fp4 nf4-dq int8; do
        writes_ok "saved-$q" "$OUT/saved-$q.h5" analyze -q --per-row --base "$D/saved_$q" \
            lora="$D/lora" &&
            check "saved-$q" "$OUT/saved-$q.h5" lora "$q"
    done
    run saved-note "$BIN" analyze --base "$D/saved_nf4-dq" -o "$OUT/saved-note.h5" lora="$D/lora"
    if [ $RC -eq 0 ] && grep -q "saved quantised by bitsandbytes: 6 weight(s) read dequantised" \
        "$LOG/saved-note.err"; then
        pass saved-noted
    else
        fail saved-noted "exit $RC: $(peek "$LOG/saved-note.err")"
    fi
    run saved-inspect "$BIN" inspect "$D/saved_nf4"
    if [ $RC -eq 0 ] && grep -q "saved quantised by bitsandbytes" "$LOG/saved-inspect.out"; then
        pass saved-inspect
    else
        fail saved-inspect "exit $RC: $(peek "$LOG/saved-inspect.out")"
    fi
    refused saved-twice "is saved quantised by bitsandbytes|quantise it twice" \
        --base "$D/saved_nf4" --base-quant nf4 lora="$D/lora"
    while IFS=$'\t' read -r c wants; do
        refused "saved-bad-$c" "$D/saved_bad/$c/model.safetensors|$wants" \
            --base "$D/saved_bad/$c" lora="$D/lora"
    done <"$D/saved_bad/cases.tsv"
else
    fail saved-generate "$(peek "$LOG/saved-gen.out")"
fi

# usage error: an unknown quantisation
run bad-name "$BIN" analyze --base "$D/base" --base-quant nf3 -o "$OUT/x.h5" lora="$D/lora"
if [ $RC -eq 2 ] && grep -q "nf3" "$LOG/bad-name.err"; then
    pass bad-name
else
    fail bad-name "exit $RC, expected 2 naming 'nf3': $(peek "$LOG/bad-name.err")"
fi

# an adapter whose config names a 4-bit base, analysed without --base-quant: a note
run hint "$BIN" analyze --base "$D/base" -o "$OUT/hint.h5" hint="$D/hint"
if [ $RC -eq 0 ] && grep -q "looks quantised" "$LOG/hint.err"; then
    pass hint-noted
else
    fail hint-noted "exit $RC, no note: $(peek "$LOG/hint.err")"
fi
run hint-q "$BIN" analyze --base "$D/base" --base-quant nf4 -o "$OUT/hint-q.h5" hint="$D/hint"
if [ $RC -ne 0 ] || grep -q "looks quantised" "$LOG/hint-q.err"; then
    fail hint-only-without "exit $RC, or the note appears with --base-quant"
else
    pass hint-only-without
fi
finish
