#!/usr/bin/python3
"""gen_hostile_views.py OUTDIR

Inputs for tests/sh/hostile_views.sh (issue #14: views, empty tensors, NaN in
a LoRA factor, 10^5 of anything). Run with Debian's /usr/bin/python3 (torch
1.13). Hand-made pickles come from the assembler of tests/py/gen_torch.py;
safetensors from tests/py/stio.py. Nothing here is committed: the files are
written fresh by every test run.

OUTDIR/good/        base.safetensors, ck.safetensors: a valid pair (w [4, 6], v [6, 4])
OUTDIR/views/       torch files whose views lie about their size or overlap:
  wrap.bin          w: shape (2^31, 2^31), strides (0, 0) over a 1-element storage:
                    2^62 elements of 4 bytes, whose byte size wraps to 0
  big.bin           w: shape (8192, 8192), strides (0, 0) over 1 element: 256 MiB
                    to gather from a file of under 1 KiB
  expand.bin        w: shape (4097, 1024), strides (0, 1) (what expand() saves): 16 MiB + 4 KiB
  overlap.bin       w: shape (2^21, 6), strides (1, 1): rows share elements (48 MiB)
  overlap3d.bin     w: shape (2^20, 4, 5), strides (1, 5, 1): dims revisit each other (80 MiB)
  budget.bin        a, b: shape (4096, 640), strides (0, 1): 10 MiB each, 20 MiB together
  expand_small.bin  w: shape (4, 5), strides (0, 1): within the budget, read
  base_t.safetensors, ck_t.bin, ck.safetensors: real torch.save of transposed
                    weights (w.t(), a permuted 3-D tensor) and their contiguous copies
OUTDIR/empty/       tensors without elements beside a normal one:
  base.safetensors, ck.safetensors   e1 [2^40, 0], e2 [0, 2^40], w [4, 6]
  base.bin, ck.bin                   the same as torch files (empty storages)
OUTDIR/nan/         base.safetensors (q_proj [8, 6]) and LoRA r=2 adapter folders:
  lora_a/           NaN in lora_A row 1
  lora_b/           NaN in lora_B row 5
OUTDIR/quad/
  index/            model.safetensors.index.json naming 100,000 shards (none there)
  many.bin          40,000 tensors [2, 3] in a list, one storage each
"""

import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stio  # noqa: E402
from gen_torch import f32_bytes, pickle_of, tensor_v2, write_torch_zip  # noqa: E402

P = "base_model.model."
Q = "model.layers.0.self_attn.q_proj"


def f32(a):
    return stio.Tensor("F32", np.asarray(a, dtype=np.float32))


def gen_good(out, rng):
    d = os.path.join(out, "good")
    os.makedirs(d, exist_ok=True)
    w, v = rng.standard_normal((4, 6)), rng.standard_normal((6, 4))
    stio.write_safetensors(os.path.join(d, "base.safetensors"), {"w": f32(w), "v": f32(v)})
    stio.write_safetensors(os.path.join(d, "ck.safetensors"),
                           {"w": f32(w * 1.1 + 0.01), "v": f32(v * 0.9)})


def gen_views(out, rng):
    d = os.path.join(out, "views")
    os.makedirs(d, exist_ok=True)
    one = {"0": f32_bytes(1, 1)}

    def view(name, numel, shape, stride, rec=None):
        obj = {"w": tensor_v2("FloatStorage", "0", numel, 0, shape, stride)}
        write_torch_zip(os.path.join(d, name), pickle_of(obj), rec or one)

    view("wrap.bin", 1, (2 ** 31, 2 ** 31), (0, 0))
    view("big.bin", 1, (8192, 8192), (0, 0))
    # views whose elements repeat, each beyond the 16 MiB such views get in one file
    view("expand.bin", 1024, (4097, 1024), (0, 1), {"0": f32_bytes(1024, 2)})
    view("overlap.bin", 2 ** 21 + 5, (2 ** 21, 6), (1, 1), {"0": f32_bytes(2 ** 21 + 5, 3)})
    view("overlap3d.bin", 44 + 2 ** 20, (2 ** 20, 4, 5), (1, 5, 1), {"0": f32_bytes(44 + 2 ** 20, 4)})
    # two that fit the budget alone (10 MiB each) but not together
    def two(name):
        obj = {"a": tensor_v2("FloatStorage", "0", 640, 0, (4096, 640), (0, 1)),
               "b": tensor_v2("FloatStorage", "1", 640, 0, (4096, 640), (0, 1))}
        write_torch_zip(os.path.join(d, name), pickle_of(obj),
                        {"0": f32_bytes(640, 5), "1": f32_bytes(640, 6)})
    two("budget.bin")
    # a small expanded view, as torch.save writes expand(): read, within the budget
    view("expand_small.bin", 5, (4, 5), (0, 1), {"0": f32_bytes(5, 7)})

    # real transposed weights as torch saves them, and their contiguous copies
    g = torch.Generator().manual_seed(7)
    w0 = torch.randn(384, 256, generator=g)
    c0 = torch.randn(5, 6, 7, generator=g)
    w1 = w0 * 1.05 + 0.01 * torch.randn(384, 256, generator=g)
    c1 = c0 * 0.9
    base = {"w": w0, "c": c0}
    stio.write_safetensors(os.path.join(d, "base_t.safetensors"),
                           {k: f32(v.numpy()) for k, v in base.items()})
    # stored transposed: w1.t().contiguous() is [256, 384]; .t() of it is w1's
    # values with strides (1, 384); c likewise through a permutation
    wt = w1.t().contiguous().t()
    ct = c1.permute(2, 0, 1).contiguous().permute(1, 2, 0)
    assert not wt.is_contiguous() and not ct.is_contiguous()
    assert torch.equal(wt, w1) and torch.equal(ct, c1)
    torch.save({"w": wt, "c": ct}, os.path.join(d, "ck_t.bin"))
    stio.write_safetensors(os.path.join(d, "ck.safetensors"),
                           {"w": f32(w1.numpy()), "c": f32(c1.numpy())})


