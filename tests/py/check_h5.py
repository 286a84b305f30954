#!/usr/bin/python3
"""Check an `dora-analyze analyze` result against an independent float64 reference.

    check_h5.py --base BASE --out OUT.h5 [--tsv FILE] [--csv FILE] [--per-row]
                [--modules RE] [--exclude RE] [--rtol NAME=VAL ...] [--exact-zero]
                [NAME=]RUN ...

The runs are given as to the tool (same order, same NAME=RUN syntax). This
script resolves each run on its own (checkpoint-STEP folders, final model,
single folder or file), reads every model with stio.py, recomputes per-row
norms and 1 - cos in float64 and compares with the tool's numbers.

Reference formulas (float64, rows of W reshaped to [k, cols]):
    m[n]   = sqrt(sum W[n]^2)                      (pairwise summation)
    1-cos  = 0.5 * || a/|a| - b/|b| ||^2           (no cancellation: the
             difference of unit vectors is formed first; the error is
             ~1e-16 relative to 1-cos itself, not to 1)
    both rows zero: 1-cos = 0, cos = 1; exactly one zero: 1-cos = 1, cos = 0;
    zero_rows counts rows zero in W0 or W_t (either case).
    dM = mean |m_t - m_0|, dD = mean (1-cos).

Tolerances: |tool - ref| <= atol + rtol * |ref|
    rtol: 1e-6 by default (BF16/F16/F32 runs), per run with --rtol NAME=VAL
          (1e-3 for the tiny-update F32 run);
    atol: 1e-12 on dM, m0, m; 1e-15 on dD and 1-cos; 1e-14 on cos.
    zero_rows must match exactly. Any NaN fails. --exact-zero: every dM and
    dD must be exactly 0.0 (identical weights).
Layout checks: dtypes and little-endian order on disk, shapes, steps strictly
ascending and as resolved, module set and natural order, layer parse, attrs,
UTF-8 strings, a pandas DataFrame built from delta_m with module columns,
and the TSV/CSV rows equal (bit for bit) to the HDF5 numbers, in run, step,
module order.

Exit 0 if everything holds, 1 otherwise; the worst offender is printed.
"""

import argparse
import csv
import os
import re
import sys

import h5py
import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stio  # noqa: E402
from check_adapters import row_split  # noqa: E402

ATOL_M = 1e-12
ATOL_D = 1e-15
ATOL_COS = 1e-14
DEFAULT_RTOL = 1e-6
TSV_HEADER = ["run", "method", "step", "module", "layer", "delta_m", "delta_d"]


# ---------------------------------------------------------------- reference
def rows64(a):
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(a.shape[0], -1)


def row_norms(a):
    return np.sqrt(np.sum(a * a, axis=1))


def per_row_ref(w0, wt):
    """-> dict m0, m, one_minus_cos, cos, zero (bool [k]), all float64 [k]."""
    a = rows64(w0)
    b = rows64(wt)
    na = row_norms(a)
    nb = row_norms(b)
    za = na == 0
    zb = nb == 0
    omc = np.zeros(a.shape[0])
    cos = np.ones(a.shape[0])
    ok = ~za & ~zb
    if ok.any():
        ua = a[ok] / na[ok, None]
        ub = b[ok] / nb[ok, None]
        d = ua - ub
        omc[ok] = 0.5 * np.sum(d * d, axis=1)
        cos[ok] = np.sum(a[ok] * b[ok], axis=1) / (na[ok] * nb[ok])
    one = za ^ zb
    omc[one] = 1.0
    cos[one] = 0.0
    return {"m0": na, "m": nb, "one_minus_cos": omc, "cos": cos, "zero": za | zb}


def module_ref(w0, wt):
    r = per_row_ref(w0, wt)
    return (float(np.mean(np.abs(r["m"] - r["m0"]))), float(np.mean(r["one_minus_cos"])),
            int(np.count_nonzero(r["zero"])), r)


