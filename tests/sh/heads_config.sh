#!/bin/bash
# Per-head values from the config.json key names of each architecture (GPT-2's n_head,
# Falcon's multi_query / num_kv_heads, MPT's attn_config, Phi-3's num_key_value_heads), on
# the parts of fused projections.
#
#   tests/sh/heads_config.sh   (env: DORA_BIN or BIN = the binary, PY or PYTHON = python
#                               with numpy/h5py, default /usr/bin/python3)
#
# tests/py/gen_fused.py writes a base per architecture (its config.json as its transformers
# config writes it; GPT-2's c_attn stored [in, 3 * out] as Conv1D) and a fine-tune that
# changes one part; tests/py/check_heads_fused.py holds /runs/ft/heads (and /runs/lora/heads
# of the LoRA cases) to a float64 NumPy reference, rtol 1e-9. A config that contradicts
# itself, or lacks the heads, gives no heads group and a note naming the keys (never a guess).
# Prints `PASS heads_config/<name>` or `FAIL heads_config/<name>: <why>`; exits 1 on any FAIL.

set -u
SUITE=heads_config
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
D=$TMP/data
. "$ROOT/tests/suite_gen.sh"
gen_data gen_fused.py

# analysed LABEL CASE_DIR RUN : analyze exits 0 (notes in $LOG/LABEL.err)
analysed() {
    run "$1" "$BIN" analyze --base "$2/base" -o "$TMP/$1.h5" "$3=$2/$3"
    crashed "$1" && return 1
    [ $RC -eq 0 ] && return 0
    fail "$1" "exit $RC: $(peek "$LOG/$1.err")"
    return 1
}

for c in gpt2 falcon_mq falcon_new falcon_old mpt_mqa phi3_qkv neox qwen baichuan megatron; do
    for r in ft lora; do
        [ -d "$D/$c/$r" ] || continue
        analysed "$c-$r" "$D/$c" "$r" || continue
        if "$PY" "$TP/check_heads_fused.py" "$D" "$c" "$TMP/$c-$r.h5" "$r" >"$LOG/$c-$r.check" 2>&1; then
            pass "$c-$r"
            sed "s/^/    /" "$LOG/$c-$r.check"
        else
            fail "$c-$r" "$(head -3 "$LOG/$c-$r.check" | tr '\n' ' ')"
        fi
    done
done
# Megatron's k and v: num_query_groups is no key the heads are read from: a note, no guess
grep -q "no per-head values for 'decoder.layers.0.self_attention.linear_qkv.weight\[k\]': its 8 rows are not 4 heads" \
    "$LOG/megatron-ft.err" && pass megatron-kv-noted || fail megatron-kv-noted "$(peek "$LOG/megatron-ft.err")"

# no-heads CASE LABEL CONFIG-JSON NOTE : the case with CONFIG-JSON as its config.json: exit 0,
# no heads group, the note
no_heads() {
    local c=$1 label=$2 cfg=$3 note=$4
    mkdir -p "$TMP/$label"
    cp -r "$D/$c/base" "$D/$c/ft" "$TMP/$label/"
    echo "$cfg" >"$TMP/$label/base/config.json"
    analysed "$label" "$TMP/$label" ft || return
    if grep -qF "no per-head values: $note" "$LOG/$label.err" &&
        "$PY" -c "import h5py, sys; sys.exit('heads' in h5py.File(sys.argv[1])['runs/ft'])" "$TMP/$label.h5"; then
        pass "$label"
    else
        fail "$label" "heads written or no note: $(peek "$LOG/$label.err" 500)"
    fi
}
no_heads gpt2 gpt2-contradicts '{"model_type": "gpt2", "n_embd": 16, "n_head": 4, "num_attention_heads": 2}' \
    "its config.json says num_attention_heads 2 but n_head 4"
no_heads gpt2 gpt2-no-heads '{"model_type": "gpt2", "n_embd": 16}' \
    "its config.json has no num_attention_heads (nor n_head, n_heads)"
no_heads falcon_new falcon-kv-contradicts \
    '{"model_type": "falcon", "num_attention_heads": 4, "num_kv_heads": 2, "n_head_kv": 1, "hidden_size": 16, "new_decoder_architecture": true}' \
    "its config.json says num_kv_heads 2 but n_head_kv 1"
finish
