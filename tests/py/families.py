#!/usr/bin/python3
"""families.py: PEFT's IA3, AdaLoRA, VeRA, LoHa and LoKr adapters, written in the
layouts PEFT saves and merged independently in NumPy, for tests/sh/families.sh.

    families.py gen OUTDIR [--seed N]
    families.py check --data OUTDIR --h5 OUT.h5 --runs a,b [--rtol X]
    families.py realdata --regression DIR --out OUTDIR   (bases for PEFT's files)
    families.py checkreal --regression DIR --out OUTDIR --h5 OUT.h5 --runs a,b

The reference merges each module densely in float64, as PEFT's get_delta_weight
or merge writes it (never through PEFT):

    ia3      W0 * ia3_l: ia3_l [out, 1] scales rows; [1, in] (feedforward_modules)
             scales columns, a conv's (1, C, 1, 1) its channels; fan_in_fan_out:
             the stored [in, out] weight scaled by ia3_l^T
    adalora  W0 + B @ (A * E) * scaling / (ranknum + 1e-5), scaling = lora_alpha,
             ranknum = init_r in float32; the ranks rank_pattern keeps
    vera     W0 + (lambda_b B[:out]) @ (lambda_d A[:, :in]), the shared A, B
    loha     W0 + (w1a @ w1b) * (w2a @ w2b) * alpha / r, reshaped to W0's shape
    lokr     W0 + kron(w1, w2) * alpha / r (w = w_a @ w_b where factored)
    pissa    W0 + s (B A - B0 A0), B0 A0 from NumPy's SVD of W0 (olora: its QR)

then dM = mean_n | |W_t[n]| - |W0[n]| | and dD = mean_n (1 - cos) over the
[out, in] rows, compared with the tool's delta_m / delta_d: |tool - ref| <= 1e-15 +
1e-9 |ref| (the issue asks for 1e-6 relative).
"""

import argparse
import json
import os
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stio  # noqa: E402
from quant_ref import one_minus_cos  # noqa: E402
from check_adapters import row_split  # noqa: E402

P = "base_model.model."
F32 = np.float32
BASE = {  # name -> (shape, dtype); the conv and Conv1D for their own runs
    "model.layers.0.self_attn.q_proj.weight": ((48, 40), "BF16"),
    "model.layers.0.self_attn.k_proj.weight": ((24, 40), "F16"),
    "model.layers.0.mlp.down_proj.weight": ((40, 56), "F32"),
    "vision.conv.weight": ((10, 5, 3, 3), "F32"),
    "transformer.h.0.attn.c_attn.weight": ((40, 72), "F32"),   # Conv1D, stored [in, out]
}
Q, K, D = "model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj", "model.layers.0.mlp.down_proj"
CONV, C_ATTN = "vision.conv", "transformer.h.0.attn.c_attn"
STEPS = (10, 20)


def f32(a):
    return stio.Tensor("F32", np.asarray(a, dtype=F32))


def write_step(folder, cfg, ts):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "adapter_config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    stio.write_safetensors(os.path.join(folder, "adapter_model.safetensors"), ts)


def write_run(out, name, cfg, make):
    for k, step in enumerate(STEPS):
        d = os.path.join(out, name, f"checkpoint-{step}")
        write_step(d, cfg, make(k + 1))
        stio.write_trainer_state(d, step)


def config(peft_type, targets, **kw):
    c = {"peft_type": peft_type, "target_modules": targets, "task_type": "CAUSAL_LM",
         "base_model_name_or_path": "dora-test/families-tiny", "inference_mode": True}
    c.update(kw)
    return c


def shape2(name):
    s = BASE[name + ".weight"][0]
    return s[0], int(np.prod(s[1:]))


