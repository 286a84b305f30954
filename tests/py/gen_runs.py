#!/usr/bin/python3
"""Write a seeded, small but realistic set of fine-tuning runs for the tests.

    gen_runs.py OUTDIR [--seed N]

OUTDIR gets:
  base/model.safetensors          Llama-style base, F32 matrices (+ F64 conv, 1-D
                                  norms, an I64 2-D buffer: all but F* >=2-D skipped)
  base-sharded/                   the same values in 3 shards + index
  base-bf16/                      the base rounded to BF16, 2 shards + index
  base-hub/models--org--tiny-llama/snapshots/REV/
                                  the F32 base in the HF hub cache layout: 2 shards
                                  + index, all symlinks into ../../blobs/
  ft-bf16/                        (a) BF16 run: checkpoint-50,100,150(sharded x3),200,
                                  max_steps 250, final model.safetensors (step 250);
                                  plus logs, configs, runs/ and an interrupted
                                  tmp-checkpoint-300/ (cut model file) to ignore
  ft-f32-tiny/                    (b) F32 run, relative update 1e-5 per element
                                  (dD ~ 1e-10); run-level trainer_state global_step 40
                                  beats max_steps 35 for the final model
  ft-f16/                         (c) F16 run; final model byte-identical to
                                  checkpoint-3000's (no extra step)
  ft-zero-rows/                   (d) F32 run with zero rows (both sides / one side,
                                  incl. a -0.0 row); no lm_head (so not analysed);
                                  an extra head not in the base; no max_steps and no
                                  run-level state: final model is step last+1 = 11
  ft-final-at-max/                 (e) checkpoint-10, -20 with max_steps 20, and a final
                                  model re-saved in BF16 (bytes differ): step 20 is
                                  checkpoint-20's, so 2 steps
  single/ft-final.safetensors     a single-file run (copy of ft-bf16's final model)
  odd/base.safetensors, odd/ft-odd.safetensors
                                  tensors with '/', a literal '%2F', non-ASCII and a
                                  space in their names (per_row group escaping)
  final-only/                     model.safetensors + trainer_state.json (global_step 77)
                                  and no checkpoint-N/: a single step 77
  runs.json                       what was written: per run, expected steps, rtol

Checkpoint folder names sort wrongly as text (checkpoint-100 < checkpoint-50).
"""

import argparse
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stio  # noqa: E402

HIDDEN = 48
KV = 16          # grouped-query attention: k/v have fewer rows
INTER = 130      # not a multiple of 8 or 16: row tails in SIMD loops
VOCAB = 259
LAYERS = 12      # > 10 so that natural order (2 before 10) matters
CONV = (8, 4, 3, 3)


def make_base(rng):
    """Float32 master weights (+ extras). Returns dict name -> ndarray."""
    w = {}
    std = 0.02
    w["model.embed_tokens.weight"] = rng.normal(0, 1.0, (VOCAB, HIDDEN)).astype(np.float32) * 0.1
    w["model.embed_tokens.weight"][0] = 0.0   # pad token: zero row
    w["model.embed_tokens.weight"][3] = 0.0   # an unused token, also zero
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        w[p + "self_attn.q_proj.weight"] = rng.normal(0, std, (HIDDEN, HIDDEN)).astype(np.float32)
        w[p + "self_attn.k_proj.weight"] = rng.normal(0, std, (KV, HIDDEN)).astype(np.float32)
        w[p + "self_attn.v_proj.weight"] = rng.normal(0, std, (KV, HIDDEN)).astype(np.float32)
        w[p + "self_attn.o_proj.weight"] = rng.normal(0, std, (HIDDEN, HIDDEN)).astype(np.float32)
        w[p + "mlp.gate_proj.weight"] = rng.normal(0, std, (INTER, HIDDEN)).astype(np.float32)
        w[p + "mlp.up_proj.weight"] = rng.normal(0, std, (INTER, HIDDEN)).astype(np.float32)
        w[p + "mlp.down_proj.weight"] = rng.normal(0, std, (HIDDEN, INTER)).astype(np.float32)
        w[p + "input_layernorm.weight"] = (1 + rng.normal(0, 0.05, HIDDEN)).astype(np.float32)
        w[p + "post_attention_layernorm.weight"] = (1 + rng.normal(0, 0.05, HIDDEN)).astype(np.float32)
    w["model.layers.1.self_attn.q_proj.weight"][5] = 0.0  # a dead head row
    # a Mixtral-style MoE block in layer 3: 11 experts (expert 10 sorts after 9;
    # the layer is the first all-digit component, 3, not the expert number)
    moe = "model.layers.3.block_sparse_moe."
    w[moe + "gate.weight"] = rng.normal(0, std, (11, HIDDEN)).astype(np.float32)
    for e in range(11):
        w[moe + f"experts.{e}.w1.weight"] = rng.normal(0, std, (KV, HIDDEN)).astype(np.float32)
    w["model.norm.weight"] = (1 + rng.normal(0, 0.05, HIDDEN)).astype(np.float32)
    w["lm_head.weight"] = rng.normal(0, std, (VOCAB, HIDDEN)).astype(np.float32)
    w["model.vision.conv1.weight"] = rng.normal(0, 0.1, CONV)  # float64
    # tiny weights: every value is subnormal once stored as F16 (|x| < 6.1e-5),
    # so a reader that flushes subnormals to zero sees zero rows
    w["model.vision.proj_small.weight"] = rng.normal(0, 3e-6, (16, HIDDEN)).astype(np.float32)
    w["model.rotary_emb.inv_freq"] = (1.0 / 10000 ** (np.arange(0, HIDDEN, 2) / HIDDEN)).astype(np.float32)
    w["model.buffers.position_ids"] = np.arange(64, dtype=np.int64).reshape(1, 64)
    return w


