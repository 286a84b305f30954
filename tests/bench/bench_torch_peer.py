#!/usr/bin/env python3
"""The PyTorch peer for `make bench`: the straightforward script a researcher writes.

Memory-maps two safetensors files (header parsed by hand: Debian has no safetensors
package), and per 2-D tensor takes row norms with norm(dim=1) and cosines with
cosine_similarity in float32, then dM and dD. Prints the compute time only (after
imports and mapping), in seconds, on the last line.
Usage: bench_torch_peer.py BASE.safetensors FT.safetensors"""
import json
import warnings
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

DT = {"BF16": (np.int16, torch.bfloat16), "F16": (np.float16, None), "F32": (np.float32, None)}


def tensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    out = {}
    for name, e in header.items():
        if name == "__metadata__" or len(e["shape"]) < 2:
            continue
        npdt, tdt = DT[e["dtype"]]
        b, end = e["data_offsets"]
        arr = data[b:end].view(npdt).reshape(e["shape"])
        t = torch.from_numpy(arr)
        out[name] = t.view(tdt) if tdt is not None else t
    return out


warnings.filterwarnings("ignore", message="The given NumPy array is not writable")


def main():
    torch.set_num_threads(2)
    base, ft = tensors(sys.argv[1]), tensors(sys.argv[2])
    t0 = time.perf_counter()
    res = {}
    for name, w0 in base.items():
        a, b = w0.float(), ft[name].float()
        dm = (b.norm(dim=1) - a.norm(dim=1)).abs().mean().item()
        dd = (1 - F.cosine_similarity(a, b, dim=1)).mean().item()
        res[name] = (dm, dd)
    print(f"{time.perf_counter() - t0:.4f}")


if __name__ == "__main__":
    main()