def gen(out, seed):
    rng = np.random.default_rng(seed)
    base = {}
    for name, (shape, dt) in BASE.items():
        a = rng.standard_normal(shape) * 0.05 * rng.uniform(0.5, 2, (shape[0],) + (1,) * (len(shape) - 1))
        if name.startswith(K):
            a[2] = 0                                        # a zero row
        base[name] = stio.Tensor(dt, a.astype(F32))
    os.makedirs(os.path.join(out, "base"))
    stio.write_safetensors(os.path.join(out, "base", "model.safetensors"), base)

    def ia3(k):
        lq = 1 + 0.05 * k * rng.standard_normal((48, 1))
        lq[3] = -0.7                                        # a reversed row
        lq[5] = 0.0                                         # a row scaled to zero
        return {P + Q + ".ia3_l": f32(lq),
                P + K + ".ia3_l": f32(1 + 0.05 * k * rng.standard_normal((24, 1))),
                P + D + ".ia3_l": f32(1 + 0.05 * k * rng.standard_normal((1, 56))),
                P + CONV + ".ia3_l": f32(1 + 0.05 * k * rng.standard_normal((1, 5, 1, 1)))}
    write_run(out, "ia3", config("IA3", ["q_proj", "k_proj", "down_proj", "conv"],
                                 feedforward_modules=["down_proj", "conv"], fan_in_fan_out=False), ia3)
    write_run(out, "ia3fifo", config("IA3", ["c_attn"], feedforward_modules=[], fan_in_fan_out=True),
              lambda k: {P + C_ATTN + ".ia3_l": f32(1 + 0.05 * k * rng.standard_normal((72, 1)))})

    init_r = 6
    masks = {Q: [True, False, True, True, False, True], K: [False] * 6}

    def adalora(k):
        ts = {}
        for m in (Q, K, D):
            o, i = shape2(m)
            r = sum(masks[m]) if m in masks else init_r
            ts[P + m + ".lora_A"] = f32(rng.standard_normal((r, i)) / np.sqrt(i))
            ts[P + m + ".lora_B"] = f32(rng.standard_normal((o, r)) * 0.02 * k)
            ts[P + m + ".lora_E"] = f32(rng.standard_normal((r, 1)))
        return ts
    write_run(out, "adalora", config("ADALORA", ["q_proj", "k_proj", "down_proj"], init_r=init_r, target_r=4,
                                     r=8, lora_alpha=8, fan_in_fan_out=False,
                                     rank_pattern={"base_model.model." + m + ".lora_E": v for m, v in masks.items()}),
              adalora)

    vr = 8
    va = rng.standard_normal((vr, 72)) / 8
    vb = rng.standard_normal((64, vr)) / 8

    def vera(k, shared=True):
        ts = {"base_model.vera_A": f32(va), "base_model.vera_B": f32(vb)} if shared else {}
        for m in (Q, K, D):
            o, _ = shape2(m)
            ts[P + m + ".vera_lambda_b"] = f32(rng.standard_normal(o) * 0.1 * k)
            ts[P + m + ".vera_lambda_d"] = f32(rng.standard_normal(vr))
        return ts
    vcfg = config("VERA", ["q_proj", "k_proj", "down_proj"], r=vr, projection_prng_key=0,
                  save_projection=True, fan_in_fan_out=False)
    write_run(out, "vera", vcfg, vera)
    write_run(out, "vera_noproj", dict(vcfg, save_projection=False), lambda k: vera(k, False))

    lr = 4

    def loha(k):
        ts = {}
        for m in (Q, K, D, CONV):
            o, i = shape2(m)
            r = 2 if m == D else lr
            for w in ("w1", "w2"):
                ts[P + m + f".hada_{w}_a"] = f32(rng.standard_normal((o, r)) * 0.1 * k)
                ts[P + m + f".hada_{w}_b"] = f32(rng.standard_normal((r, i)) * 0.1)
        return ts
    write_run(out, "loha", config("LOHA", ["q_proj", "k_proj", "down_proj", "conv"], r=lr, alpha=8,
                                  rank_pattern={"down_proj": 2}, alpha_pattern={}), loha)

    def lokr(k):
        g = lambda *s: f32(rng.standard_normal(s) * 0.1 * k)  # noqa: E731
        return {P + Q + ".lokr_w1": g(8, 4), P + Q + ".lokr_w2_a": g(6, lr), P + Q + ".lokr_w2_b": g(lr, 10),
                P + K + ".lokr_w1_a": g(4, lr), P + K + ".lokr_w1_b": g(lr, 2),
                P + K + ".lokr_w2_a": g(6, lr), P + K + ".lokr_w2_b": g(lr, 20),
                P + D + ".lokr_w1": g(5, 7), P + D + ".lokr_w2": g(8, 8)}
    write_run(out, "lokr", config("LOKR", ["q_proj", "k_proj", "down_proj"], r=lr, alpha=2,
                                  rank_pattern={}, alpha_pattern={}), lokr)
    init_runs(out, rng, base)
    bad_cases(out, rng, adalora, loha, lokr)


