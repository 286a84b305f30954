#!/usr/bin/python3
"""Write the same tiny fine-tuning run in the layouts other tools leave on disk.

    gen_layouts.py OUT_DIR

Every layout holds the same weights (float32), written by the real torch.save
in the shape its library writes: the keys, the wrappers around the state dict
and the objects beside it. The plain layout (HF Trainer, safetensors through
tests/py/stio.py) is the reference the tests compare each one with.

  base.safetensors             the pre-trained model (HF Llama names)
  plain/checkpoint-{1,2}/      model.safetensors
  ddp/ compile/                pytorch_model.bin with module. / _orig_mod. keys
  nested_sd/ nested_model/     {"state_dict": sd, "epoch": ..} / {"model": sd, "optimizer": ..}
  lightning/                   epoch=0-step=1.ckpt, epoch=1-step=2.ckpt: the LightningModule
                               holds the HF model as self.model; optimizer_states, loops,
                               hyper_parameters, global_step beside it
  lightning_bad_step/          a .ckpt whose global_step disagrees with its name
  deepspeed/checkpoint-S/      global_stepS/mp_rank_00_model_states.pt ("module", param_shapes
                               of torch.Size, a set, ds_config ...), latest, zero_pp_rank_0 optim
  zero3/checkpoint-1/          only zero_pp_rank_*_optim_states.pt: must be refused
  fsdp/checkpoint-S/           pytorch_model_fsdp.bin (accelerate FULL_STATE_DICT)
  fsdp_sharded/checkpoint-1/   pytorch_model_fsdp_0/__0_0.distcp: must be refused
  ambiguous/                   {"model": sd, "ema": sd'}: two prefixes fit
  renamed/                     backbone.* names: needs --rename
  collide/                     two names that one --rename maps together
  unrelated/                   names that share nothing with the base
  custom_obj/                  a hyper-parameter object of a class outside the allow-list
  custom_in_sd/                a state-dict key whose value is such an object
  zero3_empty/checkpoint-1/    mp_rank_00 states whose "module" tensors are empty (ZeRO-3)
  nn_module.bin                torch.save(nn.Linear): the whole module, not a state dict
  gpt2_base/ gpt2_ft/ gpt2_lora/  GPT-2 (Conv1D [in, out]): full FT, and LoRA with fan_in_fan_out
  meta/checkpoint-S/           consolidated.00.pth (Meta's names, wq/wk in Meta's RoPE order)
  torchtune/ torchtune_meta/   meta_model_S.pt with torchtune's own / Meta's names
  torchtune_hf/                hf_model_000N_S.pt: two shards per epoch S (torchtune's HF format)
  torchtune_gap/               hf_model_0001_1.pt and hf_model_0003_1.pt: a shard missing
  meta_mp/checkpoint-S/        consolidated.00.pth and .01.pth: Meta's model-parallel ranks
                               (Llama 2: the embedding split on dim 1)
  meta_mp3/checkpoint-S/       consolidated.00.pth .. .03.pth (Llama 3: the embedding on dim 0)
  meta_mp_gap/ meta_mp_norm/ meta_mp_unknown/  shards 00 and 02 only; a replicated norm that
                               differs between ranks; a tensor whose split is not known
  noconfig/base.safetensors    the base without config.json (no head counts)
  only_objects.bin             {"w": os.system(...)}: no tensor, only a call that must not run
"""

import collections
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stio  # noqa: E402

H, F, V, NL = 16, 24, 40, 2
NH, NKV, HD = 4, 2, 4  # heads, kv heads, head size (base config.json)


