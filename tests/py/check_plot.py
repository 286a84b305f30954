#!/usr/bin/env python3
"""Check `plot` output against NumPy: check_plot.py STUDY.h5 STATS.json FIGDIR FORMATS

- the regression table (--stats=json) and the /regression group of the HDF5 file
  match np.polyfit (slope, intercept) and np.corrcoef (pooled and within-step r)
  computed from /runs/*/delta_d and delta_m, to 1e-9 relative (atol 1e-12);
- every figure exists in every format and is a valid PNG (signature, IHDR size),
  PDF (header, one page, %%EOF) or SVG (XML with an <svg> root);
- the keys of fig2's SVG name the real step numbers of /runs/*/steps ("step 400")
  and the layer numbers of /runs/*/layer ("layer 0"), and no other.
Prints PASS/FAIL lines; exits 1 on any FAIL."""
import json
import os
import struct
import sys
import xml.etree.ElementTree as ET

import h5py
import numpy as np

RTOL, ATOL = 1e-9, 1e-12
fails = 0


def report(ok, name, why=""):
    global fails
    print(("PASS " if ok else "FAIL ") + "plot/" + name + ("" if ok else ": " + why))
    fails += not ok


def close(a, b):
    return abs(a - b) <= ATOL + RTOL * abs(b)


def kind(name):
    n = name[: -len(".weight")] if name.endswith(".weight") else name
    return n.rsplit(".", 1)[-1]


def regression_points(f):
    """(run, kind, dD [S, m], dM [S, m]) of every regression of an open results file, in the
    file's order (ref_stats.py uses it too)."""
    for run in f["runs"]:
        g = f["runs"][run]
        mods = list(g["modules"].asstr()[:])
        dm, dd = g["delta_m"][:], g["delta_d"][:]
        for k in dict.fromkeys(kind(m) for m in mods):
            cols = [i for i, m in enumerate(mods) if kind(m) == k]
            yield run, k, dd[:, cols], dm[:, cols]