def initial_factors(how, w0, r, s):
    """PEFT's B0, A0: pissa (top-r SVD, singular values divided by s, their square roots on
    both sides) or olora (QR)."""
    if how == "pissa":
        u, sv, vt = np.linalg.svd(w0, full_matrices=False)
        sr = np.sqrt(sv[:r] / s)
        return u[:, :r] * sr, sr[:, None] * vt[:r]
    qm, rm = np.linalg.qr(w0)
    return qm[:, :r], rm[:r]


def init_runs(out, rng, base):
    """LoRA runs initialised with PiSSA / OLoRA: trained factors = B0, A0 + a drift."""
    r, alpha = 4, 8
    for how in ("pissa", "olora"):
        b0a0 = {m: initial_factors(how, stio.cast(base[m + ".weight"].array, base[m + ".weight"].dtype), r, alpha / r)
                for m in (Q, K, D)}

        def make(k, b0a0=b0a0):
            ts = {}
            for m, (b0, a0) in b0a0.items():
                ts[P + m + ".lora_A.weight"] = f32(a0 + 0.01 * k * rng.standard_normal(a0.shape) * np.abs(a0).mean())
                ts[P + m + ".lora_B.weight"] = f32(b0 + 0.01 * k * rng.standard_normal(b0.shape) * np.abs(b0).mean())
            return ts
        write_run(out, how, config("LORA", ["q_proj", "k_proj", "down_proj"], r=r, lora_alpha=alpha,
                                   init_lora_weights=how, use_rslora=False, use_dora=False,
                                   fan_in_fan_out=False), make)
    # pissa_niter_4: a randomised SVD (here: W0's top-r SVD of W0 plus noise), so B0 A0 must
    # come from the adapter as initialised: checkpoint-0/ in the run, or --initial-adapter
    b0a0 = {m: initial_factors("pissa", stio.cast(base[m + ".weight"].array, base[m + ".weight"].dtype)
                               + 0.01 * rng.standard_normal(base[m + ".weight"].array.shape), r, alpha / r)
            for m in (Q, K, D)}
    init = {}
    for m, (b0, a0) in b0a0.items():
        init[P + m + ".lora_A.weight"] = f32(a0)
        init[P + m + ".lora_B.weight"] = f32(b0)

    def drift(k):
        ts = {}
        for m, (b0, a0) in b0a0.items():
            ts[P + m + ".lora_A.weight"] = f32(a0 + 0.01 * k * rng.standard_normal(a0.shape) * np.abs(a0).mean())
            ts[P + m + ".lora_B.weight"] = f32(b0 + 0.01 * k * rng.standard_normal(b0.shape) * np.abs(b0).mean())
        return ts
    ncfg = config("LORA", ["q_proj", "k_proj", "down_proj"], r=r, lora_alpha=alpha,
                  init_lora_weights="pissa_niter_4", use_rslora=False, use_dora=False, fan_in_fan_out=False)
    write_run(out, "niter", ncfg, drift)
    write_step(os.path.join(out, "niter", "checkpoint-0"), ncfg, init)
    stio.write_trainer_state(os.path.join(out, "niter", "checkpoint-0"), 0)
    write_run(out, "niter_noinit", ncfg, drift)
    write_step(os.path.join(out, "niter_init"), ncfg, init)