def base_weights(rng):
    w = collections.OrderedDict()
    w["model.embed_tokens.weight"] = rng.standard_normal((V, H))
    for i in range(NL):
        p = f"model.layers.{i}."
        for m in ("q_proj", "o_proj"):
            w[p + f"self_attn.{m}.weight"] = rng.standard_normal((H, H))
        for m in ("k_proj", "v_proj"):
            w[p + f"self_attn.{m}.weight"] = rng.standard_normal((NKV * HD, H))
        w[p + "mlp.gate_proj.weight"] = rng.standard_normal((F, H))
        w[p + "mlp.up_proj.weight"] = rng.standard_normal((F, H))
        w[p + "mlp.down_proj.weight"] = rng.standard_normal((H, F))
        w[p + "input_layernorm.weight"] = np.ones(H)
    w["model.norm.weight"] = np.ones(H)
    w["lm_head.weight"] = rng.standard_normal((V, H))
    return collections.OrderedDict((k, v.astype(np.float32)) for k, v in w.items())


def step_weights(base, rng, step):
    return collections.OrderedDict(
        (k, (v + 0.05 * step * rng.standard_normal(v.shape)).astype(np.float32))
        for k, v in base.items())


def torch_sd(w, prefix=""):
    return collections.OrderedDict((prefix + k, torch.from_numpy(v.copy())) for k, v in w.items())


class HParams:
    """A class torch.load would have to import: the reader must never call it."""

    def __init__(self):
        self.lr = 1e-4
        self.name = "run"


class Call:
    """Pickles as a call of os.system: a reader that executed pickles would run it."""

    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def adam_state(sd):
    state = {i: {"step": torch.tensor(3.0), "exp_avg": torch.zeros_like(t),
                 "exp_avg_sq": torch.zeros_like(t)} for i, t in enumerate(sd.values())}
    return {"state": state, "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.999),
                                              "params": list(range(len(sd)))}]}


def lightning_ckpt(w, step, epoch):
    sd = torch_sd(w, "model.")
    return {
        "epoch": epoch,
        "global_step": step,
        "pytorch-lightning_version": "2.1.3",
        "state_dict": sd,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": epoch}}}},
        "callbacks": {"ModelCheckpoint{'monitor': None}": {"best_model_score": None,
                                                            "dirpath": "/tmp/ck"}},
        "optimizer_states": [adam_state(sd)],
        "lr_schedulers": [],
        "hparams_name": "kwargs",
        "hyper_parameters": {"lr": 1e-4, "warmup": 10},
    }


def deepspeed_states(w, step):
    sd = torch_sd(w, "module.")
    shapes = collections.OrderedDict((k, v.shape) for k, v in sd.items())  # torch.Size
    return {
        "module": collections.OrderedDict((k[len("module."):], v) for k, v in sd.items()),
        "buffer_names": [],
        "optimizer": None,
        "param_shapes": [shapes],
        "frozen_param_shapes": None,
        "shared_params": {},
        "frozen_param_fragments": None,
        "lr_scheduler": None,
        "data_sampler": None,
        "random_ltd": None,
        "sparse_tensor_module_names": set(),
        "skipped_steps": 0,
        "global_steps": step,
        "global_samples": step * 8,
        "dp_world_size": 1,
        "mp_world_size": 1,
        "ds_config": {"train_batch_size": 8, "zero_optimization": {"stage": 2}},
        "ds_version": "0.12.6",
    }


