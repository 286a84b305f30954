#!/usr/bin/python3
"""gen_adapters.py OUTDIR [--seed N] [--errors]

Writes, with tests/py/stio.py's writer, a small Llama-style base model and
several LoRA / DoRA adapter runs in HF Trainer layout, for tests/py/check_adapters.py
and tests/sh/adapters.sh.

OUTDIR/base/                 the base, 2 safetensors shards + index:
    model.embed_tokens.weight               [64, 128]   BF16  (embedding)
    model.layers.{0,1,2}.self_attn.q_proj   [128, 128]  BF16
                               k_proj/v_proj [32, 128]   BF16  (grouped-query attention)
                               o_proj       [128, 128]  BF16
    model.layers.{0,1,2}.mlp.gate/up_proj   [96, 128], down_proj [128, 96]   BF16
    model.layers.1.self_attn.k_proj row 3 is all zeros
    model.vision_tower.patch_embed.proj     [48, 3, 4, 4] F16 (a 4-D conv weight) + bias
    transformer.h.0.attn.c_attn.weight      [128, 384] F32 (GPT-2 Conv1D, stored [in, out])
    transformer.h.0.attn.c_proj.weight      [128, 128] F32 (Conv1D)
    transformer.h.1.mlp.c_fc.weight         [128, 256] F32 (Conv1D)
    lm_head.weight [64, 128] BF16, norms and biases (1-D)

Runs (checkpoint-STEP/ with adapter_config.json, adapter_model.safetensors,
trainer_state.json and the side files a Trainer leaves; factors grow with step):
    lora       (a) LoRA r=8 on q/v, F32 factors, first step a 1e-4 relative update;
                   final adapter in the run folder byte-identical to the last checkpoint
    rslora     (b) rsLoRA on q/k/v/o/gate/up/down, BF16 factors, rank_pattern and
                   alpha_pattern (r differs per module; a trap pattern that only matches
                   without the dot boundary); final adapter in the run folder, step from
                   the run folder's trainer_state.json
    dora       (c) DoRA (use_dora, lora_magnitude_vector) on q/k/v, F32; final adapter
                   in the run folder, step = max_steps of the last checkpoint
    fifo       (d) fan_in_fan_out LoRA on the Conv1D weights, F16 factors
    embconv    (e) embedding adapter + conv adapter + modules_to_save lm_head (and a 1-D
                   model.norm that must be skipped)
    dorapaper  (f) the DoRA paper's format: peft_type "DORA", weight_m_wdecomp.weight
                   [out, 1] BF16; first checkpoint has B = 0 (dD exactly 0)
    dorafifo   (g) DoRA on Conv1D weights with fan_in_fan_out, use_dora NOT set (the
                   magnitude tensors make it DoRA), .lora_magnitude_vector.weight and
                   .lora_magnitude_vector.default.weight names
    ft             full fine-tuning checkpoints of the whole model (BF16)
    pypattern      LoRA whose alpha_pattern key uses Python regex syntax (\\d+), which
                   PEFT matches with Python's re: every v_proj gets alpha 64

OUTDIR/manifest.json: what the generator meant: per run the path, method,
steps and per module r, scale and kind (check_adapters.py cross-checks its own
reading of the configs against it).

With --errors, OUTDIR/bad/CASE/ holds broken runs and OUTDIR/bad/cases.tsv
lists: CASE <tab> BASE <tab> RUN <tab> WANT1|WANT2... (substrings the error
message must contain; paths relative to OUTDIR are written absolute).
"""

import argparse
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stio  # noqa: E402

P = "base_model.model."
H = 128          # hidden size
KV = 32          # k/v projection rows (grouped-query attention: 4 query heads per kv head)
FF = 96          # MLP width
VOCAB = 64
NLAYERS = 3
CONV = "model.vision_tower.patch_embed.proj"
C_ATTN = "transformer.h.0.attn.c_attn"
C_PROJ = "transformer.h.0.attn.c_proj"
C_FC = "transformer.h.1.mlp.c_fc"
ZERO_ROW = ("model.layers.1.self_attn.k_proj.weight", 3)