# ---------------------------------------------------------------- reporting
class Report:
    def __init__(self):
        self.fails = []
        self.worst = {}  # kind -> (score, message)

    def fail(self, msg):
        self.fails.append(msg)

    def check(self, cond, msg):
        if not cond:
            self.fail(msg)
        return cond

    def num(self, kind, where, got, ref, atol, rtol):
        """Compare arrays; remember the worst ratio err/(atol+rtol|ref|) per kind."""
        got = np.asarray(got, dtype=np.float64)
        ref = np.asarray(ref, dtype=np.float64)
        if got.shape != ref.shape:
            self.fail(f"{kind} {where}: shape {got.shape}, expected {ref.shape}")
            return False
        if np.isnan(got).any():
            i = np.unravel_index(int(np.argmax(np.isnan(got))), got.shape)
            self.fail(f"{kind} {where}: NaN at {tuple(int(x) for x in i)}")
            return False
        if got.size == 0:
            return True
        tol = atol + rtol * np.abs(ref)
        err = np.abs(got - ref)
        ratio = np.where(np.isfinite(err), err / tol, np.inf)
        i = int(np.argmax(ratio))
        r = float(ratio.flat[i])
        idx = tuple(int(x) for x in np.unravel_index(i, got.shape))
        msg = (f"{kind} {where} at {idx}: tool {got.flat[i]!r}, ref {ref.flat[i]!r}, "
               f"|diff| {err.flat[i]:.3g}, tol {tol.flat[i]:.3g}")
        if kind not in self.worst or r > self.worst[kind][0]:
            self.worst[kind] = (r, msg)
        if r > 1:
            self.fail(msg)
            return False
        return True


# ---------------------------------------------------------------- h5 helpers
def le_ok(ds):
    t = ds.id.get_type()
    try:
        return t.get_order() == h5py.h5t.ORDER_LE
    except Exception:
        return False


def check_ds(rep, grp, name, kind, size, shape):
    """kind: 'i'/'f' numpy kind; size: bytes. Returns the dataset or None."""
    path = f"{grp.name}/{name}"
    if name not in grp:
        rep.fail(f"{path}: missing")
        return None
    ds = grp[name]
    if not isinstance(ds, h5py.Dataset):
        rep.fail(f"{path}: not a dataset")
        return None
    ok = rep.check(ds.dtype.kind == kind and ds.dtype.itemsize == size,
                   f"{path}: dtype {ds.dtype}, expected {kind}{size}")
    ok &= rep.check(le_ok(ds), f"{path}: not little-endian on disk")
    ok &= rep.check(ds.shape == tuple(shape), f"{path}: shape {ds.shape}, expected {tuple(shape)}")
    return ds if ok else None


def check_str_ds(rep, grp, name, n, utf8=True):
    path = f"{grp.name}/{name}"
    if name not in grp:
        rep.fail(f"{path}: missing")
        return None
    ds = grp[name]
    info = h5py.check_string_dtype(ds.dtype)
    if not rep.check(info is not None and info.length is None,
                     f"{path}: not a variable-length string dataset ({ds.dtype})"):
        return None
    if utf8:
        rep.check(info.encoding == "utf-8", f"{path}: string encoding {info.encoding}, expected utf-8")
    rep.check(ds.shape == (n,), f"{path}: shape {ds.shape}, expected ({n},)")
    try:
        vals = [v.decode("utf-8") if isinstance(v, bytes) else v for v in ds[()]]
    except UnicodeDecodeError as e:
        rep.fail(f"{path}: not UTF-8: {e}")
        return None
    return vals


def str_attr(rep, obj, key):
    where = f"{obj.name} attr {key}"
    if key not in obj.attrs:
        rep.fail(f"{where}: missing")
        return None
    v = obj.attrs[key]
    if isinstance(v, np.ndarray):
        rep.fail(f"{where}: an array, expected a scalar string")
        return None
    if isinstance(v, bytes):
        try:
            v = v.decode("utf-8")
        except UnicodeDecodeError:
            rep.fail(f"{where}: not UTF-8")
            return None
    if not rep.check(isinstance(v, str), f"{where}: {type(v).__name__}, expected string"):
        return None
    rep.check(len(v) > 0, f"{where}: empty")
    return v


