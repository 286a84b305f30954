#!/usr/bin/env python3
"""Check the uncertainty of the regressions against SciPy and an independent NumPy bootstrap.

ref_stats.py STUDY.h5 STATS.json [B [SEED]]

From /runs/*/delta_d and delta_m of STUDY.h5 (points of one run and module kind, as
docs/hdf5.md defines them), computes
- the Fisher-z 95% interval of Pearson r with scipy.stats.pearsonr(...).confidence_interval()
  and Spearman's rho with scipy.stats.spearmanr, held to 1e-12 (absolute);
- the layer-cluster bootstrap of r and of the within-step r, written here in NumPy from
  the description in docs/hdf5.md: splitmix64 from SEED (default 20240521), restarted
  for each regression; a layer index is z mod m, z redrawn while z < 2^64 mod m; B
  (default 10000) replicates; percentiles by numpy.percentile; held to 1e-12;
and compares them with /regression of STUDY.h5 (NaN where the flag is 0) and the JSON
table of `plot --stats=json` (null where undefined); a file written without them (by a
test generator, or before them) is held to the table only. Also checks, for every defined
interval, that it holds its point estimate. PASS/FAIL lines; exit 1 on any FAIL."""
import json
import math
import sys

import h5py
import numpy as np
from scipy import stats

from check_plot import regression_points

TOL = 1e-12
MASK = (1 << 64) - 1
fails = 0


def report(ok, name, why=""):
    global fails
    print(("PASS " if ok else "FAIL ") + "stats/" + name + ("" if ok else ": " + why))
    fails += not ok


def splitmix64(state):
    """(new state, value): Steele, Lea and Flood's generator, in Python integers."""
    state = (state + 0x9E3779B97F4A7C15) & MASK
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return state, z ^ (z >> 31)


_picks = {}


def picks(m, b, seed):
    """[b, m] layer indices of the bootstrap replicates (the same for every regression of m
    layers, since each starts the generator afresh)."""
    key = (m, b, seed)
    if key not in _picks:
        low = (1 << 64) % m
        state, out = seed, np.empty(b * m, dtype=np.int64)
        for i in range(b * m):
            while True:
                state, z = splitmix64(state)
                if z >= low:
                    break
            out[i] = z % m
        _picks[key] = out.reshape(b, m)
    return _picks[key]


def rows_r(x, y):
    """Pearson r of each row of x, y ([b, n]); NaN where a row has no spread."""
    dx = x - x.mean(axis=1, keepdims=True)
    dy = y - y.mean(axis=1, keepdims=True)
    sxx, syy, sxy = (dx * dx).sum(1), (dy * dy).sum(1), (dx * dy).sum(1)
    ok = (sxx > 0) & (syy > 0)
    r = np.full(x.shape[0], np.nan)
    r[ok] = np.clip(sxy[ok] / np.sqrt(sxx[ok] * syy[ok]), -1, 1)
    return r


def interval(v, b):
    v = v[np.isfinite(v)]
    if v.size == 0 or 2 * v.size < b:
        return None
    return tuple(np.percentile(v, [2.5, 97.5]))


def bootstrap(x, y, b, seed):
    """x, y [S, m]: the intervals of the pooled and within-step r, or None."""
    S, m = x.shape
    if m < 2:
        return None, None
    p = picks(m, b, seed)
    xb = x[:, p].transpose(1, 0, 2)  # [b, S, m]
    yb = y[:, p].transpose(1, 0, 2)
    r = rows_r(xb.reshape(b, -1), yb.reshape(b, -1))
    xc = xb - xb.mean(axis=2, keepdims=True)
    yc = yb - yb.mean(axis=2, keepdims=True)
    w = rows_r(xc.reshape(b, -1), yc.reshape(b, -1))
    w[(p == p[:, :1]).all(axis=1)] = np.nan  # one layer drawn m times: no spread
    return interval(r, b), interval(w, b)


