#!/usr/bin/python3
"""Check the stdout of `dora-analyze inspect PATH` against what stio.py reads.

    check_inspect.py PATH STDOUT_FILE

For a .safetensors file: every tensor's name must appear on a line that also
holds its dtype, its byte count and its dims in order (any separators:
"[48, 130]", "48x130", "(48,130)"). For a folder: the same for the tensors of
the model it holds, if any, and every checkpoint step found by stio's own
resolver must appear as a whole number, with the checkpoint folder names.
Exit 0 if all hold; else prints what is missing and exits 1.
"""

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stio  # noqa: E402


def tensor_lines_ok(entries, text, where):
    lines = text.split("\n")
    bad = []
    for name, dt, shape, b, e in entries:
        cands = [ln for ln in lines if re.search(r"(^|[\s\"'])" + re.escape(name) + r"($|[\s\"':,])", ln)]
        if not cands:
            bad.append(f"{where}: tensor {name!r} not listed")
            continue
        dims = r"\D+".join(str(d) for d in shape)
        ok = False
        for ln in cands:
            rest = ln.replace(name, " ", 1)
            if (re.search(r"\b" + re.escape(dt) + r"\b", rest)
                    and re.search(r"(^|\D)" + str(e - b) + r"($|\D)", rest)
                    and (not shape or re.search(r"(^|\D)" + dims + r"($|\D)", rest))):
                ok = True
                break
        if not ok:
            bad.append(f"{where}: line for {name!r} lacks dtype {dt}, shape {list(shape)} or bytes {e - b}: {cands[0]!r}")
    return bad


def main():
    path, out = sys.argv[1], sys.argv[2]
    text = open(out, encoding="utf-8", errors="replace").read()
    bad = []
    if os.path.isfile(path):
        entries, _ = stio.read_header(path)
        bad += tensor_lines_ok(entries, text, os.path.basename(path))
    else:
        steps = stio.resolve_run(path)
        words = set(re.findall(r"\d+", text))
        for step, src in steps:
            if step is not None and str(step) not in words:
                bad.append(f"step {step} not listed")
            d = os.path.basename(os.path.dirname(src))
            if d.startswith("checkpoint-") and d not in text:
                bad.append(f"{d} not listed")
    for b in bad[:10]:
        print(b)
    if bad:
        print(f"check_inspect: {len(bad)} problem(s)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