def per_row_group_name(name):
    """README: in per_row group names "%" is written %25 and "/" %2F. HDF5 also
    cannot name a link "." or "": the tool writes %2E and %00 (seen, not in README)."""
    if name == ".":
        return "%2E"
    if name == "":
        return "%00"
    return name.replace("%", "%25").replace("/", "%2F")


def same_path(a, b):
    try:
        return os.path.realpath(a) == os.path.realpath(b)
    except Exception:
        return False


# ---------------------------------------------------------------- run checks
def parse_runs(specs):
    out = []
    for s in specs:
        if "=" in s and not os.path.exists(s):
            name, path = s.split("=", 1)
        else:
            name, path = stio.default_run_name(s), s
        out.append((name, path))
    return out


def expected_modules(base, models, mod_re, exc_re):
    names = []
    for n, (dt, a) in base.items():
        if dt not in stio.FLOAT_DTYPES or a.ndim < 2:
            continue
        ok = True
        for m in models:
            if n not in m:
                ok = False
                break
            dt2, b = m[n]
            if dt2 not in stio.FLOAT_DTYPES:
                ok = False
                break
            if b.shape != a.shape:
                raise SystemExit(f"check_h5: {n}: shape {b.shape} vs base {a.shape}; "
                                 f"the tool should have refused this run")
        if not ok:
            continue
        if mod_re and not mod_re.search(n):
            continue
        if exc_re and exc_re.search(n):
            continue
        names.append(n)
    return sorted(names, key=stio.natural_key)


