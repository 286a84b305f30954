#!/usr/bin/env python3
"""Write a results file in the layout of docs/hdf5.md directly, for the figure and report
tests: gen_big_study.py OUT.h5 [RUNS STEPS LAYERS]. Default 6 runs (ft, lora, dora, two
of each) x 20 steps x 32 layers, q_proj and v_proj in each layer. The runs save at
different step intervals (real step numbers differ between them), the dM and dD values
grow with the step at a rate that depends on the layer, and one run's source path holds
characters HTML must escape. Seeded: the same file every time."""
import sys

import h5py
import numpy as np

out = sys.argv[1]
nruns, nsteps, nlayers = (int(a) for a in sys.argv[2:5]) if len(sys.argv) > 4 else (6, 20, 32)
rng = np.random.default_rng(18)
methods = ["ft", "lora", "dora"]
slope = {"ft": -0.6, "lora": 0.8, "dora": -0.3}
scale = {"ft": (0.012, 0.004), "lora": (0.35, 0.13), "dora": (1.0, 0.24)}
kinds = ["q_proj", "v_proj"]
mods = [f"model.layers.{l}.self_attn.{k}.weight" for l in range(nlayers) for k in kinds]
layer = np.array([l for l in range(nlayers) for _ in kinds], dtype=np.int32)
s = h5py.string_dtype()
reg = {c: [] for c in ("run", "method", "module_kind", "n", "layers", "slope", "intercept",
                       "pearson_r", "within_step_r", "defined", "within_step_defined")}


def regress(name, m, dd, dm):
    """The /regression rows of a run, as analyze computes them (docs/hdf5.md)."""
    for ki, k in enumerate(kinds):
        x, y = dd[:, ki::len(kinds)], dm[:, ki::len(kinds)]
        xc, yc = x - x.mean(axis=1, keepdims=True), y - y.mean(axis=1, keepdims=True)
        ok, wok = x.size >= 2, xc.std() > 0 and yc.std() > 0  # undefined: stored as 0
        slope_, icpt = np.polyfit(x.ravel(), y.ravel(), 1) if ok else (0.0, 0.0)
        r_ = np.corrcoef(x.ravel(), y.ravel())[0, 1] if ok else 0.0
        wr = np.corrcoef(xc.ravel(), yc.ravel())[0, 1] if wok else 0.0
        for c, v in zip(reg, (name, m, k, x.size, x.shape[1], slope_, icpt, r_, wr, ok, wok)):
            reg[c].append(v)


with h5py.File(out, "w", track_order=True) as f:
    f.attrs["tool_version"] = "gen_big_study"
    f.attrs["command_line"] = "tests/py/gen_big_study.py " + " ".join(sys.argv[1:])
    f.attrs["created"] = "2026-12-02T00:00:00Z"
    f.attrs["layout_version"] = np.int32(1)
    runs = f.create_group("runs", track_order=True)
    for i in range(nruns):
        m = methods[i % 3]
        name = f"{m}-{i // 3 + 1}"
        every = (50, 25, 40)[i % 3] * (i // 3 + 1)
        steps = np.arange(1, nsteps + 1, dtype=np.int64) * every
        g = runs.create_group(name)
        g.attrs["method"] = m
        g.attrs["source_path"] = f"/runs/{name}" + ("/<b>&'q\"" if i == 1 else "")
        g.attrs["base_path"] = "/models/base-32L"
        g.create_dataset("steps", data=steps, dtype="<i8")
        g.create_dataset("checkpoints", data=[f"/runs/{name}/checkpoint-{t}" for t in steps], dtype=s)
        g.create_dataset("checkpoint_stamps", data=["1:1"] * nsteps, dtype=s)
        g.create_dataset("modules", data=mods, dtype=s)
        g.create_dataset("layer", data=layer, dtype="<i4")
        g.create_dataset("rows", data=np.full(len(mods), 4096), dtype="<i8")
        g.create_dataset("cols", data=np.full(len(mods), 4096), dtype="<i8")
        g.create_dataset("rank", data=np.full(len(mods), 0 if m == "ft" else 16), dtype="<i4")
        t = (np.arange(1, nsteps + 1) / nsteps)[:, None]
        lf = 0.5 + layer[None, :] / max(nlayers - 1, 1)
        dd0, dm0 = scale[m]
        noise = rng.standard_normal((nsteps, len(mods)))
        dd = dd0 * t * lf * (1 + 0.1 * noise)
        dm = dm0 * t * (1 + slope[m] * (lf - 1)) * (1 + 0.05 * rng.standard_normal(dd.shape))
        dm, dd = np.abs(dm), np.abs(dd)
        g.create_dataset("delta_m", data=dm, dtype="<f8")
        g.create_dataset("delta_d", data=dd, dtype="<f8")
        regress(name, m, dd, dm)
        g.create_dataset("zero_rows", data=np.zeros(dd.shape, dtype=np.int64), dtype="<i8")
    r = f.create_group("regression")
    r.attrs["definition"] = "least squares dM = intercept + slope * dD per (run, module kind)"
    for c, v in reg.items():
        kind_ = (s if c in ("run", "method", "module_kind") else "<i8" if c in ("n", "layers")
                 else "<i4" if c.endswith("defined") else "<f8")
        r.create_dataset(c, data=v, dtype=kind_)
