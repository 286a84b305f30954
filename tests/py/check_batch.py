#!/usr/bin/python3
"""Checks for tests/sh/batch.sh. One PASS/FAIL line per check (prefix batch/).

    check_batch.py same NAME A.h5 B.h5        every dataset and attribute bit for bit
                                              (but the 'created' and 'command_line' attrs)
    check_batch.py same-run NAME A.h5 B.h5 GROUP   the same, for one group (/runs/ft)
    check_batch.py same-numbers NAME A.h5 B.h5     numeric datasets bit for bit (paths may differ)
    check_batch.py close NAME A.h5 B.h5 RTOL  the same, numbers within RTOL (relative)
    check_batch.py report NAME REPORT.json JUNIT.xml EXPECT.json
                                              the JSON and JUnit reports against EXPECT:
                                              {"ok": bool, "studies": {NAME: {"status",
                                              "units": {...}, "held": [...], "failed": [...],
                                              "not_evaluated": [...], "unit_failures": [..],
                                              "figures": status}}}
"""
import json
import sys
import xml.etree.ElementTree as ET

import h5py
import numpy as np

SKIP_ATTRS = {"created", "command_line"}


def compare(a, b, rtol, group=None, numbers_only=False):
    diffs = []

    def attrs(x, y, p):
        if numbers_only:
            return
        ka, kb = set(x.attrs) - SKIP_ATTRS, set(y.attrs) - SKIP_ATTRS
        if ka != kb:
            diffs.append(f"{p}: attributes {sorted(ka ^ kb)}")
        for k in ka & kb:
            va, vb = x.attrs[k], y.attrs[k]
            if not np.array_equal(np.asarray(va), np.asarray(vb)):
                diffs.append(f"{p}@{k}: {va!r} != {vb!r}")

    def walk(x, y, p):
        attrs(x, y, p or "/")
        if set(x) != set(y):
            diffs.append(f"{p or '/'}: members {sorted(set(x) ^ set(y))}")
        for k in sorted(set(x) & set(y)):
            u, v = x[k], y[k]
            q = f"{p}/{k}"
            if isinstance(u, h5py.Group):
                walk(u, v, q)
                continue
            ua, va = u[()], v[()]
            if ua.shape != va.shape:
                diffs.append(f"{q}: shape {ua.shape} != {va.shape}")
            elif ua.dtype.kind == "f":
                if rtol == 0:
                    same = np.array_equal(ua.view(np.uint8), va.view(np.uint8))
                else:
                    same = np.all(np.abs(ua - va) <= rtol * np.abs(ua)) and not np.isnan(ua).any()
                if not same:
                    i = np.unravel_index(np.argmax(np.abs(ua - va)), ua.shape) if ua.size else ()
                    diffs.append(f"{q}: differ, most at {i}: {ua[i]!r} vs {va[i]!r}")
            elif numbers_only and ua.dtype.kind not in "iu":
                pass
            elif not np.array_equal(ua, va):
                diffs.append(f"{q}: differ")
            attrs(u, v, q)

    with h5py.File(a) as fa, h5py.File(b) as fb:
        if group:
            if group not in fa or group not in fb:
                return [f"{group}: not in both files"]
            walk(fa[group], fb[group], group)
        else:
            walk(fa, fb, "")
    return diffs


def report(name, rpath, jpath, epath):
    ok = True

    def check(cond, what):
        nonlocal ok
        if not cond:
            print(f"FAIL batch/{name}: {what}")
            ok = False

    r = json.load(open(rpath))
    e = json.load(open(epath))
    check(r["ok"] == e["ok"], f"report ok {r['ok']}, expected {e['ok']}")
    studies = {s["name"]: s for s in r["studies"]}
    root = ET.parse(jpath).getroot()
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    total = sum(len(s.findall("testcase")) for s in suites.values())
    check(int(root.get("tests")) == total, f"junit tests={root.get('tests')}, {total} testcases")
    for sname, want in e["studies"].items():
        s = studies.get(sname)
        check(s is not None, f"study {sname} not in the JSON report")
        check(sname in suites, f"study {sname} not a JUnit testsuite")
        if s is None or sname not in suites:
            continue
        check(s["status"] == want["status"], f"{sname}: status {s['status']}, expected {want['status']}")
        for k, v in want.get("units", {}).items():
            check(s["units"][k] == v, f"{sname}: units.{k} = {s['units'][k]}, expected {v}")
        got = {x["name"]: x for x in s["expectations"]}
        for kind in ("held", "failed", "not_evaluated"):
            for xn in want.get(kind, []):
                check(xn in got and got[xn]["status"] == kind,
                      f"{sname}: expectation '{xn}' is {got.get(xn, {}).get('status')}, expected {kind}")
                if kind != "not_evaluated" and xn in got and "undefined" not in got[xn]["message"] \
                        and "no " not in got[xn]["message"]:
                    check(isinstance(got[xn]["actual"], float), f"{sname}: '{xn}' has no actual value")
        fails = sorted(f"{f['run']}@{f['step']}" for f in s["unit_failures"])
        check(fails == sorted(want.get("unit_failures", [])), f"{sname}: unit failures {fails}")
        if "figures" in want:
            check(s["figures"]["status"] == want["figures"], f"{sname}: figures {s['figures']}")
        # JUnit: one testcase per expectation and per unit failure, with the right verdicts
        cases = {c.get("name"): c for c in suites[sname].findall("testcase")}
        for kind, tag in (("held", None), ("failed", "failure"), ("not_evaluated", "skipped")):
            for xn in want.get(kind, []):
                c = cases.get("expect " + xn)
                check(c is not None, f"{sname}: no testcase 'expect {xn}'")
                if c is not None:
                    kids = [k.tag for k in c]
                    check(kids == ([tag] if tag else []), f"{sname}: testcase 'expect {xn}' has {kids}")
        for uf in want.get("unit_failures", []):
            c = cases.get("unit " + uf)
            check(c is not None and c.find("failure") is not None, f"{sname}: no failing testcase 'unit {uf}'")
        nfail = sum(1 for c in suites[sname].findall("testcase") if c.find("failure") is not None)
        check(int(suites[sname].get("failures")) == nfail, f"{sname}: failures attr {suites[sname].get('failures')} != {nfail}")
    if ok:
        print(f"PASS batch/{name}")
    return ok


def main():
    cmd, name = sys.argv[1], sys.argv[2]
    if cmd in ("same", "close", "same-run", "same-numbers"):
        rtol = float(sys.argv[5]) if cmd == "close" else 0.0
        d = compare(sys.argv[3], sys.argv[4], rtol, sys.argv[5] if cmd == "same-run" else None,
                    cmd == "same-numbers")
        if d:
            print(f"FAIL batch/{name}: {len(d)} difference(s): " + "; ".join(d[:4]))
            return 1
        print(f"PASS batch/{name}")
        return 0
    if cmd == "report":
        return 0 if report(name, *sys.argv[3:6]) else 1
    print(f"FAIL batch/{name}: unknown check {cmd}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
