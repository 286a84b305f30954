#!/usr/bin/python3
"""Fused projections of each architecture, and a fine-tune that changes one part only.

    gen_fused.py OUT_DIR

For each case OUT_DIR/CASE/ holds base/ (model.safetensors and the config.json
the architecture's transformers config writes) and ft/checkpoint-1/ in which
only the rows of one part (PART in OUT_DIR/cases.json) differ from the base.
The rows of each part are taken here from the modelling code's own view of the
fused output (written for this test, not shared with the tool):

  phi3 qkv_proj: q | k | v contiguous; gate_up_proj: gate | up (chunk(2))
  gpt_neox query_key_value: view(nh, 3 * hd) -> per head q, k, v
  falcon: new_decoder_architecture view(nkv, nh / nkv + 2, hd); multi_query
          view(nh + 2, hd); else view(nh, 3, hd)
  gpt2 c_attn (Conv1D, stored [in, out]): split(n_embd) of the output
  qwen c_attn: split(kv_channels * nh); mpt Wqkv: split([d, kv * hd, kv * hd]);
  baichuan W_pack: unflatten(3, hidden)
  megatron linear_qkv: view(ng, (nh / ng + 2) * hd) -> per query group q, k, v;
          linear_fc1 of a gated MLP: chunk(2) -> gate | up
OUT_DIR/megatron/ft_torch/mp_rank_00/model_optim_rng.pt is the fine-tune
as Megatron-LM's torch.save writes it (the state dict under "model").
OUT_DIR/CASE_plain/ holds the same weights unfused, one tensor
NAME.PART.weight ([out, in]) per part, without config.json.
cases.json lists per case: tensor name, the part changed, and for every part
the row indices (of the [out, in] weight) it owns. Cases in LORA_CASES also
get lora/checkpoint-1/, a PEFT LoRA adapter (r = 2, alpha = 4; fan_in_fan_out
for GPT-2's Conv1D) whose B is zero outside the changed part's rows.
"""

import collections

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stio  # noqa: E402

H, NH, HD, NKV, INTER = 16, 4, 4, 2, 24
LORA_CASES = ("phi3_qkv", "neox", "falcon_new", "gpt2")


def rows_by_view(shape, index):
    """Row indices of the fused output viewed as SHAPE (C order) selected by INDEX."""
    return np.arange(int(np.prod(shape))).reshape(shape)[index].reshape(-1).tolist()


def cases():
    n = NH * HD
    qpg = NH // NKV
    yield ("phi3_qkv", "phi3", {"num_attention_heads": NH, "num_key_value_heads": NKV,
                                "hidden_size": H, "intermediate_size": INTER},
           "model.layers.0.self_attn.qkv_proj.weight", False,
           {"q": list(range(n)), "k": list(range(n, n + NKV * HD)),
            "v": list(range(n + NKV * HD, n + 2 * NKV * HD))}, "q")
    yield ("phi3_gate_up", "phi3", {"num_attention_heads": NH, "hidden_size": H,
                                    "intermediate_size": INTER},
           "model.layers.0.mlp.gate_up_proj.weight", False,
           {"gate": list(range(INTER)), "up": list(range(INTER, 2 * INTER))}, "up")
    yield ("neox", "gpt_neox", {"num_attention_heads": NH, "hidden_size": H},
           "gpt_neox.layers.0.attention.query_key_value.weight", False,
           {p: rows_by_view((NH, 3, HD), (slice(None), i)) for i, p in enumerate("qkv")}, "q")
    yield ("falcon_new", "falcon", {"num_attention_heads": NH, "num_kv_heads": NKV,
                                    "hidden_size": H, "new_decoder_architecture": True},
           "transformer.h.0.self_attention.query_key_value.weight", False,
           {"q": rows_by_view((NKV, qpg + 2, HD), (slice(None), slice(0, qpg))),
            "k": rows_by_view((NKV, qpg + 2, HD), (slice(None), qpg)),
            "v": rows_by_view((NKV, qpg + 2, HD), (slice(None), qpg + 1))}, "k")
    yield ("falcon_mq", "falcon", {"num_attention_heads": NH, "hidden_size": H,
                                   "multi_query": True},
           "transformer.h.0.self_attention.query_key_value.weight", False,
           {"q": rows_by_view((NH + 2, HD), slice(0, NH)),
            "k": rows_by_view((NH + 2, HD), NH), "v": rows_by_view((NH + 2, HD), NH + 1)}, "q")
    yield ("falcon_old", "falcon", {"num_attention_heads": NH, "hidden_size": H,
                                    "multi_query": False},
           "transformer.h.0.self_attention.query_key_value.weight", False,
           {p: rows_by_view((NH, 3, HD), (slice(None), i)) for i, p in enumerate("qkv")}, "v")
    yield ("gpt2", "gpt2", {"n_embd": H, "n_head": NH},
           "h.0.attn.c_attn.weight", True,
           {p: list(range(i * H, (i + 1) * H)) for i, p in enumerate("qkv")}, "q")
    yield ("qwen", "qwen", {"num_attention_heads": NH, "kv_channels": HD, "hidden_size": H},
           "transformer.h.0.attn.c_attn.weight", False,
           {p: list(range(i * n, (i + 1) * n)) for i, p in enumerate("qkv")}, "v")
    yield ("mpt_mqa", "mpt", {"d_model": H, "n_heads": NH,
                              "attn_config": {"attn_type": "multiquery_attention"}},
           "transformer.blocks.0.attn.Wqkv.weight", False,
           {"q": list(range(H)), "k": list(range(H, H + HD)),
            "v": list(range(H + HD, H + 2 * HD))}, "k")
    # Megatron-Core / NeMo: no model_type; mixed_qkv.view(ng, (nh/ng + 2) * hd), then split
    yield ("megatron", None, {"num_attention_heads": NH, "num_query_groups": NKV,
                              "hidden_size": H, "kv_channels": HD},
           "decoder.layers.0.self_attention.linear_qkv.weight", False,
           {"q": rows_by_view((NKV, qpg + 2, HD), (slice(None), slice(0, qpg))),
            "k": rows_by_view((NKV, qpg + 2, HD), (slice(None), qpg)),
            "v": rows_by_view((NKV, qpg + 2, HD), (slice(None), qpg + 1))}, "q")
    yield ("megatron_fc1", None, {"num_attention_heads": NH, "hidden_size": H,
                                  "ffn_hidden_size": INTER, "gated_linear_unit": True},
           "model.decoder.layers.0.mlp.linear_fc1.weight", False,
           {"gate": list(range(INTER)), "up": list(range(INTER, 2 * INTER))}, "gate")
    yield ("baichuan", "baichuan", {"hidden_size": H, "num_attention_heads": NH},
           "model.layers.0.self_attn.W_pack.weight", False,
           {p: list(range(i * H, (i + 1) * H)) for i, p in enumerate("qkv")}, "q")


