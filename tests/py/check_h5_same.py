#!/usr/bin/python3
"""Two analyze result files hold the same numbers for the runs named.

    check_h5_same.py A.h5 B.h5 RUN...

For each RUN: the same modules, steps, rows and cols, delta_m and delta_d equal
to 1e-12 relative, and the same name_alignment attribute (or none in both).
A is batch's file, B analyze's for the same options. Exit 0 if all hold.
"""

import os
import sys

import h5py

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from check_layouts import same_numbers  # noqa: E402


def main():
    a_path, b_path, runs = sys.argv[1], sys.argv[2], sys.argv[3:]
    bad = []
    with h5py.File(a_path, "r") as fa, h5py.File(b_path, "r") as fb:
        for run in runs:
            a, b = fa["runs/" + run], fb["runs/" + run]
            for key in ("modules", "steps", "rows", "cols"):
                if list(a[key][()]) != list(b[key][()]):
                    bad.append(f"{run} {key}: {list(a[key][()])[:4]} vs {list(b[key][()])[:4]}")
            if bad:
                continue
            bad += same_numbers(a, b, ("delta_m", "delta_d"), f"{run} ")
            na, nb = a.attrs.get("name_alignment"), b.attrs.get("name_alignment")
            if na != nb:
                bad.append(f"{run} name_alignment {na!r} vs {nb!r}")
    for m in bad[:5]:
        print(m)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
