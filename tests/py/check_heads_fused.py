#!/usr/bin/python3
"""Per-head values of the parts of a fused projection against NumPy.

    check_heads_fused.py DATA CASE OUT.h5 [RUN]

DATA/CASE is a case of tests/py/gen_fused.py (its cases.json: the tensor, and for each part
the rows of the [out, in] weight it owns, in the order the modelling code's view gives them,
so head j of a part is its rows j*hd .. (j+1)*hd - 1). The heads each part should have
follow the model's transformers attention module, written here from the case's config
(not from the tool): q has the attention heads; k and v as many as the model keeps
key/value heads (GPT-2, GPT-NeoX, Qwen, Baichuan, Falcon without multi_query: all of them;
Falcon multi_query and MPT multiquery_attention: 1; Falcon new_decoder_architecture
num_kv_heads; Phi-3 num_key_value_heads). Megatron's num_query_groups is no transformers
key: its k and v have no heads (a note says so). RUN (default "ft"; "lora": W0 +
(alpha / r) B A from the adapter) must have /runs/RUN/heads with exactly these modules, and
each head's dM (mean | |W_t| - |W0| | over its rows) and dD (mean 1 - cos, as
|w0/|w0| - wt/|wt||^2 / 2) equal to a float64 reference to rtol 1e-9 (exactly 0 for the
heads of an unchanged part). Exit 0 if all hold.
"""
import json
import os
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_fused import weights  # noqa: E402

RTOL = 1e-9


def kv_heads(case, cfg):
    nh = cfg.get("num_attention_heads") or cfg.get("n_head") or cfg.get("n_heads")
    if case.startswith("falcon"):
        if cfg.get("new_decoder_architecture") or not cfg.get("multi_query", True):
            return nh, cfg.get("num_kv_heads") or nh
        return nh, 1
    if case.startswith("mpt"):
        t = cfg.get("attn_config", {}).get("attn_type", "multihead_attention")
        return nh, {"multihead_attention": nh, "multiquery_attention": 1}[t]
    if case.startswith("megatron"):
        return nh, None
    return nh, cfg.get("num_key_value_heads") or nh


def main():
    data, case, out = sys.argv[1:4]
    run = sys.argv[4] if len(sys.argv) > 4 else "ft"
    c, w0, wt = weights(data, case, run)
    name = c["tensor"]
    cfg = json.load(open(os.path.join(data, case, "base", "config.json")))
    nh, nkv = kv_heads(case, cfg)
    want = {p: n for p, n in (("q", nh), ("k", nkv), ("v", nkv)) if p in c["parts"] and n}
    bad, nvals = [], 0
    with h5py.File(out, "r") as f:
        g = f["runs/" + run]
        if "heads" not in g:
            print(f"FAIL {case}: no heads group, want parts {sorted(want)}")
            return 1
        h = g["heads"]
        mods = list(h["modules"].asstr()[()])
        exp_mods = sorted(f"{name}[{p}]" for p in c["parts"] if p in want)
        if sorted(mods) != exp_mods:  # in the order of /runs/RUN/modules
            bad.append(f"heads modules {mods}, want {exp_mods}")
        off, dm, dd = h["offset"][()], h["delta_m"][()], h["delta_d"][()]
        for i, m in enumerate(mods):
            p = m[len(name) + 1:-1]
            if p not in want:
                continue
            rows = c["parts"][p]
            n = want[p]
            hd = len(rows) // n
            if off[i + 1] - off[i] != n or len(rows) != n * hd or h.attrs["head_dim"] != hd:
                bad.append(f"{m}: {off[i + 1] - off[i]} heads of {h.attrs['head_dim']}, want {n} of {hd}")
                continue
            a, b = w0[rows], wt[rows]
            m0, mt = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
            d = a / m0[:, None] - b / mt[:, None]
            ref_m = np.abs(mt - m0).reshape(n, hd).mean(axis=1)
            ref_d = (0.5 * np.sum(d * d, axis=1)).reshape(n, hd).mean(axis=1)
            for key, ref, got in (("delta_m", ref_m, dm[0, off[i]:off[i + 1]]),
                                  ("delta_d", ref_d, dd[0, off[i]:off[i + 1]])):
                nvals += n
                if p != c["changed"]:
                    ok = np.all(got == 0.0)
                else:
                    ok = np.all(np.abs(got - ref) <= RTOL * np.abs(ref)) and np.all(ref > 0)
                if not ok:
                    bad.append(f"{m} {key}: {got.tolist()}, NumPy {ref.tolist()}")
    for b in bad[:5]:
        print("FAIL", case, b)
    if bad:
        return 1
    print(f"OK {case} {run}: heads of {', '.join(mods)}; {nvals} per-head values within rtol {RTOL:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
