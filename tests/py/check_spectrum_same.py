#!/usr/bin/python3
"""Two spectrum tables (stdout TSV) hold the same numbers for two runs.

    check_spectrum_same.py A.tsv RUN_A B.tsv RUN_B [--parts]

Every row (step, module) of RUN_B in B.tsv must have a row of RUN_A in A.tsv
with the same step and module, and the same layer, update, rank, r90 and
intruders, and fro_norm, sigma1, stable_rank, phi_prev, phi_final equal to
1e-12 relative (NA where the other is NA); RUN_A may have no other rows. With
--parts, RUN_B's module NAME.PART.weight (the unfused tensors of
tests/py/gen_fused.py) is RUN_A's NAME.weight[PART]. Exit 0 if all hold.
"""

import csv
import re
import sys

EXACT = ("layer", "update", "rank", "r90", "intruders")
CLOSE = ("fro_norm", "sigma1", "stable_rank", "phi_prev", "phi_final")


def rows(path, run):
    with open(path, newline="") as f:
        return {(r["step"], r["module"]): r for r in csv.DictReader(f, delimiter="\t")
                if r["run"] == run}


def main():
    a_path, run_a, b_path, run_b = sys.argv[1:5]
    parts = "--parts" in sys.argv[5:]
    a, b = rows(a_path, run_a), rows(b_path, run_b)
    bad = []
    if not b:
        bad.append(f"no rows of run {run_b} in {b_path}")
    if len(a) != len(b):
        bad.append(f"{len(a)} rows of {run_a}, {len(b)} of {run_b}")
    for (step, mod), rb in sorted(b.items()):
        name = re.sub(r"\.(\w+)\.weight$", r".weight[\1]", mod) if parts else mod
        ra = a.get((step, name))
        if ra is None:
            bad.append(f"step {step}: no module {name} in run {run_a}")
            continue
        for k in EXACT:
            if ra[k] != rb[k] and not (parts and k == "layer"):
                bad.append(f"step {step} {name} {k}: {ra[k]} vs {rb[k]}")
        for k in CLOSE:
            if (ra[k] == "NA") != (rb[k] == "NA"):
                bad.append(f"step {step} {name} {k}: {ra[k]} vs {rb[k]}")
            elif ra[k] != "NA":
                x, y = float(ra[k]), float(rb[k])
                if not abs(x - y) <= 1e-12 * abs(y):
                    bad.append(f"step {step} {name} {k}: {x!r} vs {y!r}")
    for m in bad[:5]:
        print(f"{run_a} vs {run_b}: {m}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