def reference(f, b, seed):
    ref = {}
    for run, k, x, y in regression_points(f):
        xs, ys = x.ravel(), y.ravel()
        n = xs.size
        spread = n >= 2 and np.ptp(xs) > 0 and np.ptp(ys) > 0
        r = stats.pearsonr(xs, ys) if spread else None
        fisher = tuple(r.confidence_interval(0.95)) if spread and n >= 4 else None
        rho = stats.spearmanr(xs, ys).correlation if spread else None
        xc = x - x.mean(axis=1, keepdims=True)
        yc = y - y.mean(axis=1, keepdims=True)
        wspread = n >= 2 and np.ptp(xc) > 0 and np.ptp(yc) > 0
        pb, wb = bootstrap(x, y, b, seed)
        ref[(run, k)] = {
            "r": r.statistic if r else None,
            "pearson_r_ci_fisher": fisher,
            "spearman_rho": rho,
            "pearson_r_ci_bootstrap": pb if spread else None,
            "within_step_r_ci_bootstrap": wb if wspread else None,
            "within_step_r": np.corrcoef(xc.ravel(), yc.ravel())[0, 1] if wspread else None,
        }
    return ref


def same(got, want):
    """got: a number, a pair or None; want likewise (None: undefined)."""
    if want is None or got is None:
        return want is None and got is None
    g, w = np.atleast_1d(np.asarray(got, float)), np.atleast_1d(np.asarray(want, float))
    return g.shape == w.shape and np.all(np.isfinite(g)) and np.all(np.abs(g - w) <= TOL)


def from_file(reg, i, name, flag):
    v = reg[name][i]
    if reg[flag][i] != 1:
        return "nan-ok" if np.all(np.isnan(v)) else "not-nan"
    return tuple(v) if np.ndim(v) else float(v)


FIELDS = [("pearson_r_ci_fisher", "pearson_r_ci_fisher_defined"),
          ("pearson_r_ci_bootstrap", "pearson_r_ci_bootstrap_defined"),
          ("within_step_r_ci_bootstrap", "within_step_r_ci_bootstrap_defined"),
          ("spearman_rho", "spearman_defined")]


def main():
    h5, js = sys.argv[1], sys.argv[2]
    b = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
    seed = int(sys.argv[4]) if len(sys.argv) > 4 else 20240521
    table = {(row["run"], row["module_kind"]): row for row in json.load(open(js))}
    with h5py.File(h5, "r") as f:
        ref = reference(f, b, seed)
        reg = f["regression"]
        in_file = "bootstrap_replicates" in reg.attrs
        if in_file:
            report(int(reg.attrs["bootstrap_replicates"]) == b and int(reg.attrs["bootstrap_seed"]) == seed,
                   "attrs", f"{dict(reg.attrs)}")
            keys = list(zip(reg["run"].asstr()[:], reg["module_kind"].asstr()[:]))
        else:
            keys = list(table)
        report(sorted(keys) == sorted(ref) == sorted(table), "rows",
               f"file {keys}, table {list(table)}, reference {list(ref)}")
        worst = 0.0
        for i, key in enumerate(keys):
            want = ref.get(key)
            row = table.get(key)
            if want is None or row is None:
                report(False, f"{key[0]}-{key[1]}", "missing from the reference or the table")
                continue
            for name, flag in FIELDS:
                fv = from_file(reg, i, name, flag) if in_file else row[name]
                if not in_file and fv is None:
                    fv = "nan-ok"
                if want[name] is None:
                    ok = fv == "nan-ok" and row[name] is None
                else:
                    ok = fv not in ("nan-ok", "not-nan") and same(fv, want[name]) and same(row[name], want[name])
                    worst = max(worst, float(np.max(np.abs(np.asarray(fv, float) - np.asarray(want[name], float)))) if ok else worst)
                report(ok, f"{key[0]}-{key[1]}-{name}", f"file {fv}, table {row[name]}, reference {want[name]}")
            # every defined interval holds its estimate
            for name, est in (("pearson_r_ci_fisher", "r"), ("pearson_r_ci_bootstrap", "r"),
                              ("within_step_r_ci_bootstrap", "within_step_r")):
                ci = want[name]
                if ci is not None:
                    report(ci[0] - TOL <= want[est] <= ci[1] + TOL, f"{key[0]}-{key[1]}-{name}-holds-r",
                           f"{want[est]} outside {ci}")
    print(f"intervals and rho vs SciPy / NumPy: worst absolute difference {worst:.3g}")
    if math.isfinite(worst):
        report(worst <= TOL, "worst", f"{worst}")
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
