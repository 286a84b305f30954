#!/usr/bin/python3
"""kohya.py: kohya-ss / LyCORIS / OneTrainer adapter files (one .safetensors, no config),
written in those tools' key layouts and merged independently in NumPy, for tests/sh/kohya.sh.

    kohya.py gen OUTDIR [--seed N]
    kohya.py check --data OUTDIR --h5 OUT.h5 --runs a,b [--rtol X]

Keys are PREFIX_MODULE.SUFFIX with the module path's '.' written '_'. The reference merges
each module densely in float64, as kohya's merge_to / LyCORIS's get_merged_weight write it:

    lora   W0 + s (up.reshape(out, r) @ down.reshape(r, -1)), s = alpha / r, 1 without alpha
    loha   W0 + (w1a @ w1b) * (w2a @ w2b) * alpha / r, r = hada_w1_b's rows
    lokr   W0 + kron(w1, w2) * alpha / r (r: a factored side's rank), 1 with no factored side
    tucker locon: einsum("ijkl,ip,jr->prkl", mid, up^T, down); loha: einsum("ijkl,jr,ip->prkl",
           t, w_b, w_a) for each side; lokr: w2 = einsum("ijkl,ip,jr->prkl", t2, w2_a, w2_b),
           w1 given trailing axes as make_kron does, np.kron
    full   W0 + diff;  (IA)^3: W0 * (1 + weight) on the rows, or the input columns (on_input)
    dora   V = W0 + delta; dora_scale [1, in(,1,1)]: V * ds / (|V| over dims (0, 2, 3) + eps);
           [out, 1(,1,1)]: V * ds / (|V| over dims (1, 2, 3) + eps); eps = finfo(ds dtype).eps

then dM = mean_n | |W_t[n]| - |W0[n]| | and dD = mean_n (1 - cos) over the [out, in...]
rows, compared with the tool's delta_m / delta_d: |tool - ref| <= 1e-15 + rtol |ref|
(rtol 1e-9; the issue asks for 1e-6).
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

F32 = np.float32
BASE = {  # diffusers-like UNet names and a text encoder beside them
    "down_blocks.0.attentions.0.proj_in.weight": ((32, 24), "F32"),
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight": ((24, 24), "BF16"),
    "down_blocks.0.resnets.0.conv1.weight": ((16, 8, 3, 3), "F32"),
    "down_blocks.0.resnets.0.conv_shortcut.weight": ((16, 8, 1, 1), "F16"),
    "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.weight": ((20, 20), "F32"),
    "unet.mid_block.proj.weight": ((12, 10), "F32"),           # UNet twin of the next one
    "text_encoder.mid_block.proj.weight": ((12, 10), "F32"),   # resolved by the prefix
}
PIN, TOQ = "down_blocks.0.attentions.0.proj_in", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
CONV, SHORT = "down_blocks.0.resnets.0.conv1", "down_blocks.0.resnets.0.conv_shortcut"
TEQ, MID_U, MID_T = "text_encoder.text_model.encoder.layers.0.self_attn.q_proj", "unet.mid_block.proj", "text_encoder.mid_block.proj"
KEY = {  # module -> the key the tools write
    PIN: "lora_unet_down_blocks_0_attentions_0_proj_in",
    TOQ: "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
    CONV: "lora_unet_down_blocks_0_resnets_0_conv1",
    SHORT: "lora_unet_down_blocks_0_resnets_0_conv_shortcut",
    TEQ: "lora_te_text_model_encoder_layers_0_self_attn_q_proj",
    MID_U: "lora_unet_mid_block_proj",
    MID_T: "lora_te1_mid_block_proj",
}
EPS = {"F32": float(np.finfo(np.float32).eps), "BF16": 2.0 ** -7, "F16": float(np.finfo(np.float16).eps)}
# run -> its files, in step order (folder runs: as kohya names them)
RUNS = {  # kohya's step files and its last save (step from ss_steps)
    "lora": ["lora/mylora-step00000010.safetensors", "lora/mylora-step00000020.safetensors",
             "lora/mylora.safetensors"],
    "dcol": ["dcol/d-000001.safetensors", "dcol/d-000002.safetensors"],   # epochs, ss_steps 15, 30
    "depoch": ["depoch/e-000001.safetensors", "depoch/e-000003.safetensors"],  # no ss_steps
    "onet": ["onet/lora2024-05-01_10-00-00-save-40-0-40.safetensors",   # OneTrainer's saves:
             "onet/lora2024-05-01_11-00-00-save-120-2-20.safetensors"],  # global step first
    "drow": ["drow.safetensors"],
    "loha": ["loha.safetensors"],
    "lokr": ["lokr.safetensors"],
    # LyCORIS's Tucker / conv forms (tucker_gen, its own generator)
    "tucker": ["tucker.safetensors"],     # LoCon use_tucker: lora_mid
    "tuckd": ["tuckd.safetensors"],       # the same with a column-norm dora_scale
    "lohat": ["lohat.safetensors"],       # LoHa use_tucker: hada_t1 / hada_t2
    "lokrt": ["lokrt.safetensors"],       # LoKr use_tucker: lokr_t2
    "lokr4": ["lokr4.safetensors"],       # LoKr with a 4-D lokr_w2
    "full": ["full.safetensors"],         # LyCORIS full: diff (and diff_b, not analysed)
    "ia3": ["ia3.safetensors"],           # LyCORIS (IA)^3: weight, on_input
    "glora": ["glora.safetensors"],       # LyCORIS GLoRA (linear): a1, a2, b1, b2
    "oft": ["oft.safetensors"],           # LyCORIS Diag-OFT: oft_blocks, rescale, alpha
    "single": ["single/mylora.safetensors"],  # a folder of one unnumbered file: one step
    "single25": ["single25/last.safetensors"],  # the same with ss_steps 25
}


def f32(a):
    return stio.Tensor("F32", np.asarray(a, dtype=F32))


def shape_of(m):
    return BASE[m + ".weight"][0]


def lora_tensors(rng, k, mods, alpha=True, dora=None, ds_dtype="F32", base=None, r=4):
    """kohya LoRA / LoCon keys of MODS (3x3 down, 1x1 up for convs); DORA: 'col' / 'row'
    dora_scale initialised as LyCORIS does (norms of W0) times a drift."""
    ts = {}
    for i, m in enumerate(mods):
        s = shape_of(m)
        key = KEY[m]
        down = rng.standard_normal((r,) + s[1:]) / np.sqrt(np.prod(s[1:]))
        up = rng.standard_normal((s[0], r) + (1,) * (len(s) - 2)) * 0.05 * k
        ts[key + ".lora_down.weight"] = f32(down)
        ts[key + ".lora_up.weight"] = f32(up)
        if alpha and i != 1:  # the second module without alpha: scale 1
            ts[key + ".alpha"] = f32(np.array(2.0 + i))
        if dora:
            w0 = base[m + ".weight"].array.astype(np.float64)
            if dora == "col":
                axes = (0,) + tuple(range(2, w0.ndim))
                n = np.sqrt(np.sum(w0 * w0, axis=axes, keepdims=True))
            else:
                axes = tuple(range(1, w0.ndim))
                n = np.sqrt(np.sum(w0 * w0, axis=axes, keepdims=True))
            d = n * (1 + 0.03 * k * rng.standard_normal(n.shape))
            dt = ds_dtype if i == 0 else "F32"
            ts[key + ".dora_scale"] = stio.Tensor(dt, d.astype(F32))
    return ts


def kohya_meta(steps, epoch):
    """What kohya's save_model writes beside the tensors (its step and epoch)."""
    return {"ss_network_module": "networks.lora", "ss_steps": str(steps), "ss_epoch": str(epoch),
            "ss_training_finished_at": "1700000000.0"}