def main():
    h5, stats_path, figdir, formats = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(",")
    stats = json.load(open(stats_path))
    with h5py.File(h5, "r") as f:
        ref = {}
        for run, k, x, y in regression_points(f):
            slope, icpt = np.polyfit(x.ravel(), y.ravel(), 1)
            r = np.corrcoef(x.ravel(), y.ravel())[0, 1]
            xc = x - x.mean(axis=1, keepdims=True)
            yc = y - y.mean(axis=1, keepdims=True)
            wr = np.corrcoef(xc.ravel(), yc.ravel())[0, 1]
            ref[(run, k)] = (slope, icpt, r, wr, x.size)
        ratio = {}
        for run in f["runs"]:
            g = f["runs"][run]
            mods = list(g["modules"].asstr()[:])
            dm = g["delta_m"][:]
            for k in dict.fromkeys(kind(m) for m in mods):
                cols = [i for i, m in enumerate(mods) if kind(m) == k]
                # dM / dM_passive (docs/hdf5.md): ratio of the sums over the same points;
                # undefined (null) for a file written without delta_m_passive
                ratio[(run, k)] = float(np.sum(dm[:, cols]) / np.sum(g["delta_m_passive"][:][:, cols])) \
                    if "delta_m_passive" in g else None
        reg = f["regression"]
        file_rows = {(a.decode() if isinstance(a, bytes) else a, b.decode() if isinstance(b, bytes) else b):
                     (s, i, r, w, n) for a, b, s, i, r, w, n in
                     zip(reg["run"][:], reg["module_kind"][:], reg["slope"][:], reg["intercept"][:],
                         reg["pearson_r"][:], reg["within_step_r"][:], reg["n"][:])}
        file_ratio = {(a.decode() if isinstance(a, bytes) else a, b.decode() if isinstance(b, bytes) else b):
                      (q, d) for a, b, q, d in zip(reg["run"][:], reg["module_kind"][:],
                                                   reg["dm_over_passive"][:], reg["dm_over_passive_defined"][:])} \
            if "dm_over_passive" in reg else {}
    worst = 0.0
    for row in stats:
        key = (row["run"], row["module_kind"])
        if key not in ref:
            report(False, f"stats-{key}", "not in the reference")
            continue
        s, i, r, wr, n = ref[key]
        got = (row["slope"], row["intercept"], row["pearson_r"], row["within_step_r"])
        ok = row["n"] == n and all(g is not None and close(g, e) for g, e in zip(got, (s, i, r, wr)))
        for g, e in zip(got, (s, i, r, wr)):
            if g is not None:
                worst = max(worst, abs(g - e) / max(abs(e), 1e-300))
        report(ok, f"stats-{key[0]}-{key[1]}", f"got {got} n={row['n']}, numpy {(s, i, r, wr)} n={n}")
        fs = file_rows.get(key)
        ok = fs is not None and fs[4] == n and all(close(a, b) for a, b in zip(fs[:4], (s, i, r, wr)))
        report(ok, f"h5-regression-{key[0]}-{key[1]}", f"file {fs}, numpy {(s, i, r, wr)}")
        q, fq = row.get("dm_over_passive"), file_ratio.get(key)
        if ratio[key] is None:
            ok = q is None and (fq is None or (fq[1] == 0 and np.isnan(fq[0])))
        else:
            ok = q is not None and close(q, ratio[key]) and fq is not None and fq[1] == 1 and \
                close(fq[0], ratio[key])
        report(ok, f"dm-over-passive-{key[0]}-{key[1]}", f"stats {q}, file {fq}, numpy {ratio[key]}")
    report(len(stats) == len(ref), "stats-complete", f"{len(stats)} rows, {len(ref)} expected")
    print(f"regression vs numpy: worst relative error {worst:.3g}")

    kinds = sorted({k for (_, k) in ref if k in ("q_proj", "v_proj")})
    # geom (where dM comes from): drawn when a run has delta_m_passive, else not at all
    geom = any(v is not None for v in ratio.values())
    # heads: drawn for a kind when a run has per-head values of it
    with h5py.File(h5, "r") as f:
        head_kinds = {kind(m) for run in f["runs"] if "heads" in f["runs"][run]
                      for m in f["runs"][run]["heads/modules"].asstr()[()]}
    for k in kinds:
        for fig in ("fig2", "fig8", "trajectory", "geom", "heads"):
            for fmt in formats:
                path = f"{figdir}/{fig}_{k}.{fmt}"
                if (fig == "geom" and not geom) or (fig == "heads" and k not in head_kinds):
                    report(not os.path.exists(path), f"{fig}-{k}-{fmt}-absent",
                           "drawn from a file without delta_m_passive or heads")
                    continue
                try:
                    data = open(path, "rb").read()
                except OSError as e:
                    report(False, f"{fig}-{k}-{fmt}", str(e))
                    continue
                if fmt == "png":
                    ok = data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
                    w, h = struct.unpack(">II", data[16:24]) if ok else (0, 0)
                    ok = ok and w >= 1000 and h >= 400
                    why = f"size {w}x{h}"
                elif fmt == "pdf":
                    ok = data[:5] == b"%PDF-" and b"%%EOF" in data[-64:] and data.count(b"/Type /Page\n") + data.count(b"/Type /Page ") + data.count(b"/Type/Page") >= 1
                    why = "not a one-page PDF"
                else:
                    try:
                        ok = ET.fromstring(data).tag.endswith("svg")
                        why = "root is not <svg>"
                    except ET.ParseError as e:
                        ok, why = False, str(e)
                report(ok, f"{fig}-{k}-{fmt}", why)
    if "svg" in formats:
        check_keys(h5, figdir, kinds)
    sys.exit(1 if fails else 0)


def check_keys(h5, figdir, kinds):
    """fig2's keys hold the file's step and layer numbers (up to 8 layers: one entry each)."""
    import re
    with h5py.File(h5, "r") as f:
        steps = sorted({int(t) for run in f["runs"] for t in f["runs"][run]["steps"][:]})
        layers = sorted({int(l) for run in f["runs"] for l in f["runs"][run]["layer"][:]})
    for k in kinds:
        text = open(f"{figdir}/fig2_{k}.svg", encoding="utf-8").read()
        got_s = sorted({int(m) for m in re.findall(r">step (\d+)<", text)})
        got_l = sorted({int(m) for m in re.findall(r">layer (\d+)<", text)})
        want_s = steps if len(steps) <= 5 else None
        ok = (want_s is None or got_s == want_s) and set(got_s) <= set(steps)
        report(ok, f"fig2-{k}-step-key", f"key shows steps {got_s}, the file has {steps}")
        ok = got_l == layers if len(layers) <= 8 else not got_l
        report(ok, f"fig2-{k}-layer-key", f"key shows layers {got_l}, the file has {layers}")


if __name__ == "__main__":
    main()
