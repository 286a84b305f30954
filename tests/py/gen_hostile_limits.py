#!/usr/bin/python3
"""gen_hostile_limits.py OUTDIR [--modules N] [--seed S]

Inputs for tests/sh/hostile_limits.sh (issue #14, classes 6 and 9): many-item
inputs that a quadratic path makes slow, and integers at and beyond their
limits in folder names and configs. Written with tests/py/stio.py.

OUTDIR/many/ (N tiny modules, default 40,000; every name its own module kind,
so that grouping by kind has N groups):
    base/model.safetensors      N tensors model.layers.I.kI.weight [2, 3] F32
    ft/checkpoint-1/            full weights, every tensor changed
    lora/checkpoint-1/          a LoRA adapter of all N modules, r = 1, with a
                                rank_pattern and an alpha_pattern of 16 keys each
                                (one key matches module 7 only: r 2 there)
    expect.json                 what the analyses must give: the module count, and
                                for a sample of modules dM and dD (float64 NumPy)
                                and, for the LoRA run, r

OUTDIR/cases/CASE/ plus OUTDIR/cases.tsv: CASE <tab> BASE <tab> RUN <tab>
WANT1|WANT2... (substrings the error must contain; paths written absolute) <tab>
UNWANTED (a substring it must not contain, or -). Every case must end in exit 1
with no output file:
    step_wrap          checkpoint-9223372036854775807 and a final model of other
                       bytes, no trainer_state.json: the final step would be 2^63
    step_too_long      checkpoint-1 and checkpoint-99999999999999999999
    step_too_long_one  a lone checkpoint folder named checkpoint-99999999999999999999
    r_max              config r = 2^63-1, factors of rank 1
    r_exact            config r = 2^53+1 (not a double), factors of rank 1
    rank_pattern_max   rank_pattern value 2^63-1 for one module
    rank_pattern_exact rank_pattern value 2^53+1 for one module
    r_absurd           factors of rank 8192 (r = 8192) on a [2, 3] base weight: an
                       8192 x 8192 Gram matrix for a 6-element weight
    scale_huge         lora_alpha 1e200: s^2 is not a finite number
    mlx_rank_max       MLX lora_parameters.rank = 2^63-1
"""

import argparse
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stio  # noqa: E402

P = "base_model.model."
OUT, IN = 2, 3
I64_MAX = 2**63 - 1
NOT_A_DOUBLE = 2**53 + 1


def mod_name(i):
    return f"model.layers.{i}.k{i}"


def peft_config(r, alpha, **kw):
    c = {"peft_type": "LORA", "r": r, "lora_alpha": alpha, "target_modules": ["k"],
         "use_rslora": False, "use_dora": False, "fan_in_fan_out": False,
         "rank_pattern": {}, "alpha_pattern": {}}
    c.update(kw)
    return c


def write_adapter(d, config, tensors):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        json.dump(config, f)
    stio.write_safetensors(os.path.join(d, "adapter_model.safetensors"), tensors)


def lora_factors(rng, mod, r, out=OUT, fan_in=IN):
    return {P + mod + ".lora_A.weight": rng.standard_normal((r, fan_in)).astype(np.float32),
            P + mod + ".lora_B.weight": rng.standard_normal((out, r)).astype(np.float32) * 0.01}


def dm_dd(w0, w):
    """dM and dD of one step: mean |  |w_n| - |w0_n|  | and mean 1 - cos over the rows."""
    n0, n1 = np.linalg.norm(w0, axis=1), np.linalg.norm(w, axis=1)
    cos = np.sum(w0 * w, axis=1) / (n0 * n1)
    return float(np.mean(np.abs(n1 - n0))), float(np.mean(1 - cos))