# ---------------------------------------------------------------- base
def make_base(rng):
    """-> dict name -> stio.Tensor, and dict name -> float64 array (the stored values)."""
    t = {}

    def w(name, shape, dtype, std=0.02):
        a = rng.standard_normal(shape) * std
        # rows of different norms, so magnitudes are not all alike
        a *= rng.uniform(0.5, 2.0, size=(shape[0],) + (1,) * (len(shape) - 1))
        t[name] = stio.Tensor(dtype, a.astype(np.float32))

    w("model.embed_tokens.weight", (VOCAB, H), "BF16", 1.0)
    for i in range(NLAYERS):
        pre = f"model.layers.{i}."
        t[pre + "input_layernorm.weight"] = stio.Tensor("BF16", np.ones(H, np.float32))
        t[pre + "post_attention_layernorm.weight"] = stio.Tensor("BF16", np.ones(H, np.float32))
        w(pre + "self_attn.q_proj.weight", (H, H), "BF16")
        w(pre + "self_attn.k_proj.weight", (KV, H), "BF16")
        w(pre + "self_attn.v_proj.weight", (KV, H), "BF16")
        w(pre + "self_attn.o_proj.weight", (H, H), "BF16")
        w(pre + "mlp.gate_proj.weight", (FF, H), "BF16")
        w(pre + "mlp.up_proj.weight", (FF, H), "BF16")
        w(pre + "mlp.down_proj.weight", (H, FF), "BF16")
    name, row = ZERO_ROW
    a = t[name].array.copy()
    a[row] = 0
    t[name] = stio.Tensor("BF16", a)
    t["model.norm.weight"] = stio.Tensor("BF16", np.ones(H, np.float32))
    w("lm_head.weight", (VOCAB, H), "BF16")
    w(CONV + ".weight", (48, 3, 4, 4), "F16", 0.1)
    t[CONV + ".bias"] = stio.Tensor("F16", np.zeros(48, np.float32))
    w(C_ATTN + ".weight", (H, 3 * H), "F32")
    t[C_ATTN + ".bias"] = stio.Tensor("F32", np.zeros(3 * H, np.float32))
    w(C_PROJ + ".weight", (H, H), "F32")
    w(C_FC + ".weight", (H, 2 * H), "F32")
    vals = {n: stio.cast(v.array, v.dtype) for n, v in t.items()}
    return t, vals


# ---------------------------------------------------------------- adapter helpers
def write_side_files(d, step, rng):
    """What a Trainer leaves beside the weights; the tool must ignore it all."""
    for fn in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"):
        with open(os.path.join(d, fn), "wb") as f:
            f.write(rng.integers(0, 256, 48 + step % 7, dtype=np.uint8).tobytes())
    with open(os.path.join(d, "README.md"), "w") as f:
        f.write("---\nlibrary_name: peft\n---\n# adapter\n")


def write_adapter(d, config, tensors, step=None, max_steps=None, rng=None):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2)
    stio.write_safetensors(os.path.join(d, "adapter_model.safetensors"), tensors)
    if step is not None:
        stio.write_trainer_state(d, step, max_steps)
        write_side_files(d, step, rng)


def peft_config(r, alpha, targets, **kw):
    c = {
        "alpha_pattern": {}, "auto_mapping": None,
        "base_model_name_or_path": "dora-test/llama-gqa-tiny", "bias": "none",
        "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
        "layers_pattern": None, "layers_to_transform": None, "loftq_config": {},
        "lora_alpha": alpha, "lora_dropout": 0.05, "megatron_config": None,
        "megatron_core": "megatron.core", "modules_to_save": None, "peft_type": "LORA",
        "r": r, "rank_pattern": {}, "revision": None, "target_modules": targets,
        "task_type": "CAUSAL_LM", "use_dora": False, "use_rslora": False,
    }
    c.update(kw)
    return c


def scaled_factors(rng, out, fan_in, r, w0_fro, scale, rel):
    """A [r, fan_in], B [out, r] with ||scale * B @ A||_F = rel * ||W0||_F (B = 0 if rel = 0)."""
    a = rng.standard_normal((r, fan_in)) / np.sqrt(fan_in)
    b = rng.standard_normal((out, r))
    if rel == 0:
        return a, np.zeros_like(b)
    upd = np.linalg.norm(scale * b @ a)
    return a, b * (rel * w0_fro / upd)


class RunSpec:
    """Bookkeeping for the manifest."""

    def __init__(self, name, method):
        self.name = name
        self.method = method
        self.steps = []
        self.modules = {}

    def module(self, base_name, r, scale, kind, fifo=False, dora=False):
        self.modules[base_name] = {"r": int(r), "scale": float(scale), "kind": kind,
                                   "fan_in_fan_out": bool(fifo), "dora": bool(dora)}

    def manifest(self):
        return {"path": self.name, "method": self.method, "steps": self.steps,
                "modules": self.modules}


def attn(i, p):
    return f"model.layers.{i}.self_attn.{p}_proj"


def mlp(i, p):
    return f"model.layers.{i}.mlp.{p}_proj"


def rows_cols(vals, base_name, fifo=False):
    a = vals[base_name]
    if fifo:
        return a.shape[1], a.shape[0]
    return a.shape[0], int(np.prod(a.shape[1:]))


