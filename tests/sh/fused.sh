#!/bin/bash
# Fused projections split into parts (issue #16): tests/py/gen_fused.py writes, per
# architecture (Phi-3 qkv_proj and gate_up_proj, GPT-NeoX, Falcon's three layouts, GPT-2
# c_attn, Qwen-1 c_attn, MPT Wqkv multi-query, Baichuan W_pack, Megatron-Core linear_qkv per
# query group and its gated linear_fc1), a base with its config.json and a fine-tune that changes the rows of one part only (and, for four of them, a
# LoRA run whose B is zero outside that part); tests/py/check_fused.py wants NAME[part]
# modules with the modelling code's rows, the changed part equal to NumPy (1e-9) and every
# other part exactly dM = dD = 0, and every part's numbers equal to those of the same weights
# stored unfused (1e-12 relative). --no-split analyses the weight whole; sizes that do not add
# up and a missing head count are errors (exit 1) naming the tensor and the option.
set -u
SUITE=fused
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
D=$TMP/data

. "$ROOT/tests/suite_gen.sh"
gen_data gen_fused.py

CASES="phi3_qkv phi3_gate_up neox falcon_new falcon_mq falcon_old gpt2 qwen mpt_mqa baichuan
    megatron megatron_fc1"
for c in $CASES; do
    run "$c" "$BIN" analyze --base "$D/$c/base" -o "$TMP/$c.h5" ft="$D/$c/ft"
    crashed "$c" && continue
    if [ $RC -ne 0 ]; then
        fail "$c" "exit $RC: $(peek "$LOG/$c.err")"
    elif ! grep -q "split into their parts" "$LOG/$c.err"; then
        fail "$c" "no note of the split: $(peek "$LOG/$c.err")"
    elif "$PY" "$TP/check_fused.py" "$D" "$c" "$TMP/$c.h5" >"$LOG/$c.check" 2>&1; then
        pass "$c"
    else
        fail "$c" "$(peek "$LOG/$c.check" 400)"
    fi
done

# each part equals the same weights unfused (CASE_plain: one tensor per part), 1e-12 relative
for c in $CASES; do
    [ -s "$TMP/$c.h5" ] || continue
    run "plain-$c" "$BIN" analyze --base "$D/${c}_plain/base" -o "$TMP/plain-$c.h5" \
        ft="$D/${c}_plain/ft"
    crashed "plain-$c" && continue
    if [ $RC -ne 0 ]; then
        fail "plain-$c" "exit $RC: $(peek "$LOG/plain-$c.err")"
    elif "$PY" "$TP/check_fused.py" "$D" "$c" "$TMP/$c.h5" ft "$TMP/plain-$c.h5" \
        >"$LOG/plain-$c.check" 2>&1; then
        pass "plain-$c"
    else
        fail "plain-$c" "$(peek "$LOG/plain-$c.check" 400)"
    fi
done

# Megatron-LM's own file (torch.save, the state dict under "model", args as an inert
# placeholder): the same numbers as the safetensors fine-tune's unfused parts
run megatron-torch "$BIN" analyze --base "$D/megatron/base" -o "$TMP/megatron-torch.h5" \
    ft="$D/megatron/ft_torch/mp_rank_00/model_optim_rng.pt"
if ! crashed megatron-torch; then
    if [ $RC -ne 0 ]; then
        fail megatron-torch "exit $RC: $(peek "$LOG/megatron-torch.err")"
    elif "$PY" "$TP/check_fused.py" "$D" megatron "$TMP/megatron-torch.h5" ft \
        "$TMP/plain-megatron.h5" >"$LOG/megatron-torch.check" 2>&1; then
        pass megatron-torch
    else
        fail megatron-torch "$(peek "$LOG/megatron-torch.check" 400)"
    fi
fi

# the parts regress as the unfused kinds: q_proj, k_proj, v_proj (gate_proj, up_proj)
for c in phi3_qkv phi3_gate_up neox; do
    [ -s "$TMP/$c.h5" ] || continue
    kinds=$("$PY" -c 'import sys, h5py; f = h5py.File(sys.argv[1]); print(" ".join(sorted(set(f["regression/module_kind"].asstr()[:]) - {"lm_head"})))' "$TMP/$c.h5" 2>&1)
    case $c in phi3_gate_up) want="gate_proj up_proj" ;; *) want="k_proj q_proj v_proj" ;; esac
    if [ "$kinds" = "$want" ]; then pass "kinds-$c"; else fail "kinds-$c" "module kinds '$kinds', want '$want'"; fi
done