def make_many(root, n, rng):
    base = {mod_name(i) + ".weight": rng.standard_normal((OUT, IN)).astype(np.float32)
            for i in range(n)}
    os.makedirs(os.path.join(root, "base"))
    stio.write_safetensors(os.path.join(root, "base", "model.safetensors"), base)

    ft = {k: (v + 0.01 * rng.standard_normal(v.shape)).astype(np.float32)
          for k, v in base.items()}
    stio.write_checkpoint(os.path.join(root, "ft"), 1, ft, extras=False)

    # 16 keys in each pattern: 15 that match no module, then one for module 7 alone
    # (PEFT's rule: the first key K with (.*\.)?(K)$ matching the whole name wins)
    rank_pattern = {f"nomatch{j}\\.k\\d+": 5 for j in range(15)}
    rank_pattern["layers\\.7\\.k7"] = 2
    alpha_pattern = {f"nomatch{j}\\.k\\d+": 9.0 for j in range(15)}
    alpha_pattern["layers\\.7\\.k7"] = 3.0
    tensors = {}
    for i in range(n):
        tensors.update(lora_factors(rng, mod_name(i), 2 if i == 7 else 1))
    d = os.path.join(root, "lora", "checkpoint-1")
    write_adapter(d, peft_config(1, 4.0, rank_pattern=rank_pattern,
                                 alpha_pattern=alpha_pattern), tensors)
    stio.write_trainer_state(d, 1)

    # an independent float64 reference for a sample of modules (README, Formulas)
    sample = (0, 7, n // 2, n - 1)
    lora_ref, ft_ref = {}, {}
    for i in sample:
        name = mod_name(i) + ".weight"
        w0 = base[name].astype(np.float64)
        a = tensors[P + mod_name(i) + ".lora_A.weight"].astype(np.float64)
        b = tensors[P + mod_name(i) + ".lora_B.weight"].astype(np.float64)
        r, s = (2, 3.0 / 2) if i == 7 else (1, 4.0 / 1)
        dm, dd = dm_dd(w0, w0 + s * b @ a)
        lora_ref[name] = {"rank": r, "delta_m": dm, "delta_d": dd}
        dm, dd = dm_dd(w0, ft[name].astype(np.float64))
        ft_ref[name] = {"delta_m": dm, "delta_d": dd}
    expect = {"modules": n, "lora": lora_ref, "ft": ft_ref}
    with open(os.path.join(root, "expect.json"), "w") as f:
        json.dump(expect, f, indent=1)


def small_base(root):
    d = os.path.join(root, "small-base")
    os.makedirs(d)
    stio.write_safetensors(os.path.join(d, "model.safetensors"),
                           {mod_name(0) + ".weight": np.arange(6, dtype=np.float32).reshape(2, 3) + 1,
                            mod_name(1) + ".weight": np.ones((2, 3), np.float32)})
    return d


def make_cases(root, rng):
    cases = os.path.join(root, "cases")
    os.makedirs(cases)
    sbase = small_base(root)
    rows = []
    w = {mod_name(0) + ".weight": np.full((OUT, IN), 2, np.float32),
         mod_name(1) + ".weight": np.ones((OUT, IN), np.float32)}

    def add(case, run, wants, unwanted="-", base=sbase):
        rows.append("\t".join([case, base, run, "|".join(wants), unwanted]))

    # --- run.c: steps
    run = os.path.join(cases, "step_wrap")
    stio.write_checkpoint(run, I64_MAX, w, extras=False)
    os.remove(os.path.join(run, f"checkpoint-{I64_MAX}", "trainer_state.json"))
    stio.write_safetensors(os.path.join(run, "model.safetensors"),
                           {k: v * 3 for k, v in w.items()})
    add("step_wrap", run, [run, str(I64_MAX)], "-9223372036854775808")

    run = os.path.join(cases, "step_too_long")
    stio.write_checkpoint(run, 1, w, extras=False)
    big = "checkpoint-99999999999999999999"
    os.makedirs(os.path.join(run, big))
    stio.write_safetensors(os.path.join(run, big, "model.safetensors"), w)
    add("step_too_long", run, [os.path.join(run, big), "step"])

    run = os.path.join(cases, "lone", big)
    os.makedirs(run)
    stio.write_safetensors(os.path.join(run, "model.safetensors"), w)
    add("step_too_long_one", run, [run, "step"])

    # --- adapter.c: ranks and scales
    def adapter_case(case, config, tensors, wants, unwanted="-"):
        d = os.path.join(cases, case)
        write_adapter(d, config, tensors)
        add(case, d, [os.path.join(d, "adapter_config.json")] + wants, unwanted)

    two = {}
    for i in range(2):
        two.update(lora_factors(rng, mod_name(i), 1))
    adapter_case("r_max", peft_config(I64_MAX, 8), two,
                 [mod_name(0), str(I64_MAX)], "-9223372036854775808")
    adapter_case("r_exact", peft_config(NOT_A_DOUBLE, 8), two,
                 [mod_name(0), str(NOT_A_DOUBLE)])
    adapter_case("rank_pattern_max", peft_config(1, 8, rank_pattern={"k1": I64_MAX}), two,
                 [mod_name(1), str(I64_MAX)], "-9223372036854775808")
    adapter_case("rank_pattern_exact", peft_config(1, 8, rank_pattern={"k1": NOT_A_DOUBLE}),
                 two, [mod_name(1), str(NOT_A_DOUBLE)])
    absurd = dict(lora_factors(rng, mod_name(0), 1))
    absurd.update(lora_factors(rng, mod_name(1), 8192))
    adapter_case("r_absurd", peft_config(1, 8, rank_pattern={"k1": 8192}), absurd,
                 [mod_name(1), "8192", "[2, 3]"])
    adapter_case("scale_huge", peft_config(1, 1e200), two, [mod_name(0), "1e+200"])

    d = os.path.join(cases, "mlx_rank_max")
    os.makedirs(d)
    with open(os.path.join(d, "adapter_config.json"), "w") as f:
        json.dump({"lora_parameters": {"rank": I64_MAX, "scale": 2.0}}, f)
    stio.write_safetensors(os.path.join(d, "adapters.safetensors"),
                           {mod_name(0) + ".lora_a": rng.standard_normal((IN, 1)).astype(np.float32),
                            mod_name(0) + ".lora_b": rng.standard_normal((1, OUT)).astype(np.float32)})
    add("mlx_rank_max", d, [os.path.join(d, "adapter_config.json"), mod_name(0), str(I64_MAX)],
        "-9223372036854775808")

    with open(os.path.join(root, "cases.tsv"), "w") as f:
        f.write("\n".join(rows) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--modules", type=int, default=40000)
    ap.add_argument("--seed", type=int, default=14)
    a = ap.parse_args()
    root = os.path.abspath(a.outdir)
    if os.path.exists(root):
        shutil.rmtree(root)
    os.makedirs(root)
    rng = np.random.default_rng(a.seed)
    make_many(os.path.join(root, "many"), a.modules, rng)
    make_cases(root, rng)


if __name__ == "__main__":
    main()
