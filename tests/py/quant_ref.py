#!/usr/bin/python3
"""quant_ref.py: bitsandbytes round trips in NumPy, for tests/sh/quant.sh.

    quant_ref.py gen OUTDIR [--seed N]
    quant_ref.py check --data OUTDIR --h5 OUT.h5 --run NAME --quant Q [--skip a,b]
                       [--rtol X]
    quant_ref.py measure BASE_DIR RUN_DIR      (data/README.md's numbers)

The reference is written from bitsandbytes' description of its algorithms
(functional.quantize_4bit / dequantize_4bit, quantize_blockwise, Int8Params),
in NumPy float32, without the C tool's code:

  4-bit   the flattened weight in blocks of 64; absmax = max |x| per block in
          float32; x * (1 / max(absmax, 1e-38)) for full blocks, x / max(absmax,
          1e-38) for the short last one; clipped to [-1, 1]; the index of the
          nearest code is found with searchsorted over the midpoints of the
          sorted codebook (a tie goes to the lower code), then mapped back to
          bitsandbytes' own code order (FP4 is listed by bit pattern);
          dequantised as float32(code[q] * absmax), cast to the weight's dtype
  -dq     absmax - mean(absmax) quantised blockwise (256) with the signed
          dynamic map, built here as bitsandbytes builds it (torch.linspace in
          float32), then dequantised and the mean added back
  int8    the weight cast to float16; per row s = max |x|, q = rint(x * (127 /
          s)), W0 = float32(q * s) * float32(1/127)

gen writes OUTDIR/base (a safetensors base of mixed dtypes and block
remainders, zero rows and zero blocks), PEFT LoRA runs, config.json bases,
and the error cases; check recomputes W0 (quantised for the modules that
bitsandbytes replaces, as given for the others), W_t = W0 + s B A in float64,
and compares the tool's delta_m / delta_d (rtol, default 1e-9) and per-row m0
of every quantised weight within 1e-15 relative, after checking that one ulp of
any nonzero dequantised value would move its row's norm by at least 10 times
that: m0 within 1e-15 means the tool's W0 is bit-identical to this one.
"""

import argparse
import json
import os
import shutil
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stio  # noqa: E402

F32 = np.float32
P = "base_model.model."

# NF4 as listed in the QLoRA paper / bitsandbytes (index order = sorted)
NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                0.07958029955625534, 0.16093020141124725, 0.24611230194568634,
                0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
                0.7229568362236023, 1.0], dtype=F32)
# FP4 e2m1 by bit pattern (sign bit 3), normalised by its largest magnitude
FP4 = (np.array([0, 0.0625, 8, 12, 4, 6, 2, 3, -0.0, -0.0625, -8, -12, -4, -6, -2, -3],
                dtype=F32) / F32(12))


def dynamic_map():
    """bitsandbytes' signed 8-bit dynamic map (7 exponent bits), built with torch's
    float32 linspace as bitsandbytes does."""
    import torch
    vals = []
    for i in range(7):
        edges = torch.linspace(0.1, 1, 2 ** i + 1, dtype=torch.float32)
        mid = (edges[:-1] + edges[1:]) / 2.0
        vals += ((10 ** (i - 6)) * mid).tolist() + (-(10 ** (i - 6)) * mid).tolist()
    vals += [0.0, 1.0]
    return np.array(sorted(vals), dtype=F32)