def write(out, rel, ts, meta=None):
    p = os.path.join(out, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    stio.write_safetensors(p, ts, meta or {"ss_network_module": "networks.lora"})


def gen(out, seed):
    rng = np.random.default_rng(seed)
    base = {}
    for name, (shape, dt) in BASE.items():
        a = rng.standard_normal(shape) * 0.05 * rng.uniform(0.5, 2, (shape[0],) + (1,) * (len(shape) - 1))
        base[name] = stio.Tensor(dt, a.astype(F32))
    os.makedirs(os.path.join(out, "base"))
    stio.write_safetensors(os.path.join(out, "base", "model.safetensors"), base)
    castb = {n: stio.Tensor("F32", stio.cast(t.array, t.dtype)) for n, t in base.items()}

    allm = [PIN, TOQ, CONV, SHORT, TEQ, MID_U, MID_T]
    for k, (rel, st) in enumerate(zip(RUNS["lora"], (10, 20, 25))):
        write(out, rel, lora_tensors(rng, k + 1, allm), kohya_meta(st, k + 1))
    for k, rel in enumerate(RUNS["dcol"]):
        write(out, rel, lora_tensors(rng, k + 1, [PIN, TOQ, CONV, SHORT], dora="col", base=castb),
              kohya_meta(15 * (k + 1), k + 1))
    for k, rel in enumerate(RUNS["depoch"]):
        write(out, rel, lora_tensors(rng, k + 1, [PIN, SHORT]))
    write(out, "depoch/e.safetensors", lora_tensors(rng, 4, [PIN, SHORT]))  # left out: no step
    for k, rel in enumerate(RUNS["onet"]):
        write(out, rel, lora_tensors(rng, k + 1, [TOQ, TEQ, CONV]), {"ot_branch": "master"})
    write(out, RUNS["drow"][0], lora_tensors(rng, 1, [TOQ, PIN, CONV, TEQ], dora="row", ds_dtype="BF16",
                                             base=castb))

    ts = {}
    for m, r in ((PIN, 4), (CONV, 2)):
        o, i = shape_of(m)[0], int(np.prod(shape_of(m)[1:]))
        for w in ("w1", "w2"):
            ts[KEY[m] + f".hada_{w}_a"] = f32(rng.standard_normal((o, r)) * 0.1)
            ts[KEY[m] + f".hada_{w}_b"] = f32(rng.standard_normal((r, i)) * 0.1)
        ts[KEY[m] + ".alpha"] = f32(np.array(1.0 * r / 2))
    write(out, RUNS["loha"][0], ts, {"ss_network_module": "lycoris.kohya"})

    g = lambda *s: f32(rng.standard_normal(s) * 0.1)  # noqa: E731
    ts = {KEY[PIN] + ".lokr_w1": g(4, 3), KEY[PIN] + ".lokr_w2_a": g(8, 2), KEY[PIN] + ".lokr_w2_b": g(2, 8),
          KEY[PIN] + ".alpha": f32(np.array(1.0)),
          KEY[TOQ] + ".lokr_w1": g(4, 4), KEY[TOQ] + ".lokr_w2": g(6, 6),   # both full: scale 1
          KEY[TOQ] + ".alpha": f32(np.array(10000.0)),
          KEY[TEQ] + ".lokr_w1_a": g(4, 3), KEY[TEQ] + ".lokr_w1_b": g(3, 5),
          KEY[TEQ] + ".lokr_w2_a": g(5, 3), KEY[TEQ] + ".lokr_w2_b": g(3, 4),
          KEY[TEQ] + ".alpha": f32(np.array(1.5))}
    write(out, RUNS["lokr"][0], ts, {"ss_network_module": "lycoris.kohya"})
    bad_cases(out, rng, castb)
    tucker_gen(out, np.random.default_rng(seed + 1000))


def tucker_gen(out, rng):
    """LyCORIS's Tucker forms (use_tucker), its full 4-D LoKr conv side, its full (diff) and
    (IA)^3 (weight, on_input) algorithms, in the shapes lycoris/modules/locon.py, loha.py,
    lokr.py, full.py and ia3.py create them, with linear modules beside."""
    g = lambda *s: f32(rng.standard_normal(s) * 0.1)  # noqa: E731
    a = lambda v: f32(np.array(v))  # noqa: E731
    c, s, p = KEY[CONV], KEY[SHORT], KEY[PIN]  # conv1 [16, 8, 3, 3], shortcut [16, 8, 1, 1]
    ts = {c + ".lora_down.weight": g(4, 8, 1, 1), c + ".lora_up.weight": g(16, 4, 1, 1),
          c + ".lora_mid.weight": g(4, 4, 3, 3), c + ".alpha": a(2.0),
          p + ".lora_down.weight": g(4, 24), p + ".lora_up.weight": g(32, 4), p + ".alpha": a(1.0)}
    write(out, RUNS["tucker"][0], ts, {"ss_network_module": "lycoris.kohya"})
    d = dict(ts)
    d[c + ".dora_scale"] = f32(np.abs(rng.standard_normal((1, 8, 1, 1))) + 0.5)
    write(out, RUNS["tuckd"][0], d, {"ss_network_module": "lycoris.kohya"})
    ts = {c + ".hada_w1_a": g(3, 16), c + ".hada_w1_b": g(3, 8), c + ".hada_t1": g(3, 3, 3, 3),
          c + ".hada_w2_a": g(3, 16), c + ".hada_w2_b": g(3, 8), c + ".hada_t2": g(3, 3, 3, 3),
          c + ".alpha": a(1.5),
          p + ".hada_w1_a": g(32, 2), p + ".hada_w1_b": g(2, 24), p + ".hada_w2_a": g(32, 2),
          p + ".hada_w2_b": g(2, 24), p + ".alpha": a(4.0)}
    write(out, RUNS["lohat"][0], ts, {"ss_network_module": "lycoris.kohya"})
    # conv1: w1 [4, 2] full, w2 Tucker (w2_a [r, 4], w2_b [r, 4], t2 [r, r, 3, 3]): 16 x 8
    ts = {c + ".lokr_w1": g(4, 2), c + ".lokr_w2_a": g(2, 4), c + ".lokr_w2_b": g(2, 4),
          c + ".lokr_t2": g(2, 2, 3, 3), c + ".alpha": a(3.0),
          p + ".lokr_w1_a": g(4, 2), p + ".lokr_w1_b": g(2, 3), p + ".lokr_w2_a": g(8, 2),
          p + ".lokr_w2_b": g(2, 8), p + ".alpha": a(1.0)}
    write(out, RUNS["lokrt"][0], ts, {"ss_network_module": "lycoris.kohya"})
    # both sides full (scale 1 whatever alpha says), and w1 factored with a full 4-D w2
    ts = {c + ".lokr_w1": g(4, 2), c + ".lokr_w2": g(4, 4, 3, 3), c + ".alpha": a(7.0),
          s + ".lokr_w1_a": g(2, 1), s + ".lokr_w1_b": g(1, 4), s + ".lokr_w2": g(8, 2, 1, 1),
          s + ".alpha": a(0.5)}
    write(out, RUNS["lokr4"][0], ts, {"ss_network_module": "lycoris.kohya"})
    # full: the weight change itself (and the bias change, left out of the analysis)
    ts = {p + ".diff": g(32, 24), p + ".diff_b": g(32), c + ".diff": f32(rng.standard_normal((16, 8, 3, 3)) * 0.02)}
    write(out, RUNS["full"][0], ts, {"ss_network_module": "lycoris.kohya"})
    # (IA)^3: 1 + weight scales the output rows (on_input 0) or the input columns (1)
    i64 = lambda v: stio.Tensor("I64", np.array(v, dtype=np.int64))  # noqa: E731
    ts = {p + ".weight": g(32), p + ".on_input": i64(0), KEY[TOQ] + ".weight": g(24), KEY[TOQ] + ".on_input": i64(1),
          c + ".weight": g(1, 16, 1, 1), c + ".on_input": i64(0), s + ".weight": g(1, 8, 1, 1), s + ".on_input": i64(1)}
    write(out, RUNS["ia3"][0], ts, {"ss_network_module": "lycoris.kohya"})
    # GLoRA: a1 [in, r], a2 [r, in], b1 [out, r], b2 [r, in]; the second without alpha
    t = KEY[TEQ]
    ts = {p + ".a1.weight": g(24, 3), p + ".a2.weight": g(3, 24), p + ".b1.weight": g(32, 3),
          p + ".b2.weight": g(3, 24), p + ".alpha": a(6.0),
          t + ".a1.weight": g(20, 2), t + ".a2.weight": g(2, 20), t + ".b1.weight": g(20, 2),
          t + ".b2.weight": g(2, 20)}
    write(out, RUNS["glora"][0], ts, {"ss_network_module": "lycoris.kohya"})
    # Diag-OFT: blocks [n, b, b] over the output rows; rescale; alpha the norm constraint
    # (0: none; conv1's 0.01 x 16 is below |Q|, so Q is scaled down)
    ts = {p + ".oft_blocks": g(8, 4, 4), p + ".rescale": f32(1 + 0.1 * rng.standard_normal((32, 1))),
          p + ".alpha": a(0.0),
          c + ".oft_blocks": g(4, 4, 4), c + ".rescale": f32(1 + 0.1 * rng.standard_normal((16, 1, 1, 1))),
          c + ".alpha": a(0.01),
          t + ".oft_blocks": g(5, 4, 4)}
    write(out, RUNS["oft"][0], ts, {"ss_network_module": "lycoris.kohya"})
    write(out, RUNS["single"][0], lora_tensors(rng, 1, [PIN, CONV]))
    write(out, RUNS["single25"][0], lora_tensors(rng, 2, [TOQ]), kohya_meta(25, 5))


def bad_cases(out, rng, castb):
    """OUTDIR/bad/CASE.safetensors and bad/cases.tsv: CASE, base, the substrings the error
    must hold ('|'-separated; @ is the file)."""
    bad = os.path.join(out, "bad")
    os.makedirs(bad)
    cases = []
    good = lora_tensors(rng, 1, [PIN])
    k = KEY[PIN]

    def add(case, ts, wants, basedir="base"):
        p = os.path.join(bad, case + ".safetensors")
        stio.write_safetensors(p, ts)
        cases.append((case, basedir, "|".join(w.replace("@", p) for w in wants)))

    add("nomatch", {"lora_unet_up_blocks_9_nothing.lora_down.weight": f32(np.ones((4, 24))),
                    "lora_unet_up_blocks_9_nothing.lora_up.weight": f32(np.ones((32, 4)))},
        ["@", "lora_unet_up_blocks_9_nothing", "matches no tensor"])
    amb = os.path.join(out, "base_amb")
    os.makedirs(amb)
    stio.write_safetensors(os.path.join(amb, "model.safetensors"),
                           {"blk.a_b.proj.weight": f32(np.ones((6, 5))), "blk.a.b_proj.weight": f32(np.ones((6, 5)))})
    add("ambiguous", {"lora_unet_blk_a_b_proj.lora_down.weight": f32(np.ones((2, 5))),
                      "lora_unet_blk_a_b_proj.lora_up.weight": f32(np.ones((6, 2)))},
        ["@", "lora_unet_blk_a_b_proj", "matches 2 tensors", "blk.a_b.proj.weight", "blk.a.b_proj.weight"],
        "base_amb")
    add("shape", dict(good, **{k + ".lora_down.weight": f32(np.ones((4, 25)))}),
        ["@", PIN + ".weight", "[32, 25]"])
    add("rank", dict(good, **{k + ".lora_up.weight": f32(np.ones((32, 3)))}),
        ["@", k, "do not fit"])
    add("alpha_zero", dict(good, **{k + ".alpha": f32(np.array(0.0))}), ["@", k + ".alpha", "is 0"])
    add("alpha_nan", dict(good, **{k + ".alpha": f32(np.array(np.nan))}), ["@", k + ".alpha", "nan"])
    add("alpha_vec", dict(good, **{k + ".alpha": f32(np.ones(2))}), ["@", k + ".alpha", "one floating number"])
    add("dora_len", dict(good, **{k + ".dora_scale": f32(np.ones((1, 23)))}),
        ["@", k + ".dora_scale", "input channels"])
    add("dora_shape", dict(good, **{k + ".dora_scale": f32(np.ones((2, 24)))}),
        ["@", k + ".dora_scale", "[1, in]"])
    add("unknown", dict(good, **{k + ".lora_foo": f32(np.ones((32, 24)))}), ["@", k + ".lora_foo", "not a kohya"])
    # LyCORIS's Tucker forms on conv1 [16, 8, 3, 3]: wrong core, ranks, kernel, a missing t2
    c = KEY[CONV]
    g = lambda *s: f32(rng.standard_normal(s) * 0.1)  # noqa: E731
    tk = {c + ".lora_down.weight": g(4, 8, 1, 1), c + ".lora_up.weight": g(16, 4, 1, 1),
          c + ".lora_mid.weight": g(4, 4, 3, 3), c + ".alpha": f32(np.array(1.0))}
    add("mid_shape", dict(tk, **{c + ".lora_mid.weight": g(4, 3, 3, 3)}),
        ["@", c + ".lora_mid.weight", "Tucker core", "r = 4"])
    add("mid_rank", dict(tk, **{c + ".lora_up.weight": g(16, 3, 1, 1)}), ["@", c, "do not fit", "Tucker"])
    add("mid_kernel", dict(tk, **{c + ".lora_mid.weight": g(4, 4, 1, 9)}),
        ["@", c + ".lora_mid.weight", "kernel", CONV + ".weight"])
    add("mid_alpha_nan", dict(tk, **{c + ".alpha": f32(np.array(np.nan))}), ["@", c + ".alpha", "nan"])
    add("hada_t2", {c + ".hada_w1_a": g(3, 16), c + ".hada_w1_b": g(3, 8), c + ".hada_t1": g(3, 3, 3, 3),
                    c + ".hada_w2_a": g(3, 16), c + ".hada_w2_b": g(3, 8)}, ["@", c + ".hada_t1", "no hada_t2"])
    add("hada_rank", {c + ".hada_w1_a": g(3, 16), c + ".hada_w1_b": g(3, 8), c + ".hada_t1": g(3, 3, 3, 3),
                      c + ".hada_w2_a": g(2, 16), c + ".hada_w2_b": g(3, 8), c + ".hada_t2": g(3, 3, 3, 3)},
        ["@", c + ".hada_w2_a", "[r, out]"])
    add("lokr_t2", {c + ".lokr_w1": g(4, 2), c + ".lokr_w2_a": g(2, 4), c + ".lokr_w2_b": g(2, 4),
                    c + ".lokr_t2": g(3, 3, 3, 3)}, ["@", c + ".lokr_t2", "Tucker core", "r = 2"])
    add("lokr_w2_4d", {c + ".lokr_w1": g(4, 2), c + ".lokr_w2": g(4, 4, 1, 9)},
        ["@", c + ".lokr_w2", "kernel", CONV + ".weight"])
    # LyCORIS's other algorithms: refused by name
    add("full_shape", {k + ".diff": g(24, 32)}, ["@", k + ".diff", "[24, 32]", PIN + ".weight"])
    add("full_nan", {k + ".diff": f32(np.full((32, 24), np.nan))}, ["@", k, "NaN"])
    add("diff_b_alone", {k + ".diff_b": g(32), KEY[TOQ] + ".diff": g(24, 24)}, ["@", k, "without diff"])
    add("ia3_noflag", {k + ".weight": g(32), KEY[TOQ] + ".on_input": f32(np.array(0.0)), KEY[TOQ] + ".weight": g(24)},
        ["@", k + ".weight", "no on_input"])
    add("ia3_flag", {k + ".weight": g(32), k + ".on_input": f32(np.array(2.0))}, ["@", k + ".on_input", "0 (output rows"])
    add("ia3_len", {k + ".weight": g(24), k + ".on_input": f32(np.array(0.0))}, ["@", k + ".weight", "output rows differ"])
    add("glora_conv", {c + ".a1.weight": g(8, 4, 1, 1), c + ".a2.weight": g(4, 8, 1, 1),
                       c + ".b1.weight": g(16, 4, 1, 1), c + ".b2.weight": g(4, 8, 3, 3)},
        ["@", c + ".a1.weight", "GLoRA on linear modules", "not on convs"])
    add("glora_rank", {k + ".a1.weight": g(24, 4), k + ".a2.weight": g(3, 24), k + ".b1.weight": g(32, 3),
                       k + ".b2.weight": g(3, 24)}, ["@", k + ".a1.weight", "a1 [in, r]"])
    add("glora_half", {k + ".a1.weight": g(24, 3), k + ".a2.weight": g(3, 24), k + ".b1.weight": g(32, 3)},
        ["@", k, "no b2.weight"])
    add("glora_bm", {k + ".a1.weight": g(24, 3), k + ".bm.weight": g(3, 3, 3, 3)}, ["@", k + ".bm.weight", "GLoRA"])
    add("boft", {k + ".oft_blocks": g(2, 4, 8, 8), k + ".rescale": g(32, 1)}, ["@", k + ".oft_blocks", "BOFT"])
    add("oft_rows", {k + ".oft_blocks": g(4, 4, 4)}, ["@", k + ".oft_blocks", "[4, 4, 4]", PIN + ".weight"])
    add("oft_rescale", {k + ".oft_blocks": g(8, 4, 4), k + ".rescale": g(24, 1)}, ["@", k + ".rescale", "out = 32"])
    add("oft_block", {k + ".oft_blocks": g(1, 1025, 1025)}, ["@", k + ".oft_blocks", "up to 1024"])
    add("mid_huge", {c + ".lora_down.weight": g(1, 1 << 16, 1, 1), c + ".lora_up.weight": g(16, 1, 1, 1),
                     c + ".lora_mid.weight": g(1, 1, 1 << 13, 1)},
        ["@", c, "more than 268435456 entries"])
    add("oft_alpha", {k + ".oft_blocks": g(8, 4, 4), k + ".alpha": f32(np.array(-1.0))}, ["@", k + ".alpha", "constraint"])
    add("halfpair", {k + ".lora_down.weight": f32(np.ones((4, 24)))}, ["@", k, "no lora_up.weight"])
    add("nan", dict(good, **{k + ".lora_up.weight": f32(np.full((32, 4), np.nan))}), ["@", k, "NaN"])
    # folders: a name and its metadata disagree; epochs with and without ss_steps
    def folder(case, files, wants):
        for rel, meta in files:
            write(bad, os.path.join(case, rel), good, meta)
        p = os.path.join(bad, case)
        cases.append((case, "base", "|".join(w.replace("@", p) for w in wants)))
    folder("steps_meta", [("a-step00000010.safetensors", kohya_meta(11, 1))],
           ["a-step00000010.safetensors", "says step 10", "ss_steps says 11"])
    folder("several", [("a.safetensors", None), ("b.safetensors", kohya_meta(5, 1))],
           ["@", "2 kohya files without a step", "a.safetensors", "b.safetensors"])
    folder("epochs_mixed", [("a-000001.safetensors", kohya_meta(5, 1)), ("a-000002.safetensors", None)],
           ["@", "1 of its 2 per-epoch files"])
    with open(os.path.join(bad, "cases.tsv"), "w") as f:
        for c, b, w in cases:
            f.write(f"{c}\t{b}\t{w}\n")


# ---------------------------------------------------------------- reference merges
def merged(ts, key, w0):
    """W_t of the module of KEY (w0 as stored, float64), by the family its keys say."""
    g = lambda s: ts.get(key + "." + s)  # noqa: E731
    alpha = g("alpha")
    if g("diff") is not None:  # full.py: W0 + diff
        return w0 + g("diff")
    if g("on_input") is not None:  # ia3.py make_weight: W0 * (weight + 1), rows or columns
        w = g("weight").reshape(-1) + 1.0
        if int(g("on_input")):
            return w0 * w.reshape((1, -1) + (1,) * (w0.ndim - 2))
        return w0 * w.reshape((-1,) + (1,) * (w0.ndim - 1))
    if g("oft_blocks") is not None:  # diag_oft.py get_r / make_weight, in float64
        blk = g("oft_blocks")
        nb, b, _ = blk.shape
        q = blk - blk.transpose(0, 2, 1)
        c = float(alpha) * w0.shape[0] if alpha is not None else 0.0
        qn = np.linalg.norm(q) + 1e-8
        if c > 0 and qn > c:
            q = q * c / qn
        eye = np.eye(b)
        r = np.stack([(eye + q[k]) @ np.linalg.inv(eye - q[k]) for k in range(nb)])
        w = np.einsum("knm,kn...->km...", r, w0.reshape((nb, b) + w0.shape[1:])).reshape(w0.shape)
        return w * g("rescale") if g("rescale") is not None else w
    if g("a1.weight") is not None:  # glora.py make_weight: (b1 b2 + W0 a1 a2) * alpha / r
        r = g("a2.weight").shape[0]
        s = float(alpha) / r if alpha is not None else 1.0
        return w0 + (g("b1.weight") @ g("b2.weight") + w0 @ g("a1.weight") @ g("a2.weight")) * s
    if g("lora_down.weight") is not None:
        down, up, mid = g("lora_down.weight"), g("lora_up.weight"), g("lora_mid.weight")
        r = down.shape[0]
        s = float(alpha) / r if alpha is not None else 1.0
        if mid is None:
            d = up.reshape(up.shape[0], r) @ down.reshape(r, -1) * s
        else:  # locon.py make_weight: rebuild_tucker(mid, up^T, down)
            d = np.einsum("ijkl,ip,jr->prkl", mid, up.reshape(up.shape[0], r).T, down.reshape(r, -1)) * s
    elif g("hada_w1_a") is not None:
        r = g("hada_w1_b").shape[0]
        s = float(alpha) / r if alpha is not None else 1.0
        if g("hada_t1") is None:
            d = (g("hada_w1_a") @ g("hada_w1_b")) * (g("hada_w2_a") @ g("hada_w2_b")) * s
        else:  # functional/loha.py HadaWeightTucker: einsum("i j ..., j r, i p -> p r ...")
            h1 = np.einsum("ijkl,jr,ip->prkl", g("hada_t1"), g("hada_w1_b"), g("hada_w1_a"))
            h2 = np.einsum("ijkl,jr,ip->prkl", g("hada_t2"), g("hada_w2_b"), g("hada_w2_a"))
            d = h1 * h2 * s
    else:
        sides, r = [], None
        for w in ("lokr_w1", "lokr_w2"):
            if g(w) is not None:
                sides.append(g(w))
            elif w == "lokr_w2" and g("lokr_t2") is not None:  # rebuild_tucker(t2, w2_a, w2_b)
                sides.append(np.einsum("ijkl,ip,jr->prkl", g("lokr_t2"), g(w + "_a"), g(w + "_b")))
                r = r or g(w + "_b").shape[0]
            else:
                sides.append(g(w + "_a") @ g(w + "_b"))
                r = r or g(w + "_b").shape[0]
        s = float(alpha) / r if alpha is not None and r else 1.0
        w1, w2 = sides
        w1 = w1.reshape(w1.shape + (1,) * (w2.ndim - w1.ndim))  # make_kron: w1 unsqueezed
        d = np.kron(w1, w2) * s
    v = w0 + d.reshape(w0.shape)
    ds = g("dora_scale")
    if ds is None:
        return v
    if ds.shape[0] == 1 and ds.shape[1] != 1 or (ds.shape[0] == 1 and w0.shape[0] != 1):
        axes = (0,) + tuple(range(2, w0.ndim))   # column norms: per input channel
    else:
        axes = tuple(range(1, w0.ndim))          # row norms
    n = np.sqrt(np.sum(v * v, axis=axes, keepdims=True))
    return v * (ds / (n + EPS[ts["__dtype__" + key + ".dora_scale"]]))


def load(path):
    raw, _ = stio.read_safetensors(path)
    ts = {k: v.astype(np.float64) for k, (_, v) in raw.items()}
    for k, (dt, _) in raw.items():
        ts["__dtype__" + k] = dt
    return ts


def check(a):
    braw, _ = stio.read_safetensors(os.path.join(a.data, "base", "model.safetensors"))
    base = {k: v.astype(np.float64) for k, (_, v) in braw.items()}
    fails, worst, n = [], [0.0, 0.0], 0
    with h5py.File(a.h5, "r") as h:
        for run in a.runs.split(","):
            g = h["runs"][run]
            method = g.attrs["method"]
            method = method.decode() if isinstance(method, bytes) else method
            want = {"dcol": "dora", "drow": "dora", "depoch": "lora", "onet": "lora", "tucker": "lora",
                    "tuckd": "dora", "lohat": "loha", "lokrt": "lokr", "lokr4": "lokr",
                    "single": "lora", "single25": "lora", "full": "ft"}.get(run, run)
            if method != want:
                fails.append(f"{run}: method attribute '{method}', expected '{want}'")
            mods = [m.decode() if isinstance(m, bytes) else m for m in g["modules"][()]]
            dm, dd = g["delta_m"][()], g["delta_d"][()]
            files = RUNS[run]
            if len(g["steps"][()]) != len(files):
                fails.append(f"{run}: {len(g['steps'][()])} steps, expected {len(files)}")
                continue
            for si, rel in enumerate(files):
                ts = load(os.path.join(a.data, rel))
                keys = {m[:-len(".weight")] for m in mods}
                have = {KEY[m] for m in keys}
                infile = {k.split(".")[0] for k in ts if not k.startswith("__")}
                if have != infile:
                    fails.append(f"{run} {rel}: modules {sorted(have)} but the file has {sorted(infile)}")
                for li, name in enumerate(mods):
                    w0 = base[name]
                    wt = merged(ts, KEY[name[:-len(".weight")]], w0)
                    omc, n0, n1 = one_minus_cos(w0.reshape(w0.shape[0], -1), wt.reshape(wt.shape[0], -1))
                    for k, (what, got, ref) in enumerate((("delta_m", dm[si, li], np.mean(np.abs(n1 - n0))),
                                                         ("delta_d", dd[si, li], np.mean(omc)))):
                        ok = abs(got - ref) <= 1e-15 + a.rtol * abs(ref)
                        if abs(ref) > 1e-12:
                            worst[k] = max(worst[k], abs(got - ref) / abs(ref))
                        if not np.isfinite(ref) or not ok:
                            fails.append(f"{run} {what} {rel} {name}: tool {got!r} ref {ref!r}")
                    n += 1
    for f in fails:
        print("FAIL " + f)
    print(f"worst relative: delta_m {worst[0]:.3g}, delta_d {worst[1]:.3g} ({n} module-steps in runs {a.runs})")
    return 1 if fails else 0


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
    a = ap.parse_args()
    if a.cmd == "gen":
        gen(a.out, a.seed)
        return 0
    return check(a)


if __name__ == "__main__":
    sys.exit(main())
