#!/bin/bash
# PEFT's other adapter families (IA3, AdaLoRA, VeRA, LoHa, LoKr) and PiSSA / OLoRA initialised
# LoRA (B0 A0 recomputed from W0), read as PEFT saves them and
# merged as PEFT merges them: every dM / dD against tests/py/families.py's independent NumPy
# merge (|tool - ref| <= 1e-15 + 1e-9 |ref|), the method in the HDF5 file and the table, IA3
# against a quantised base, PEFT's own IA3 / AdaLoRA regression files (bases rebuilt from
# their shapes: reading checks), and the bad inputs, each exit 1 naming file and tensor.
#
#   tests/sh/families.sh     (env: DORA_BIN or BIN, PY or PYTHON, REALDATA; see tests/lib.sh)

set -u
SUITE=families
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
. "$ROOT/tests/adapter_lib.sh"
D=$TMP/data
OUT=$TMP/out
mkdir -p "$OUT"
RUNS=(ia3 ia3fifo adalora vera loha lokr pissa olora)

generate families.py gen "$D" --seed 11

# check LABEL CHECKER_ARGS... : the reference checker
check() { checked families.py "$@"; }

ALL=()
for r in "${RUNS[@]}"; do ALL+=("$r=$D/$r"); done
if writes_ok all "$OUT/all.h5" analyze -q -j 2 --base "$D/base" "${ALL[@]}"; then
    check all check --data "$D" --h5 "$OUT/all.h5" --runs "$(IFS=,; echo "${RUNS[*]}")"
    # the table's method column names each family
    want="adalora ia3 loha lokr lora vera"
    got=$(cut -f2 "$LOG/all.out" | tail -n +2 | LC_ALL=C sort -u | tr '\n' ' ' | sed 's/ $//')
    if [ "$got" = "$want" ]; then
        pass table-method
    else
        fail table-method "methods in the table: '$got', expected '$want'"
    fi
fi
# pissa_niter_K: B0 A0 from the run's checkpoint-0/, or from --initial-adapter
writes_ok niter "$OUT/niter.h5" analyze -q --base "$D/base" niter="$D/niter" &&
    check niter check --data "$D" --h5 "$OUT/niter.h5" --runs niter
writes_ok niter-initial "$OUT/niter2.h5" analyze -q --base "$D/base" --initial-adapter "$D/niter_init" \
    niter_noinit="$D/niter_noinit" &&
    check niter-initial check --data "$D" --h5 "$OUT/niter2.h5" --runs niter_noinit
refused niter-none "$D/niter_noinit/checkpoint-10/adapter_config.json|pissa_niter_4|--initial-adapter" \
    --base "$D/base" x="$D/niter_noinit"

# one run alone gives the same numbers
writes_ok alone "$OUT/lokr.h5" analyze -q --base "$D/base" lokr="$D/lokr" &&
    check alone check --data "$D" --h5 "$OUT/lokr.h5" --runs lokr

# IA3's rows are scaled on the W0 the analysis uses: a quantised base too
writes_ok ia3-nf4 "$OUT/ia3q.h5" analyze -q --base "$D/base" --base-quant nf4 \
    ia3="$D/ia3" ia3fifo="$D/ia3fifo" adalora="$D/adalora" &&
    check ia3-nf4 check --data "$D" --h5 "$OUT/ia3q.h5" --runs ia3,ia3fifo,adalora --quant nf4

# inspect shows each family's parameters
run inspect "$BIN" inspect "$D/adalora/checkpoint-10"
if [ $RC -eq 0 ] && grep -q "method adalora" "$LOG/inspect.out" &&
    grep -q "init_r 6" "$LOG/inspect.out" && grep -q "adalora" "$LOG/inspect.out"; then
    pass inspect-adalora
else
    fail inspect-adalora "exit $RC: $(peek "$LOG/inspect.out")"
fi

# PEFT's own regression adapters (torch.save through PEFT 0.6.1)
REG=$REALDATA/peft/tests/regression
REAL=(ia3_mlp ia3_no_ff_mlp ia3_conv2d adalora_mlp)
if [ -d "$REG" ] && "$PY" "$TP/families.py" realdata --regression "$REG" --out "$D" \
    >"$LOG/real.out" 2>&1; then
    for r in "${REAL[@]}"; do
        writes_ok "real-$r" "$OUT/real-$r.h5" analyze -q --base "$D/real_$r" "$r=$REG/$r/0.6.1" &&
            check "real-$r" checkreal --regression "$REG" --out "$D" --h5 "$OUT/real-$r.h5" --runs "$r"
    done
else
    fail realdata "no $REG, or its bases could not be made: $(peek "$LOG/real.out")"
fi

refused vera-noproj "$D/vera_noproj/checkpoint-10/adapter_model.safetensors|save_projection" \
    --base "$D/base" v="$D/vera_noproj"
while IFS=$'\t' read -r c wants; do
    refused "bad-$c" "$wants" --base "$D/base" "x=$D/bad/$c"
done <"$D/bad/cases.tsv"
finish
