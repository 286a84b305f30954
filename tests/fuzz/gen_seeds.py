#!/usr/bin/python3
"""Seed corpora for the torch archive fuzz targets (needs torch, as tests/py/gen_torch.py).

    tests/fuzz/gen_seeds.py [CORPUS_DIR]     (default tests/fuzz/corpus)

torchzip_pickle/: the input layout of fuzz_torchzip_pickle.c (byte R, R 16-bit record sizes,
  then the pickle) for small objects written by the real torch.save: a state dict, views
  sharing a storage, tied weights, nested dicts, bf16/f16, parameters, a list, protocol 4.
torchzip_gen/: a few short programs for fuzz_torchzip_gen.c (any bytes are a program).
The committed seeds are these, merged (-merge=1) with what the fuzzers found.
"""

import collections
import hashlib
import io
import os
import struct
import sys
import zipfile

import torch


def torch_seed(obj, proto=2):
    buf = io.BytesIO()
    torch.save(obj, buf, pickle_protocol=proto)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
        names = z.namelist()
        pkl = z.read(next(n for n in names if n.endswith("/data.pkl")))
        recs = {}
        for n in names:
            head, _, key = n.rpartition("/data/")
            if head and "/" not in key:
                recs[int(key)] = z.read(n)
    keys = sorted(recs)
    if keys != list(range(len(keys))) or len(keys) > 4 or any(len(b) > 16384 for b in recs.values()):
        raise ValueError("seed does not fit the harness (at most 4 records 0..3, 16 KiB each)")
    return bytes([len(keys)]) + b"".join(struct.pack("<H", len(recs[k])) for k in keys) + pkl


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus")
    g = torch.Generator().manual_seed(0)
    t = torch.randn(6, 4, generator=g)
    seeds = {
        "state_dict": torch_seed(collections.OrderedDict(w=torch.randn(4, 4, generator=g))),
        "views": torch_seed({"a": t[1:3], "b": t.t(), "c": t[:, 1]}),
        "tied": torch_seed({"embed": t, "head": t}),
        "nested": torch_seed({"model": {"layers.0.w": t}, "epoch": 3, "cfg": {"lr": 0.1}}),
        "halves": torch_seed({"h": t.half(), "b": t.bfloat16(), "i": torch.arange(5)}),
        "params": torch_seed({"p": torch.nn.Parameter(t.clone())}),
        "list": torch_seed([t, t[0]]),
        "proto4": torch_seed({"w": t, "v": t.t()}, proto=4),
    }
    progs = {
        "gen_zero": bytes(16),
        "gen_one_tensor": bytes([0, 0, 0, 16, 0, 1, 1, 0, 0, 0, 2, 0, 4, 4, 0, 0]),
        "gen_proto4_views": bytes([1, 1, 0, 24, 0, 0, 1, 5, 0, 2, 2, 3, 4, 1, 1, 5, 4, 2]),
        "gen_memo": bytes([0, 1, 0, 40, 0, 1, 4, 7, 1, 0, 3, 2, 8, 1, 7, 0, 8, 0, 4, 1]),
    }
    for sub, items in (("torchzip_pickle", seeds), ("torchzip_gen", progs)):
        d = os.path.join(out, sub)
        os.makedirs(d, exist_ok=True)
        for name, data in items.items():
            with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()