def gpt2(out, rng):
    """A GPT-2 base (config.json model_type gpt2, Conv1D weights [in, out]), a full FT
    checkpoint and a fan_in_fan_out LoRA checkpoint on c_attn (PEFT's names)."""
    import json
    w = collections.OrderedDict()
    w["transformer.wte.weight"] = rng.standard_normal((V, H))
    for i in range(NL):
        p = f"transformer.h.{i}."
        w[p + "attn.c_attn.weight"] = rng.standard_normal((H, 3 * H))
        w[p + "attn.c_proj.weight"] = rng.standard_normal((H, H))
        w[p + "mlp.c_fc.weight"] = rng.standard_normal((H, 4 * H))
        w[p + "mlp.c_proj.weight"] = rng.standard_normal((4 * H, H))
    w = collections.OrderedDict((k, v.astype(np.float32)) for k, v in w.items())
    os.makedirs(os.path.join(out, "gpt2_base"))
    stio.write_safetensors(os.path.join(out, "gpt2_base", "model.safetensors"), w)
    with open(os.path.join(out, "gpt2_base", "config.json"), "w") as f:
        json.dump({"model_type": "gpt2", "n_embd": H, "n_layer": NL}, f)
    os.makedirs(os.path.join(out, "gpt2_ft", "checkpoint-1"))
    stio.write_safetensors(os.path.join(out, "gpt2_ft", "checkpoint-1", "model.safetensors"),
                           step_weights(w, rng, 1))
    ck = os.path.join(out, "gpt2_lora", "checkpoint-1")
    os.makedirs(ck)
    r = 2
    ad = collections.OrderedDict()
    for i in range(NL):
        m = f"base_model.model.transformer.h.{i}.attn.c_attn"
        ad[m + ".lora_A.weight"] = (0.1 * rng.standard_normal((r, H))).astype(np.float32)
        ad[m + ".lora_B.weight"] = (0.1 * rng.standard_normal((3 * H, r))).astype(np.float32)
    stio.write_safetensors(os.path.join(ck, "adapter_model.safetensors"), ad)
    with open(os.path.join(ck, "adapter_config.json"), "w") as f:
        json.dump({"peft_type": "LORA", "r": r, "lora_alpha": 4, "target_modules": ["c_attn"],
                   "fan_in_fan_out": True, "base_model_name_or_path": "gpt2"}, f)


META = {"embed_tokens": "tok_embeddings", "norm": "norm", "self_attn.q_proj": "attention.wq",
        "self_attn.k_proj": "attention.wk", "self_attn.v_proj": "attention.wv",
        "self_attn.o_proj": "attention.wo", "mlp.gate_proj": "feed_forward.w1",
        "mlp.down_proj": "feed_forward.w2", "mlp.up_proj": "feed_forward.w3",
        "input_layernorm": "attention_norm", "post_attention_layernorm": "ffn_norm"}
TUNE = {"embed_tokens.weight": "tok_embeddings.weight", "^norm.weight": "norm.scale",
        "self_attn.q_proj": "attn.q_proj", "self_attn.k_proj": "attn.k_proj",
        "self_attn.v_proj": "attn.v_proj", "self_attn.o_proj": "attn.output_proj",
        "mlp.gate_proj": "mlp.w1", "mlp.down_proj": "mlp.w2", "mlp.up_proj": "mlp.w3",
        "input_layernorm.weight": "sa_norm.scale",
        "post_attention_layernorm.weight": "mlp_norm.scale"}