def is_matrix(name, a):
    return a.ndim >= 2 and a.dtype.kind == "f"


def to_tensors(weights, dtype):
    """Matrices and norms in `dtype`; the conv stays F64, ints stay ints."""
    out = {}
    for n, a in weights.items():
        if a.dtype.kind != "f":
            out[n] = stio.Tensor("I64", a)
        elif a.dtype == np.float64 and a.ndim == 4:
            out[n] = stio.Tensor("F64", a)
        else:
            out[n] = stio.Tensor(dtype, a.astype(np.float32))
    return out


class Drift:
    """Fine-tuning drift of every matrix: a random walk in weight space.

    W_t = g_t[:, None] * (W0 + D_t): D_t (direction) is a sum of low-rank plus
    full-rank increments, one per checkpoint interval, scaled with sqrt(dt);
    g_t = 1 + t * beta (one magnitude change per row, with a per-tensor bias).
    Both grow with t, as in real FT. Rows zero in W0 stay zero (no gradient).
    """

    def __init__(self, rng, base, lr, mag):
        self.rng = rng
        self.base = base
        self.lr = lr
        self.D = {n: np.zeros(a.shape) for n, a in base.items() if is_matrix(n, a)}
        self.beta = {}
        for n in self.D:
            k = base[n].shape[0]
            self.beta[n] = rng.normal(rng.normal(0, mag), mag, k)
        self.t = 0.0

    def advance(self, t):
        dt = t - self.t
        self.t = t
        for n, D in self.D.items():
            a = self.base[n]
            k = a.shape[0]
            c = int(np.prod(a.shape[1:]))
            std = float(np.std(a)) or 1.0
            r = 4
            u = self.rng.normal(0, 1, (k, r))
            v = self.rng.normal(0, 1, (r, c))
            inc = (u @ v / np.sqrt(r) + 0.3 * self.rng.normal(0, 1, (k, c))).reshape(a.shape)
            D += self.lr * std * np.sqrt(dt) * inc

    def weights(self):
        out = {}
        for n, a in self.base.items():
            if n not in self.D:
                out[n] = a.copy()
                continue
            g = 1 + self.t * self.beta[n]
            g = g.reshape((-1,) + (1,) * (a.ndim - 1))
            w = g * (a.astype(np.float64) + self.D[n])
            dead = ~np.any(a.reshape(a.shape[0], -1) != 0, axis=1)
            w[dead] = 0.0
            out[n] = w.astype(a.dtype)
        return out


HUB_REV = "0123456789abcdef0123456789abcdef01234567"


def write_hub_cache(root, tensors):
    """The Hugging Face hub cache layout: models--ORG--NAME/snapshots/REV/ whose
    files are relative symlinks into ../../blobs/ (a sharded model here)."""
    repo = os.path.join(root, "models--org--tiny-llama")
    tmp = os.path.join(root, "tmp")
    stio.write_sharded(tmp, tensors, 2)
    snap = os.path.join(repo, "snapshots", HUB_REV)
    os.makedirs(snap, exist_ok=True)
    os.makedirs(os.path.join(repo, "blobs"), exist_ok=True)
    os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
    with open(os.path.join(repo, "refs", "main"), "w") as f:
        f.write(HUB_REV)
    for i, fn in enumerate(sorted(os.listdir(tmp))):
        blob = f"{i:064x}"
        os.replace(os.path.join(tmp, fn), os.path.join(repo, "blobs", blob))
        os.symlink(os.path.join("..", "..", "blobs", blob), os.path.join(snap, fn))
    os.rmdir(tmp)