def gen_empty(out, rng):
    d = os.path.join(out, "empty")
    os.makedirs(d, exist_ok=True)
    w = rng.standard_normal((4, 6))
    for name, ww in (("base", w), ("ck", w * 1.2)):
        # stio takes the shape from the array; write the huge dims by hand
        hdr = {"w": {"dtype": "F32", "shape": [4, 6], "data_offsets": [0, 96]},
               "e1": {"dtype": "F32", "shape": [2 ** 40, 0], "data_offsets": [96, 96]},
               "e2": {"dtype": "F32", "shape": [0, 2 ** 40], "data_offsets": [96, 96]}}
        stio.write_raw(os.path.join(d, name + ".safetensors"), hdr,
                       np.asarray(ww, "<f4").tobytes())
        obj = {"w": tensor_v2("FloatStorage", "0", 24, 0, (4, 6), (6, 1)),
               "e1": tensor_v2("FloatStorage", "1", 0, 0, (2 ** 40, 0), (1, 1)),
               "e2": tensor_v2("FloatStorage", "2", 0, 0, (0, 2 ** 40), (2 ** 40, 1))}
        write_torch_zip(os.path.join(d, name + ".bin"), pickle_of(obj),
                        {"0": np.asarray(ww, "<f4").tobytes(), "1": b"", "2": b""})


def peft_config(r, alpha):
    return {"peft_type": "LORA", "r": r, "lora_alpha": alpha, "target_modules": ["q_proj"],
            "fan_in_fan_out": False, "use_dora": False, "use_rslora": False,
            "bias": "none", "task_type": "CAUSAL_LM"}


def gen_nan(out, rng):
    d = os.path.join(out, "nan")
    os.makedirs(d, exist_ok=True)
    stio.write_safetensors(os.path.join(d, "base.safetensors"),
                           {Q + ".weight": f32(rng.standard_normal((8, 6)))})
    for name, where in (("lora_a", ("lora_A", 1, 3)), ("lora_b", ("lora_B", 5, 1))):
        a, b = rng.standard_normal((2, 6)), rng.standard_normal((8, 2))
        t = {"lora_A": a, "lora_B": b}[where[0]]
        t[where[1], where[2]] = np.nan
        ad = os.path.join(d, name)
        os.makedirs(ad, exist_ok=True)
        with open(os.path.join(ad, "adapter_config.json"), "w") as f:
            json.dump(peft_config(2, 4), f)
        stio.write_safetensors(os.path.join(ad, "adapter_model.safetensors"),
                               {P + Q + ".lora_A.weight": f32(a),
                                P + Q + ".lora_B.weight": f32(b)})


def gen_quad(out, rng, n=100000):
    d = os.path.join(out, "quad")
    os.makedirs(os.path.join(d, "index"), exist_ok=True)
    wm = {f"t.{i}.weight": f"model-{i + 1:06d}-of-{n:06d}.safetensors" for i in range(n)}
    with open(os.path.join(d, "index", "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": wm}, f)
    vals = rng.standard_normal((40000, 6)).astype("<f4")
    # a torch file of NT tensors, one storage each, in a list (named layers.I):
    # a list, as the pickle interpreter's dicts are outside this suite
    nt = 40000
    obj = {"layers": [tensor_v2("FloatStorage", str(i), 6, 0, (2, 3), (3, 1))
                      for i in range(nt)]}
    write_torch_zip(os.path.join(d, "many.bin"), pickle_of(obj),
                    {str(i): vals[i].tobytes() for i in range(nt)})


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    rng = np.random.default_rng(14)
    gen_good(out, rng)
    gen_views(out, rng)
    gen_empty(out, rng)
    gen_nan(out, rng)
    gen_quad(out, rng)


if __name__ == "__main__":
    main()