# ---------------------------------------------------------------- runs
def run_lora(out, vals, rng):
    """(a) LoRA r=8 alpha=16 on q/v, F32 factors; final = last checkpoint (same bytes)."""
    spec = RunSpec("lora", "lora")
    r, alpha = 8, 16
    s = alpha / r
    mods = [attn(i, p) for i in range(NLAYERS) for p in ("q", "v")]
    cfg = peft_config(r, alpha, ["q_proj", "v_proj"])
    steps = [100, 200, 300, 400]
    rels = [1e-4, 1e-2, 5e-2, 0.2]
    base_ab = {}
    for m in mods:
        o, i = rows_cols(vals, m + ".weight")
        base_ab[m] = scaled_factors(rng, o, i, r, np.linalg.norm(vals[m + ".weight"]), s, 1.0)
        spec.module(m + ".weight", r, s, "linear")
    run = os.path.join(out, "lora")
    for k, (st, rel) in enumerate(zip(steps, rels)):
        ts = {}
        for m in mods:
            a, b = base_ab[m]
            a = a * (1 + 0.05 * k)
            ts[P + m + ".lora_A.weight"] = stio.Tensor("F32", a.astype(np.float32))
            ts[P + m + ".lora_B.weight"] = stio.Tensor("F32", (b * rel / (1 + 0.05 * k)).astype(np.float32))
        write_adapter(os.path.join(run, f"checkpoint-{st}"), cfg, ts, st, steps[-1], rng)
    # the final adapter: what the Trainer saves at the end, identical to the last checkpoint
    last = os.path.join(run, f"checkpoint-{steps[-1]}")
    for fn in ("adapter_config.json", "adapter_model.safetensors", "README.md"):
        shutil.copy(os.path.join(last, fn), os.path.join(run, fn))
    spec.steps = steps
    return spec


# rank_pattern / alpha_pattern of run (b); the module names and values are the generator's intent
RS_R, RS_ALPHA = 8, 16
RS_RANK_PATTERN = {
    r"layers\.1\.self_attn\.q_proj": 4,    # first match wins: layer 1 q gets 4 ...
    "q_proj": 16,                            # ... the other q_proj 16
    "down_proj": 2,
    r"model\.layers\.2\.mlp\.(gate|up)_proj": 12,
}
RS_ALPHA_PATTERN = {
    "proj": 999,                             # would match "q_proj" only without a dot boundary
    "v_proj": 64,
    r"layers\.0\.self_attn\.k_proj": 12.5,
}


def rs_intent(module):
    """r and alpha the generator means for a module of run (b) (written out by hand)."""
    layer = int(module.split(".")[2])
    kind = module.split(".")[-1]
    r = RS_R
    if kind == "q_proj":
        r = 4 if layer == 1 else 16
    elif kind == "down_proj":
        r = 2
    elif layer == 2 and kind in ("gate_proj", "up_proj"):
        r = 12
    alpha = RS_ALPHA
    if kind == "v_proj":
        alpha = 64
    elif kind == "k_proj" and layer == 0:
        alpha = 12.5
    return r, alpha


def run_rslora(out, vals, rng):
    """(b) rsLoRA with rank_pattern / alpha_pattern, BF16 factors; final step from the
    run folder's trainer_state.json."""
    spec = RunSpec("rslora", "lora")
    mods = [attn(i, p) for i in range(NLAYERS) for p in "qkvo"] + \
           [mlp(i, p) for i in range(NLAYERS) for p in ("gate", "up", "down")]
    cfg = peft_config(RS_R, RS_ALPHA, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                       "up_proj", "down_proj"],
                      use_rslora=True, rank_pattern=RS_RANK_PATTERN, alpha_pattern=RS_ALPHA_PATTERN)
    steps = [50, 100, 150]
    rels = [0.01, 0.04, 0.09, 0.15]  # the last one: the final adapter in the run folder
    base_ab = {}
    for m in mods:
        r, alpha = rs_intent(m)
        s = alpha / np.sqrt(r)
        o, i = rows_cols(vals, m + ".weight")
        base_ab[m] = scaled_factors(rng, o, i, r, np.linalg.norm(vals[m + ".weight"]), s, 1.0)
        spec.module(m + ".weight", r, s, "linear")
    run = os.path.join(out, "rslora")
    for k, rel in enumerate(rels):
        ts = {}
        for m in mods:
            a, b = base_ab[m]
            ts[P + m + ".lora_A.weight"] = stio.Tensor("BF16", (a * (1 - 0.03 * k)).astype(np.float32))
            ts[P + m + ".lora_B.weight"] = stio.Tensor("BF16", (b * rel / (1 - 0.03 * k)).astype(np.float32))
        if k < len(steps):
            write_adapter(os.path.join(run, f"checkpoint-{steps[k]}"), cfg, ts, steps[k], None, rng)
        else:
            write_adapter(run, cfg, ts)
            stio.write_trainer_state(run, 200)
    spec.steps = steps + [200]
    return spec


def dora_magnitude(w0_rows, rng, h):
    """A trained DoRA magnitude: ||W0 row|| * (1 + h z); zero base rows get a small m > 0."""
    n = np.linalg.norm(w0_rows, axis=1)
    m = n * (1 + h * rng.standard_normal(n.shape))
    m[n == 0] = 0.005 + 0.01 * rng.random(int((n == 0).sum()))
    return np.abs(m)


