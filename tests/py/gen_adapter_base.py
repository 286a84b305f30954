"""gen_adapter_base: LoRA runs whose adapter_config.json names their base (for
tests/sh/adapter_base.sh): base/ (a model folder), lora/ naming "../../base" (relative to
its checkpoint folder), other/ naming another base, hub/ naming the hub id test-org/tiny,
none/ naming nothing, and ft/ (full weights)."""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stio  # noqa: E402

out = sys.argv[1]
rng = np.random.default_rng(7)
names = [f"model.layers.{i}.self_attn.q_proj.weight" for i in range(2)]
base = {n: rng.standard_normal((16, 12)).astype(np.float32) for n in names}
for folder in ("base", "base2"):
    os.makedirs(os.path.join(out, folder))
    stio.write_safetensors(os.path.join(out, folder, "model.safetensors"), base)


def lora(run, named):
    ck = os.path.join(out, run, "checkpoint-5")
    os.makedirs(ck)
    t = {}
    for n in names:
        m = n[: -len(".weight")]
        t[f"base_model.model.{m}.lora_A.weight"] = rng.standard_normal((2, 12)).astype(np.float32)
        t[f"base_model.model.{m}.lora_B.weight"] = rng.standard_normal((16, 2)).astype(np.float32)
    stio.write_safetensors(os.path.join(ck, "adapter_model.safetensors"), t)
    cfg = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"]}
    if named is not None:
        cfg["base_model_name_or_path"] = named
    with open(os.path.join(ck, "adapter_config.json"), "w") as f:
        json.dump(cfg, f)


lora("lora", "../../base")
lora("other", "../../base2")
lora("hub", "test-org/tiny")
lora("none", None)
ft = os.path.join(out, "ft", "checkpoint-5")
os.makedirs(ft)
stio.write_safetensors(os.path.join(ft, "model.safetensors"),
                       {n: v + 0.01 for n, v in base.items()})
