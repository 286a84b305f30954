#!/usr/bin/python3
"""A GPT-2 study: full FT of Conv1D weights and a fan_in_fan_out LoRA run, one file.

    check_conv1d.py DATA OUT.h5

DATA is gen_layouts.py's folder. Both runs must list c_attn with rows = 3 H (the
output features) and cols = H; every FT module's dM and dD equal a float64 NumPy
reference taken over the rows of W.T ([out, in]), and the LoRA run's those of
W0.T + (alpha / r) B A, within 1e-9 relative. Exit 0 if all hold.
"""

import json
import os
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stio  # noqa: E402
from check_layouts import reference  # noqa: E402


def main():
    data, out = sys.argv[1], sys.argv[2]
    base = {k: v[1].astype(np.float64) for k, v in
            stio.load_model(os.path.join(data, "gpt2_base")).items()}
    ft = {k: v[1].astype(np.float64) for k, v in
          stio.load_model(os.path.join(data, "gpt2_ft", "checkpoint-1")).items()}
    ck = os.path.join(data, "gpt2_lora", "checkpoint-1")
    ad = {k: v[1].astype(np.float64) for k, v in
          stio.read_safetensors(os.path.join(ck, "adapter_model.safetensors"))[0].items()}
    cfg = json.load(open(os.path.join(ck, "adapter_config.json")))
    s = cfg["lora_alpha"] / cfg["r"]
    bad = []
    with h5py.File(out, "r") as f:
        for run in ("ft", "lora"):
            g = f["runs/" + run]
            mods = [m.decode() if isinstance(m, bytes) else m for m in g["modules"][()]]
            for li, m in enumerate(mods):
                w0 = base[m].T
                if m.endswith("c_attn.weight") and (g["rows"][li], g["cols"][li]) != w0.shape:
                    bad.append(f"{run} {m}: rows x cols {g['rows'][li]} x {g['cols'][li]}, "
                               f"want {w0.shape}")
                if run == "ft":
                    wt = ft[m].T
                else:
                    p = "base_model.model." + m[:-len(".weight")]
                    wt = w0 + s * ad[p + ".lora_B.weight"] @ ad[p + ".lora_A.weight"]
                if m == "transformer.wte.weight":
                    w0, wt = base[m], ft[m]
                rm, rd = reference(w0, wt)
                for what, got, ref in (("dM", g["delta_m"][0, li], rm),
                                       ("dD", g["delta_d"][0, li], rd)):
                    if not abs(got - ref) <= 1e-9 * abs(ref):
                        bad.append(f"{run} {m} {what}: {got!r} vs NumPy {ref!r}")
            if run == "lora" and mods != [m for m in mods if m.endswith("c_attn.weight")]:
                bad.append(f"lora modules {mods}")
    for b in bad[:6]:
        print(b)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
