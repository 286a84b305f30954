#!/bin/bash
# Checkpoints as other tools write them (issue #16): tests/py/gen_layouts.py writes one tiny
# run with the real torch.save in each layout (DDP, torch.compile, nested dicts, Lightning
# .ckpt folders, DeepSpeed, FSDP, Meta's model-parallel shards, joined) beside the plain safetensors layout; each layout is
# analysed in one study with the plain run and tests/py/check_layouts.py wants dM and dD
# equal to 1e-12 relative (and the plain run equal to a NumPy reference). Bad input --
# ambiguous alignment, a colliding or invalid --rename, names that share nothing, ZeRO
# partitions, sharded FSDP, a Lightning step that disagrees, an object where a weight
# belongs -- must exit 1 (2 for a bad option) naming what is involved, with no output. A GPT-2
# study (Conv1D weights stored [in, out]) must read FT and fan_in_fan_out LoRA runs along the
# same rows (tests/py/check_conv1d.py, against NumPy).
set -u
SUITE=layouts
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
D=$TMP/data

. "$ROOT/tests/suite_gen.sh"
gen_data gen_layouts.py

# same LAYOUT ALIGNMENT [OPTIONS...]: the layout's numbers equal the plain run's
same() {
    local name=$1 align=$2
    shift 2
    run "$name" "$BIN" analyze --base "$D/base.safetensors" -o "$TMP/$name.h5" "$@" \
        plain="$D/plain" "$name=$D/$name"
    crashed "$name" && return
    if [ $RC -ne 0 ]; then
        fail "$name" "exit $RC: $(peek "$LOG/$name.err")"
        return
    fi
    local args=()
    [ -n "$align" ] && args=(--alignment "$align")
    if "$PY" "$TP/check_layouts.py" "$D/base.safetensors" "$D/plain" "$TMP/$name.h5" "$name" \
        "${args[@]}" >"$LOG/$name.check" 2>&1; then
        pass "$name"
    else
        fail "$name" "$(peek "$LOG/$name.check" 400)"
    fi
}

same ddp "prefix 'module.' removed"
same compile "prefix '_orig_mod.' removed"
same nested_sd "prefix 'state_dict.' removed"
same nested_model "prefix 'model.' removed"
same lightning "prefix 'state_dict.model.' removed"
same deepspeed "prefix 'module.' removed"
same fsdp ""
same custom_obj "prefix 'state_dict.' removed"
same renamed "renamed 16 tensor(s)" --rename '^backbone\.blocks\.=model.layers.'
same ambiguous "renamed 19 tensor(s)" --rename '^model\.='
same meta "Meta/torchtune Llama names read as HF's (19 renamed, wq/wk rows put in HF's RoPE order)"
same meta_mp "Meta/torchtune Llama names read as HF's"
same meta_mp3 "Meta/torchtune Llama names read as HF's"
same torchtune "Llama names read as HF's (19 renamed, wq/wk rows put in HF's RoPE order)"
same torchtune_meta "Llama names read as HF's (19 renamed, wq/wk rows"
same torchtune_hf ""

# the placeholder note names the classes, and the step came from the Lightning file name
if grep -q "torch.Size" "$LOG/deepspeed.err" && grep -q "never called" "$LOG/deepspeed.err"; then
    pass deepspeed-placeholder-note
else
    fail deepspeed-placeholder-note "$(peek "$LOG/deepspeed.err")"
fi

# GPT-2: Conv1D weights of an FT run read as [out, in], the rows of a fan_in_fan_out LoRA run
# (--no-split: c_attn whole in both runs; tests/sh/fused.sh has the split study)
run gpt2 "$BIN" analyze --base "$D/gpt2_base" -o "$TMP/gpt2.h5" --no-split ft="$D/gpt2_ft" \
    lora="$D/gpt2_lora"
if crashed gpt2; then
    :
elif [ $RC -ne 0 ]; then
    fail gpt2-conv1d "exit $RC: $(peek "$LOG/gpt2.err")"
