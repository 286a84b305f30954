#!/usr/bin/env python3
"""tests/sh/mem.sh's checks.
  check_mem.py same A.h5 B.h5 TOL     every number of two results files alike: floats to TOL
                                      relative (0: bit for bit), integers and strings equal
  check_mem.py numpy DIR RUN OUT.h5   delta_m, delta_d (and per-row m, cos when stored) of run
                                      RUN against NumPy float64 merges W0 + s B A (DoRA:
                                      m * V / |V|) of the adapters bench_steps.py wrote in DIR,
                                      to 1e-9 (relative; per-row cos: absolute)
"""
import glob
import json
import os
import sys

import h5py
import numpy as np

import stio


def same(a, b, tol):
    fa, fb = h5py.File(a, "r"), h5py.File(b, "r")
    names_a, names_b = [], []
    fa.visit(names_a.append)
    fb.visit(names_b.append)
    # the stamps and command line name the files and options, not numbers
    skip = ("checkpoint_stamps", "command_line", "created")
    if sorted(names_a) != sorted(names_b):
        sys.exit(f"different datasets: {sorted(set(names_a) ^ set(names_b))}")
    worst, n = 0.0, 0
    for name in names_a:
        x = fa[name]
        if not isinstance(x, h5py.Dataset) or name.split("/")[-1] in skip:
            continue
        x, y = x[()], fb[name][()]
        if np.asarray(x).dtype.kind == "f":
            x, y = np.asarray(x, float), np.asarray(y, float)
            if x.shape != y.shape or not np.array_equal(np.isnan(x), np.isnan(y)):
                sys.exit(f"{name}: shapes or NaN places differ")
            ok = ~np.isnan(x)
            d = np.abs(x[ok] - y[ok]) / np.maximum(np.abs(x[ok]), 1e-300)
            w = float(d.max()) if d.size else 0.0
            if w > tol:
                sys.exit(f"{name}: relative difference {w:.3g} > {tol}")
            worst, n = max(worst, w), n + 1
        elif not np.array_equal(np.asarray(x), np.asarray(y)):
            sys.exit(f"{name}: differs")
    print(f"{n} float datasets alike, worst relative difference {worst:.3g}")


def st_read(path):
    """{name: float64 array} of a safetensors file (stio.py's reader)."""
    return {k: np.asarray(v, np.float64) for k, (_, v) in stio.read_safetensors(path)[0].items()}


def numpy_check(d, run, out):
    base = st_read(os.path.join(d, "base.safetensors"))
    f = h5py.File(out, "r")
    g = f["runs"][run]
    mods = [m.decode() if isinstance(m, bytes) else m for m in g["modules"][()]]
    steps = list(g["steps"][()])
    dm, dd = g["delta_m"][()], g["delta_d"][()]
    worst = 0.0
    for si, step in enumerate(steps):
        ck = os.path.join(d, "run", f"checkpoint-{step}")
        cfg = json.load(open(os.path.join(ck, "adapter_config.json")))
        ad = st_read(os.path.join(ck, "adapter_model.safetensors"))
        s = cfg["lora_alpha"] / cfg["r"]
        for li, name in enumerate(mods):
            w0 = base[name].T if cfg.get("fan_in_fan_out") else base[name]  # stored [in, out]
            p = "base_model.model." + name[: -len(".weight")]
            v = w0 + s * ad[p + ".lora_B.weight"] @ ad[p + ".lora_A.weight"]
            m0, mv = np.linalg.norm(w0, axis=1), np.linalg.norm(v, axis=1)
            cos = np.sum(w0 * v, axis=1) / (m0 * mv)
            mt = mv
            if p + ".lora_magnitude_vector" in ad:
                mt = np.abs(ad[p + ".lora_magnitude_vector"])
            want_m, want_d = np.mean(np.abs(mt - m0)), np.mean(1 - cos)
            for got, want, what in ((dm[si, li], want_m, "delta_m"), (dd[si, li], want_d, "delta_d")):
                e = abs(got - want) / abs(want)
                worst = max(worst, e)
                if e > 1e-9:
                    sys.exit(f"{name} step {step} {what}: {got!r} against NumPy {want!r} ({e:.3g})")
            if "per_row" in g:  # module names hold no '/' or '%': link names as they are
                pr = g["per_row"][name]
                e = max(np.max(np.abs(pr["m"][si] - mt) / mt), np.max(np.abs(pr["cos"][si] - cos)),
                        np.max(np.abs(pr["m0"][()] - m0) / m0))
                worst = max(worst, e)
                if e > 1e-9:
                    sys.exit(f"{name} step {step} per-row m0, m or cos: {e:.3g} from NumPy")
    print(f"{len(steps)} steps x {len(mods)} modules against NumPy: worst relative error {worst:.3g}")


if __name__ == "__main__":
    if sys.argv[1] == "same":
        same(sys.argv[2], sys.argv[3], float(sys.argv[4]))
    elif sys.argv[1] == "numpy":
        numpy_check(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(__doc__)