def check_run(rep, f, name, path, base, base_path, args, rtol, table):
    where = f"/runs/{name}"
    if not rep.check(where in f, f"{where}: missing group"):
        return
    g = f[where]
    resolved = stio.resolve_run(path)
    S = len(resolved)
    models = [stio.load_model(src) for _, src in resolved]
    mods = expected_modules(base, models, args.mod_re, args.exc_re)
    L = len(mods)

    m = str_attr(rep, g, "method")
    rep.check(m == "ft", f"{where} attr method: {m!r}, expected 'ft'")
    sp = str_attr(rep, g, "source_path")
    if sp is not None:
        rep.check(same_path(sp, path) or os.path.basename(sp.rstrip("/")) == os.path.basename(path.rstrip("/")),
                  f"{where} attr source_path {sp!r} is not {path!r}")
    bp = str_attr(rep, g, "base_path")
    if bp is not None:
        rep.check(same_path(bp, base_path) or os.path.basename(bp.rstrip("/")) == os.path.basename(base_path.rstrip("/")),
                  f"{where} attr base_path {bp!r} is not {base_path!r}")

    ds = check_ds(rep, g, "steps", "i", 8, (S,))
    if ds is None and "steps" in g:
        rep.fail(f"{where}/steps = {list(g['steps'][()])}, expected "
                 f"{[s for s, _ in resolved]} from {[os.path.relpath(p, path) for _, p in resolved]}")
    steps = None
    if ds is not None:
        steps = [int(x) for x in ds[()]]
        rep.check(all(a < b for a, b in zip(steps, steps[1:])), f"{where}/steps not strictly ascending: {steps}")
        for i, (exp, _) in enumerate(resolved):
            if exp is not None:
                rep.check(steps[i] == exp, f"{where}/steps[{i}] = {steps[i]}, expected {exp} (all: {steps})")
    cks = check_str_ds(rep, g, "checkpoints", S, utf8=False)
    if cks is not None and len(cks) == S:
        for i, (_, src) in enumerate(resolved):
            folder = os.path.dirname(src)
            ok = same_path(cks[i], src) or (
                os.path.isdir(cks[i]) and same_path(cks[i], folder))
            rep.check(ok, f"{where}/checkpoints[{i}] = {cks[i]!r}, expected {src!r} or its folder")

    got_mods = check_str_ds(rep, g, "modules", L)
    if got_mods is None:
        return
    if got_mods != mods:
        extra = [x for x in got_mods if x not in mods]
        missing = [x for x in mods if x not in got_mods]
        if not extra and not missing:
            rep.fail(f"{where}/modules: right names, wrong order; first difference at "
                     f"{next(i for i, (a, b) in enumerate(zip(got_mods, mods)) if a != b)}: "
                     f"{[x for x, y in zip(got_mods, mods) if x != y][:3]} vs {[y for x, y in zip(got_mods, mods) if x != y][:3]}")
        else:
            rep.fail(f"{where}/modules: {len(got_mods)} names, expected {L}; "
                     f"unexpected {extra[:5]}, missing {missing[:5]}")
        return
    # order check that does not rely on the expected list
    keys = [stio.natural_key(x) for x in got_mods]
    rep.check(all(a < b for a, b in zip(keys, keys[1:])), f"{where}/modules not in natural order")

    lay = check_ds(rep, g, "layer", "i", 4, (L,))
    if lay is not None:
        exp = [stio.layer_of(x) for x in mods]
        got = [int(x) for x in lay[()]]
        bad = [(mods[i], got[i], exp[i]) for i in range(L) if got[i] != exp[i]]
        rep.check(not bad, f"{where}/layer wrong for {bad[:3]}")
    rows = check_ds(rep, g, "rows", "i", 8, (L,))
    cols = check_ds(rep, g, "cols", "i", 8, (L,))
    for ds_, fn, label in ((rows, lambda a: a.shape[0], "rows"),
                           (cols, lambda a: int(np.prod(a.shape[1:])), "cols")):
        if ds_ is not None:
            got = [int(x) for x in ds_[()]]
            exp = [fn(base[x][1]) for x in mods]
            bad = [(mods[i], got[i], exp[i]) for i in range(L) if got[i] != exp[i]]
            rep.check(not bad, f"{where}/{label} wrong for {bad[:3]}")

    dm = check_ds(rep, g, "delta_m", "f", 8, (S, L))
    dd = check_ds(rep, g, "delta_d", "f", 8, (S, L))
    zr = check_ds(rep, g, "zero_rows", "i", 8, (S, L))
    pm = check_ds(rep, g, "delta_m_passive", "f", 8, (S, L))
    am = check_ds(rep, g, "delta_m_active", "f", 8, (S, L))
    ref_p = np.zeros((S, L))
    ref_a = np.zeros((S, L))
    ref_m0 = np.zeros(L)
    ref_m = np.zeros((S, L))
    ref_d = np.zeros((S, L))
    ref_z = np.zeros((S, L), dtype=np.int64)
    per_rows = {}
    for s in range(S):
        for j, n in enumerate(mods):
            a = base[n][1]
            b = models[s][n][1]
            ref_m[s, j], ref_d[s, j], ref_z[s, j], pr = module_ref(a, b)
            pas, act = row_split(rows64(a), rows64(b))
            ref_p[s, j], ref_a[s, j] = float(np.mean(pas)), float(np.mean(act))
            ref_m0[j] = float(np.mean(pr["m0"]))
            if args.per_row:
                per_rows.setdefault(n, []).append(pr)
    labels = lambda s, j: f"{name} step {steps[s] if steps else s} {mods[j]}"  # noqa: E731
    if dm is not None:
        got = dm[()]
        if args.exact_zero:
            nz = np.argwhere(got != 0)
            rep.check(len(nz) == 0, f"{where}/delta_m not exactly 0: {labels(*nz[0]) if len(nz) else ''} "
                      f"= {got[tuple(nz[0])] if len(nz) else ''!r}")
        for s in range(S):
            for j in range(L):
                rep.num("delta_m", labels(s, j), got[s, j], ref_m[s, j], ATOL_M, rtol)
    # where dM comes from: a cancellation-free reference (check_adapters.row_split), so
    # 1e-9 whatever the run's rtol; atol: the projection's residue for an unturned row
    for key, ds_, ref in (("delta_m_passive", pm, ref_p), ("delta_m_active", am, ref_a)):
        if ds_ is None:
            continue
        got = ds_[()]
        for s in range(S):
            for j in range(L):
                rep.num(key, labels(s, j), got[s, j], ref[s, j], 1e-20 * ref_m0[j], 1e-9)
    if pm is not None and am is not None and dm is not None:
        bad = np.argwhere(dm[()] > (pm[()] + am[()]) * (1 + 1e-12))
        rep.check(len(bad) == 0, f"{where}: delta_m > delta_m_passive + delta_m_active at "
                  f"{labels(*bad[0]) if len(bad) else ''}")
    if dd is not None:
        got = dd[()]
        if args.exact_zero:
            nz = np.argwhere(got != 0)
            rep.check(len(nz) == 0, f"{where}/delta_d not exactly 0: {labels(*nz[0]) if len(nz) else ''} "
                      f"= {got[tuple(nz[0])] if len(nz) else ''!r}")
        for s in range(S):
            for j in range(L):
                rep.num("delta_d", labels(s, j), got[s, j], ref_d[s, j], ATOL_D, rtol)
    if zr is not None:
        got = zr[()]
        bad = np.argwhere(got != ref_z)
        if len(bad):
            s, j = bad[0]
            # tell which reading of "zero rows" the tool follows
            b0 = rows64(base[mods[j]][1])
            bt = rows64(models[s][mods[j]][1])
            za = ~np.any(b0 != 0, axis=1)
            zb = ~np.any(bt != 0, axis=1)
            rep.fail(f"{where}/zero_rows {labels(s, j)}: tool {int(got[s, j])}, expected {int(ref_z[s, j])} "
                     f"(rows zero in both {int(np.sum(za & zb))}, only in W0 {int(np.sum(za & ~zb))}, "
                     f"only in W_t {int(np.sum(~za & zb))}); {len(bad)} cells differ")

    # pandas: a DataFrame straight from the datasets
    if dm is not None and steps is not None:
        cols_ = g["modules"].asstr()[()]
        df = pd.DataFrame(dm[()], index=pd.Index(g["steps"][()], name="step"), columns=cols_)
        ok = list(df.columns) == mods and df.shape == (S, L) and all(isinstance(c, str) for c in df.columns)
        if ok and L:
            ok = df.loc[steps[-1], mods[-1]] == dm[S - 1, L - 1]
        rep.check(ok, f"{where}: pandas DataFrame from delta_m does not have the module names as columns")

    if args.per_row:
        pr_grp = g.get("per_row")
        if rep.check(isinstance(pr_grp, h5py.Group), f"{where}/per_row: missing"):
            gnames = {per_row_group_name(n): n for n in mods}
            rep.check(sorted(pr_grp.keys()) == sorted(gnames),
                      f"{where}/per_row: groups {sorted(pr_grp.keys())[:3]}..., expected one per module")
            for gname, n in gnames.items():
                if gname not in pr_grp:
                    rep.fail(f"{where}/per_row/{gname}: missing")
                    continue
                pg = pr_grp[gname]
                k = base[n][1].shape[0]
                lst = per_rows[n]
                d0 = check_ds(rep, pg, "m0", "f", 8, (k,))
                if d0 is not None:
                    rep.num("per_row m0", f"{name} {n}", d0[()], lst[0]["m0"], ATOL_M, rtol)
                for key, atol in (("m", ATOL_M), ("cos", ATOL_COS), ("one_minus_cos", ATOL_D)):
                    d = check_ds(rep, pg, key, "f", 8, (S, k))
                    if d is not None:
                        ref = np.stack([x[key] for x in lst])
                        rep.num(f"per_row {key}", f"{name} {n} [step index, row]", d[()], ref, atol, rtol)

    if dm is not None and dd is not None and steps is not None:
        dmv = dm[()]
        ddv = dd[()]
        for s in range(S):
            for j, n in enumerate(mods):
                table.append((name, "ft", steps[s], n, stio.layer_of(n), dmv[s, j], ddv[s, j]))


