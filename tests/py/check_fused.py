#!/usr/bin/python3
"""Check the parts of a fused weight against NumPy.

    check_fused.py DATA CASE OUT.h5 [RUN [PLAIN.h5]]

OUT.h5 holds the run RUN (default "ft"; "lora": W = W0 + (alpha / r) B A from
the adapter) of DATA/CASE (gen_fused.py). The fused tensor must be
gone, replaced by NAME[part] for each part, with the rows cases.json gives; the
changed part's dM and dD equal a float64 NumPy reference over its rows (rtol
1e-9), every other part's dM and dD exactly 0. With PLAIN.h5 (the run RUN of
DATA/CASE_plain, the same weights unfused) each part's dM and dD also equal
those of its unfused tensor NAME.PART.weight to 1e-12 relative. Exit 0 if all
hold.
"""

import json
import os
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stio  # noqa: E402
from check_layouts import reference  # noqa: E402


def weights(data, case, run):
    """The case's cases.json entry, and its fused weight W0 and W_t of RUN ("ft", or "lora":
    W0 + (alpha / r) B A from the adapter) in float64, [out, in] (GPT-2's Conv1D turned)."""
    c = next(x for x in json.load(open(os.path.join(data, "cases.json"))) if x["case"] == case)
    name = c["tensor"]

    def load(sub):
        w = stio.load_model(os.path.join(data, case, sub))[name][1].astype(np.float64)
        return w.T if case == "gpt2" else w

    w0 = load("base")
    if run == "ft":
        return c, w0, load(os.path.join("ft", "checkpoint-1"))
    ck = os.path.join(data, case, "lora", "checkpoint-1")
    ad = {k: v[1].astype(np.float64) for k, v in
          stio.read_safetensors(os.path.join(ck, "adapter_model.safetensors"))[0].items()}
    cfg = json.load(open(os.path.join(ck, "adapter_config.json")))
    m = "base_model.model." + name[:-len(".weight")]
    return c, w0, w0 + cfg["lora_alpha"] / cfg["r"] * ad[m + ".lora_B.weight"] @ ad[m + ".lora_A.weight"]


def main():
    data, case, out = sys.argv[1:4]
    run = sys.argv[4] if len(sys.argv) > 4 else "ft"
    c, w0, wt = weights(data, case, run)
    name = c["tensor"]
    bad = []
    plain = {}
    if len(sys.argv) > 5:
        with h5py.File(sys.argv[5], "r") as f:
            g = f["runs/" + run]
            for li, m in enumerate(g["modules"].asstr()[()]):
                plain[m] = (g["delta_m"][0, li], g["delta_d"][0, li])
    with h5py.File(out, "r") as f:
        g = f["runs/" + run]
        mods = [m.decode() if isinstance(m, bytes) else m for m in g["modules"][()]]
        if name in mods:
            bad.append(f"{name} analysed whole")
        for part, rows in c["parts"].items():
            m = f"{name}[{part}]"
            if m not in mods:
                bad.append(f"no module {m} in {mods}")
                continue
            li = mods.index(m)
            if g["rows"][li] != len(rows) or g["cols"][li] != w0.shape[1]:
                bad.append(f"{m}: {g['rows'][li]} x {g['cols'][li]} rows, want {len(rows)}")
            rm, rd = reference(w0[rows], wt[rows])
            got_m, got_d = g["delta_m"][0, li], g["delta_d"][0, li]
            if part == c["changed"]:
                if not (rm > 0 and abs(got_m - rm) <= 1e-9 * rm and abs(got_d - rd) <= 1e-9 * rd):
                    bad.append(f"{m}: dM {got_m!r} dD {got_d!r}, NumPy {rm!r} {rd!r}")
            elif got_m != 0.0 or got_d != 0.0:
                bad.append(f"{m}: unchanged part has dM {got_m!r} dD {got_d!r}, want 0")
            if len(sys.argv) > 5:
                pm, pd = plain.get(f"{name[:-len('.weight')]}.{part}.weight", (None, None))
                if pm is None or not (abs(got_m - pm) <= 1e-12 * abs(pm) and
                                      abs(got_d - pd) <= 1e-12 * abs(pd)):
                    bad.append(f"{m}: dM {got_m!r} dD {got_d!r}, unfused {pm!r} {pd!r}")
    for b in bad[:5]:
        print(f"{case} {run}: {b}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