def blockwise(flat, bs, code):
    """(dequantised code values unscaled, absmax) of a float32 vector."""
    n = flat.size
    order = np.argsort(code, kind="stable")
    srt = code[order]
    mids = (srt[:-1] + srt[1:]) / F32(2)
    nb = -(-n // bs)
    absmax = np.empty(nb, F32)
    out = np.empty(n, F32)
    for k in range(nb):
        x = flat[k * bs:(k + 1) * bs]
        am = np.abs(x).max()
        absmax[k] = am
        den = np.maximum(am, F32(1e-38))
        y = x * (F32(1) / den) if x.size == bs else x / den
        y = np.clip(y, F32(-1), F32(1)).astype(F32)
        q = order[np.searchsorted(mids, y, side="left")]
        out[k * bs:(k + 1) * bs] = code[q]
    return out, absmax


def roundtrip(w, quant):
    """float32 [out, in] -> float32 dequantised values."""
    if quant == "int8":
        x = w.astype(np.float16).astype(F32)
        s = np.abs(x).max(axis=1, keepdims=True).astype(F32)
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.rint(x * (F32(127) / s))
            y = (q * s).astype(F32) * F32(7.874015718698502e-3)
        return np.where(s == 0, F32(0), y).astype(F32)
    kind, dq = quant.split("-")[0], quant.endswith("-dq")
    flat = w.reshape(-1).astype(F32)
    codes, absmax = blockwise(flat, 64, NF4 if kind == "nf4" else FP4)
    if dq:
        offset = F32(absmax.astype(np.float64).mean())
        c2, am2 = blockwise((absmax - offset).astype(F32), 256, dynamic_map())
        absmax = (c2 * np.repeat(am2, 256)[:absmax.size]).astype(F32) + offset
    return (codes * np.repeat(absmax, 64)[:flat.size]).astype(F32).reshape(w.shape)


def to_dtype(a, dtype):
    if dtype == "BF16":
        return stio.bf16_bits_to_f32(stio.f32_to_bf16_bits(a)).astype(np.float64)
    if dtype == "F16":
        return a.astype(np.float16).astype(np.float64)
    return a.astype(F32).astype(np.float64)


def base_w0(values, dtypes, name, quant, fifo):
    """W0 of an adapted weight as [out, in] float64: the round trip when quantised."""
    w = values[name].T if fifo else values[name]
    if quant is None:
        return w.astype(np.float64)
    y = roundtrip(w.astype(F32), quant)
    return y.astype(np.float64) if quant == "int8" else to_dtype(y, dtypes[name])


# ---------------------------------------------------------------- generator
BASE = {  # name -> (shape, dtype)
    "model.layers.0.self_attn.q_proj.weight": ((40, 72), "BF16"),   # 45 full blocks
    "model.layers.0.self_attn.k_proj.weight": ((33, 50), "F16"),    # a 50-value last block
    "model.layers.0.self_attn.v_proj.weight": ((24, 64), "F32"),    # rows 3, 4: zero blocks
    "model.layers.0.mlp.up_proj.weight": ((20, 7), "BF16"),         # 140 = 2 x 64 + 12
    "model.layers.0.mlp.down_proj.weight": ((12, 20), "BF16"),
    "model.layers.1.mlp.gate_proj.weight": ((160, 130), "BF16"),    # 325 blocks: 2 nested
    "model.embed_tokens.weight": ((16, 40), "BF16"),                # embedding: kept
    "lm_head.weight": ((16, 40), "BF16"),                            # kept
    "transformer.h.0.attn.c_attn.weight": ((40, 96), "F32"),        # Conv1D [in, out]
}
LINEAR = ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj",
          "model.layers.0.self_attn.v_proj", "model.layers.0.mlp.up_proj",
          "model.layers.0.mlp.down_proj", "model.layers.1.mlp.gate_proj", "lm_head"]


def make_base(rng):
    t = {}
    for name, (shape, dt) in BASE.items():
        a = rng.standard_normal(shape) * 0.02 * rng.uniform(0.5, 2, (shape[0], 1))
        a.flat[rng.integers(0, a.size, 3)] *= 30          # outliers: blocks with a large absmax
        if name.endswith("v_proj.weight"):
            a[3:5] = 0
        if name.endswith("k_proj.weight"):
            a[5] = 0
        t[name] = stio.Tensor(dt, a.astype(F32))
    t["model.norm.weight"] = stio.Tensor("BF16", np.ones(40, F32))
    return t


