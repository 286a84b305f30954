#!/usr/bin/python3
"""A stand-in for `dora-analyze analyze`, used only to test check_h5.py itself.

    fake_analyze.py --base B -o OUT.h5 [--per-row] [--tsv FILE] [--mutate KIND] [NAME=]RUN ...

It writes the documented layout with numbers computed in np.longdouble by the
plain formulas (1 - dot/(|a||b|)), so that check_h5.py can be shown to pass on
a right answer and to fail on wrong ones (--mutate):
  f32acc      dot products and norms accumulated in float32
  naive64     1 - dot/(|a||b|) in float64 (fine at rtol 1e-3, not at 1e-6 on the tiny run)
  order       modules in plain string order
  bigendian   delta_m stored big-endian
  fixedstr    modules as fixed-length ASCII strings
  zero        zero_rows counts only rows zero on one side
  step        the final model's step off by one
  tsvfmt      the TSV with %.6g
  nan         one NaN in delta_d
"""

import argparse
import os
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stio  # noqa: E402
from check_h5 import parse_runs, expected_modules  # noqa: E402


def stats(a, b, mode):
    ft = {"f32acc": np.float32, "naive64": np.float64}.get(mode, np.longdouble)
    a = np.asarray(a, dtype=np.float64).reshape(a.shape[0], -1).astype(ft)
    b = np.asarray(b, dtype=np.float64).reshape(b.shape[0], -1).astype(ft)
    na = np.sqrt(np.sum(a * a, axis=1, dtype=ft))
    nb = np.sqrt(np.sum(b * b, axis=1, dtype=ft))
    dot = np.sum(a * b, axis=1, dtype=ft)
    za, zb = na == 0, nb == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = dot / (na * nb)
    cos = np.where(za & zb, 1, np.where(za | zb, 0, cos))
    omc = np.where(za & zb, 0, np.where(za | zb, 1, 1 - cos))
    zero = (za ^ zb) if mode == "zero" else (za | zb)
    f = lambda x: np.asarray(x, dtype=np.float64)  # noqa: E731
    return f(na), f(nb), f(cos), f(omc), int(np.count_nonzero(zero))


def split(a, b):
    """Means of passive and |active| (docs/numerics.md) in long double: t by projection,
    passive = t^2 / (h + |a|), active = r (r + 2|a|) / (|b| + h), r = (b - a).a / |a|."""
    ld = np.longdouble
    a = np.asarray(a, dtype=np.float64).reshape(a.shape[0], -1).astype(ld)
    b = np.asarray(b, dtype=np.float64).reshape(b.shape[0], -1).astype(ld)
    na = np.sqrt(np.sum(a * a, axis=1))
    nb = np.sqrt(np.sum(b * b, axis=1))
    pas, act = nb.copy(), np.zeros_like(nb)      # a zero base row: all tangential
    ok = na > 0
    e = a[ok] / na[ok, None]
    u = b[ok] - a[ok]
    r = np.sum(u * e, axis=1)
    q = u - r[:, None] * e
    t2 = np.sum(q * q, axis=1)
    h = np.sqrt(na[ok] ** 2 + t2)
    pas[ok] = t2 / (h + na[ok])
    act[ok] = np.abs(r * (r + 2 * na[ok]) / (nb[ok] + h))
    return float(np.mean(pas)), float(np.mean(act))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("-o", required=True)
    ap.add_argument("--per-row", action="store_true")
    ap.add_argument("--tsv")
    ap.add_argument("--mutate", default="")
    ap.add_argument("runs", nargs="+")
    a = ap.parse_args()
    mode = a.mutate
    base = stio.load_model(a.base)
    vlen = h5py.string_dtype("utf-8")
    lines = ["run\tmethod\tstep\tmodule\tlayer\tdelta_m\tdelta_d"]
    with h5py.File(a.o, "w") as f:
        f.attrs["tool_version"] = "fake 0"
        f.attrs["command_line"] = " ".join(sys.argv)
        f.attrs["created"] = "1970-01-01T00:00:00Z"
        for name, path in parse_runs(a.runs):
            res = stio.resolve_run(path)
            steps = [s if s is not None else 0 for s, _ in res]
            if mode == "step":
                steps[-1] += 1
            models = [stio.load_model(src) for _, src in res]
            mods = expected_modules(base, models, None, None)
            if mode == "order":
                mods = sorted(mods)
            g = f.create_group(f"runs/{name}")
            g.attrs["method"] = "ft"
            g.attrs["source_path"] = path
            g.attrs["base_path"] = a.base
            g.create_dataset("steps", data=np.array(steps, dtype="<i8"))
            if mode == "fixedstr":
                g.create_dataset("modules", data=np.array([m.encode() for m in mods], dtype="S"))
            else:
                g.create_dataset("modules", data=mods, dtype=vlen)
            g.create_dataset("layer", data=np.array([stio.layer_of(m) for m in mods], dtype="<i4"))
            g.create_dataset("rows", data=np.array([base[m][1].shape[0] for m in mods], dtype="<i8"))
            g.create_dataset("cols", data=np.array([int(np.prod(base[m][1].shape[1:])) for m in mods], dtype="<i8"))
            S, L = len(steps), len(mods)
            dm = np.zeros((S, L))
            dd = np.zeros((S, L))
            zr = np.zeros((S, L), dtype=np.int64)
            pm = np.zeros((S, L))
            am = np.zeros((S, L))
            pr = {m: {"m": [], "cos": [], "one_minus_cos": []} for m in mods}
            for s in range(S):
                for j, m in enumerate(mods):
                    na, nb, cos, omc, z = stats(base[m][1], models[s][m][1], mode)
                    dm[s, j] = np.mean(np.abs(nb - na))
                    dd[s, j] = np.mean(omc)
                    zr[s, j] = z
                    pm[s, j], am[s, j] = split(base[m][1], models[s][m][1])
                    pr[m]["m0"] = na
                    pr[m]["m"].append(nb)
                    pr[m]["cos"].append(cos)
                    pr[m]["one_minus_cos"].append(omc)
                    fmt = "%.6g" if mode == "tsvfmt" else "%.17g"
                    lines.append(f"{name}\tft\t{steps[s]}\t{m}\t{stio.layer_of(m)}\t{fmt % dm[s, j]}\t{fmt % dd[s, j]}")
            if mode == "nan":
                dd[0, 0] = np.nan
            g.create_dataset("delta_m", data=dm.astype(">f8" if mode == "bigendian" else "<f8"))
            g.create_dataset("delta_d", data=dd)
            g.create_dataset("zero_rows", data=zr)
            g.create_dataset("delta_m_passive", data=pm)
            g.create_dataset("delta_m_active", data=am)
            g.create_dataset("checkpoints", data=[src for _, src in res], dtype=vlen)
            if a.per_row:
                for m in mods:
                    pg = g.create_group(f"per_row/{m}")
                    pg.create_dataset("m0", data=pr[m]["m0"])
                    for k in ("m", "cos", "one_minus_cos"):
                        pg.create_dataset(k, data=np.stack(pr[m][k]))
    if a.tsv:
        with open(a.tsv, "w") as fh:
            fh.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
