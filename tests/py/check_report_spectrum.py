#!/usr/bin/env python3
"""check_report_spectrum.py SPEC.h5 REPORT.html: the report's spectral summary (its
"spectrum" and "spectrum-compare" tables) against the spectrum file, recomputed here with
h5py and NumPy: per run and module kind at the final step, the median and range of r90, the
means of the stable rank, sigma1 and ||dW||_F, the summed intruders and the mean phi with
the previous step and between the first step and the final one; per compared pair and kind,
the mean phi at both final steps. Prints PASS/FAIL lines (suite report_spectrum)."""
import sys
from html.parser import HTMLParser

import h5py
import numpy as np


class Tables(HTMLParser):
    """The text of every cell of the tables with a class, by class: rows of cells."""

    def __init__(self):
        super().__init__()
        self.tables, self.cls, self.row, self.cell = {}, None, None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and a.get("class"):
            self.cls = a["class"]
            self.tables[self.cls] = []
        elif tag == "tr" and self.cls:
            self.row = []
        elif tag in ("td", "th") and self.row is not None:
            self.cell = ""

    def handle_endtag(self, tag):
        if tag == "table":
            self.cls = None
        elif tag == "tr" and self.row is not None:
            if self.row and self.cls:
                self.tables[self.cls].append(self.row)
            self.row = None
        elif tag in ("td", "th") and self.cell is not None:
            self.row.append(self.cell.strip())
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


NFAIL = 0


def check(label, ok, why=""):
    global NFAIL
    print(("PASS" if ok else "FAIL") + " report_spectrum/" + label + ("" if ok else ": " + why))
    NFAIL += 0 if ok else 1


def kind(name):
    """The module kind: the last component of the name before '.weight'."""
    n = name[: -len(".weight")] if name.endswith(".weight") else name
    return n.split(".")[-1]


def close(cell, want, rel):
    if cell == "NA":
        return want is None
    return want is not None and abs(float(cell) - want) <= rel * max(abs(want), 1e-12)


def main():
    spec, page = sys.argv[1], sys.argv[2]
    t = Tables()
    with open(page, encoding="utf-8") as f:
        t.feed(f.read())
    rows = t.tables.get("spectrum", [])
    check("table-present", len(rows) > 1, "no spectrum table")
    got = {(r[0], r[2]): r for r in rows[1:]}
    want_rows = 0
    with h5py.File(spec, "r") as f:
        top = int(f.attrs["top"])
        for run in f["runs"]:
            g = f["runs"][run]
            mods = [m.decode() if isinstance(m, bytes) else m for m in g["modules"][()]]
            steps = g["steps"][()]
            last = len(steps) - 1
            kinds = {}
            for l, m in enumerate(mods):
                kinds.setdefault(kind(m), []).append(l)
            for k, ls in kinds.items():
                want_rows += 1
                r = got.get((run, k))
                label = run + "/" + k
                if r is None:
                    check(label, False, "no row")
                    continue
                ok, why = True, []
                r90 = g["r90"][last, ls]
                defined = np.sort(r90[r90 >= 0])
                cell = r[5]
                if len(defined):
                    med = np.median(defined)
                    expect = "%g [%d, %d]" % (med, defined[0], defined[-1])
                else:
                    expect = "NA"
                if (r90 < 0).any():
                    expect += " (%d beyond the top %d)" % ((r90 < 0).sum(), top)
                if cell != expect:
                    ok, why = False, why + ["r90 %r, want %r" % (cell, expect)]
                if r[3] != str(len(ls)) or r[4] != str(steps[last]):
                    ok, why = False, why + ["modules/step %s/%s" % (r[3], r[4])]
                for col, ds in ((6, "stable_rank"), (7, "sigma1"), (8, "fro_norm")):
                    if not close(r[col], float(np.mean(g[ds][last, ls])), 5e-4):
                        ok, why = False, why + ["%s %s" % (ds, r[col])]
                if "intruders" in g:
                    if r[9] != str(int(np.sum(g["intruders"][last, ls]))):
                        ok, why = False, why + ["intruders %s" % r[9]]
                elif r[9] != "–":
                    ok, why = False, why + ["intruders without base %s" % r[9]]
                for col, ds, s in ((10, "phi_prev", last), (11, "phi_final", 0)):
                    v = g[ds][s, ls]
                    v = v[v >= 0]
                    want = float(np.mean(v)) if len(v) and last > 0 else None
                    if not (close(r[col], want, 0) or
                            (want is not None and r[col] != "NA" and abs(float(r[col]) - want) <= 5e-4)):
                        ok, why = False, why + ["%s %s, want %s" % (ds, r[col], want)]
                check(label, ok, "; ".join(why))
        check("row-count", len(rows) - 1 == want_rows, "%d rows, want %d" % (len(rows) - 1, want_rows))
        crow = t.tables.get("spectrum-compare", [])
        if "compare" not in f:
            check("no-compare-table", not crow, "a compare table without /compare")
            return
        cgot = {(r[0], r[1], r[2]): r for r in crow[1:]}
        n = 0
        for a in f["compare"]:
            for b in f["compare"][a]:
                g = f["compare"][a][b]
                ra, rb = g.attrs["run_a"], g.attrs["run_b"]
                mods = [m.decode() if isinstance(m, bytes) else m for m in g["modules"][()]]
                phi = g["phi"][()]
                kinds = {}
                for i, m in enumerate(mods):
                    kinds.setdefault(kind(m), []).append(i)
                for k, ms in kinds.items():
                    n += 1
                    r = cgot.get((ra, rb, k))
                    if r is None:
                        check("compare/%s/%s/%s" % (ra, rb, k), False, "no row")
                        continue
                    v = phi[-1, ms]
                    v = v[v >= 0]
                    ok = r[3] == str(len(ms)) and r[6] == str(len(v)) and \
                        r[4] == "%d / %d" % (g["steps_a"][-1], g["steps_b"][-1]) and \
                        (abs(float(r[5]) - float(np.mean(v))) <= 5e-4 if len(v) else r[5] == "NA")
                    check("compare/%s/%s/%s" % (ra, rb, k), ok, "row %r" % (r,))
        check("compare-row-count", len(crow) - 1 == n, "%d rows, want %d" % (len(crow) - 1, n))


main()
sys.exit(1 if NFAIL else 0)