elif ! grep -q "read as \[out, in\] (Conv1D of config.json model_type gpt2)" "$LOG/gpt2.err"; then
    fail gpt2-conv1d "no note of the transposed weights: $(peek "$LOG/gpt2.err")"
elif "$PY" "$TP/check_conv1d.py" "$D" "$TMP/gpt2.h5" >"$LOG/gpt2.check" 2>&1; then
    pass gpt2-conv1d
else
    fail gpt2-conv1d "$(peek "$LOG/gpt2.check" 400)"
fi

# refused STATUS LABEL REGEX CMD...: exit STATUS, the message matches REGEX, no output
refused() {
    local want=$1 label=$2 re=$3
    shift 3
    run "$label" "$@"
    crashed "$label" && return
    if [ $RC -ne "$want" ]; then
        fail "$label" "exit $RC, expected $want: $(peek "$LOG/$label.err")"
    elif ! grep -qE -- "$re" "$LOG/$label.err"; then
        fail "$label" "message does not match /$re/: $(peek "$LOG/$label.err")"
    elif [ -e "$TMP/bad.h5" ]; then
        fail "$label" "an output was left behind"
    else
        pass "$label"
    fi
}
A=("$BIN" analyze --base "$D/base.safetensors" -o "$TMP/bad.h5")
refused 1 ambiguous "ema\..*model\.|model\..*ema\..*--rename" "${A[@]}" "$D/ambiguous"
refused 1 unrelated "none of the 16 analysed.*'lm_head.weight'.*'enc.block0.w'.*--rename" \
    "${A[@]}" "$D/unrelated"
refused 1 collide "two tensors the name 'model.layers.0.self_attn.q_proj.weight'.*_copy" \
    "${A[@]}" --rename '_copy$=' "$D/collide"
refused 2 rename-bad-regex "--rename '\(=x'.*not valid" "${A[@]}" --rename '(=x' "$D/collide"
refused 2 rename-no-eq "not REGEX=REPLACEMENT" "${A[@]}" --rename 'abc' "$D/collide"
refused 2 transpose-bad-regex "--transpose '\(x'" "${A[@]}" --transpose '(x' "$D/plain"
refused 1 meta-mp-gap "consolidated.2.pth exists but consolidated.01.pth does not" \
    "${A[@]}" "$D/meta_mp_gap"
refused 1 meta-mp-norm "consolidated.01.pth': tensor 'layers.1.attention_norm.weight' should be the same.*replicated" \
    "${A[@]}" "$D/meta_mp_norm"
refused 1 meta-mp-unknown "split of tensor 'layers.0.attention.adapter.weight' is not known" \
    "${A[@]}" "$D/meta_mp_unknown"
refused 1 meta-no-config "Llama names: putting wq/wk in HF's row order needs num_attention_heads" \
    "${A[@]/$D\/base.safetensors/$D/noconfig/base.safetensors}" "$D/meta"
refused 1 torchtune-gap "epoch 1 has shard 3 but not hf_model_0002_1.pt" "${A[@]}" \
    "$D/torchtune_gap"
refused 1 zero3 "zero_to_fp32.py" "${A[@]}" "$D/zero3"
refused 1 zero3-empty "zero_to_fp32.py" "${A[@]}" "$D/zero3_empty"
refused 1 fsdp-sharded "pytorch_model_fsdp_0.*sharded FSDP" "${A[@]}" "$D/fsdp_sharded"
refused 1 lightning-step "step=1.ckpt.*step 1.*global_step is 7" "${A[@]}" \
    "$D/lightning_bad_step"
refused 1 object-in-state-dict "up_proj.weight' is an object of __main__.HParams" \
    "${A[@]}" "$D/custom_in_sd"
refused 1 whole-module "torch.nn.modules.linear.Linear.*state_dict" "${A[@]}" \
    "$D/nn_module.bin"
refused 1 only-objects "no tensor, only objects.*posix.system" "${A[@]}" "$D/only_objects.bin"
[ -e "$D/PWNED" ] && fail never-called "a pickled call ran" || pass never-called
finish
