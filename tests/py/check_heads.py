#!/usr/bin/python3
"""check_heads.py --base BASEDIR --h5 OUT.h5 NAME=RUN ...

Per-head values of `analyze` (/runs/NAME/heads, docs/hdf5.md) against a float64 NumPy
reference. The heads come from BASEDIR/config.json as the tool documents: q_proj rows
by num_attention_heads, k_proj and v_proj rows by num_key_value_heads (num_attention_heads
when absent), head_dim from config (else hidden_size / num_attention_heads); a module whose
rows are not heads x head_dim has no heads. The per-row |dM| and 1 - cos come from
check_adapters.reference_run (merged adapters or full checkpoints, cancellation-free);
a head's value is the mean over its head_dim consecutive rows. Checked: the modules with
heads, their head counts and offsets, and every delta_m / delta_d [S, NH] to rtol 1e-9
(atol 1e-15 for a reference of 0). Exit 0 if all hold, 1 otherwise.
"""
import argparse
import json
import os
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stio  # noqa: E402
from check_adapters import Failures, reference_run  # noqa: E402

RTOL, ATOL = 1e-9, 1e-15


def kind(name):
    n = name[: -len(".weight")] if name.endswith(".weight") else name
    return n.rsplit(".", 1)[-1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--h5", required=True)
    ap.add_argument("runs", nargs="+")
    a = ap.parse_args()
    cfg = json.load(open(os.path.join(a.base, "config.json")))
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads") or nh
    hd = cfg.get("head_dim") or cfg["hidden_size"] // nh
    base = {n: np.asarray(v, dtype=np.float64)
            for n, (dt, v) in stio.load_model(a.base).items() if dt in stio.FLOAT_DTYPES}
    fail = Failures()
    f = h5py.File(a.h5, "r")
    worst, nvals = 0.0, 0
    for spec in a.runs:
        name, path = spec.split("=", 1)
        ref = reference_run(base, path, None, fail, f"ref/{name}")
        g = f[f"runs/{name}"]
        mods = list(g["modules"].asstr()[()])
        want = []
        for m in mods:
            n = {"q_proj": nh, "k_proj": nkv, "v_proj": nkv}.get(kind(m), 0)
            if n and ref["per"][m]["rows"] == n * hd:
                want.append((m, n))
        if "heads" not in g:
            fail(f"{name}: no heads group, expected {len(want)} modules with heads")
            continue
        h = g["heads"]
        got = list(h["modules"].asstr()[()])
        if got != [m for m, _ in want]:
            fail(f"{name}: heads modules {got}, expected {[m for m, _ in want]}")
            continue
        off = h["offset"][()]
        if list(h["heads"][()]) != [n for _, n in want] or list(off) != list(np.cumsum([0] + [n for _, n in want])):
            fail(f"{name}: heads {list(h['heads'][()])} offset {list(off)}")
            continue
        dm, dd = h["delta_m"][()], h["delta_d"][()]
        S = len(ref["steps"])
        if dm.shape != (S, off[-1]) or dd.shape != (S, off[-1]):
            fail(f"{name}: heads delta_m/delta_d shape {dm.shape}, expected {(S, off[-1])}")
            continue
        for i, (m, n) in enumerate(want):
            p = ref["per"][m]
            for s in range(S):
                for key, rows, tool in (("delta_m", p["row_dm"][s], dm), ("delta_d", p["row_dd"][s], dd)):
                    exp = rows.reshape(n, hd).mean(axis=1)
                    t = tool[s, off[i]:off[i + 1]]
                    err = np.abs(t - exp)
                    bad = err > ATOL + RTOL * np.abs(exp)
                    nvals += n
                    worst = max(worst, float(np.max(err / np.maximum(np.abs(exp), 1e-300))))
                    if bad.any() or np.isnan(t).any():
                        j = int(np.argmax(err))
                        fail(f"{name} step {ref['steps'][s]} {m} head {j}: {key} {t[j]!r}, reference {exp[j]!r}")
    print(f"worst relative error per head: {worst:.3g}")
    if fail.msgs:
        print(f"check_heads: {len(fail.msgs)} failure(s)")
        return 1
    print(f"check_heads: OK, {nvals} per-head values within rtol {RTOL:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
