#!/bin/bash
# spectrum chooses its modules as analyze does (issue #16): on checkpoints in other tools'
# layouts (DDP's module. prefix, a Lightning .ckpt folder, names fixed by --rename, Meta's
# names), on GPT-2's Conv1D weights and on fused projections (split into parts, or whole with
# --no-split) the spectrum table must equal that of the same weights in the plain layout
# (tests/py/check_spectrum_same.py: 1e-12 relative). The fixtures are those of layouts.sh
# (tests/py/gen_layouts.py) and fused.sh (tests/py/gen_fused.py, whose CASE_plain holds the
# parts as tensors of their own).
set -u
SUITE=spectrum_layouts
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

. "$ROOT/tests/suite_gen.sh"
gen_layouts_fused

# same LABEL TABLE_A RUN_A TABLE_B RUN_B [--parts]
same() {
    local label=$1
    shift
    if "$PY" "$TP/check_spectrum_same.py" "$@" >"$LOG/$label.check" 2>&1; then
        pass "$label"
    else
        fail "$label" "$(peek "$LOG/$label.check" 400)"
    fi
}

# spec LABEL ARGS...: spectrum into $TMP/LABEL.h5, its table $LOG/LABEL.out; 0 if it ran
spec() {
    local label=$1
    shift
    run "$label" "$BIN" spectrum -o "$TMP/$label.h5" "$@"
    crashed "$label" && return 1
    if [ $RC -ne 0 ]; then
        fail "$label" "exit $RC: $(peek "$LOG/$label.err")"
        return 1
    fi
}

if spec layouts --base "$L/base.safetensors" --rename '^backbone\.blocks\.=model.layers.' \
    plain="$L/plain" ddp="$L/ddp" lightning="$L/lightning" meta="$L/meta"; then
    for r in ddp lightning meta; do
        same "$r" "$LOG/layouts.out" "$r" "$LOG/layouts.out" plain
    done
    grep -q "run 'ddp': names of .*prefix 'module.' removed" "$LOG/layouts.err" &&
        pass alignment-note || fail alignment-note "$(peek "$LOG/layouts.err")"
fi
if spec renamed --base "$L/base.safetensors" --rename '^backbone\.blocks\.=model.layers.' \
    --rename '^unused\.=x' plain="$L/plain" renamed="$L/renamed"; then
    same renamed "$LOG/renamed.out" renamed "$LOG/renamed.out" plain
fi

# fused projections split (GPT-2: Conv1D [in, out] transposed first), each part equal to the
# same rows stored as a tensor of its own
for c in gpt2 phi3_qkv neox megatron; do
    spec "fused-$c" --base "$F/$c/base" ft="$F/$c/ft" &&
        spec "plain-$c" --base "$F/${c}_plain/base" ft="$F/${c}_plain/ft" &&
        same "split-$c" "$LOG/fused-$c.out" ft "$LOG/plain-$c.out" ft --parts
done
# --no-split: the fused weight whole, one module
if spec nosplit --base "$F/neox/base" --no-split ft="$F/neox/ft"; then
    if grep -q "query_key_value.weight	" "$LOG/nosplit.out" &&
        ! grep -q "query_key_value.weight\[" "$LOG/nosplit.out"; then
        pass no-split
    else
        fail no-split "$(peek "$LOG/nosplit.out")"
    fi
fi
# a LoRA run of a fused weight, split by the rows of B, beside the FT run
spec lora-gpt2 --base "$F/gpt2/base" ft="$F/gpt2/ft" lora="$F/gpt2/lora" &&
    if grep -q "^lora	lora	1	h.0.attn.c_attn.weight\[q\]	" "$LOG/lora-gpt2.out"; then
        pass lora-split
    else
        fail lora-split "$(peek "$LOG/lora-gpt2.out" 600)"
    fi

# usage: --rename and --transpose concern full weights, which need --base
run no-base "$BIN" spectrum -o "$TMP/x.h5" --rename 'a=b' "$F/gpt2/lora"
if [ $RC -eq 2 ] && grep -q -- "--rename names full weights, which need --base" "$LOG/no-base.err"; then
    pass rename-needs-base
else
    fail rename-needs-base "exit $RC: $(peek "$LOG/no-base.err")"
fi
finish