def check_table(rep, label, rows, expected):
    """rows: list of lists of strings (header first)."""
    if not rep.check(len(rows) > 0, f"{label}: empty"):
        return
    rep.check(rows[0] == TSV_HEADER, f"{label}: header {rows[0]}, expected {TSV_HEADER}")
    body = rows[1:]
    if not rep.check(len(body) == len(expected), f"{label}: {len(body)} rows, expected {len(expected)}"):
        return
    exp_keys = {(e[0], e[2], e[3]): e for e in expected}
    bad = 0
    order_ok = True
    for i, r in enumerate(body):
        if len(r) != 7:
            rep.fail(f"{label} row {i + 1}: {len(r)} fields")
            bad += 1
            continue
        try:
            key = (r[0], int(r[2]), r[3])
        except ValueError:
            rep.fail(f"{label} row {i + 1}: step {r[2]!r} not an integer")
            continue
        e = exp_keys.get(key)
        if e is None:
            rep.fail(f"{label} row {i + 1}: unexpected (run, step, module) {key}")
            bad += 1
            continue
        if key != (expected[i][0], expected[i][2], expected[i][3]):
            order_ok = False
        try:
            vm, vd, lay = float(r[5]), float(r[6]), int(r[4])
        except ValueError:
            rep.fail(f"{label} row {i + 1}: bad number in {r}")
            bad += 1
            continue
        if r[1] != "ft" or lay != e[4] or not (vm == e[5] and vd == e[6]):
            bad += 1
            if bad <= 3:
                rep.fail(f"{label} row {i + 1} {key}: {r[1]} layer {lay} dM {r[5]} dD {r[6]}; "
                         f"HDF5 has ft layer {e[4]} dM {e[5]!r} dD {e[6]!r}")
        if r[5] != "%.17g" % e[5] or r[6] != "%.17g" % e[6]:
            bad += 1
            if bad <= 3:
                rep.fail(f"{label} row {i + 1}: {r[5]} / {r[6]} not printed with %.17g "
                         f"({'%.17g' % e[5]} / {'%.17g' % e[6]})")
    rep.check(order_ok, f"{label}: rows not in (run as given, step ascending, module order) order")