def bad_cases(out, rng, adalora, loha, lokr):
    """OUTDIR/bad/CASE (one checkpoint each) and bad/cases.tsv: CASE, the substrings the
    error must hold ('|'-separated)."""
    bad = os.path.join(out, "bad")
    cases = []

    def add(case, cfg, ts, wants):
        d = os.path.join(bad, case)
        write_step(d, cfg, ts)
        cases.append((case, "|".join(w.replace("@", os.path.join(d, "")) for w in wants)))

    ada = config("ADALORA", ["q_proj"], init_r=6, lora_alpha=8, rank_pattern={})
    ts = {k: v for k, v in adalora(1).items() if Q in k}
    add("adalora_mask", dict(ada, rank_pattern={P + Q + ".lora_E": [True] * 3 + [False] * 3}), ts,
        ["@adapter_model.safetensors", Q + ".lora_A", "rank_pattern keeps"])
    add("adalora_mask_len", dict(ada, rank_pattern={P + Q + ".lora_E": [True] * 5}), ts,
        ["@adapter_config.json", "init_r = 6"])
    lh = config("LOHA", ["q_proj"], r=4, alpha=8)
    ts = {k: v for k, v in loha(1).items() if Q in k}
    add("loha_rank", dict(lh, r=3), ts, ["@adapter_model.safetensors", Q + ".hada_w1_a", "module's r"])
    add("loha_scale", dict(lh, alpha=1e200), ts, ["@adapter_config.json", Q, "too large"])
    add("loha_r_zero", dict(lh, r=0), ts, ["@adapter_config.json", "'r'", "positive integer"])
    big = {P + Q + f".hada_{w}_{ab}": f32(rng.standard_normal((48, 40) if ab == "a" else (40, 40)))
           for w in ("w1", "w2") for ab in ("a", "b")}
    add("loha_absurd", dict(lh, r=40), big, ["@adapter_config.json", Q, "r^2 = 1600", "absurd"])
    ts = {k: v for k, v in lokr(1).items() if Q in k}
    ts[P + Q + ".lokr_w2_b"] = f32(rng.standard_normal((4, 11)))
    add("lokr_shape", config("LOKR", ["q_proj"], r=4, alpha=2), ts,
        ["@adapter_model.safetensors", Q + ".weight", "[48, 44]"])
    add("ia3_ff_shape", config("IA3", ["q_proj"], feedforward_modules=["q_proj"]),
        {P + Q + ".ia3_l": f32(np.ones((48, 1)))},
        ["@adapter_model.safetensors", Q + ".ia3_l", "feedforward"])
    lcfg = config("LORA", ["q_proj"], r=4, lora_alpha=8, init_lora_weights="pissa_niter_4")
    lts = {P + Q + ".lora_A.weight": f32(np.ones((4, 40))), P + Q + ".lora_B.weight": f32(np.ones((48, 4)))}
    add("pissa_niter", lcfg, lts, ["@adapter_config.json", "pissa_niter_4", "--initial-adapter"])
    add("loftq", dict(lcfg, init_lora_weights="loftq"), lts, ["@adapter_config.json", "loftq"])
    with open(os.path.join(bad, "cases.tsv"), "w") as f:
        for c, w in cases:
            f.write(f"{c}\t{w}\n")


# ---------------------------------------------------------------- reference merges
def load(folder):
    with open(os.path.join(folder, "adapter_config.json")) as f:
        cfg = json.load(f)
    p = os.path.join(folder, "adapter_model.safetensors")
    if os.path.isfile(p):
        ts, _ = stio.read_safetensors(p)
        return cfg, {k: v.astype(np.float64) for k, (_, v) in ts.items()}
    import torch
    sd = torch.load(os.path.join(folder, "adapter_model.bin"), map_location="cpu")
    return cfg, {k: v.double().numpy() for k, v in sd.items()}


def t(ts, m, suffix):
    return ts.get(P + m + suffix)


NITER_INIT = {}  # pissa_niter_K: the initial adapter's tensors (check sets it)


