#!/usr/bin/env python3
"""make bench: time `dora-analyze analyze` on a generated Llama-shaped bf16 pair.

Generates (never commits) a ~1 GiB bf16 base and one fine-tuned checkpoint of the
same shapes in a temporary folder, warms the page cache, runs the tool several
times and reports the best whole-process wall time, the input rate in GB/s and
the peak resident set. Usage: bench.py [--bin BIN] [--keep DIR] [--repeat N].
"""
import argparse
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

HIDDEN, INTER, LAYERS, VOCAB = 2048, 5632, 9, 32000


def shapes():
    yield "model.embed_tokens.weight", (VOCAB, HIDDEN)
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        for m in ("q_proj", "k_proj", "v_proj", "o_proj"):
            yield p + f"self_attn.{m}.weight", (HIDDEN, HIDDEN)
        yield p + "mlp.gate_proj.weight", (INTER, HIDDEN)
        yield p + "mlp.up_proj.weight", (INTER, HIDDEN)
        yield p + "mlp.down_proj.weight", (HIDDEN, INTER)
        yield p + "input_layernorm.weight", (HIDDEN,)


def write_bf16(path, seed, base=None):
    """Write all tensors as bf16 (truncated float32); return the float32 arrays
    only when needed to derive a checkpoint (never all at once)."""
    rng = np.random.default_rng(seed)
    header, offset, entries = {}, 0, list(shapes())
    for name, shp in entries:
        n = int(np.prod(shp)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shp), "data_offsets": [offset, offset + n]}
        offset += n
    hjson = json.dumps(header, separators=(",", ":")).encode()
    hjson += b" " * (-len(hjson) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for name, shp in entries:
            if base is None:
                w = (rng.standard_normal(shp, dtype=np.float32) * 0.02)
            else:
                w = base.tensor(name) * (1 + 0.01 * rng.standard_normal((shp[0],) + (1,) * (len(shp) - 1), dtype=np.float32))
                w += 0.002 * rng.standard_normal(shp, dtype=np.float32)
            f.write((w.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes())
    return offset + 8 + len(hjson)


def write_adapter(folder, base, seed, r=16, dora=False):
    """PEFT adapter with r=16 f32 factors on every linear weight of the base."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    tensors = []
    for name, shp in shapes():
        if len(shp) != 2 or "embed" in name:
            continue
        m = "base_model.model." + name[: -len(".weight")]
        tensors.append((m + ".lora_A.weight", (rng.standard_normal((r, shp[1]), dtype=np.float32) * 0.01)))
        tensors.append((m + ".lora_B.weight", (rng.standard_normal((shp[0], r), dtype=np.float32) * 0.01)))
        if dora:
            norms = np.linalg.norm(base.tensor(name), axis=1).astype(np.float32)
            tensors.append((m + ".lora_magnitude_vector", norms * (1 + 0.01 * rng.standard_normal(shp[0], dtype=np.float32))))
    header, off = {}, 0
    for k, v in tensors:
        header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [off, off + v.nbytes]}
        off += v.nbytes
    hj = json.dumps(header).encode()
    with open(os.path.join(folder, "adapter_model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(hj)) + hj)
        for _, v in tensors:
            f.write(v.tobytes())
    with open(os.path.join(folder, "adapter_config.json"), "w") as f:
        json.dump({"peft_type": "LORA", "r": r, "lora_alpha": 2 * r, "use_dora": dora,
                   "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}, f)


def timed(cmd, repeat):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        r = subprocess.run(cmd, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t)
        if r.returncode != 0:
            sys.exit(f"bench: {' '.join(cmd)} exited {r.returncode}")
    return min(times), sorted(times)[len(times) // 2]


class Reader:
    def __init__(self, path):
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            self.header = json.loads(f.read(n))
        self.data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)

    def tensor(self, name):
        e = self.header[name]
        b, end = e["data_offsets"]
        u16 = self.data[b:end].view(np.uint16).astype(np.uint32) << 16
        return u16.view(np.float32).reshape(e["shape"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.environ.get("BIN", "bin/dora-analyze"))
    ap.add_argument("--keep", help="generate into (and keep) this folder")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("-j", default=None, help="threads passed to the tool")
    a = ap.parse_args()
    work = a.keep or tempfile.mkdtemp(prefix="dora-bench-")
    os.makedirs(work, exist_ok=True)
    base, ck = os.path.join(work, "base.safetensors"), os.path.join(work, "ft.safetensors")
    try:
        if not (os.path.exists(base) and os.path.exists(ck)):
            t = time.perf_counter()
            write_bf16(base, 1)
            write_bf16(ck, 2, Reader(base))
            print(f"generated 2 x {os.path.getsize(base) / 2**30:.2f} GiB bf16 in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        total = os.path.getsize(base) + os.path.getsize(ck)
        for p in (base, ck):  # warm the page cache
            with open(p, "rb") as f:
                while f.read(1 << 24):
                    pass
        out = os.path.join(work, "out.h5")
        jobs = ["-j", a.j] if a.j else []
        cases = [("ft pair", ["ft=" + ck], total)]
        lora, dora = os.path.join(work, "lora"), os.path.join(work, "dora")
        if not os.path.exists(lora):
            write_adapter(lora, Reader(base), 3)
            write_adapter(dora, Reader(base), 4, dora=True)
        base_bytes = os.path.getsize(base)
        cases.append(("lora r=16", ["lora=" + lora], base_bytes))
        cases.append(("dora r=16", ["dora=" + dora], base_bytes))
        results = {}
        for label, runs, nbytes in cases:
            best, med = timed([a.bin, "analyze", "-q"] + jobs + ["--base", base, "-o", out] + runs, a.repeat)
            results[label] = best
            print(f"{label:10s} (bf16 base, {nbytes / 1e9:.2f} GB of weights in): best {best:.3f} s, "
                  f"median {med:.3f} s over {a.repeat} runs; {nbytes / 1e9 / best:.2f} GB/s")
        print(f"lora / ft time: {results['lora r=16'] / results['ft pair']:.2f}x, "
              f"dora / ft: {results['dora r=16'] / results['ft pair']:.2f}x")
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"peak RSS of any run {rss:.0f} MiB (file pages of the mappings included)")
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