def run_dora(out, vals, rng):
    """(c) DoRA on q/k/v (k/v non-square), F32 factors and magnitudes; the final adapter
    in the run folder differs from the last checkpoint, whose trainer_state says max_steps=40."""
    spec = RunSpec("dora", "dora")
    r, alpha = 8, 32
    s = alpha / r
    mods = [attn(i, p) for i in range(NLAYERS) for p in "qkv"]
    cfg = peft_config(r, alpha, ["q_proj", "k_proj", "v_proj"], use_dora=True)
    steps = [10, 20, 30]
    rels = [0.005, 0.02, 0.06, 0.1]
    hs = [0.002, 0.01, 0.03, 0.05]
    base_ab = {}
    for m in mods:
        o, i = rows_cols(vals, m + ".weight")
        base_ab[m] = scaled_factors(rng, o, i, r, np.linalg.norm(vals[m + ".weight"]), s, 1.0)
        spec.module(m + ".weight", r, s, "linear", dora=True)
    run = os.path.join(out, "dora")
    for k, (rel, h) in enumerate(zip(rels, hs)):
        ts = {}
        for m in mods:
            a, b = base_ab[m]
            ts[P + m + ".lora_A.weight"] = stio.Tensor("F32", a.astype(np.float32))
            ts[P + m + ".lora_B.weight"] = stio.Tensor("F32", (b * rel).astype(np.float32))
            mag = dora_magnitude(vals[m + ".weight"], rng, h)
            ts[P + m + ".lora_magnitude_vector"] = stio.Tensor("F32", mag.astype(np.float32))
        if k < len(steps):
            write_adapter(os.path.join(run, f"checkpoint-{steps[k]}"), cfg, ts, steps[k], 40, rng)
        else:
            write_adapter(run, cfg, ts)
    spec.steps = steps + [40]
    return spec