def merged(cfg, ts, m, w0):
    """W_t of module m (w0 as stored), by the family's rule, in float64."""
    pt = cfg["peft_type"]
    if pt == "LORA" and cfg["init_lora_weights"].startswith("pissa_niter_"):
        s = cfg["lora_alpha"] / cfg["r"]   # trained against W0 - s B0 A0, B0 A0 as initialised
        b0, a0 = NITER_INIT[P + m + ".lora_B.weight"], NITER_INIT[P + m + ".lora_A.weight"]
        d = s * (t(ts, m, ".lora_B.weight") @ t(ts, m, ".lora_A.weight") - b0 @ a0)
        return w0 + d.reshape(w0.shape)
    fifo = cfg.get("fan_in_fan_out", False)
    if pt == "IA3":
        l = t(ts, m, ".ia3_l")
        ff = any(m == f or m.endswith("." + f) for f in cfg.get("feedforward_modules") or [])
        if w0.ndim == 4:    # (1, C, 1, 1): out channels, or in channels when feedforward
            return w0 * (l.reshape(1, -1, 1, 1) if ff else l.reshape(-1, 1, 1, 1))
        return w0 * (l.T if fifo else l)
    if pt == "LORA":   # PiSSA / OLoRA: trained against W0 - s B0 A0
        s = cfg["lora_alpha"] / cfg["r"]
        b0, a0 = initial_factors(cfg["init_lora_weights"], w0, cfg["r"], s)
        d = s * (t(ts, m, ".lora_B.weight") @ t(ts, m, ".lora_A.weight") - b0 @ a0)
    elif pt == "ADALORA":
        a, b, e = t(ts, m, ".lora_A"), t(ts, m, ".lora_B"), t(ts, m, ".lora_E")
        ranknum = float(F32(cfg["init_r"]) + F32(1e-5))
        d = b @ (a * e) * cfg["lora_alpha"] / ranknum
    elif pt == "VERA":
        lb, ld = t(ts, m, ".vera_lambda_b"), t(ts, m, ".vera_lambda_d")
        o, i = (w0.shape[1], w0.shape[0]) if fifo else (w0.shape[0], int(np.prod(w0.shape[1:])))
        d = (lb[:, None] * ts["base_model.vera_B"][:o]) @ (ld[:, None] * ts["base_model.vera_A"][:, :i])
    elif pt == "LOHA":
        r = t(ts, m, ".hada_w1_a").shape[1]
        s = cfg["alpha"] / r
        d = (t(ts, m, ".hada_w1_a") @ t(ts, m, ".hada_w1_b")) * (t(ts, m, ".hada_w2_a") @ t(ts, m, ".hada_w2_b")) * s
    elif pt == "LOKR":
        w1 = t(ts, m, ".lokr_w1")
        w1 = w1 if w1 is not None else t(ts, m, ".lokr_w1_a") @ t(ts, m, ".lokr_w1_b")
        w2 = t(ts, m, ".lokr_w2")
        w2 = w2 if w2 is not None else t(ts, m, ".lokr_w2_a") @ t(ts, m, ".lokr_w2_b")
        d = np.kron(w1, w2) * cfg["alpha"] / cfg["r"]
    else:
        raise ValueError(pt)
    if fifo:
        d = d.T
    return w0 + d.reshape(w0.shape)


def rows(w, fifo):
    return w.T if fifo else w.reshape(w.shape[0], -1)


def compare(g, run_dir, base, steps_dirs, rtol, worst, fails, label):
    mods = [m.decode() if isinstance(m, bytes) else m for m in g["modules"][()]]
    dm, dd = g["delta_m"][()], g["delta_d"][()]
    # where dM comes from (docs/numerics.md), against check_adapters.row_split
    pm, am = g["delta_m_passive"][()], g["delta_m_active"][()]
    for si, folder in enumerate(steps_dirs):
        cfg, ts = load(folder)
        fifo = cfg.get("fan_in_fan_out", False)
        for li, name in enumerate(mods):
            w0 = base[name].astype(np.float64)
            wt = merged(cfg, ts, name[:-len(".weight")], w0)
            omc, n0, n1 = one_minus_cos(rows(w0, fifo), rows(wt, fifo))
            pas, act = row_split(rows(w0, fifo), rows(wt, fifo))
            for k, (what, got, ref) in enumerate((("delta_m", dm[si, li], np.mean(np.abs(n1 - n0))),
                                                 ("delta_d", dd[si, li], np.mean(omc)),
                                                 ("delta_m_passive", pm[si, li], np.mean(pas)),
                                                 ("delta_m_active", am[si, li], np.mean(act)))):
                # |tool - ref| <= atol + rtol |ref|; atol 1e-15 for a zero the reference
                # gets as float64 noise (1e-34: rows scaled by IA3 keep their direction)
                ok = abs(got - ref) <= 1e-15 + rtol * abs(ref)
                if abs(ref) > 1e-12 and k < len(worst):  # the worst relative error among refs
                    worst[k] = max(worst[k], abs(got - ref) / abs(ref))  # that are not noise
                rel = abs(got - ref) / abs(ref) if ref != 0 else abs(got)
                if not np.isfinite(ref) or not ok:
                    fails.append(f"{label} {what} {folder} {name}: tool {got!r} ref {ref!r} rel {rel:.3g}")
    return len(mods)


