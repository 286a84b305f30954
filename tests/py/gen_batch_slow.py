#!/usr/bin/python3
"""Write a LoRA run whose units each take a noticeable time (a high adapter rank makes
the analysis compute-bound), for the kill-and-resume test of `batch`, into OUTDIR:

    gen_batch_slow.py OUTDIR [--steps N] [--dim D] [--rank R]

OUTDIR/base.safetensors    4 F32 matrices [D, D]
OUTDIR/lora/checkpoint-S/  N PEFT adapter checkpoints (S = 10, 20, ...) of rank R on the
                           4 matrices; their adapter_model.safetensors are symbolic links
                           to 2 distinct files in OUTDIR/blobs/ (small disk, same work).
Seeded."""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stio  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("--steps", type=int, default=16)
ap.add_argument("--dim", type=int, default=1024)
ap.add_argument("--rank", type=int, default=128)
a = ap.parse_args()
rng = np.random.default_rng(7)
D, R = a.dim, a.rank
mods = [f"model.layers.{i}.self_attn.{m}" for i in range(2) for m in ("q_proj", "v_proj")]
base = {m + ".weight": (rng.standard_normal((D, D), dtype=np.float32) * 0.02) for m in mods}
os.makedirs(os.path.join(a.out, "blobs"), exist_ok=True)
stio.write_safetensors(os.path.join(a.out, "base.safetensors"), base)
for k in range(2):
    t = {}
    for m in mods:
        t[f"base_model.model.{m}.lora_A.weight"] = rng.standard_normal((R, D), dtype=np.float32) * 0.01
        t[f"base_model.model.{m}.lora_B.weight"] = rng.standard_normal((D, R), dtype=np.float32) * 1e-3 * (k + 1)
    stio.write_safetensors(os.path.join(a.out, "blobs", f"adapter{k}.safetensors"), t)
for s in range(a.steps):
    step = 10 * (s + 1)
    d = os.path.join(a.out, "lora", f"checkpoint-{step}")
    os.makedirs(d, exist_ok=True)
    os.symlink(os.path.join("..", "..", "blobs", f"adapter{s % 2}.safetensors"),
               os.path.join(d, "adapter_model.safetensors"))
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        json.dump({"peft_type": "LORA", "r": R, "lora_alpha": 2 * R,
                   "target_modules": ["q_proj", "v_proj"]}, f)
    with open(os.path.join(d, "trainer_state.json"), "w") as f:
        json.dump({"global_step": step}, f)