def to_meta_order(w, heads):
    """HF's q/k rows back into Meta's RoPE order: the inverse of the permute of
    transformers' convert_llama_weights_to_hf.py, view(heads, hd/2, 2, dim).transpose(1, 2)."""
    rows, dim = w.shape
    return w.reshape(heads, 2, rows // heads // 2, dim).transpose(0, 2, 1, 3).reshape(rows, dim)


def llama_names(w, table):
    """HF names (and row order) as Meta's consolidated.00.pth or torchtune's state dict."""
    out = collections.OrderedDict()
    for k, v in w.items():
        n = k[len("model."):] if k.startswith("model.") else k
        if k == "lm_head.weight":
            n = "output.weight"
        for a, b in table.items():
            if a.startswith("^"):
                n = b if n == a[1:] else n
            else:
                n = n.replace(a, b)
        if "q_proj" in k:
            v = to_meta_order(v, NH)
        elif "k_proj" in k:
            v = to_meta_order(v, NKV)
        out[n] = torch.from_numpy(np.ascontiguousarray(v))
    return out


# Meta's llama model.py: ColumnParallelLinear (wq wk wv w1 w3 output) holds a slice of the
# output rows, RowParallelLinear (wo w2) of the input columns; the embedding is
# ParallelEmbedding (dim 1) in Llama 1 and 2, VocabParallelEmbedding (dim 0) in Llama 3.
MP_DIM = {"wq": 0, "wk": 0, "wv": 0, "w1": 0, "w3": 0, "output": 0, "wo": 1, "w2": 1}


def mp_shards(sd, n, emb_dim):
    """A Meta state dict as N model-parallel ranks: each tensor chunked on its layer's dim."""
    ranks = [collections.OrderedDict() for _ in range(n)]
    for k, v in sd.items():
        layer = k.split(".")[-2]
        dim = emb_dim if layer == "tok_embeddings" else MP_DIM.get(layer)
        parts = [v] * n if dim is None else torch.chunk(v, n, dim=dim)
        for r in range(n):
            ranks[r][k] = parts[r].clone()
    return ranks


def save(obj, path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(obj, path)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(16)
    base = base_weights(rng)
    steps = {s: step_weights(base, rng, s) for s in (1, 2)}
    stio.write_safetensors(os.path.join(out, "base.safetensors"), base)
    with open(os.path.join(out, "config.json"), "w") as f:
        f.write('{"model_type": "llama", "num_attention_heads": %d, "num_key_value_heads": %d, '
                '"hidden_size": %d}' % (NH, NKV, H))
    os.makedirs(os.path.join(out, "noconfig"))
    stio.write_safetensors(os.path.join(out, "noconfig", "base.safetensors"), base)
    for s, w in steps.items():
        ck = os.path.join(out, "plain", f"checkpoint-{s}")
        os.makedirs(ck)
        stio.write_safetensors(os.path.join(ck, "model.safetensors"), w)
        for name, obj in (("ddp", torch_sd(w, "module.")),
                          ("compile", torch_sd(w, "_orig_mod.")),
                          ("nested_sd", {"state_dict": torch_sd(w), "epoch": s}),
                          ("nested_model", {"model": torch_sd(w), "optimizer": adam_state(
                              torch_sd(w)), "epoch": s})):
            save(obj, os.path.join(out, name, f"checkpoint-{s}", "pytorch_model.bin"))
        save(lightning_ckpt(w, s, s - 1),
             os.path.join(out, "lightning", f"epoch={s - 1}-step={s}.ckpt"))
        ds = os.path.join(out, "deepspeed", f"checkpoint-{s}")
        save(deepspeed_states(w, s), os.path.join(ds, f"global_step{s}",
                                                  "mp_rank_00_model_states.pt"))
        save({"optimizer_state_dict": {"zero_stage": 2}, "ds_version": "0.12.6"},
             os.path.join(ds, f"global_step{s}", "zero_pp_rank_0_mp_rank_00_optim_states.pt"))
        with open(os.path.join(ds, "latest"), "w") as f:
            f.write(f"global_step{s}")
        save(torch_sd(w), os.path.join(out, "fsdp", f"checkpoint-{s}", "pytorch_model_fsdp.bin"))
        save(llama_names(w, META), os.path.join(out, "meta", f"checkpoint-{s}",
                                                 "consolidated.00.pth"))
        with open(os.path.join(out, "meta", f"checkpoint-{s}", "params.json"), "w") as f:
            f.write('{"dim": %d, "n_heads": %d, "n_kv_heads": %d}' % (H, NH, NKV))
        for d, n, emb in (("meta_mp", 2, 1), ("meta_mp3", 4, 0)):
            for r, sd in enumerate(mp_shards(llama_names(w, META), n, emb)):
                save(sd, os.path.join(out, d, f"checkpoint-{s}", f"consolidated.{r:02d}.pth"))
        save(llama_names(w, TUNE), os.path.join(out, "torchtune", f"meta_model_{s}.pt"))
        save(llama_names(w, META), os.path.join(out, "torchtune_meta", f"meta_model_{s}.pt"))
        sd = torch_sd(w)
        keys = list(sd)
        for i, part in enumerate((keys[:len(keys) // 2], keys[len(keys) // 2:])):
            save(collections.OrderedDict((k, sd[k]) for k in part),
                 os.path.join(out, "torchtune_hf", f"hf_model_{i + 1:04d}_{s}.pt"))
    w1 = steps[1]
    save(lightning_ckpt(w1, 7, 0), os.path.join(out, "lightning_bad_step", "epoch=0-step=1.ckpt"))
    save({"optimizer_state_dict": {"zero_stage": 3}},
         os.path.join(out, "zero3", "checkpoint-1", "global_step1",
                      "zero_pp_rank_0_mp_rank_00_optim_states.pt"))
    sh = os.path.join(out, "fsdp_sharded", "checkpoint-1", "pytorch_model_fsdp_0")
    os.makedirs(sh)
    with open(os.path.join(sh, "__0_0.distcp"), "wb") as f:
        f.write(b"\0" * 64)
    for s, w in steps.items():
        ck = f"checkpoint-{s}"
        save({"model": torch_sd(w), "ema": torch_sd(step_weights(base, rng, 3))},
             os.path.join(out, "ambiguous", ck, "pytorch_model.bin"))
        save(collections.OrderedDict((k.replace("model.layers.", "backbone.blocks."), v)
                                     for k, v in torch_sd(w).items()),
             os.path.join(out, "renamed", ck, "pytorch_model.bin"))
        save({"state_dict": torch_sd(w), "hparams": HParams()},
             os.path.join(out, "custom_obj", ck, "pytorch_model.bin"))
    coll = torch_sd(w1)
    coll["model.layers.0.self_attn.q_proj.weight_copy"] = coll[
        "model.layers.0.self_attn.q_proj.weight"].clone()
    save(coll, os.path.join(out, "collide", "pytorch_model.bin"))
    save(collections.OrderedDict((f"enc.block{i}.w", torch.zeros(4, 4)) for i in range(5)),
         os.path.join(out, "unrelated", "pytorch_model.bin"))
    bad = torch_sd(w1)
    bad["model.layers.1.mlp.up_proj.weight"] = HParams()
    save(bad, os.path.join(out, "custom_in_sd", "pytorch_model.bin"))
    empty = deepspeed_states(w1, 1)
    empty["module"] = collections.OrderedDict((k, torch.empty(0)) for k in empty["module"])
    save(empty, os.path.join(out, "zero3_empty", "checkpoint-1", "global_step1",
                             "mp_rank_00_model_states.pt"))
    torch.save(torch.nn.Linear(4, 3), os.path.join(out, "nn_module.bin"))
    gpt2(out, rng)
    for i in (1, 3):
        save(torch_sd(w1), os.path.join(out, "torchtune_gap", f"hf_model_{i:04d}_1.pt"))
    ranks = mp_shards(llama_names(w1, META), 3, 1)
    for r in (0, 2):
        save(ranks[r], os.path.join(out, "meta_mp_gap", f"consolidated.{r:02d}.pth"))
    ranks = mp_shards(llama_names(w1, META), 2, 1)
    ranks[1]["layers.1.attention_norm.weight"] = ranks[1]["layers.1.attention_norm.weight"] * 1.5
    for r, sd in enumerate(ranks):
        save(sd, os.path.join(out, "meta_mp_norm", f"consolidated.{r:02d}.pth"))
    ranks = mp_shards(llama_names(w1, META), 2, 1)
    for r, sd in enumerate(ranks):
        sd["layers.0.attention.adapter.weight"] = torch.zeros(4, 16)
        save(sd, os.path.join(out, "meta_mp_unknown", f"consolidated.{r:02d}.pth"))
    torch.save({"w": Call(f"touch {os.path.join(os.path.abspath(out), 'PWNED')}")},
               os.path.join(out, "only_objects.bin"))


if __name__ == "__main__":
    main()