def write_trainer_litter(run, model_file):
    """What else a Trainer output folder holds: logs, configs, tokenizer, and an
    interrupted save (tmp-checkpoint-N with a cut model file) that is no checkpoint."""
    for fn, text in (("README.md", "---\nlibrary_name: transformers\n---\n"),
                     ("all_results.json", '{"train_loss": 1.5}'),
                     ("train_results.json", '{"train_loss": 1.5}'),
                     ("config.json", '{"architectures": ["LlamaForCausalLM"]}'),
                     ("generation_config.json", '{"do_sample": false}'),
                     ("tokenizer.json", '{"version": "1.0"}')):
        with open(os.path.join(run, fn), "w") as f:
            f.write(text)
    with open(os.path.join(run, "training_args.bin"), "wb") as f:
        f.write(b"PK\x03\x04" + bytes(60))
    tb = os.path.join(run, "runs", "Nov30_12-00-00_host")
    os.makedirs(tb, exist_ok=True)
    with open(os.path.join(tb, "events.out.tfevents.1701345600.host.1.0"), "wb") as f:
        f.write(bytes(40))
    tmpck = os.path.join(run, "tmp-checkpoint-300")
    os.makedirs(tmpck, exist_ok=True)
    with open(model_file, "rb") as f:
        head = f.read(1000)
    with open(os.path.join(tmpck, "model.safetensors"), "wb") as f:
        f.write(head)


