#!/usr/bin/env python3
"""Generate a LoRA run of many checkpoints on a small bf16 base, for the memory
bound of the low-rank path (issue #19): MODULES square q/k/v/o projections of
DIM x DIM in one layer, and STEPS checkpoint-N/ folders of PEFT adapters of rank
R (float32 factors). DISTINCT adapters are written and the other steps are hard
links to them, so 100 steps take the disk of DISTINCT.
Usage: bench_steps.py OUT_DIR [--dim 2048] [--modules 4] [--steps 100] [--r 256]
                      [--distinct 10] [--dora] [--fan-in-fan-out]
Writes OUT_DIR/base.safetensors and OUT_DIR/run/checkpoint-*/.
"""
import argparse
import json
import os
import struct

import numpy as np

NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def write_st(path, tensors):
    """tensors: list of (name, dtype string, bytes, shape)."""
    header, off = {}, 0
    for name, dt, data, shape in tensors:
        header[name] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(data)]}
        off += len(data)
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * (-len(hj) % 8)
    with open(path + ".part", "wb") as f:
        f.write(struct.pack("<Q", len(hj)) + hj)
        for _, _, data, _ in tensors:
            f.write(data)
    os.replace(path + ".part", path)


def bf16(w):
    return (w.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes()


def generate(out, dim=2048, modules=4, steps=100, r=256, distinct=10, dora=False, seed=7,
             fifo=False):
    rng = np.random.default_rng(seed)
    names = [f"model.layers.{i // len(NAMES)}.self_attn.{NAMES[i % len(NAMES)]}.weight"
             for i in range(modules)]
    os.makedirs(out, exist_ok=True)
    base = os.path.join(out, "base.safetensors")
    norms = {}
    if not os.path.exists(base):
        ts = []
        for n in names:
            w = rng.standard_normal((dim, dim), dtype=np.float32) * 0.02
            ts.append((n, "BF16", bf16(w.T if fifo else w), (dim, dim)))
        write_st(base, ts)
    for n in names:
        norms[n] = np.full(dim, 0.02 * np.sqrt(dim), dtype=np.float32)
    run = os.path.join(out, "run")
    for s in range(1, steps + 1):
        d = os.path.join(run, f"checkpoint-{s}")
        if os.path.exists(os.path.join(d, "adapter_config.json")):
            continue
        os.makedirs(d, exist_ok=True)
        if s > distinct:  # a hard link to an earlier step's files
            first = os.path.join(run, f"checkpoint-{(s - 1) % distinct + 1}")
            for f in ("adapter_model.safetensors", "adapter_config.json"):
                os.link(os.path.join(first, f), os.path.join(d, f))
            continue
        ts = []
        for n in names:
            m = "base_model.model." + n[: -len(".weight")]
            a = rng.standard_normal((r, dim), dtype=np.float32) * 0.01
            b = rng.standard_normal((dim, r), dtype=np.float32) * (0.001 * s)
            ts.append((m + ".lora_A.weight", "F32", a.tobytes(), a.shape))
            ts.append((m + ".lora_B.weight", "F32", b.tobytes(), b.shape))
            if dora:
                g = norms[n] * (1 + 0.01 * rng.standard_normal(dim, dtype=np.float32))
                ts.append((m + ".lora_magnitude_vector", "F32", g.tobytes(), g.shape))
        write_st(os.path.join(d, "adapter_model.safetensors"), ts)
        with open(os.path.join(d, "adapter_config.json"), "w") as f:
            json.dump({"peft_type": "LORA", "r": r, "lora_alpha": 2 * r, "use_dora": dora,
                       "fan_in_fan_out": fifo,
                       "target_modules": sorted({n.split(".")[-2] for n in names})}, f)
    return base, run


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--modules", type=int, default=4)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--r", type=int, default=256)
    ap.add_argument("--distinct", type=int, default=10)
    ap.add_argument("--dora", action="store_true")
    ap.add_argument("--fan-in-fan-out", action="store_true", help="the base stored [in, out]")
    a = ap.parse_args()
    generate(a.out, a.dim, a.modules, a.steps, a.r, a.distinct, a.dora, fifo=a.fan_in_fan_out)


if __name__ == "__main__":
    main()
