#!/bin/bash
# The LoRA/DoRA path under a memory budget (issue #19): tests/bench/bench_steps.py writes
# a base of three 1024 x 1024 bf16 projections and runs of 12 adapters (r = 32, float32
# factors; one LoRA, one DoRA, one LoRA with fan_in_fan_out on a base stored [in, out], 512
# wide). With --mem 1M one step fits a thread's share, so every
# step is a group of its own (the base read 12 times): the HDF5 numbers must equal the
# default budget's run (one group) to 1e-12 relative (bit for bit is what is expected),
# at -j 1 and -j 2, with --per-row, and NumPy's float64 merge to 1e-9. A step that does not
# fit one thread (r = 160: 1.3 MiB of factors) is an error naming --mem and the size it
# needs; a budget under 1M or not a size is a usage error, for analyze and batch alike.
set -u
SUITE=mem
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
D=$TMP/data

if [ ! -x "$BIN" ]; then
    fail binary "$BIN not found or not executable (run make)"
    finish
    exit
fi
gen() {
    timeout -k 5 300 "$PY" "$ROOT/tests/bench/bench_steps.py" "$@" >"$LOG/gen.out" 2>>"$LOG/gen.err"
}
if gen "$D/lora" --dim 1024 --modules 3 --steps 12 --r 32 --distinct 12 &&
    gen "$D/dora" --dim 1024 --modules 3 --steps 12 --r 32 --distinct 12 --dora &&
    gen "$D/fifo" --dim 512 --modules 2 --steps 12 --r 32 --distinct 12 --fan-in-fan-out &&
    gen "$D/big" --dim 1024 --modules 1 --steps 1 --r 160; then
    pass generate
else
    fail generate "$(peek "$LOG/gen.err" 600)"
    finish
    exit
fi

for m in lora dora fifo; do
    B=$D/$m/base.safetensors
    for v in "default:-j 2" "tiny:-j 2 --mem 1M" "tiny1:-j 1 --mem 1M" \
        "rows:-j 2 --per-row" "rowstiny:-j 2 --per-row --mem 1M"; do
        label=$m-${v%%:*}
        # shellcheck disable=SC2086  # the options are words
        run "$label" "$BIN" analyze -q --base "$B" -o "$TMP/$label.h5" ${v#*:} "$m=$D/$m/run"
        crashed "$label" && continue
        if [ $RC -ne 0 ]; then
            fail "$label" "exit $RC: $(peek "$LOG/$label.err")"
        elif "$PY" "$TP/check_mem.py" numpy "$D/$m" "$m" "$TMP/$label.h5" >"$LOG/$label.np" 2>&1; then
            pass "$label"
        else
            fail "$label" "$(peek "$LOG/$label.np" 400)"
        fi
    done
    for pair in default:tiny default:tiny1 rows:rowstiny; do
        a=$m-${pair%%:*} b=$m-${pair#*:}
        [ -s "$TMP/$a.h5" ] && [ -s "$TMP/$b.h5" ] || continue
        if "$PY" "$TP/check_mem.py" same "$TMP/$a.h5" "$TMP/$b.h5" 1e-12 >"$LOG/$a-$b.same" 2>&1; then
            pass "same-$a-$b"
        else
            fail "same-$a-$b" "$(peek "$LOG/$a-$b.same" 400)"
        fi
    done
done

# one step larger than the whole budget: an error (1) that names --mem and what it needs
run big "$BIN" analyze -q --base "$D/big/base.safetensors" -o "$TMP/big.h5" --mem 1M "big=$D/big/run"
if crashed big; then
    :
elif [ $RC -ne 1 ] || ! grep -q -- "--mem 1.0M is too small" "$LOG/big.err" ||
    ! grep -q -- "give --mem [0-9]*M or more" "$LOG/big.err"; then
    fail big "exit $RC: $(peek "$LOG/big.err")"
elif [ -e "$TMP/big.h5" ]; then
    fail big "wrote big.h5"
else
    pass big
fi
run big-fits "$BIN" analyze -q --base "$D/big/base.safetensors" -o "$TMP/big.h5" --mem 2M "big=$D/big/run"
if ! crashed big-fits; then
    [ $RC -eq 0 ] && pass big-fits || fail big-fits "exit $RC: $(peek "$LOG/big-fits.err")"
fi

# budgets that cannot be: usage errors (2) naming --mem
for c in "analyze:512K" "analyze:lots" "analyze:0" "batch:1K" "batch:-3M"; do
    cmd=${c%%:*} v=${c#*:}
    label=usage-$cmd-$v
    if [ "$cmd" = analyze ]; then
        run "$label" "$BIN" analyze -q --base "$D/lora/base.safetensors" -o "$TMP/u.h5" --mem "$v" "x=$D/lora/run"
    else
        run "$label" "$BIN" batch --mem "$v" "$TMP/none.json"
    fi
    crashed "$label" && continue
    if [ $RC -eq 2 ] && grep -q -- "--mem wants a size of at least 1M" "$LOG/$label.err"; then
        pass "$label"
    else
        fail "$label" "exit $RC: $(peek "$LOG/$label.err")"
    fi
done

finish