def gen(outdir, seed):
    rng = np.random.default_rng(seed)
    os.makedirs(outdir, exist_ok=True)
    base = make_base(rng)
    runs = {}

    d = os.path.join(outdir, "base")
    os.makedirs(d, exist_ok=True)
    stio.write_safetensors(os.path.join(d, "model.safetensors"), to_tensors(base, "F32"))
    stio.write_sharded(os.path.join(outdir, "base-sharded"), to_tensors(base, "F32"), 3)
    stio.write_sharded(os.path.join(outdir, "base-bf16"), to_tensors(base, "BF16"), 2)
    write_hub_cache(os.path.join(outdir, "base-hub"), to_tensors(base, "F32"))

    # (a) BF16, sharded checkpoint, final model at max_steps
    run = os.path.join(outdir, "ft-bf16")
    drift = Drift(np.random.default_rng(seed + 1), base, lr=0.15, mag=0.03)
    steps = [50, 100, 150, 200]
    for s in steps:
        drift.advance(s / 250)
        stio.write_checkpoint(run, s, to_tensors(drift.weights(), "BF16"),
                              max_steps=250, nshards=3 if s == 150 else 1)
    drift.advance(1.0)
    final = to_tensors(drift.weights(), "BF16")
    stio.write_safetensors(os.path.join(run, "model.safetensors"), final)
    write_trainer_litter(run, os.path.join(run, "checkpoint-50", "model.safetensors"))
    os.makedirs(os.path.join(outdir, "single"), exist_ok=True)
    stio.write_safetensors(os.path.join(outdir, "single", "ft-final.safetensors"), final)
    runs["ft-bf16"] = {"steps": steps + [250], "dtype": "BF16", "rtol": 1e-6}

    # (b) F32, tiny multiplicative update: W_t = W0 * (1 + 1e-5 * (step/10) * z)
    run = os.path.join(outdir, "ft-f32-tiny")
    r2 = np.random.default_rng(seed + 2)
    z = {n: r2.normal(0, 1, a.shape) for n, a in base.items() if is_matrix(n, a)}
    steps = [10, 20, 30]
    for s in steps + [40]:
        w = {}
        for n, a in base.items():
            w[n] = a if n not in z else (a.astype(np.float64) * (1 + 1e-5 * (s / 10) * z[n])).astype(a.dtype)
        if s == 40:
            stio.write_safetensors(os.path.join(run, "model.safetensors"), to_tensors(w, "F32"))
            stio.write_trainer_state(run, 40, max_steps=35)
        else:
            stio.write_checkpoint(run, s, to_tensors(w, "F32"), max_steps=35)
    runs["ft-f32-tiny"] = {"steps": steps + [40], "dtype": "F32", "rtol": 1e-3}

    # (c) F16; the final model is the last checkpoint's file, byte for byte
    run = os.path.join(outdir, "ft-f16")
    drift = Drift(np.random.default_rng(seed + 3), base, lr=0.4, mag=0.05)
    steps = [1000, 2000, 3000]
    for s in steps:
        drift.advance(s / 3000)
        stio.write_checkpoint(run, s, to_tensors(drift.weights(), "F16"), max_steps=3000)
    shutil.copyfile(os.path.join(run, "checkpoint-3000", "model.safetensors"),
                    os.path.join(run, "model.safetensors"))
    runs["ft-f16"] = {"steps": steps, "dtype": "F16", "rtol": 1e-6}
    # a folder with only a final model and its trainer_state.json: one step, 77
    d = os.path.join(outdir, "final-only")
    os.makedirs(d, exist_ok=True)
    shutil.copyfile(os.path.join(run, "checkpoint-2000", "model.safetensors"),
                    os.path.join(d, "model.safetensors"))
    stio.write_trainer_state(d, 77)
    runs["final-only"] = {"steps": [77], "dtype": "F16", "rtol": 1e-6}

    # (d) F32 with zero rows on one side or both
    run = os.path.join(outdir, "ft-zero-rows")
    drift = Drift(np.random.default_rng(seed + 4), base, lr=0.2, mag=0.04)
    r4 = np.random.default_rng(seed + 5)
    steps = [5, 10]
    for s in steps + [11]:
        drift.advance(s / 11)
        w = drift.weights()
        del w["lm_head.weight"]                       # tied: not saved
        w["score.weight"] = r4.normal(0, 0.02, (2, HIDDEN)).astype(np.float32)  # not in base
        w["model.embed_tokens.weight"][3] = r4.normal(0, 0.1, HIDDEN)  # zero only in W0
        q0 = w["model.layers.0.self_attn.q_proj.weight"]
        q0[2] = 0.0                                   # zero only in W_t
        q0[7] = 0.0
        if s >= 10:
            w["model.layers.0.self_attn.k_proj.weight"][1] = -0.0  # negative zero row
        t = to_tensors(w, "F32")
        if s == 11:
            stio.write_safetensors(os.path.join(run, "model.safetensors"), t)
        else:
            stio.write_checkpoint(run, s, t)  # trainer_state without max_steps
    runs["ft-zero-rows"] = {"steps": steps + [11], "dtype": "F32", "rtol": 1e-6}

    # (e) the final model re-saved in BF16 after training to max_steps = 20, the
    # last checkpoint's step: its step is max_steps = 20, so checkpoint-20 stands
    # for step 20 and the run has 2 steps, not an invented step 21
    run = os.path.join(outdir, "ft-final-at-max")
    drift = Drift(np.random.default_rng(seed + 6), base, lr=0.2, mag=0.03)
    for s in (10, 20):
        drift.advance(s / 20)
        stio.write_checkpoint(run, s, to_tensors(drift.weights(), "F32"), max_steps=20)
    stio.write_safetensors(os.path.join(run, "model.safetensors"), to_tensors(drift.weights(), "BF16"))
    runs["ft-final-at-max"] = {"steps": [10, 20], "dtype": "F32", "rtol": 1e-6}

    # odd but legal tensor names: TF-style slashes, a literal %2F, non-ASCII, a space
    d = os.path.join(outdir, "odd")
    os.makedirs(d, exist_ok=True)
    r6 = np.random.default_rng(seed + 7)
    names = ["bert/encoder/layer_0/attention/self/query/kernel",
             "bert/encoder/layer_10/attention/self/query/kernel",
             "bert/encoder/layer_2/attention/self/query/kernel",
             "weird%2Fname.weight", "weird/name.weight", "décodeur.couches.1.poids",
             "with space.2.weight"]
    ob = {n: r6.normal(0, 0.02, (12, 20)).astype(np.float32) for n in names}
    orun = {n: (a * (1 + r6.normal(0, 0.05, (12, 1))) + r6.normal(0, 0.002, a.shape)).astype(np.float32)
            for n, a in ob.items()}
    stio.write_safetensors(os.path.join(d, "base.safetensors"), ob)
    stio.write_safetensors(os.path.join(d, "ft-odd.safetensors"), orun)
    runs["odd"] = {"steps": [0], "dtype": "F32", "rtol": 1e-6}

    with open(os.path.join(outdir, "runs.json"), "w") as f:
        json.dump({"seed": seed, "runs": runs}, f, indent=2)
    return runs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--seed", type=int, default=20240213)
    a = ap.parse_args()
    gen(a.outdir, a.seed)


if __name__ == "__main__":
    main()