def run_fifo(out, vals, rng):
    """(d) fan_in_fan_out LoRA on GPT-2 Conv1D weights (stored [in, out]), F16 factors."""
    spec = RunSpec("fifo", "lora")
    r, alpha = 4, 8
    s = alpha / r
    mods = [C_ATTN, C_PROJ, C_FC]
    cfg = peft_config(r, alpha, ["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True,
                      task_type="CAUSAL_LM", base_model_name_or_path="gpt2")
    steps = [1, 2, 3]
    rels = [0.01, 0.05, 0.12]
    base_ab = {}
    for m in mods:
        o, i = rows_cols(vals, m + ".weight", fifo=True)
        base_ab[m] = scaled_factors(rng, o, i, r, np.linalg.norm(vals[m + ".weight"]), s, 1.0)
        spec.module(m + ".weight", r, s, "linear", fifo=True)
    run = os.path.join(out, "fifo")
    for st, rel in zip(steps, rels):
        ts = {}
        for m in mods:
            a, b = base_ab[m]
            ts[P + m + ".lora_A.weight"] = stio.Tensor("F16", a.astype(np.float32))
            ts[P + m + ".lora_B.weight"] = stio.Tensor("F16", (b * rel).astype(np.float32))
        write_adapter(os.path.join(run, f"checkpoint-{st}"), cfg, ts, st, None, rng)
    spec.steps = steps
    return spec


def run_embconv(out, vals, rng):
    """(e) embedding adapter + conv adapter + modules_to_save (lm_head; model.norm is 1-D)."""
    spec = RunSpec("embconv", "lora")
    r, alpha = 4, 12
    s = alpha / r
    emb = "model.embed_tokens"
    cfg = peft_config(r, alpha, ["embed_tokens", "proj"], modules_to_save=["lm_head", "norm"])
    steps = [5, 10, 15, 20]
    rels = [0.003, 0.02, 0.05, 0.1]
    ew = vals[emb + ".weight"]              # [num, dim]
    cw = vals[CONV + ".weight"]             # [out, in, kh, kw]
    # embedding: lora_embedding_A [r, num], lora_embedding_B [dim, r]; delta = s (B @ A)^T
    ea, eb = scaled_factors(rng, ew.shape[1], ew.shape[0], r, np.linalg.norm(ew), s, 1.0)
    ca, cb = scaled_factors(rng, cw.shape[0], int(np.prod(cw.shape[1:])), r, np.linalg.norm(cw), s, 1.0)
    lm = vals["lm_head.weight"]
    spec.module(emb + ".weight", r, s, "embedding")
    spec.module(CONV + ".weight", r, s, "conv")
    spec.module("lm_head.weight", 0, 0.0, "saved")
    run = os.path.join(out, "embconv")
    for st, rel in zip(steps, rels):
        ts = {
            P + emb + ".lora_embedding_A": stio.Tensor("F32", ea.astype(np.float32)),
            P + emb + ".lora_embedding_B": stio.Tensor("F32", (eb * rel).astype(np.float32)),
            P + CONV + ".lora_A.weight": stio.Tensor("F32", ca.reshape((r,) + cw.shape[1:]).astype(np.float32)),
            P + CONV + ".lora_B.weight": stio.Tensor("F32", (cb * rel).reshape(cw.shape[0], r, 1, 1).astype(np.float32)),
            P + "lm_head.weight": stio.Tensor("BF16", (lm * (1 + rel * rng.standard_normal((lm.shape[0], 1)))
                                                       + rel * 0.02 * rng.standard_normal(lm.shape)).astype(np.float32)),
            P + "model.norm.weight": stio.Tensor("BF16", (1 + rel * rng.standard_normal(H)).astype(np.float32)),
        }
        write_adapter(os.path.join(run, f"checkpoint-{st}"), cfg, ts, st, None, rng)
    spec.steps = steps
    return spec


def run_dorapaper(out, vals, rng):
    """(f) the DoRA paper's own format: peft_type DORA, weight_m_wdecomp.weight [out, 1]."""
    spec = RunSpec("dorapaper", "dora")
    r, alpha = 4, 8
    s = alpha / r
    mods = [attn(i, p) for i in range(NLAYERS) for p in "qv"]
    cfg = {"base_model_name_or_path": "dora-test/llama-gqa-tiny", "bias": "none",
           "enable_lora": None, "fan_in_fan_out": False, "inference_mode": True,
           "lora_alpha": alpha, "lora_dropout": 0.05, "merge_weights": False,
           "modules_to_save": None, "peft_type": "DORA", "r": r,
           "target_modules": ["q_proj", "v_proj"], "Wdecompose_target_modules": None,
           "dora_simple": True, "task_type": "CAUSAL_LM"}
    steps = [100, 200, 300]
    rels = [0.0, 0.03, 0.08]   # B = 0 at the first checkpoint: V = W0, dD = 0
    hs = [0.01, 0.02, 0.04]
    base_ab = {}
    for m in mods:
        o, i = rows_cols(vals, m + ".weight")
        base_ab[m] = scaled_factors(rng, o, i, r, np.linalg.norm(vals[m + ".weight"]), s, 1.0)
        spec.module(m + ".weight", r, s, "linear", dora=True)
    run = os.path.join(out, "dorapaper")
    for st, rel, h in zip(steps, rels, hs):
        ts = {}
        for m in mods:
            a, b = base_ab[m]
            ts[P + m + ".lora_A.weight"] = stio.Tensor("F32", a.astype(np.float32))
            ts[P + m + ".lora_B.weight"] = stio.Tensor("F32", (b * rel).astype(np.float32))
            mag = dora_magnitude(vals[m + ".weight"], rng, h)
            ts[P + m + ".weight_m_wdecomp.weight"] = stio.Tensor("BF16", mag.reshape(-1, 1).astype(np.float32))
        write_adapter(os.path.join(run, f"checkpoint-{st}"), cfg, ts, st, None, rng)
    spec.steps = steps
    return spec


def run_dorafifo(out, vals, rng):
    """(g) DoRA on Conv1D weights with fan_in_fan_out; use_dora absent from the config."""
    spec = RunSpec("dorafifo", "dora")
    r, alpha = 4, 4
    s = alpha / r
    mods = [C_ATTN, C_PROJ]
    cfg = peft_config(r, alpha, ["c_attn", "c_proj"], fan_in_fan_out=True,
                      base_model_name_or_path="gpt2")
    del cfg["use_dora"]
    magname = {C_ATTN: ".lora_magnitude_vector.default.weight", C_PROJ: ".lora_magnitude_vector.weight"}
    steps = [7, 14, 21]
    rels = [0.02, 0.05, 0.1]
    hs = [0.005, 0.02, 0.05]
    base_ab = {}
    for m in mods:
        o, i = rows_cols(vals, m + ".weight", fifo=True)
        base_ab[m] = scaled_factors(rng, o, i, r, np.linalg.norm(vals[m + ".weight"]), s, 1.0)
        spec.module(m + ".weight", r, s, "linear", fifo=True, dora=True)
    run = os.path.join(out, "dorafifo")
    for st, rel, h in zip(steps, rels, hs):
        ts = {}
        for m in mods:
            a, b = base_ab[m]
            ts[P + m + ".lora_A.weight"] = stio.Tensor("F32", a.astype(np.float32))
            ts[P + m + ".lora_B.weight"] = stio.Tensor("F32", (b * rel).astype(np.float32))
            # magnitude per OUTPUT feature: norms of the columns of the stored [in, out] weight
            mag = dora_magnitude(vals[m + ".weight"].T, rng, h)
            ts[P + m + magname[m]] = stio.Tensor("F32", mag.astype(np.float32))
        write_adapter(os.path.join(run, f"checkpoint-{st}"), cfg, ts, st, None, rng)
    spec.steps = steps
    return spec


def run_pypattern(out, vals, rng):
    """LoRA whose alpha_pattern key uses Python regex syntax (\\d), as PEFT allows: PEFT
    matches its keys with Python's re, so every v_proj gets alpha 64 (s = 8)."""
    spec = RunSpec("pypattern", "lora")
    r, alpha = 8, 16
    mods = [attn(i, "v") for i in range(NLAYERS)] + [attn(i, "q") for i in range(NLAYERS)]
    cfg = peft_config(r, alpha, ["q_proj", "v_proj"],
                      alpha_pattern={r"layers\.\d+\.self_attn\.v_proj": 64})
    steps = [3, 6]
    rels = [0.02, 0.06]
    base_ab = {}
    for m in mods:
        s = (64 if m.endswith("v_proj") else alpha) / r
        o, i = rows_cols(vals, m + ".weight")
        base_ab[m] = scaled_factors(rng, o, i, r, np.linalg.norm(vals[m + ".weight"]), s, 1.0)
        spec.module(m + ".weight", r, s, "linear")
    run = os.path.join(out, "pypattern")
    for st, rel in zip(steps, rels):
        ts = {}
        for m in mods:
            a, b = base_ab[m]
            ts[P + m + ".lora_A.weight"] = stio.Tensor("F32", a.astype(np.float32))
            ts[P + m + ".lora_B.weight"] = stio.Tensor("F32", (b * rel).astype(np.float32))
        write_adapter(os.path.join(run, f"checkpoint-{st}"), cfg, ts, st, None, rng)
    spec.steps = steps
    return spec


def run_ft(out, base_t, vals, rng):
    """Full fine-tuning of every tensor, BF16 (F16/F32 tensors keep their dtype)."""
    spec = RunSpec("ft", "ft")
    steps = [100, 200, 300]
    rels = [0.002, 0.01, 0.03]
    for name, t in base_t.items():
        if len(t.shape) >= 2:
            spec.module(name, 0, 0.0, "dense")
    run = os.path.join(out, "ft")
    for st, rel in zip(steps, rels):
        ts = {}
        for name, t in base_t.items():
            v = vals[name]
            nv = v + rel * np.std(v) * rng.standard_normal(v.shape) if v.std() > 0 else v + rel
            ts[name] = stio.Tensor(t.dtype, nv.astype(np.float32))
        stio.write_checkpoint(run, st, ts, max_steps=steps[-1])
    spec.steps = steps
    return spec


# ---------------------------------------------------------------- broken runs
def good_adapter(vals, rng, mods, r=8, alpha=16, dora=False, shapes=None):
    """A valid adapter's tensors on mods (base names without .weight)."""
    ts = {}
    for m in mods:
        o, i = shapes[m] if shapes and m in shapes else rows_cols(vals, m + ".weight")
        a, b = scaled_factors(rng, o, i, r, 1.0, alpha / r, 0.01)
        ts[P + m + ".lora_A.weight"] = stio.Tensor("F32", a.astype(np.float32))
        ts[P + m + ".lora_B.weight"] = stio.Tensor("F32", b.astype(np.float32))
        if dora:
            ts[P + m + ".lora_magnitude_vector"] = stio.Tensor(
                "F32", np.ones(o, np.float32))
    return ts


def make_errors(out, vals, rng):
    """OUTDIR/bad/CASE/: a 2-checkpoint run whose second checkpoint is broken
    (or, for base cases, a good run with a wrong base). Returns the cases."""
    bad = os.path.join(out, "bad")
    if os.path.isdir(bad):
        shutil.rmtree(bad)
    os.makedirs(bad)
    cases = []
    qv = [attn(0, "q"), attn(0, "v")]
    cfg = peft_config(8, 16, ["q_proj", "v_proj"])

    def two_step(case, cfg2, ts2, cfg1=cfg, ts1=None):
        run = os.path.join(bad, case)
        write_adapter(os.path.join(run, "checkpoint-1"), cfg1,
                      ts1 if ts1 is not None else good_adapter(vals, rng, qv), 1, None, rng)
        d2 = os.path.join(run, "checkpoint-2")
        write_adapter(d2, cfg2, ts2, 2, None, rng)
        return run, d2

    def add(case, run, wants, base=None):
        cases.append((case, base or os.path.join(out, "base"), run, "|".join(wants)))

    # target module missing in the base
    run, d2 = two_step("missing_module", cfg,
                       good_adapter(vals, rng, qv + ["model.layers.7.self_attn.q_proj"],
                                    shapes={"model.layers.7.self_attn.q_proj": (H, H)}))
    add("missing_module", run, [os.path.join(d2, "adapter_model.safetensors"),
                                "model.layers.7.self_attn.q_proj"])
    # A [8, 100] on a [128, 128] q_proj
    ts = good_adapter(vals, rng, qv)
    ts[P + qv[0] + ".lora_A.weight"] = stio.Tensor("F32", rng.standard_normal((8, 100)).astype(np.float32))
    run, d2 = two_step("shape_in", cfg, ts)
    add("shape_in", run, [os.path.join(d2, "adapter_model.safetensors"), qv[0]])
    # B [128, 8] on a [32, 128] k_proj (as if k were square: the GQA trap)
    k0 = attn(0, "k")
    ts = good_adapter(vals, rng, [k0], shapes={k0: (H, H)})
    run, d2 = two_step("shape_gqa", peft_config(8, 16, ["k_proj"]), ts,
                       peft_config(8, 16, ["k_proj"]), good_adapter(vals, rng, [k0]))
    add("shape_gqa", run, [os.path.join(d2, "adapter_model.safetensors"), k0])
    # a Conv1D adapter without fan_in_fan_out: B @ A is [384, 128], the base [128, 384]
    fcfg = peft_config(4, 8, ["c_attn"], fan_in_fan_out=True)
    ts_ok = good_adapter(vals, rng, [C_ATTN], r=4, alpha=8, shapes={C_ATTN: (3 * H, H)})
    run, d2 = two_step("fifo_missing", peft_config(4, 8, ["c_attn"]), ts_ok, fcfg, ts_ok)
    add("fifo_missing", run, [os.path.join(d2, "adapter_model.safetensors"), C_ATTN])
    # lora_A / lora_B of rank 4 with r = 8 in the config
    run, d2 = two_step("rank_config", cfg, good_adapter(vals, rng, qv, r=4, alpha=16))
    add("rank_config", run, [d2, qv[0]])
    # A rank 8, B rank 4
    ts = good_adapter(vals, rng, qv)
    ts[P + qv[1] + ".lora_B.weight"] = stio.Tensor("F32", rng.standard_normal((KV, 4)).astype(np.float32))
    run, d2 = two_step("rank_ab", cfg, ts)
    add("rank_ab", run, [d2, qv[1]])
    # rank_pattern says 4 for v_proj, the factors are rank 8
    run, d2 = two_step("rank_pattern", peft_config(8, 16, ["q_proj", "v_proj"], rank_pattern={"v_proj": 4}),
                       good_adapter(vals, rng, qv))
    add("rank_pattern", run, [d2, qv[1]])
    # DoRA magnitude with one entry too many
    ts = good_adapter(vals, rng, qv, dora=True)
    ts[P + qv[1] + ".lora_magnitude_vector"] = stio.Tensor("F32", np.ones(KV + 1, np.float32))
    run, d2 = two_step("dora_magnitude_len", peft_config(8, 16, ["q_proj", "v_proj"], use_dora=True), ts)
    add("dora_magnitude_len", run, [os.path.join(d2, "adapter_model.safetensors"), qv[1]])
    # modules_to_save replacement of the wrong shape
    ts = good_adapter(vals, rng, qv)
    ts[P + "lm_head.weight"] = stio.Tensor("BF16", rng.standard_normal((VOCAB - 1, H)).astype(np.float32))
    run, d2 = two_step("saved_shape", peft_config(8, 16, ["q_proj", "v_proj"], modules_to_save=["lm_head"]), ts)
    add("saved_shape", run, [os.path.join(d2, "adapter_model.safetensors"), "lm_head"])
    # IA3 adapter
    ia3 = {"peft_type": "IA3", "target_modules": ["k_proj", "v_proj", "down_proj"],
           "feedforward_modules": ["down_proj"], "fan_in_fan_out": False,
           "base_model_name_or_path": "dora-test/llama-gqa-tiny", "task_type": "CAUSAL_LM",
           "inference_mode": True, "init_ia3_weights": True, "modules_to_save": None}
    # IA3 (read since issue #17) whose ia3_l has one row too many for k_proj
    ts = {P + attn(0, "k") + ".ia3_l": stio.Tensor("F32", np.ones((KV + 1, 1), np.float32)),
          P + attn(0, "v") + ".ia3_l": stio.Tensor("F32", np.ones((KV, 1), np.float32))}
    run, d2 = two_step("ia3_length", ia3, ts, ia3, ts)
    add("ia3_length", run, [os.path.join(run, "checkpoint-1", "adapter_model.safetensors"),
                            attn(0, "k") + ".ia3_l", "output rows"])
    # a peft_type this tool does not read
    run, d2 = two_step("peft_type_unknown", dict(ia3, peft_type="OFT"), ts)
    add("peft_type_unknown", run, [os.path.join(d2, "adapter_config.json"), "OFT"])
    # malformed adapter_config.json
    run, d2 = two_step("config_malformed", cfg, good_adapter(vals, rng, qv))
    with open(os.path.join(d2, "adapter_config.json"), "w") as f:
        f.write('{\n  "peft_type": "LORA",\n  "r": 8,\n  "lora_alpha": 16,\n  "target_modules": ["q_proj", "v_proj"\n')
    add("config_malformed", run, [os.path.join(d2, "adapter_config.json")])
    # adapter_config.json without r
    c = dict(cfg)
    del c["r"]
    run, d2 = two_step("config_no_r", c, good_adapter(vals, rng, qv))
    add("config_no_r", run, [os.path.join(d2, "adapter_config.json")])
    # truncated adapter_model.safetensors
    run, d2 = two_step("weights_truncated", cfg, good_adapter(vals, rng, qv))
    wp = os.path.join(d2, "adapter_model.safetensors")
    with open(wp, "rb") as f:
        blob = f.read()
    with open(wp, "wb") as f:
        f.write(blob[: len(blob) * 2 // 3])
    add("weights_truncated", run, [wp])
    # weights file missing
    run, d2 = two_step("weights_missing", cfg, good_adapter(vals, rng, qv))
    os.remove(os.path.join(d2, "adapter_model.safetensors"))
    add("weights_missing", run, [os.path.join(d2, "adapter_model.safetensors")])
    # checkpoint-2 adapts a module that checkpoint-1 does not
    run, d2 = two_step("modules_differ", cfg, good_adapter(vals, rng, qv + [attn(1, "q")]))
    add("modules_differ", run, [os.path.join(d2, "adapter_model.safetensors"), attn(1, "q")])
    # checkpoint-2 is a full model in an adapter run
    run = os.path.join(bad, "mixed_run")
    write_adapter(os.path.join(run, "checkpoint-1"), cfg, good_adapter(vals, rng, qv), 1, None, rng)
    full = {n: stio.Tensor("F32", v.astype(np.float32)) for n, v in vals.items()}
    stio.write_checkpoint(run, 2, full)
    add("mixed_run", run, [os.path.join(run, "checkpoint-2")])

    # the base given as something else, for the good run "lora"
    lora = os.path.join(out, "lora")
    ck = os.path.join(lora, "checkpoint-100")
    add("base_is_adapter_folder", lora, [ck], base=ck)
    add("base_is_adapter_file", lora, [os.path.join(ck, "adapter_model.safetensors")],
        base=os.path.join(ck, "adapter_model.safetensors"))
    add("base_is_run_folder", lora, [os.path.join(out, "ft")], base=os.path.join(out, "ft"))
    add("base_missing", lora, [os.path.join(out, "no-such-base")],
        base=os.path.join(out, "no-such-base"))
    # a GPT-2-like model without the Llama modules
    gp = os.path.join(bad, "base_gpt2")
    os.makedirs(gp)
    stio.write_safetensors(os.path.join(gp, "model.safetensors"),
                           {n: stio.Tensor("F32", vals[n].astype(np.float32))
                            for n in (C_ATTN + ".weight", C_PROJ + ".weight")})
    add("base_other_model", lora, [os.path.join(ck, "adapter_model.safetensors"), "q_proj"],
        base=gp)
    # a smaller Llama: hidden 64, so every factor is the wrong size
    sm = os.path.join(bad, "base_small.safetensors")
    small = {}
    for i in range(NLAYERS):
        for p, o in (("q", 64), ("k", 16), ("v", 16), ("o", 64)):
            small[attn(i, p) + ".weight"] = stio.Tensor("BF16", rng.standard_normal((o, 64)).astype(np.float32))
    stio.write_safetensors(sm, small)
    add("base_smaller_model", lora, [os.path.join(ck, "adapter_model.safetensors"), "_proj"], base=sm)

    with open(os.path.join(bad, "cases.tsv"), "w") as f:
        for c in cases:
            f.write("\t".join(c) + "\n")
    return cases


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--errors", action="store_true", help="also write OUTDIR/bad/ (broken runs)")
    args = ap.parse_args()
    out = os.path.abspath(args.outdir)
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    base_t, vals = make_base(rng)
    stio.write_sharded(os.path.join(out, "base"), base_t, 2)
    specs = [run_lora(out, vals, rng), run_rslora(out, vals, rng), run_dora(out, vals, rng),
             run_fifo(out, vals, rng), run_embconv(out, vals, rng),
             run_dorapaper(out, vals, rng), run_dorafifo(out, vals, rng),
             run_ft(out, base_t, vals, rng), run_pypattern(out, vals, rng)]
    man = {"seed": args.seed, "base": "base", "runs": {s.name: s.manifest() for s in specs}}
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(man, f, indent=1)
    n = len(specs)
    if args.errors:
        n_bad = len(make_errors(out, vals, rng))
        print(f"gen_adapters: {n} runs and {n_bad} error cases in {out}")
    else:
        print(f"gen_adapters: {n} runs in {out}")


if __name__ == "__main__":
    main()