def lora(ck, name, rows, idx, conv1d, rng):
    r = 2
    a = (0.2 * rng.standard_normal((r, H))).astype(np.float32)
    b = np.zeros((rows, r), np.float32)
    b[idx] = (0.2 * rng.standard_normal((len(idx), r))).astype(np.float32)
    m = "base_model.model." + name[:-len(".weight")]
    os.makedirs(ck)
    stio.write_safetensors(os.path.join(ck, "adapter_model.safetensors"),
                           collections.OrderedDict([(m + ".lora_A.weight", a),
                                                    (m + ".lora_B.weight", b)]))
    with open(os.path.join(ck, "adapter_config.json"), "w") as f:
        json.dump({"peft_type": "LORA", "r": r, "lora_alpha": 4,
                   "target_modules": [name.split(".")[-2]], "fan_in_fan_out": conv1d}, f)


def megatron_torch(d, name, wt, other):
    """The fine-tune as Megatron-LM saves it: torch.save of {"model": state dict,
    "iteration", "args" (an argparse.Namespace), "checkpoint_version"} in
    mp_rank_00/model_optim_rng.pt."""
    import argparse
    import torch
    sd = collections.OrderedDict((k, torch.from_numpy(np.ascontiguousarray(v)))
                                 for k, v in {name: wt, **other}.items())
    os.makedirs(os.path.join(d, "mp_rank_00"))
    torch.save({"model": sd, "iteration": 1, "checkpoint_version": 3.0,
                "args": argparse.Namespace(num_attention_heads=NH, num_query_groups=NKV)},
               os.path.join(d, "mp_rank_00", "model_optim_rng.pt"))


def plain(d, name, parts, w0, wt, other):
    """The same weights unfused: one tensor NAME[:-7].PART.weight per part, its rows."""
    for sub, w in (("base", w0), (os.path.join("ft", "checkpoint-1"), wt)):
        os.makedirs(os.path.join(d, sub))
        t = {f"{name[:-len('.weight')]}.{p}.weight": np.ascontiguousarray(w[rows])
             for p, rows in parts.items()}
        stio.write_safetensors(os.path.join(d, sub, "model.safetensors"), {**t, **other})


def main():
    out = sys.argv[1]
    rng = np.random.default_rng(4)
    listed = []
    for case, mt, cfg, name, conv1d, parts, changed in cases():
        rows = sum(len(r) for r in parts.values())
        assert sorted(sum(parts.values(), [])) == list(range(rows)), case
        w0 = rng.standard_normal((rows, H)).astype(np.float32)  # [out, in]
        wt = w0.copy()
        idx = parts[changed]
        wt[idx] += (0.1 * rng.standard_normal((len(idx), H))).astype(np.float32)
        other = {"lm_head.weight": rng.standard_normal((8, H)).astype(np.float32)}
        store = (lambda w: np.ascontiguousarray(w.T)) if conv1d else (lambda w: w)
        for sub, w in (("base", w0), (os.path.join("ft", "checkpoint-1"), wt)):
            d = os.path.join(out, case, sub)
            os.makedirs(d)
            stio.write_safetensors(os.path.join(d, "model.safetensors"),
                                   {name: store(w), **other})
        with open(os.path.join(out, case, "base", "config.json"), "w") as f:
            json.dump({**({"model_type": mt} if mt else {}), **cfg}, f)
        plain(os.path.join(out, case + "_plain"), name, parts, w0, wt, other)
        if case == "megatron":
            megatron_torch(os.path.join(out, case, "ft_torch"), name, wt, other)
        if case in LORA_CASES:
            lora(os.path.join(out, case, "lora", "checkpoint-1"), name, rows, idx, conv1d, rng)
        listed.append({"case": case, "tensor": name, "changed": changed, "parts": parts})
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump(listed, f)


if __name__ == "__main__":
    main()