def main():
    ap = argparse.ArgumentParser(description="check a dora-analyze HDF5 result")
    ap.add_argument("--base", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tsv")
    ap.add_argument("--csv")
    ap.add_argument("--per-row", action="store_true")
    ap.add_argument("--modules")
    ap.add_argument("--exclude")
    ap.add_argument("--rtol", action="append", default=[], help="NAME=VAL")
    ap.add_argument("--exact-zero", action="store_true")
    ap.add_argument("runs", nargs="+")
    args = ap.parse_args()
    args.mod_re = re.compile(args.modules) if args.modules else None
    args.exc_re = re.compile(args.exclude) if args.exclude else None
    rtols = {}
    for r in args.rtol:
        k, v = r.split("=", 1)
        rtols[k] = float(v)

    rep = Report()
    runs = parse_runs(args.runs)
    base = stio.load_model(args.base)
    table = []
    with h5py.File(args.out, "r") as f:
        for key in ("tool_version", "command_line", "created"):
            str_attr(rep, f, key)
        if rep.check("runs" in f and isinstance(f["runs"], h5py.Group), "/runs: missing"):
            got = sorted(f["runs"].keys())
            rep.check(got == sorted(n for n, _ in runs), f"/runs: groups {got}, expected {sorted(n for n, _ in runs)}")
            for name, path in runs:
                check_run(rep, f, name, path, base, args.base, args, rtols.get(name, DEFAULT_RTOL), table)
    if args.tsv:
        with open(args.tsv, newline="") as fh:
            lines = fh.read().split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        check_table(rep, "TSV", [ln.split("\t") for ln in lines], table)
    if args.csv:
        with open(args.csv, newline="") as fh:
            check_table(rep, "CSV", list(csv.reader(fh)), table)

    for kind, (r, msg) in sorted(rep.worst.items()):
        print(f"worst {kind}: {r:.3g} of tolerance: {msg}")
    if rep.fails:
        for m in rep.fails[:40]:
            print("FAIL:", m)
        if len(rep.fails) > 40:
            print(f"... and {len(rep.fails) - 40} more")
        print(f"check_h5: {len(rep.fails)} failure(s)")
        return 1
    print(f"check_h5: ok ({len(runs)} run(s), {len(table)} (step, module) cells)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