def lora_cfg(r, alpha, targets, **kw):
    c = {"peft_type": "LORA", "r": r, "lora_alpha": alpha, "target_modules": targets,
         "base_model_name_or_path": "dora-test/quant-tiny", "fan_in_fan_out": False,
         "use_rslora": False, "use_dora": False, "task_type": "CAUSAL_LM"}
    c.update(kw)
    return c


def write_run(folder, cfg, steps_tensors):
    for step, ts in steps_tensors:
        d = os.path.join(folder, f"checkpoint-{step}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "adapter_config.json"), "w") as f:
            json.dump(cfg, f, indent=1)
        stio.write_safetensors(os.path.join(d, "adapter_model.safetensors"), ts)
        stio.write_trainer_state(d, step)


def gen(out, seed):
    rng = np.random.default_rng(seed)
    base = make_base(rng)
    os.makedirs(os.path.join(out, "base"))
    stio.write_safetensors(os.path.join(out, "base", "model.safetensors"), base)
    r, alpha = 4, 8
    steps = []
    for k, step in enumerate((10, 20)):
        ts = {}
        for m in LINEAR:
            o, i = BASE[m + ".weight"][0]
            ts[P + m + ".lora_A.weight"] = stio.Tensor("F32", (rng.standard_normal((r, i)) / np.sqrt(i)).astype(F32))
            ts[P + m + ".lora_B.weight"] = stio.Tensor("F32", (rng.standard_normal((o, r)) * 0.004 * (k + 1)).astype(F32))
        ts[P + "model.embed_tokens.lora_embedding_A"] = stio.Tensor("F32", rng.standard_normal((r, 16)).astype(F32))
        ts[P + "model.embed_tokens.lora_embedding_B"] = stio.Tensor("F32", (rng.standard_normal((40, r)) * 0.01).astype(F32))
        steps.append((step, ts))
    write_run(os.path.join(out, "lora"), lora_cfg(r, alpha, ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj", "gate_proj", "lm_head", "embed_tokens"]), steps)
    ca = "transformer.h.0.attn.c_attn"
    fts = {P + ca + ".lora_A.weight": stio.Tensor("F32", (rng.standard_normal((r, 40)) / 6).astype(F32)),
           P + ca + ".lora_B.weight": stio.Tensor("F32", (rng.standard_normal((96, r)) * 0.01).astype(F32))}
    write_run(os.path.join(out, "fifo"), lora_cfg(r, alpha, ["c_attn"], fan_in_fan_out=True), [(5, fts)])
    # the same adapter, trained (its config says) on a 4-bit base
    write_run(os.path.join(out, "hint"), lora_cfg(r, alpha, ["c_attn"], fan_in_fan_out=True,
                                                  base_model_name_or_path="unsloth/llama-3-8b-bnb-4bit"), [(5, fts)])
    # bases with a config.json
    qcs = {"cfg_nf4": {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"},
           "cfg_skip": {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
                        "bnb_4bit_use_double_quant": True, "llm_int8_skip_modules": ["down_proj"]},
           "cfg_gptq": {"quant_method": "gptq", "bits": 4},
           "cfg_both": {"quant_method": "bitsandbytes", "load_in_4bit": True, "load_in_8bit": True}}
    for name, qc in qcs.items():
        d = os.path.join(out, name)
        os.makedirs(d)
        shutil.copy(os.path.join(out, "base", "model.safetensors"), d)
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump({"architectures": ["LlamaForCausalLM"], "quantization_config": qc}, f)
    # a base whose q_proj is F64 (bitsandbytes does not take it)
    b64 = dict(base)
    q = "model.layers.0.self_attn.q_proj.weight"
    b64[q] = stio.Tensor("F64", stio.cast(base[q].array, "BF16"))
    os.makedirs(os.path.join(out, "base_f64"))
    stio.write_safetensors(os.path.join(out, "base_f64", "model.safetensors"), b64)
    # a fully fine-tuned run
    stio.write_checkpoint(os.path.join(out, "ft"), 10, base, extras=False)


# ---------------------------------------------------------------- checker
M0_RTOL = 1e-15  # float64 sums of squares in another order: ~1e-16 apart
def one_minus_cos(a, b):
    """Row-wise 1 - cos(a, b) without cancellation (b = a + d); the tool's rule for zero
    rows: zero in both adds 0, zero in one of them counts as orthogonal (1)."""
    d = b - a
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    ok = (na > 0) & (nb > 0)
    sa, sb = np.where(ok, na, 1), np.where(ok, nb, 1)
    diff = (2 * np.sum(a * d, axis=1) + np.sum(d * d, axis=1)) / (sa + sb)
    u = d / sb[:, None] - a * (diff / (sa * sb))[:, None]
    omc = np.where(ok, 0.5 * np.sum(u * u, axis=1), np.where((na > 0) | (nb > 0), 1.0, 0.0))
    return omc, na, nb


def ulp_sensitivity(w0, dtype):
    """The smallest relative change of a row norm that one ulp of one nonzero value of
    W0 (stored as DTYPE) makes: m0 closer than this is bit-identical W0."""
    if dtype == "BF16":
        ulp = np.spacing(np.abs(w0).astype(F32)).astype(np.float64) * 65536
    elif dtype == "F16":
        ulp = np.spacing(np.abs(w0).astype(np.float16)).astype(np.float64)
    else:
        ulp = np.spacing(np.abs(w0).astype(F32)).astype(np.float64)
    n2 = np.sum(w0 * w0, axis=1, keepdims=True)
    r = np.abs(w0) * ulp / np.where(n2 > 0, n2, 1)
    return float(np.min(r[w0 != 0])) if np.any(w0 != 0) else float("inf")


def read_adapter(folder):
    with open(os.path.join(folder, "adapter_config.json")) as f:
        cfg = json.load(f)
    ts, _ = stio.read_safetensors(os.path.join(folder, "adapter_model.safetensors"))
    return cfg, {k: v.astype(np.float64) for k, (_, v) in ts.items()}


def read_base(path):
    ts, _ = stio.read_safetensors(path)
    return {k: v for k, (_, v) in ts.items()}


def check(a):
    base = read_base(os.path.join(a.data, "base", "model.safetensors"))
    dtypes = {k: v[1] for k, v in BASE.items()}
    skip = a.skip.split(",") if a.skip else []
    fails = []
    worst = [0.0, 0.0, 0.0, float("inf")]
    with h5py.File(a.h5, "r") as h:
        for name in a.run.split(","):
            check_run(a, h["runs"][name], os.path.join(a.data, name), base, dtypes, skip, fails, worst)
    for f in fails:
        print("FAIL " + f)
    print(f"worst relative: delta_m {worst[0]:.3g}, delta_d {worst[1]:.3g}, m0 {worst[2]:.3g} "
          f"(one ulp of W0 moves m0 by >= {worst[3]:.3g}; runs {a.run})")
    return 1 if fails else 0


def check_run(a, g, run, base, dtypes, skip, fails, worst):
    mods = [m.decode() if isinstance(m, bytes) else m for m in g["modules"][()]]
    steps = list(g["steps"][()])
    dm, dd = g["delta_m"][()], g["delta_d"][()]
    for si, step in enumerate(steps):
        cfg, ts = read_adapter(os.path.join(run, f"checkpoint-{step}"))
        s = cfg["lora_alpha"] / cfg["r"]
        fifo = cfg.get("fan_in_fan_out", False)
        for li, name in enumerate(mods):
            mod = name[:-len(".weight")]
            if P + mod + ".lora_A.weight" in ts:
                delta = s * ts[P + mod + ".lora_B.weight"] @ ts[P + mod + ".lora_A.weight"]
                last = mod.split(".")[-1]
                quantised = last != "lm_head" and last not in skip and a.quant
                w0 = base_w0(base, dtypes, name, a.quant if quantised else None, fifo)
            else:   # the embedding: W0 as given
                delta = s * (ts[P + mod + ".lora_embedding_B"] @ ts[P + mod + ".lora_embedding_A"]).T
                w0 = base[name].astype(np.float64)
            omc, n0, n1 = one_minus_cos(w0, w0 + delta)
            ref_m, ref_d = np.mean(np.abs(n1 - n0)), np.mean(omc)
            for label, got, ref, k in (("delta_m", dm[si, li], ref_m, 0), ("delta_d", dd[si, li], ref_d, 1)):
                rel = abs(got - ref) / abs(ref) if ref != 0 else abs(got) / 1e-15
                worst[k] = max(worst[k], rel)
                if not np.isfinite(ref) or not rel <= a.rtol:
                    fails.append(f"{label} step {step} {name}: tool {got!r} ref {ref!r} rel {rel:.3g}")
            if si == 0 and "per_row" in g:
                key = name.replace("/", "%2F")
                m0 = g["per_row"][key]["m0"][()]
                rel = np.max(np.abs(m0 - n0) / np.where(n0 > 0, n0, 1))
                worst[2] = max(worst[2], rel)
                sens = float("inf")
                if quantised:
                    sens = ulp_sensitivity(w0, "F32" if a.quant == "int8" else dtypes[name])
                worst[3] = min(worst[3], sens)
                if not rel <= M0_RTOL or sens < 10 * M0_RTOL:
                    fails.append(f"m0 {name}: worst relative difference {rel:.3g}, one ulp "
                                 f"moves it by {sens:.3g} at least (W0 not bit-identical)")


def measure(base_dir, run_dir):
    """The quantisation's own dM / dD (W0q against W0) per quantisation, next to the
    LoRA run's last-step dM / dD against W0 (data/README.md)."""
    base = read_base(os.path.join(base_dir, "model.safetensors"))
    steps = sorted(int(e.split("-")[1]) for e in os.listdir(run_dir) if e.startswith("checkpoint-"))
    cfg, ts = read_adapter(os.path.join(run_dir, f"checkpoint-{steps[-1]}"))
    s = cfg["lora_alpha"] / cfg["r"]
    mods = sorted(k[len(P):-len(".lora_A.weight")] for k in ts if k.endswith(".lora_A.weight"))
    rows = {}
    for m in mods:
        w0 = base[m + ".weight"].astype(np.float64)
        delta = s * ts[P + m + ".lora_B.weight"] @ ts[P + m + ".lora_A.weight"]
        omc, n0, n1 = one_minus_cos(w0, w0 + delta)
        rows.setdefault("adapter (last step)", []).append((np.mean(np.abs(n1 - n0)), np.mean(omc)))
        for q in ("nf4", "fp4", "nf4-dq", "int8"):
            wq = roundtrip(w0.astype(F32), q)
            wq = wq.astype(np.float64) if q == "int8" else to_dtype(wq, "BF16")
            omc, n0, nq = one_minus_cos(w0, wq)
            rows.setdefault(q, []).append((np.mean(np.abs(nq - n0)), np.mean(omc)))
    print(f"{len(mods)} modules; mean over modules (median in brackets)")
    print("what                 dM                      dD")
    for k, v in rows.items():
        v = np.array(v)
        print(f"{k:20s} {v[:, 0].mean():.3e} [{np.median(v[:, 0]):.3e}]  "
              f"{v[:, 1].mean():.3e} [{np.median(v[:, 1]):.3e}]")
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("out")
    g.add_argument("--seed", type=int, default=1)
    c = sub.add_parser("check")
    c.add_argument("--data", required=True)
    c.add_argument("--h5", required=True)
    c.add_argument("--run", required=True)
    c.add_argument("--quant", default=None)
    c.add_argument("--skip", default="")
    c.add_argument("--rtol", type=float, default=1e-9)
    m = sub.add_parser("measure")
    m.add_argument("base")
    m.add_argument("run")
    a = ap.parse_args()
    if a.cmd == "gen":
        gen(a.out, a.seed)
        return 0
    if a.cmd == "measure":
        return measure(a.base, a.run)
    if a.quant == "none":
        a.quant = None
    return check(a)


if __name__ == "__main__":
    sys.exit(main())