def report(fails, worst, what):
    for f in fails:
        print("FAIL " + f)
    print(f"worst relative: delta_m {worst[0]:.3g}, delta_d {worst[1]:.3g} ({what})")
    return 1 if fails else 0


def quantised_base(base, quant, fifo_names):
    """W0 as --base-quant makes it: the round trip of the 2-D weights (quant_ref.py)."""
    from quant_ref import base_w0
    dtypes = {k: v[1] for k, v in BASE.items()}
    out = {}
    for k, v in base.items():
        if v.ndim != 2:
            out[k] = v
            continue
        fifo = k in fifo_names
        w = base_w0(base, dtypes, k, quant, fifo)
        out[k] = w.T if fifo else w
    return out


def check(a):
    base, _ = stio.read_safetensors(os.path.join(a.data, "base", "model.safetensors"))
    base = {k: v for k, (_, v) in base.items()}
    if a.quant:
        base = quantised_base(base, a.quant, {C_ATTN + ".weight"})
    fails, worst, n = [], [0.0, 0.0], 0
    with h5py.File(a.h5, "r") as h:
        for run in a.runs.split(","):
            g = h["runs"][run]
            method = g.attrs["method"]
            method = method.decode() if isinstance(method, bytes) else method
            if run.startswith("niter"):
                NITER_INIT.clear()
                NITER_INIT.update(load(os.path.join(a.data, "niter" if run == "niter" else "niter_init",
                                                    "checkpoint-0" if run == "niter" else ""))[1])
            if method != {"pissa": "lora", "olora": "lora", "niter": "lora", "niter_noinit": "lora"}.get(
                    run, run.split("_")[0].replace("fifo", "")):
                fails.append(f"{run}: method attribute '{method}'")
            dirs = [os.path.join(a.data, run, f"checkpoint-{s}") for s in g["steps"][()]]
            n += compare(g, run, base, dirs, a.rtol, worst, fails, run)
    return report(fails, worst, f"{n} modules in runs {a.runs}")


# ---------------------------------------------------------------- PEFT's own files
REAL = {  # run folder -> base tensors rebuilt from the adapter's shapes (reading checks)
    "ia3_mlp": {"lin0.weight": (20, 10)},
    "ia3_no_ff_mlp": {"lin0.weight": (20, 10)},
    "ia3_conv2d": {"conv2d.weight": (10, 5, 3, 3)},
    "adalora_mlp": {"lin0.weight": (20, 10)},
}


def realdata(a):
    rng = np.random.default_rng(5)
    for run, ts in REAL.items():
        d = os.path.join(a.out, "real_" + run)
        os.makedirs(d, exist_ok=True)
        stio.write_safetensors(os.path.join(d, "model.safetensors"),
                               {k: f32(rng.standard_normal(s)) for k, s in ts.items()})
    return 0


def checkreal(a):
    fails, worst, n = [], [0.0, 0.0], 0
    with h5py.File(a.h5, "r") as h:
        for run in a.runs.split(","):
            base, _ = stio.read_safetensors(os.path.join(a.out, "real_" + run, "model.safetensors"))
            base = {k: v for k, (_, v) in base.items()}
            n += compare(h["runs"][run], run, base, [os.path.join(a.regression, run, "0.6.1")],
                         a.rtol, worst, fails, run)
    return report(fails, worst, f"{n} modules of PEFT's regression files {a.runs}")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("out")
    g.add_argument("--seed", type=int, default=1)
    c = sub.add_parser("check")
    c.add_argument("--data", required=True)
    c.add_argument("--h5", required=True)
    c.add_argument("--runs", required=True)
    c.add_argument("--rtol", type=float, default=1e-9)
    c.add_argument("--quant", default=None)
    r = sub.add_parser("realdata")
    r.add_argument("--regression", required=True)
    r.add_argument("--out", required=True)
    cr = sub.add_parser("checkreal")
    cr.add_argument("--regression", required=True)
    cr.add_argument("--out", required=True)
    cr.add_argument("--h5", required=True)
    cr.add_argument("--runs", required=True)
    cr.add_argument("--rtol", type=float, default=1e-9)
    a = ap.parse_args()
    if a.cmd == "gen":
        gen(a.out, a.seed)
        return 0
    return {"check": check, "realdata": realdata, "checkreal": checkreal}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
