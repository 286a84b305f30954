#!/bin/bash
# `spectrum` on long LoRA runs in bounded memory (issue #19's "the same holds for spectrum"):
# tests/bench/bench_steps.py writes three 1024 x 1024 bf16 projections and LoRA runs (r = 32,
# float32 factors) of 100 and of 20 checkpoints. Without a base every update is decomposed
# from its factors (thin QR of B and A^T, an r x r core); a module keeps the subspaces of
# the steps a phi pair still needs (the previous, the final, the compared ones), not of
# every step. Checks: the 100-step run with --mem 1M at -j 2 and -j 1, and with
# --compare against the 20-step run, equals the default run bit for bit (HDF5, every
# dataset); the 20-step run matches NumPy (tests/py/check_spectral.py: numpy.linalg.svd of
# s B @ A for one module, the others through their r x r Gram matrices); peak RssAnon
# under --mem 1M stays under 12 MiB and grows by less than 6 MiB from 20 to 100 steps
# (what does grow is the results, e.g. the phi grids, and each checkpoint's parsed
# header: about 3.7 MiB; holding every step's 16 vectors as before added 11 MiB more;
# not checked in sanitizer builds)
set -u
SUITE=spectral_mem
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
D=$TMP/data

if [ ! -x "$BIN" ]; then
    fail binary "$BIN not found or not executable (run make)"
    finish
fi
gen() {
    timeout -k 5 300 "$PY" "$ROOT/tests/bench/bench_steps.py" "$@" >"$LOG/gen.out" 2>>"$LOG/gen.err"
}
if gen "$D/l100" --dim 1024 --modules 3 --steps 100 --r 32 --distinct 5 &&
    gen "$D/l20" --dim 1024 --modules 3 --steps 20 --r 32 --distinct 5; then
    pass generate
else
    fail generate "$(peek "$LOG/gen.err" 600)"
    finish
fi

# measured LABEL ARGS... : `spectrum -q --force ARGS` with its peak RssAnon in PEAK (KiB)
measured() {
    local label=$1
    shift
    timeout -k 5 120 "$PY" "$TP/peak_rss.py" --out "$LOG/$label.out" --err "$LOG/$label.err" \
        "$BIN" spectrum -q --force "$@" >"$LOG/$label.rss"
    RC=$?
    PEAK=$(tail -1 "$LOG/$label.rss")
    crashed "$label" && return 1
    if [ $RC -ne 0 ]; then
        fail "$label" "exit $RC: $(peek "$LOG/$label.err")"
        return 1
    fi
    pass "$label"
    echo "    $label: peak RssAnon $((PEAK / 1024)) MiB"
}

measured default -j 2 -o "$TMP/default.h5" "l100=$D/l100/run"
measured tiny -j 2 --mem 1M -o "$TMP/tiny.h5" "l100=$D/l100/run"
P100=$PEAK
measured tiny1 -j 1 --mem 1M -o "$TMP/tiny1.h5" "l100=$D/l100/run"
measured tiny20 -j 2 --mem 1M -o "$TMP/tiny20.h5" "l20=$D/l20/run"
P20=$PEAK
measured cmp-default -j 2 --compare -o "$TMP/cmp-default.h5" "l100=$D/l100/run" "l20=$D/l20/run"
measured cmp-tiny -j 2 --mem 1M --compare -o "$TMP/cmp-tiny.h5" "l100=$D/l100/run" \
    "l20=$D/l20/run"

for pair in default:tiny default:tiny1 cmp-default:cmp-tiny; do
    a=${pair%%:*} b=${pair#*:}
    [ -s "$TMP/$a.h5" ] && [ -s "$TMP/$b.h5" ] || continue
    if "$PY" "$TP/check_mem.py" same "$TMP/$a.h5" "$TMP/$b.h5" 0 >"$LOG/$a-$b.same" 2>&1; then
        pass "same-$a-$b"
    else
        fail "same-$a-$b" "$(peek "$LOG/$a-$b.same" 400)"
    fi
done

if [ -s "$TMP/tiny20.h5" ]; then
    if "$PY" "$TP/check_spectral.py" check --h5 "$TMP/tiny20.h5" --sample 1 \
        >"$LOG/numpy.check" 2>&1; then
        pass numpy
        grep -E '^worst (sigma|phi)|^checked' "$LOG/numpy.check" | sed 's/^/    numpy: /'
    else
        fail numpy "$(grep -m2 -E 'MISMATCH|Error|mismatch' "$LOG/numpy.check" | tr '\n' ' ')"
    fi
fi

if grep -q __asan_init "$BIN" 2>/dev/null; then
    echo "    (a sanitizer build: RssAnon bounds not checked)"
elif [ -n "${P100:-}" ] && [ -n "${P20:-}" ]; then
    if [ "$P100" -gt $((12 * 1024)) ]; then
        fail rss-bound "peak RssAnon $((P100 / 1024)) MiB > 12 MiB with --mem 1M"
    else
        pass rss-bound
    fi
    if [ $((P100 - P20)) -gt $((6 * 1024)) ]; then
        fail rss-steps "peak RssAnon grows from $((P20 / 1024)) MiB (20 steps) to $((P100 / 1024)) MiB (100)"
    else
        pass rss-steps
    fi
fi
finish
