#!/usr/bin/python3
"""Two result files hold the same per-head values, or the same /regression intervals.

    check_heads_same.py heads A.h5 B.h5 RUN...
    check_heads_same.py regression A.h5 B.h5 [--differ]

heads: for each RUN, /runs/RUN/heads in both, with the same datasets and attributes;
strings and integers equal, delta_m and delta_d [S, NH] equal to 1e-12 relative (the
line says whether they are bit for bit).
regression: the rows of /regression matched by (run, module_kind); every *_defined flag
equal, pearson_r_ci_fisher, pearson_r_ci_bootstrap, within_step_r_ci_bootstrap and
spearman_rho equal to 1e-12 relative where defined, and the same bootstrap_replicates
and bootstrap_seed. With --differ, instead: the same Fisher intervals and rho, but the
bootstrap intervals differ in some defined row (another number of replicates drawn).
Exit 0 if all hold, 1 otherwise.
"""
import sys

import h5py
import numpy as np

RTOL = 1e-12


def close(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= RTOL * np.maximum(np.abs(a), np.abs(b))))


def heads(fa, fb, runs):
    bad, exact = [], True
    for run in runs:
        p = f"runs/{run}/heads"
        if p not in fa or p not in fb:
            bad.append(f"{run}: heads group in {p in fa} / {p in fb}")
            continue
        a, b = fa[p], fb[p]
        if sorted(a) != sorted(b) or dict(a.attrs) != dict(b.attrs):
            bad.append(f"{run}: datasets {sorted(a)} vs {sorted(b)}, attrs {dict(a.attrs)} vs {dict(b.attrs)}")
            continue
        for k in a:
            x, y = a[k][()], b[k][()]
            if k in ("delta_m", "delta_d"):
                if not close(x, y):
                    bad.append(f"{run} {k}: differ beyond {RTOL:g}")
                exact &= x.shape == y.shape and x.tobytes() == y.tobytes()
            elif list(x) != list(y):
                bad.append(f"{run} {k}: {list(x)[:4]} vs {list(y)[:4]}")
    return bad, exact


def rows(f):
    g = f["regression"]
    keys = list(zip(g["run"].asstr()[()], g["module_kind"].asstr()[()]))
    return g, {k: i for i, k in enumerate(keys)}


def regression(fa, fb, differ):
    ga, ia = rows(fa)
    gb, ib = rows(fb)
    bad = []
    if sorted(ia) != sorted(ib):
        return [f"rows {sorted(ia)} vs {sorted(ib)}"], 0
    same = ["pearson_r_ci_fisher", "spearman_rho"]
    boot = ["pearson_r_ci_bootstrap", "within_step_r_ci_bootstrap"]
    flags = {"pearson_r_ci_fisher": "pearson_r_ci_fisher_defined", "spearman_rho": "spearman_defined",
             "pearson_r_ci_bootstrap": "pearson_r_ci_bootstrap_defined",
             "within_step_r_ci_bootstrap": "within_step_r_ci_bootstrap_defined"}
    if not differ:
        same += boot
        for attr in ("bootstrap_replicates", "bootstrap_seed"):
            if ga.attrs[attr] != gb.attrs[attr]:
                bad.append(f"{attr} {ga.attrs[attr]} vs {gb.attrs[attr]}")
    ndiff = ndefined = 0
    for key in ia:
        i, j = ia[key], ib[key]
        for name in same + (boot if differ else []):
            fl = flags[name]
            da, db = int(ga[fl][i]), int(gb[fl][j])
            if da != db:
                bad.append(f"{key} {fl}: {da} vs {db}")
                continue
            if not da:
                continue
            x, y = ga[name][i], gb[name][j]
            if np.isnan(x).any() or np.isnan(y).any():
                bad.append(f"{key} {name}: NaN where defined")
            elif name in same and not close(x, y):
                bad.append(f"{key} {name}: {x} vs {y}")
            elif name in boot:
                ndefined += 1
                ndiff += not close(x, y)
    if differ and ndiff == 0:
        bad.append(f"no bootstrap interval differs ({ndefined} defined)")
    return bad, ndefined


def main():
    mode, a_path, b_path, rest = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    with h5py.File(a_path, "r") as fa, h5py.File(b_path, "r") as fb:
        if mode == "heads":
            bad, exact = heads(fa, fb, rest)
            what = f"per-head values of {len(rest)} run(s) equal ({'bit for bit' if exact else f'to {RTOL:g}'})"
        else:
            bad, n = regression(fa, fb, "--differ" in rest)
            what = (f"bootstrap intervals differ ({n} defined)" if "--differ" in rest
                    else f"/regression intervals equal to {RTOL:g} ({n} bootstrap intervals)")
    for m in bad[:10]:
        print("FAIL", m)
    if bad:
        return 1
    print("OK", what)
    return 0


if __name__ == "__main__":
    sys.exit(main())