# LoRA on a fused weight: B A split by the rows of B, in one study with the FT run (GPT-2:
# fan_in_fan_out LoRA and Conv1D FT on the same rows)
for c in phi3_qkv neox falcon_new gpt2; do
    run "lora-$c" "$BIN" analyze --base "$D/$c/base" -o "$TMP/lora-$c.h5" ft="$D/$c/ft" \
        lora="$D/$c/lora"
    crashed "lora-$c" && continue
    if [ $RC -ne 0 ]; then
        fail "lora-$c" "exit $RC: $(peek "$LOG/lora-$c.err")"
    elif "$PY" "$TP/check_fused.py" "$D" "$c" "$TMP/lora-$c.h5" lora >"$LOG/lora-$c.check" 2>&1 &&
        "$PY" "$TP/check_fused.py" "$D" "$c" "$TMP/lora-$c.h5" ft >>"$LOG/lora-$c.check" 2>&1; then
        pass "lora-$c"
    else
        fail "lora-$c" "$(peek "$LOG/lora-$c.check" 400)"
    fi
done

# --no-split: the fused weight whole, as before
run nosplit "$BIN" analyze --base "$D/neox/base" -o "$TMP/nosplit.h5" --no-split ft="$D/neox/ft"
if [ $RC -eq 0 ] && grep -q "query_key_value.weight	" "$LOG/nosplit.out" &&
    ! grep -q "query_key_value.weight\[" "$LOG/nosplit.out"; then
    pass no-split
else
    fail no-split "exit $RC: $(peek "$LOG/nosplit.out") $(peek "$LOG/nosplit.err")"
fi

# a linear_fc1 whose config has neither gated_linear_unit nor ffn_hidden_size is no Megatron
# MLP: analysed whole, not refused
rm -rf "$TMP/nomg" && cp -r "$D/megatron_fc1" "$TMP/nomg"
"$PY" -c 'import json,sys; p=sys.argv[1]; c=json.load(open(p)); c.pop("ffn_hidden_size"); c.pop("gated_linear_unit"); json.dump(c, open(p,"w"))' \
    "$TMP/nomg/base/config.json"
run fc1-not-megatron "$BIN" analyze --base "$TMP/nomg/base" -o "$TMP/nomg.h5" ft="$TMP/nomg/ft"
if [ $RC -eq 0 ] && grep -q "linear_fc1.weight	" "$LOG/fc1-not-megatron.out"; then
    pass fc1-not-megatron
else
    fail fc1-not-megatron "exit $RC: $(peek "$LOG/fc1-not-megatron.err")"
fi

# bad CASE LABEL REGEX CONFIG-EDIT: config.json edited by a Python expression on `c`
bad() {
    local case=$1 label=$2 re=$3 edit=$4
    rm -rf "$TMP/bad"
    cp -r "$D/$case" "$TMP/bad"
    "$PY" -c "import json,sys; p=sys.argv[1]; c=json.load(open(p)); $edit; json.dump(c, open(p,'w'))" \
        "$TMP/bad/base/config.json"
    run "$label" "$BIN" analyze --base "$TMP/bad/base" -o "$TMP/bad.h5" ft="$TMP/bad/ft"
    crashed "$label" && return
    if [ $RC -ne 1 ]; then
        fail "$label" "exit $RC, expected 1: $(peek "$LOG/$label.err")"
    elif ! grep -qE -- "$re" "$LOG/$label.err"; then
        fail "$label" "message does not match /$re/: $(peek "$LOG/$label.err")"
    elif [ -e "$TMP/bad.h5" ]; then
        fail "$label" "an output was left behind"
    else
        pass "$label"
    fi
}
bad phi3_qkv sizes "qkv_proj.weight' has 32 rows.*16 \+ 12 \+ 12.*--no-split" \
    "c['num_key_value_heads'] = 3"
bad neox missing-heads "lacks 'num_attention_heads'.*query_key_value.*--no-split" \
    "del c['num_attention_heads']"
bad megatron megatron-sizes "linear_qkv.weight' has 32 rows.*model_type none.*4 groups of 8 \+ 4 \+ 4" \
    "c['num_query_groups'] = 4; c['num_attention_heads'] = 8"
bad megatron megatron-groups "4 heads are not a multiple of 3 query groups" \
    "c['num_query_groups'] = 3"
bad megatron_fc1 megatron-fc1-sizes "linear_fc1.weight' has 48 rows.*20 \+ 20" \
    "c['ffn_hidden_size'] = 20"
bad megatron megatron-no-config "linear_qkv.weight' is Megatron's fused.*config.json.*--no-split" \
    "import os; os.remove(p); sys.exit(0)"
bad falcon_new heads-groups "4 heads are not a multiple of 3 kv heads" "c['num_kv_heads'] = 3"
finish
