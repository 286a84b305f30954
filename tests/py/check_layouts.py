#!/usr/bin/python3
"""Compare a run read through another tool's layout with the plain layout.

    check_layouts.py BASE PLAIN_DIR OUT.h5 NAME [--alignment SUBSTRING]

OUT.h5 holds the run NAME (a layout of tests/py/gen_layouts.py) and the run
"plain". Checks: the same modules, steps and rows; delta_m and delta_d equal to
1e-12 relative (|a - b| <= 1e-12 |b|); the plain run against a float64 NumPy
reference from the safetensors files (stio.py; rtol 1e-9: float32 weights,
float64 sums in another order); with --alignment, the run group's
name_alignment attribute contains SUBSTRING. Exit 0 if all hold, else 1 with
the worst offender.
"""

import argparse
import os
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stio  # noqa: E402


def reference(base, ck):
    w0, wt = base.astype(np.float64), ck.astype(np.float64)
    m0, mt = np.linalg.norm(w0, axis=1), np.linalg.norm(wt, axis=1)
    d = w0 / m0[:, None] - wt / mt[:, None]
    return np.mean(np.abs(mt - m0)), np.mean(0.5 * np.sum(d * d, axis=1))


def same_numbers(a, b, keys, label=""):
    """Messages for the datasets KEYS of groups A and B that differ by more than 1e-12
    relative (or are not finite in A)."""
    bad = []
    for key in keys:
        x, y = np.asarray(a[key][()], float), np.asarray(b[key][()], float)
        err = np.max(np.abs(x - y) / np.maximum(np.abs(y), 1e-300))
        if not np.all(np.isfinite(x)) or err > 1e-12:
            bad.append(f"{label}{key}: relative difference {err:.3e} > 1e-12")
    return bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("base")
    ap.add_argument("plain")
    ap.add_argument("out")
    ap.add_argument("name")
    ap.add_argument("--alignment")
    a = ap.parse_args()
    bad = []
    with h5py.File(a.out, "r") as f:
        p, r = f["runs/plain"], f["runs/" + a.name]
        mods = [m.decode() if isinstance(m, bytes) else m for m in p["modules"][()]]
        rmods = [m.decode() if isinstance(m, bytes) else m for m in r["modules"][()]]
        if mods != rmods:
            bad.append(f"modules differ: {mods[:3]} vs {rmods[:3]}")
        if list(p["steps"][()]) != list(r["steps"][()]):
            bad.append(f"steps differ: {list(p['steps'][()])} vs {list(r['steps'][()])}")
        if not bad:
            bad += same_numbers(r, p, ("delta_m", "delta_d", "rows", "cols"))
        if a.alignment is not None:
            got = r.attrs.get("name_alignment", b"")
            got = got.decode() if isinstance(got, bytes) else str(got)
            if a.alignment not in got:
                bad.append(f"name_alignment {got!r} lacks {a.alignment!r}")
        base = stio.load_model(a.base)
        dm, dd = p["delta_m"][()], p["delta_d"][()]
        for si, step in enumerate(p["steps"][()]):
            ck = stio.load_model(os.path.join(a.plain, f"checkpoint-{step}"))
            for li, m in enumerate(mods):
                rm, rd = reference(np.asarray(base[m][1]), np.asarray(ck[m][1]))
                for what, got, ref in (("dM", dm[si, li], rm), ("dD", dd[si, li], rd)):
                    if not abs(got - ref) <= 1e-9 * abs(ref):
                        bad.append(f"plain step {step} {m} {what}: {got!r} vs NumPy {ref!r}")
    for b in bad[:5]:
        print(f"{a.name}: {b}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
