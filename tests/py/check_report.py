#!/usr/bin/env python3
"""Check a `report` page against the results file: check_report.py STUDY.h5 REPORT.html

- self-contained: no <script>, <link>, <iframe>, <img>, no src= or external href=, no
  url() or @import in the style, no http(s):// outside the SVG namespace declarations;
- every text from the file is escaped: the page parses to the file's run names,
  methods and paths exactly (a name holding <, &, quotes comes back as it is);
- the runs table: each run's method, source and base paths, steps and module count,
  as h5py reads them;
- the regression table: n, slope, intercept, r and within-step r as np.polyfit and
  np.corrcoef compute them from /runs/*/delta_d and delta_m (to the printed digits),
  and the paper's r beside the query projection's rows;
- for each module kind, three inline <svg> figures and a per-layer table whose dM and
  dD at each run's final step match the file (to the printed 6 digits), layers
  numbered as /runs/NAME/layer.
Prints PASS/FAIL lines; exits 1 on any FAIL."""
import re
import sys
from html.parser import HTMLParser

import h5py
import numpy as np

fails = 0


def report(ok, name, why=""):
    global fails
    print(("PASS " if ok else "FAIL ") + "report/" + name + ("" if ok else ": " + why))
    fails += not ok


class Page(HTMLParser):
    """Tables as lists of rows of cell texts (with the table's attributes), svg count,
    every tag and attribute seen."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tables, self.svgs, self.tags, self.style = [], 0, [], ""
        self.row = self.cell = None
        self.in_style = self.depth_svg = 0

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "svg":
            self.svgs += 1
        elif tag == "table":
            self.tables.append((dict(attrs), []))
        elif tag == "tr" and self.tables:
            self.row = []
            self.tables[-1][1].append(self.row)
        elif tag in ("td", "th") and self.row is not None:
            self.cell = []
        elif tag == "style":
            self.in_style = 1

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.row.append("".join(self.cell))
            self.cell = None
        elif tag == "style":
            self.in_style = 0

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)
        if self.in_style:
            self.style += data


def kind(name):
    n = name[: -len(".weight")] if name.endswith(".weight") else name
    return n.rsplit(".", 1)[-1]


def close(got, want, rel):
    return abs(got - want) <= rel * max(abs(want), 1e-300)


def check_self_contained(html, page):
    bad = [t for t, _ in page.tags if t in ("script", "link", "iframe", "img", "object", "embed")]
    bad += [f"{t} {k}={v}" for t, a in page.tags for k, v in a.items()
            if k == "src" or (k.endswith("href") and v and not v.startswith("#"))]
    report(not bad, "self-contained-tags", f"{bad[:3]}")
    # the test's run name holds "<i>": escaped, it makes no element
    report(not any(t == "i" for t, _ in page.tags), "escaped", "an <i> element from the file")
    urls = [u for u in re.findall(r"https?://[^\s\"'<>]*", html)
            if u not in ("http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink")]
    report(not urls and "url(" not in page.style and "@import" not in page.style,
           "self-contained-urls", f"{urls[:3]}")


def check_runs(f, table):
    rows = {r[0]: r for r in table[1:]}
    for name in f["runs"]:
        g = f["runs"][name]
        want = [name, g.attrs["method"], g.attrs["source_path"], g.attrs["base_path"],
                ", ".join(str(int(s)) for s in g["steps"][:]), str(len(g["modules"]))]
        got = rows.get(name)
        report(got == want, f"runs-{name}", f"page {got}, file {want}")
    report(len(rows) == len(f["runs"]), "runs-complete", f"{len(rows)} rows")


def check_regression(f, table):
    rows = {(r[0], r[2]): r for r in table[1:]}
    n = 0
    for name in f["runs"]:
        g = f["runs"][name]
        mods = list(g["modules"].asstr()[:])
        dm, dd = g["delta_m"][:], g["delta_d"][:]
        for k in dict.fromkeys(kind(m) for m in mods):
            cols = [i for i, m in enumerate(mods) if kind(m) == k]
            x, y = dd[:, cols].ravel(), dm[:, cols].ravel()
            spread = x.size >= 2 and x.std() > 0
            slope, icpt = np.polyfit(x, y, 1) if spread else (np.nan, np.nan)
            r = np.corrcoef(x, y)[0, 1] if spread and y.std() > 0 else np.nan
            xc = dd[:, cols] - dd[:, cols].mean(axis=1, keepdims=True)
            yc = dm[:, cols] - dm[:, cols].mean(axis=1, keepdims=True)
            wr = np.corrcoef(xc.ravel(), yc.ravel())[0, 1] if xc.std() > 0 and yc.std() > 0 else np.nan
            row = rows.get((name, k))
            n += 1
            if row is None:
                report(False, f"regression-{name}-{k}", "no row")
                continue
            def same(cell, want, rel=0.0, tol=5e-4):
                """a printed number, or NA where NumPy has none"""
                if cell.split()[0] == "NA":
                    return not np.isfinite(want)
                got = float(cell.split()[0])
                return close(got, want, rel) if rel else abs(got - want) <= tol

            ok = (row[1] == g.attrs["method"] and int(row[3]) == x.size and int(row[4]) == len(cols)
                  and same(row[5], slope, 1e-5) and same(row[6], icpt, 1e-5)
                  and same(row[7], r) and same(row[8], wr))
            paper = {"ft": "-0.620", "lora": "+0.830", "dora": "-0.310"}.get(g.attrs["method"])
            want_paper = paper if k in ("q_proj", "query", "q") else "–"
            ok = ok and row[-1].split()[0] == want_paper
            report(ok, f"regression-{name}-{k}",
                   f"page {row}, numpy slope {slope} intercept {icpt} r {r} within {wr}")
    report(len(rows) == n, "regression-complete", f"{len(rows)} rows, {n} expected")


def check_layers(f, tables):
    by_kind = {a.get("data-kind"): t for a, t in tables if a.get("class") == "layers"}
    kinds = {kind(m) for name in f["runs"] for m in f["runs"][name]["modules"].asstr()[:]}
    report(set(by_kind) == kinds, "layers-kinds", f"page {sorted(by_kind)}, file {sorted(kinds)}")
    names = list(f["runs"])
    for k, t in by_kind.items():
        worst, bad = 0.0, []
        body = t[2:]
        for name_i, name in enumerate(names):
            g = f["runs"][name]
            mods = list(g["modules"].asstr()[:])
            layer = g["layer"][:]
            dm, dd = g["delta_m"][-1], g["delta_d"][-1]
            head = t[0][2 + name_i]
            if head != f"{name} (step {int(g['steps'][-1])})":
                bad.append(f"header {head!r}")
            for row in body:
                if row[1] not in mods:
                    continue
                i = mods.index(row[1])
                if int(row[0]) != int(layer[i]):
                    bad.append(f"{row[1]} layer {row[0]} vs {layer[i]}")
                gm, gd = float(row[2 + 2 * name_i]), float(row[3 + 2 * name_i])
                worst = max(worst, abs(gm - dm[i]) / max(abs(dm[i]), 1e-300),
                            abs(gd - dd[i]) / max(abs(dd[i]), 1e-300))
        nmods = sum(1 for m in mods if kind(m) == k)
        ok = not bad and worst <= 1e-5 and len(body) == nmods
        report(ok, f"layers-{k}", f"{bad[:3]} worst relative {worst:.3g}, {len(body)} rows")
        print(f"per-layer {k}: worst relative difference {worst:.2g}")


def main():
    h5, html_path = sys.argv[1], sys.argv[2]
    html = open(html_path, encoding="utf-8").read()
    page = Page()
    page.feed(html)
    check_self_contained(html, page)
    with h5py.File(h5, "r") as f:
        tables = {a.get("class"): t for a, t in page.tables}
        check_runs(f, tables.get("runs", [[]]))
        check_regression(f, tables.get("regression", [[]]))
        check_layers(f, page.tables)
        nkinds = len({kind(m) for n in f["runs"] for m in f["runs"][n]["modules"].asstr()[:]})
    report(page.svgs == 3 * nkinds, "figures", f"{page.svgs} <svg>, {3 * nkinds} expected")
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
