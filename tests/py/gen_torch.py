#!/usr/bin/python3
"""gen_torch.py OUTDIR [--seed N]   |   gen_torch.py --corpus DIR

Writes PyTorch zip checkpoints with the real torch.save (torch 1.13, Debian's
python3-torch), the same weights as safetensors (tests/py/stio.py), and
hand-assembled pickles, for tests/py/check_torch.py and tests/sh/torch.sh.
Run with Debian's /usr/bin/python3.  Nothing written here is ever loaded with
Python's pickle by the tests except the trusted files of (a), (b), (c) and
OUTDIR/valid/ (and those with torch.load(weights_only=True) first).

(a) Full fine-tuning, one folder per dtype variant V in bf16, f16, f32, mixed
    (mixed: F32 base, BF16 checkpoints):
      OUTDIR/V/bin/base/pytorch_model.bin
      OUTDIR/V/bin/ft/checkpoint-{10,20,30}/pytorch_model.bin + trainer_state.json
          (checkpoint-20 sharded: pytorch_model-0000K-of-00002.bin +
          pytorch_model.bin.index.json); lm_head.weight and model.embed_tokens.weight
          share one storage (tied weights, as transformers saves them)
      OUTDIR/V/st/...  the same tensors as model.safetensors (shards + index at 20)
    bf16: a final model in ft/ at step 40 (ft/trainer_state.json global_step 40);
    f32: a final model in ft/ byte-identical to checkpoint-30's (must not count twice).
    Row 0 of the embedding is zero in the base and every checkpoint; row 1 becomes
    zero at step 30 (zero_rows).
(b) OUTDIR/tricky/: tricky.pt (shared storages with offsets, a transposed view, a
    column slice, an expanded stride-0 view, a permuted 3-D view, nn.Parameter, all
    storage dtypes, 0-d and empty tensors, a list, nested dicts), nested_state_dict.pt
    ({"state_dict": {...}}), views.pt ({"model": {...views...}, "epoch": 3, ...}) and
    views_base.safetensors (contiguous copies, named model.<name>).
    OUTDIR/valid/: more files that must be read (proto 4, renamed archive folder,
    byteorder "little", unaligned re-zip, hand-made _rebuild_from_type_v2 /
    _rebuild_parameter_with_state / UntypedStorage, torch-2-style extra records),
    each NAME.pt with NAME.ref.safetensors (its float tensors of rank >= 2, made
    contiguous); list.tsv: NAME <tab> FILE <tab> REF-or-'-'.
(c) OUTDIR/lora/{bin,st}/run, OUTDIR/dora/{bin,st}/run: PEFT adapter runs over
    OUTDIR/f32/*/base, checkpoint-{5,15}/ with adapter_config.json +
    adapter_model.bin (or .safetensors), run-folder adapter_config.json.
(d) OUTDIR/hostile/: files and folders the tool must refuse (exit 1), listed in
    cases.tsv: NAME <tab> PATH <tab> EXTENDED-REGEX the message must match.
    rce*.bin write OUTDIR/PWNED_FILE (and /tmp/PWNED_FILE) if anything runs them.

OUTDIR/manifest.json: variants, runs, steps, adapter configs.

--corpus DIR writes small data.pkl seeds (valid and near-valid) for the pickle fuzzer.
"""

import argparse
import io
import json
import os
import shutil
import struct
import sys
import zipfile

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stio  # noqa: E402

# ---------------------------------------------------------------- torch <-> stio
ST_OF = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
         torch.float64: "F64", torch.int64: "I64", torch.int32: "I32",
         torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}
TDT = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32}


def to_st(t):
    """torch tensor -> stio.Tensor with the same bytes (contiguous copy)."""
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        return stio.Tensor("BF16", t.view(torch.int16).numpy().view(np.uint16).copy())
    return stio.Tensor(ST_OF[t.dtype], t.numpy().copy())


def write_st(path, sd):
    stio.write_safetensors(path, {k: to_st(v) for k, v in sd.items()})


# ---------------------------------------------------------------- (a) FT runs
def model_shapes(nlayers=11, d=16, kv=8, ff=32, vocab=64):
    s = {"model.embed_tokens.weight": [vocab, d]}
    for i in range(nlayers):
        p = f"model.layers.{i}."
        s[p + "self_attn.q_proj.weight"] = [d, d]
        s[p + "self_attn.k_proj.weight"] = [kv, d]
        s[p + "self_attn.v_proj.weight"] = [kv, d]
        s[p + "self_attn.o_proj.weight"] = [d, d]
        s[p + "mlp.gate_proj.weight"] = [ff, d]
        s[p + "mlp.up_proj.weight"] = [ff, d]
        s[p + "mlp.down_proj.weight"] = [d, ff]
        s[p + "input_layernorm.weight"] = [d]
    s["model.norm.weight"] = [d]
    s["model.vision.patch.weight"] = [8, 3, 2, 2]   # a conv kernel: 8 rows of 12
    return s


def make_base(gen):
    sd = {}
    for n, shp in model_shapes().items():
        if len(shp) == 1:
            sd[n] = 1.0 + 0.1 * torch.randn(shp, generator=gen)
        else:
            sd[n] = torch.randn(shp, generator=gen) / (shp[-1] ** 0.5)
    sd["model.embed_tokens.weight"][0].zero_()          # padding row
    sd["model.position_ids"] = torch.arange(32, dtype=torch.int64).reshape(1, 32)
    return sd


def make_step(base, gen, k, step):
    """An FT checkpoint: each row scaled by (1 + g) plus a relative 1e-2 * k update."""
    sd = {}
    for n, w in base.items():
        if not w.is_floating_point():
            sd[n] = w.clone()
            continue
        g = 1.0 + 0.01 * k * torch.randn(w.shape[:1] + (1,) * (w.dim() - 1), generator=gen)
        sd[n] = w * g + 0.01 * k * w.abs().mean() * torch.randn(w.shape, generator=gen)
    emb = sd["model.embed_tokens.weight"]
    emb[0].zero_()
    if step >= 30:
        emb[1].zero_()
    return sd


def cast_sd(sd, dt):
    return {n: (v.to(dt) if v.is_floating_point() else v) for n, v in sd.items()}


def tie(sd):
    """lm_head.weight shares the embedding's storage (tied weights), in dict order."""
    out = dict(sd)
    out["lm_head.weight"] = sd["model.embed_tokens.weight"]
    return out


def save_bin_model(folder, sd, nshards=1):
    os.makedirs(folder, exist_ok=True)
    if nshards == 1:
        torch.save(sd, os.path.join(folder, "pytorch_model.bin"))
        return
    names = list(sd)
    per = -(-len(names) // nshards)
    wm = {}
    total = 0
    for k in range(nshards):
        fn = f"pytorch_model-{k + 1:05d}-of-{nshards:05d}.bin"
        part = {n: sd[n] for n in names[k * per:(k + 1) * per]}
        torch.save(part, os.path.join(folder, fn))
        for n, v in part.items():
            wm[n] = fn
            total += v.numel() * v.element_size()
    with open(os.path.join(folder, "pytorch_model.bin.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": wm}, f, indent=2)


def save_st_model(folder, sd, nshards=1):
    """The same split as save_bin_model, as safetensors."""
    os.makedirs(folder, exist_ok=True)
    if nshards == 1:
        write_st(os.path.join(folder, "model.safetensors"), sd)
        return
    names = list(sd)
    per = -(-len(names) // nshards)
    wm = {}
    total = 0
    for k in range(nshards):
        fn = f"model-{k + 1:05d}-of-{nshards:05d}.safetensors"
        part = {n: sd[n] for n in names[k * per:(k + 1) * per]}
        write_st(os.path.join(folder, fn), part)
        for n, v in part.items():
            wm[n] = fn
            total += v.numel() * v.element_size()
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": wm}, f, indent=2)


def side_files(folder, step):
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"architectures": ["LlamaForCausalLM"]}, f)
    # optimizer/scheduler files the analysis must ignore (real torch zips, not models)
    torch.save({"state": {0: {"step": torch.tensor(float(step))}}, "param_groups": []},
               os.path.join(folder, "optimizer.pt"))
    torch.save({"last_epoch": step}, os.path.join(folder, "scheduler.pt"))


def gen_ft(out, gen, man):
    base32 = make_base(gen)
    steps = [10, 20, 30]
    ck32 = {s: make_step(base32, gen, k + 1, s) for k, s in enumerate(steps)}
    final32 = make_step(base32, gen, 4, 40)
    for v in ("bf16", "f16", "f32", "mixed"):
        bdt = torch.float32 if v == "mixed" else TDT[v]
        cdt = torch.bfloat16 if v == "mixed" else TDT[v]
        base = tie(cast_sd(base32, bdt))
        runs = {"ft": []}
        for fmt in ("bin", "st"):
            root = os.path.join(out, v, fmt)
            (save_bin_model if fmt == "bin" else save_st_model)(os.path.join(root, "base"), base)
            for s in steps:
                d = os.path.join(root, "ft", f"checkpoint-{s}")
                sd = tie(cast_sd(ck32[s], cdt))
                (save_bin_model if fmt == "bin" else save_st_model)(d, sd, 2 if s == 20 else 1)
                stio.write_trainer_state(d, s, max_steps=40 if v == "bf16" else None)
                side_files(d, s)
            ft = os.path.join(root, "ft")
            mf = "pytorch_model.bin" if fmt == "bin" else "model.safetensors"
            if v == "bf16":
                (save_bin_model if fmt == "bin" else save_st_model)(ft, tie(cast_sd(final32, cdt)))
                stio.write_trainer_state(ft, 40)
            elif v == "f32":
                shutil.copyfile(os.path.join(ft, "checkpoint-30", mf), os.path.join(ft, mf))
        # run name -> [[step, path under V/bin, path under V/st], ...]
        runs["ft"] = [[s, f"ft/checkpoint-{s}", f"ft/checkpoint-{s}"] for s in steps]
        if v == "bf16":
            runs["ft"].append([40, "ft", "ft"])
        runs["ck10"] = [[0, "ft/checkpoint-10/pytorch_model.bin",
                         "ft/checkpoint-10/model.safetensors"]]
        runs["ck20"] = [[20, "ft/checkpoint-20", "ft/checkpoint-20"]]
        man["variants"][v] = {"runs": runs}


# ---------------------------------------------------------------- (c) adapters
def gen_adapters(out, gen, man):
    base = torch.load(os.path.join(out, "f32", "bin", "base", "pytorch_model.bin"),
                      weights_only=True)
    for kind in ("lora", "dora"):
        r, alpha = 4, 8
        targets = ["q_proj", "v_proj"] if kind == "lora" else ["q_proj", "k_proj", "down_proj"]
        cfg = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": alpha,
               "lora_dropout": 0.0, "target_modules": targets, "fan_in_fan_out": False,
               "use_rslora": False, "use_dora": kind == "dora", "bias": "none",
               "modules_to_save": None, "rank_pattern": {}, "alpha_pattern": {},
               "base_model_name_or_path": "../../f32/bin/base", "inference_mode": True}
        steps = [5, 15]
        for fmt in ("bin", "st"):
            rd = os.path.join(out, kind, fmt, "run")
            os.makedirs(rd, exist_ok=True)
            with open(os.path.join(rd, "adapter_config.json"), "w") as f:
                json.dump(cfg, f, indent=2)
        for k, s in enumerate(steps):
            sd = {}
            for n, w in base.items():
                mod = n[:-len(".weight")]
                if not n.endswith(".weight") or w.dim() != 2 or mod.split(".")[-1] not in targets:
                    continue
                pre = "base_model.model." + mod
                sd[pre + ".lora_A.weight"] = 0.3 * torch.randn(r, w.shape[1], generator=gen)
                sd[pre + ".lora_B.weight"] = 0.02 * (k + 1) * torch.randn(w.shape[0], r, generator=gen)
                if kind == "dora":
                    v = w.double() + (alpha / r) * (sd[pre + ".lora_B.weight"].double()
                                                   @ sd[pre + ".lora_A.weight"].double())
                    m = v.norm(dim=1) * (1 + 0.05 * (k + 1) * torch.rand(w.shape[0], generator=gen,
                                                                          dtype=torch.float64))
                    sd[pre + ".lora_magnitude_vector"] = m.float()
            for fmt in ("bin", "st"):
                d = os.path.join(out, kind, fmt, "run", f"checkpoint-{s}")
                os.makedirs(d, exist_ok=True)
                with open(os.path.join(d, "adapter_config.json"), "w") as f:
                    json.dump(cfg, f, indent=2)
                if fmt == "bin":
                    torch.save(sd, os.path.join(d, "adapter_model.bin"))
                else:
                    write_st(os.path.join(d, "adapter_model.safetensors"), sd)
                stio.write_trainer_state(d, s)
        man["adapters"][kind] = {"config": cfg, "steps": steps}


# ---------------------------------------------------------------- pickle assembler
class G:
    """A GLOBAL reference (module, name)."""

    def __init__(self, mod, name):
        self.mod, self.name = mod, name


class Raw:
    def __init__(self, b):
        self.b = b


class PB:
    """Assembles pickle bytes opcode by opcode (no memo unless asked)."""

    def __init__(self, proto=2):
        self.b = bytearray(b"\x80" + bytes([proto]))

    def raw(self, x):
        self.b += x
        return self

    def int_(self, n):
        if 0 <= n < 256:
            return self.raw(b"K" + bytes([n]))
        if 0 <= n < 65536:
            return self.raw(b"M" + struct.pack("<H", n))
        if -2 ** 31 <= n < 2 ** 31:
            return self.raw(b"J" + struct.pack("<i", n))
        nb = (n.bit_length() + 8) // 8
        return self.raw(b"\x8a" + bytes([nb]) + n.to_bytes(nb, "little", signed=True))

    def str_(self, s):
        e = s.encode("utf-8") if isinstance(s, str) else s
        return self.raw(b"X" + struct.pack("<I", len(e)) + e)

    def val(self, v):
        if isinstance(v, bool):
            return self.raw(b"\x88" if v else b"\x89")
        if v is None:
            return self.raw(b"N")
        if isinstance(v, int):
            return self.int_(v)
        if isinstance(v, (str, bytes)):
            return self.str_(v)
        if isinstance(v, G):
            return self.raw(b"c" + v.mod.encode() + b"\n" + v.name.encode() + b"\n")
        if isinstance(v, Raw):
            return self.raw(v.b)
        if isinstance(v, tuple):
            if len(v) == 0:
                return self.raw(b")")
            self.raw(b"(")
            for x in v:
                self.val(x)
            return self.raw(b"t")
        if isinstance(v, dict):
            self.raw(b"}")
            if v:
                self.raw(b"(")
                for k, x in v.items():
                    self.val(k)
                    self.val(x)
                self.raw(b"u")
            return self
        if isinstance(v, list):
            self.raw(b"]")
            if v:
                self.raw(b"(")
                for x in v:
                    self.val(x)
                self.raw(b"e")
            return self
        raise TypeError(type(v))

    def stop(self):
        return bytes(self.b + b".")


def call(fn, *args):
    """fn(*args) as GLOBAL + args tuple + REDUCE."""
    p = PB.__new__(PB)
    p.b = bytearray()
    p.val(fn)
    p.val(tuple(args))
    p.raw(b"R")
    return Raw(bytes(p.b))


def persid(cls, key, numel, device="cpu", tag="storage"):
    p = PB.__new__(PB)
    p.b = bytearray()
    p.val((tag, G("torch", cls), key, device, numel))
    p.raw(b"Q")
    return Raw(bytes(p.b))


HOOKS = call(G("collections", "OrderedDict"))


def tensor_v2(cls, key, numel, offset, shape, stride, requires_grad=False):
    return call(G("torch._utils", "_rebuild_tensor_v2"), persid(cls, key, numel), offset,
                tuple(shape), tuple(stride), requires_grad, HOOKS)


def pickle_of(obj, proto=2):
    return PB(proto).val(obj).stop()


def write_torch_zip(path, pkl, records, archive="archive", version=b"3\n", byteorder=None,
                    extra=(), compression=zipfile.ZIP_STORED, pkl_names=None):
    """A zip in torch's layout: ARCHIVE/data.pkl, ARCHIVE/data/KEY..., ARCHIVE/version."""
    with zipfile.ZipFile(path, "w", compression) as z:
        for n in (pkl_names or [f"{archive}/data.pkl"]):
            z.writestr(n, pkl)
        for k, b in records.items():
            z.writestr(f"{archive}/data/{k}", b)
        if byteorder is not None:
            z.writestr(f"{archive}/byteorder", byteorder)
        for n, b in extra:
            z.writestr(n, b)
        z.writestr(f"{archive}/version", version)


def rezip(src, dst, edit=None, compression=zipfile.ZIP_STORED):
    """Copy a zip entry by entry; edit(name, data) -> list of (name, data) (or None)."""
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w", compression) as zo:
        for info in zi.infolist():
            data = zi.read(info.filename)
            items = edit(info.filename, data) if edit else [(info.filename, data)]
            for n, d in items or []:
                zo.writestr(n, d)


def f32_bytes(n, seed):
    return np.random.default_rng(seed).standard_normal(n).astype("<f4").tobytes()


# ---------------------------------------------------------------- (b) tricky + valid
def flatten(obj, prefix=""):
    """The dotted names the tool gives: dict key, list/tuple index; tensors only."""
    out = {}
    if isinstance(obj, torch.Tensor):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}.{i}" if prefix else str(i)))
    return out


def ref_of(obj):
    """float tensors of rank >= 2 (what analyze compares), contiguous."""
    return {n: t.detach().contiguous() for n, t in flatten(obj).items()
            if t.is_floating_point() and t.dim() >= 2 and t.shape[0] > 0}


def gen_tricky(out, gen):
    d = os.path.join(out, "tricky")
    os.makedirs(d, exist_ok=True)
    store = torch.randn(300, generator=gen)                  # one storage, many views
    a = store[0:48].view(6, 8)
    b = store[48:112].view(8, 8)                             # storage offset 48
    c = store[112:136]                                       # 1-D, offset 112
    w = torch.randn(6, 10, generator=gen)
    wt = w.t()                                               # [10, 6] stride (1, 10)
    big = torch.randn(12, 7, generator=gen)
    rows = big[3:]                                           # offset 21
    cols = big[:, 2:5]                                       # [12, 3] stride (7, 1) offset 2
    exp = torch.randn(1, 5, generator=gen).expand(4, 5)      # stride (0, 1)
    cube = torch.randn(3, 4, 5, generator=gen)
    perm = cube.permute(2, 0, 1)                             # [5, 3, 4]
    step2 = store[140:].view(16, 10)[::2, 1::3]              # [8, 3] stride (20, 3)
    hb = torch.randn(9, 6, generator=gen).to(torch.bfloat16)
    hh = torch.randn(9, 6, generator=gen).to(torch.float16)
    dd = torch.randn(4, 6, generator=gen, dtype=torch.float64)
    param = torch.nn.Parameter(torch.randn(5, 4, generator=gen))
    views = {
        "a": a, "b": b, "wt": wt, "w": w, "rows": rows, "cols": cols, "exp": exp,
        "perm": perm, "step2": step2, "hb_t": hb.t(), "hh_t": hh.t(), "hb": hb,
        "dd_t": dd.t(), "param": param,
    }
    tricky = dict(views)
    tricky.update({
        "c": c,
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 4),
        "i64": torch.arange(12, dtype=torch.int64).view(3, 4),
        "i32": torch.arange(6, dtype=torch.int32),
        "i16": torch.arange(6, dtype=torch.int16).view(2, 3),
        "i8": torch.arange(-3, 3, dtype=torch.int8),
        "u8": torch.arange(6, dtype=torch.uint8).view(3, 2),
        "flag": torch.tensor([True, False, True]),
        "layers": [torch.randn(2, 3, generator=gen), (torch.randn(3, generator=gen), "x")],
        "inner": {"deep": {"x.weight": torch.randn(2, 2, generator=gen)}, "n": 7},
        "note": "a string leaf", "step": 12,
    })
    torch.save(tricky, os.path.join(d, "tricky.pt"))
    torch.save({"state_dict": {"enc.weight": a, "dec.weight": wt, "bias": c}},
               os.path.join(d, "nested_state_dict.pt"))
    torch.save({"model": views, "epoch": 3, "optimizer": {"lr": 0.1, "betas": (0.9, 0.99)}},
               os.path.join(d, "views.pt"))
    write_st(os.path.join(d, "views_base.safetensors"),
             {f"model.{n}": t.detach().contiguous() for n, t in views.items()})


def gen_valid(out, gen):
    d = os.path.join(out, "valid")
    os.makedirs(d, exist_ok=True)
    lst = []

    def add(name, expect=None):
        """expect: the tensors the file holds, for hand-made pickles that torch 1.13
        cannot load itself (written to NAME.expect.json); else torch.load is the truth."""
        path = os.path.join(d, name + ".pt")
        obj = expect if expect is not None else torch.load(path)   # trusted: made here
        r = ref_of(obj)
        refp = "-"
        if r:
            refp = os.path.join(d, name + ".ref.safetensors")
            write_st(refp, r)
        exp = "-"
        if expect is not None:
            exp = os.path.join(d, name + ".expect.json")
            with open(exp, "w") as f:
                json.dump({n: [ST_OF[t.dtype], list(t.shape)] for n, t in flatten(expect).items()},
                          f, indent=1)
        lst.append((name, path, refp, exp))

    sd = {"x.weight": torch.randn(6, 5, generator=gen),
          "y.weight": torch.randn(4, 6, generator=gen).to(torch.bfloat16).t(),
          "z": torch.randn(3, generator=gen)}
    # protocol 4 (FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL)
    torch.save(sd, os.path.join(d, "proto4.pt"), pickle_protocol=4)
    add("proto4")
    # written as foo.pt (archive folder "foo"), renamed
    torch.save(sd, os.path.join(d, "foo.pt"))
    os.replace(os.path.join(d, "foo.pt"), os.path.join(d, "renamed.pt"))
    add("renamed")
    # through a file object: archive folder "archive"
    buf = io.BytesIO()
    torch.save(sd, buf)
    with open(os.path.join(d, "fileobj.pt"), "wb") as f:
        f.write(buf.getvalue())
    add("fileobj")
    # byteorder "little" record (what torch >= 2.0 writes), re-zipped (records unaligned)
    src = os.path.join(d, "renamed.pt")
    rezip(src, os.path.join(d, "little.pt"),
          lambda n, b: [(n, b)] + ([("foo/byteorder", b"little")] if n.endswith("/version") else []))
    add("little")
    # re-zipped with zipfile: stored, but not 64-byte aligned
    rezip(src, os.path.join(d, "unaligned.pt"),
          lambda n, b: [(n, b)] if not n.endswith("data.pkl") else [(n, b), ("foo/zzz_pad", b"1")])
    add("unaligned")
    # torch-2 style: .data/serialization_id, byteorder, records in another order
    rezip(src, os.path.join(d, "torch2.pt"),
          lambda n, b: [(n, b)] + ([("foo/byteorder", b"little"),
                                    ("foo/.data/serialization_id", b"1234567890")]
                                   if n.endswith("data.pkl") else []))
    add("torch2")
    # hand-made: _rebuild_from_type_v2 with torch.Tensor and torch.nn.Parameter,
    # _rebuild_parameter_with_state, UntypedStorage, memo use, EMPTY_DICT + SETITEM
    rec = {"0": f32_bytes(40, 1), "1": f32_bytes(12, 2), "2": bytes(range(24))}
    inner0 = (G("torch._utils", "_rebuild_tensor_v2"), G("torch", "Tensor"),
              (persid("FloatStorage", "0", 40), 4, (4, 5), (5, 1), False, HOOKS), {})
    inner1 = (G("torch._utils", "_rebuild_parameter"), G("torch.nn.parameter", "Parameter"),
              (tensor_v2("FloatStorage", "1", 12, 0, (3, 4), (1, 3)), True, HOOKS), {})
    obj = {
        "ft": call(G("torch._tensor", "_rebuild_from_type_v2"), *inner0),
        "fp": call(G("torch._tensor", "_rebuild_from_type_v2"), *inner1),
        "ps": call(G("torch._utils", "_rebuild_parameter_with_state"),
                   tensor_v2("FloatStorage", "0", 40, 20, (2, 10), (10, 1)), True, HOOKS,
                   {"tag": "x"}),
        "ub": tensor_v2("UntypedStorage", "2", 24, 4, (4, 5), (5, 1)),
    }
    write_torch_zip(os.path.join(d, "handmade.pt"), pickle_of(obj), rec, archive="weird_name")

    def view(key, dt, off, shape, stride):
        base = torch.frombuffer(bytearray(rec[key]), dtype=dt)
        return torch.as_strided(base, shape, stride, off).clone()
    add("handmade", {"ft": view("0", torch.float32, 4, (4, 5), (5, 1)),
                     "fp": view("1", torch.float32, 0, (3, 4), (1, 3)),
                     "ps": view("0", torch.float32, 20, (2, 10), (10, 1)),
                     "ub": view("2", torch.uint8, 4, (4, 5), (5, 1))})
    # by hand: BINPUT / LONG_BINPUT / BINGET / LONG_BINGET, SETITEM, APPEND, POP;
    # one tensor object under three names (w, lst.0, lst.1)
    p = PB(2)
    p.raw(b"}q\x00")
    p.str_("w").raw(b"r\x05\x00\x00\x00")
    p.val(tensor_v2("FloatStorage", "0", 40, 0, (5, 8), (8, 1))).raw(b"q\x07").raw(b"s")
    p.raw(b"h\x00").str_("lst").raw(b"]").raw(b"h\x07").raw(b"a").raw(b"j\x07\x00\x00\x00")
    p.raw(b"a").raw(b"s")
    p.raw(b"0")                                              # POP the dict copy
    pk = p.stop()
    write_torch_zip(os.path.join(d, "memo.pt"), pk, {"0": rec["0"]})
    add("memo")
    with open(os.path.join(d, "list.tsv"), "w") as f:
        for row in lst:
            f.write("\t".join(row) + "\n")


# ---------------------------------------------------------------- (d) hostile
class Evil:
    """Pickles as a call of os.system: loading it with pickle runs the command."""

    def __init__(self, cmd, fn=os.system):
        self.cmd, self.fn = cmd, fn

    def __reduce__(self):
        return (self.fn, (self.cmd,))


def gen_hostile(out, gen):
    d = os.path.join(out, "hostile")
    os.makedirs(d, exist_ok=True)
    cases = []
    marker = os.path.join(os.path.abspath(out), "PWNED_FILE")
    cmd = f"echo pwned > {marker}; echo pwned > /tmp/PWNED_FILE"
    good = {"w": torch.randn(4, 6, generator=gen), "v": torch.randn(6, 4, generator=gen)}
    goodp = os.path.join(d, "_good.bin.src")
    torch.save(good, goodp)

    def case(name, regex, path=None):
        cases.append((name, path or os.path.join(d, name), regex))

    # code execution through __reduce__
    torch.save({"w": good["w"], "evil": Evil(cmd)}, os.path.join(d, "rce_os_system.bin"))
    case("rce_os_system.bin", "system")
    torch.save({"evil": Evil(f"__import__('os').system({cmd!r})", eval), "w": good["w"]},
               os.path.join(d, "rce_eval.bin"))
    case("rce_eval.bin", "eval")
    # protocol 4: STACK_GLOBAL from two memoised strings
    p = PB(4)
    p.raw(b"}").raw(b"\x94").raw(b"(").str_("w")
    p.raw(b"\x8c\x02os\x94\x8c\x06system\x94\x93\x94").str_(cmd).raw(b"\x85R")
    p.raw(b"u")
    write_torch_zip(os.path.join(d, "rce_stack_global.bin"), p.stop(), {})
    case("rce_stack_global.bin", "system")
    # INST opcode: old-style instance creation of os.system
    p = PB(2)
    p.raw(b"}(").str_("w").raw(b"(").str_(cmd).raw(b"ios\nsystem\n").raw(b"u")
    write_torch_zip(os.path.join(d, "rce_inst.bin"), p.stop(), {})
    case("rce_inst.bin", "system|opcode|INST")
    # a cyclic dict, d["self"] = d, written by torch.save (the pickle memo makes the cycle)
    cyc = {"w": good["w"]}
    cyc["self"] = cyc
    torch.save(cyc, os.path.join(d, "cycle.bin"))
    case("cycle.bin", "nest|cycl|recurs|deep|depth")
    # a whole nn.Module (torch.save(model)): a real file, refused by its class
    torch.save(torch.nn.Linear(4, 3), os.path.join(d, "nn_module.bin"))
    case("nn_module.bin", "Linear")
    # _rebuild_from_type_v2 with a type other than Tensor / Parameter
    rec = {"0": f32_bytes(24, 3)}
    obj = {"w": call(G("torch._tensor", "_rebuild_from_type_v2"),
                     G("torch._utils", "_rebuild_tensor_v2"), G("collections", "OrderedDict"),
                     (persid("FloatStorage", "0", 24), 0, (4, 6), (6, 1), False, HOOKS), {})}
    write_torch_zip(os.path.join(d, "from_type_bad.bin"), pickle_of(obj), rec)
    case("from_type_bad.bin", "OrderedDict|type")
    # a storage class not on the list
    obj = {"w": tensor_v2("ComplexFloatStorage", "0", 12, 0, (3, 4), (4, 1))}
    write_torch_zip(os.path.join(d, "storage_complex.bin"), pickle_of(obj), rec)
    case("storage_complex.bin", "ComplexFloatStorage")
    # an allowed storage class called directly (not through a persistent id)
    obj = {"w": call(G("torch", "FloatStorage"), 10 ** 12)}
    write_torch_zip(os.path.join(d, "storage_called.bin"), pickle_of(obj), rec)
    case("storage_called.bin", "FloatStorage|call|storage")
    # legacy (pre-1.6) format
    torch.save(good, os.path.join(d, "legacy.bin"), _use_new_zipfile_serialization=False)
    case("legacy.bin", "legacy")
    # byteorder "big"
    rezip(goodp, os.path.join(d, "big_endian.bin"),
          lambda n, b: [(n, b)] + ([(n.rsplit("/", 1)[0] + "/byteorder", b"big")]
                                   if n.endswith("/version") else []))
    case("big_endian.bin", "byteorder|big")
    # a record shorter than the storage declares (w: 24 floats -> 20)
    def shorten(n, b):
        return [(n, b[:80] if "/data/" in n and len(b) == 96 else b)]
    rezip(goodp, os.path.join(d, "short_record.bin"), shorten)
    case("short_record.bin", "record|storage|short|size|bytes|length")
    # deflated records
    rezip(goodp, os.path.join(d, "deflated.bin"), compression=zipfile.ZIP_DEFLATED)
    case("deflated.bin", "compress|deflat|stored")
    # truncated archives
    blob = open(goodp, "rb").read()
    with open(os.path.join(d, "truncated_half.bin"), "wb") as f:
        f.write(blob[:len(blob) // 2])
    case("truncated_half.bin", ".")
    with open(os.path.join(d, "truncated_tail.bin"), "wb") as f:
        f.write(blob[:-10])
    case("truncated_tail.bin", ".")
    with open(os.path.join(d, "empty.bin"), "wb"):
        pass
    case("empty.bin", ".")
    with open(os.path.join(d, "garbage.bin"), "wb") as f:
        f.write(np.random.default_rng(5).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    case("garbage.bin", ".")
    # pickle-level attacks inside a valid torch layout
    w = tensor_v2("FloatStorage", "0", 24, 0, (4, 6), (6, 1))
    p = PB(2).raw(b"}(").str_("w").val(w).raw(b"r\xff\xff\xff\xffu")    # LONG_BINPUT 2^32-1
    write_torch_zip(os.path.join(d, "memo_huge.bin"), p.stop(), rec)
    case("memo_huge.bin", "memo")
    p = PB(2).raw(b"}(").str_("w").raw(b"j\x00\x00\x00\x70u")              # LONG_BINGET unset
    write_torch_zip(os.path.join(d, "memo_unset.bin"), p.stop(), rec)
    case("memo_unset.bin", "memo")
    p = PB(2).raw(b"(" * 200000).raw(b"}")
    write_torch_zip(os.path.join(d, "deep_marks.bin"), p.stop(), rec)
    case("deep_marks.bin", "mark|MARK|nest|deep|depth|stack")
    # 1,000,000 nested lists around a tensor with a constant stack (memo slot 0)
    p = PB(2).raw(b"}(").str_("w").val(w)
    p.raw(b"q\x000]h\x00a" * 1000000)
    p.raw(b"u")
    write_torch_zip(os.path.join(d, "deep_lists.bin"), p.stop(), rec)
    case("deep_lists.bin", "nest|deep|depth|limit|too many")
    p = PB(2).raw(b"}(").str_("w").val(w).raw(b"\xffu")
    write_torch_zip(os.path.join(d, "opcode_unknown.bin"), p.stop(), rec)
    case("opcode_unknown.bin", "opcode")
    p = PB(2).raw(b"}(").str_("w").raw(b"\x82\x01u")                       # EXT1
    write_torch_zip(os.path.join(d, "opcode_ext1.bin"), p.stop(), rec)
    case("opcode_ext1.bin", "opcode|EXT|extension")
    p = PB(2).raw(b"}(").str_("w").val(w)                                  # no STOP
    write_torch_zip(os.path.join(d, "pickle_truncated.bin"), bytes(p.b), rec)
    case("pickle_truncated.bin", "pickle|end|truncat|STOP")
    p = PB(2).raw(b"}(").raw(b"X\xff\xff\xff\x7fabc")                      # string past end
    write_torch_zip(os.path.join(d, "string_past_end.bin"), p.stop(), rec)
    case("string_past_end.bin", "pickle|end|truncat|string|length")
    p = PB(2).raw(b"}(").str_(b"w\xff\xfe").val(w).raw(b"u")
    write_torch_zip(os.path.join(d, "bad_utf8_key.bin"), p.stop(), rec)
    case("bad_utf8_key.bin", "UTF|utf")
    # storage keys with '/' and '..' (the records exist under those names)
    obj = {"w": tensor_v2("FloatStorage", "a/b", 24, 0, (4, 6), (6, 1))}
    write_torch_zip(os.path.join(d, "key_slash.bin"), pickle_of(obj), {"a/b": rec["0"]})
    case("key_slash.bin", "key")
    pk = pickle_of({"w": tensor_v2("FloatStorage", "../data.pkl", 0, 0, (0,), (1,))})
    n = len(pk)
    # make the declared size match the pickle itself, so only the key is wrong
    pk = pickle_of({"w": tensor_v2("FloatStorage", "../data.pkl", n // 4, 0, (n // 4,), (1,))})
    write_torch_zip(os.path.join(d, "key_dotdot.bin"), pk, {"0": rec["0"]})
    case("key_dotdot.bin", "key|\\.\\.")
    obj = {"w": tensor_v2("FloatStorage", "..", 24, 0, (4, 6), (6, 1))}
    write_torch_zip(os.path.join(d, "key_dots_only.bin"), pickle_of(obj), {"0": rec["0"]},
                    extra=[("archive/data/..", rec["0"])])
    case("key_dots_only.bin", "key|\\.\\.")
    # views outside their storage
    for name, off, shape, stride in (("view_past_end.bin", 0, (5, 6), (6, 1)),
                                     ("view_offset_past_end.bin", 30, (1, 1), (1, 1)),
                                     ("view_stride_past_end.bin", 0, (4, 6), (7, 1)),
                                     ("view_overflow.bin", 0, (2 ** 40, 2 ** 40), (2 ** 40, 1)),
                                     ("view_negative_dim.bin", 0, (-1, 6), (6, 1)),
                                     ("view_negative_stride.bin", 20, (4, 1), (-6, 1)),
                                     ("view_negative_offset.bin", -6, (4, 6), (6, 1))):
        obj = {"w": tensor_v2("FloatStorage", "0", 24, off, shape, stride)}
        write_torch_zip(os.path.join(d, name), pickle_of(obj), rec)
        case(name, "storage|bound|past|exceed|outside|shape|stride|offset|overflow|negative")
    obj = {"w": tensor_v2("FloatStorage", "0", 2 ** 62, 0, (4, 6), (6, 1))}
    write_torch_zip(os.path.join(d, "storage_numel_huge.bin"), pickle_of(obj), rec)
    case("storage_numel_huge.bin", "record|storage|size|bytes|overflow|length")
    obj = {"w": tensor_v2("FloatStorage", "0", 24, 0, (4, 6), (6, 1)),
           "v": tensor_v2("FloatStorage", "1", 24, 0, (6, 4), (4, 1))}
    write_torch_zip(os.path.join(d, "record_missing.bin"), pickle_of(obj), rec)
    case("record_missing.bin", "record|missing|not found|no such|data/1")
    obj = {"w": call(G("torch._utils", "_rebuild_tensor_v2"), persid("FloatStorage", "0", 24), 0,
                     (4, 6))}
    write_torch_zip(os.path.join(d, "rebuild_few_args.bin"), pickle_of(obj), rec)
    case("rebuild_few_args.bin", "rebuild|argument|args")
    obj = {"w": call(G("torch._utils", "_rebuild_tensor_v2"),
                     Raw(b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000tQ"),
                     0, (4, 6), (6, 1), False, HOOKS)}
    write_torch_zip(os.path.join(d, "persid_short.bin"), pickle_of(obj), rec)
    case("persid_short.bin", "persistent|storage|id")
    # names that collide once flattened: {"a": {"b": T}, "a.b": T2}
    obj = {"a": {"b": tensor_v2("FloatStorage", "0", 24, 0, (4, 6), (6, 1))},
           "a.b": tensor_v2("FloatStorage", "0", 24, 0, (6, 4), (4, 1))}
    write_torch_zip(os.path.join(d, "dup_names.bin"), pickle_of(obj), rec)
    case("dup_names.bin", "duplicate|twice|more than once|a\\.b")
    # archive layout
    pk = pickle_of({"w": w})
    write_torch_zip(os.path.join(d, "two_pkl_folders.bin"), pk, rec,
                    extra=[("other/data.pkl", pk), ("other/version", b"3\n")])
    case("two_pkl_folders.bin", "data\\.pkl")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_torch_zip(os.path.join(d, "two_pkl_same.bin"), pk, rec,
                        pkl_names=["archive/data.pkl", "archive/data.pkl"])
    case("two_pkl_same.bin", "data\\.pkl|duplicate|exists|zip")
    with zipfile.ZipFile(os.path.join(d, "no_pkl.bin"), "w") as z:
        z.writestr("archive/data/0", rec["0"])
        z.writestr("archive/version", b"3\n")
    case("no_pkl.bin", "data\\.pkl")
    # sharded folders: an index naming a shard outside its folder, or a tensor the shard lacks
    f = os.path.join(d, "index_escape")
    os.makedirs(f, exist_ok=True)
    shutil.copyfile(goodp, os.path.join(d, "outside.bin"))
    with open(os.path.join(f, "pytorch_model.bin.index.json"), "w") as fh:
        json.dump({"metadata": {}, "weight_map": {"w": "../outside.bin", "v": "../outside.bin"}}, fh)
    case("index_escape", "shard|name|index|outside")
    f = os.path.join(d, "index_lacks")
    os.makedirs(f, exist_ok=True)
    shutil.copyfile(goodp, os.path.join(f, "pytorch_model-00001-of-00001.bin"))
    with open(os.path.join(f, "pytorch_model.bin.index.json"), "w") as fh:
        json.dump({"metadata": {}, "weight_map": {
            "w": "pytorch_model-00001-of-00001.bin", "v": "pytorch_model-00001-of-00001.bin",
            "u": "pytorch_model-00001-of-00001.bin"}}, fh)
    case("index_lacks", "'u'|lacks|missing|not found|no tensor")
    os.rename(goodp, os.path.join(d, "good_control.pt"))
    with open(os.path.join(d, "cases.tsv"), "w") as fh:
        for row in cases:
            fh.write("\t".join(row) + "\n")


# ---------------------------------------------------------------- fuzz seeds
def gen_corpus(d):
    os.makedirs(d, exist_ok=True)
    w = tensor_v2("FloatStorage", "0", 24, 0, (4, 6), (6, 1))

    def from_torch(obj, **kw):
        buf = io.BytesIO()
        torch.save(obj, buf, **kw)
        with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
            return z.read([n for n in z.namelist() if n.endswith("/data.pkl")][0])

    t = torch.arange(24, dtype=torch.float32).view(4, 6)
    seeds = {
        "torch_state_dict.pkl": from_torch({"a.weight": t, "a.t": t.t(), "b": t[1:, 2:],
                                            "p": torch.nn.Parameter(t[:2].clone()),
                                            "h": t.to(torch.bfloat16), "i": t.long()}),
        "torch_nested_proto4.pkl": from_torch({"model": {"x": t}, "epoch": 3, "l": [t, (t,)]},
                                              pickle_protocol=4),
        "hand_from_type.pkl": pickle_of({"f": call(G("torch._tensor", "_rebuild_from_type_v2"),
                                                   G("torch._utils", "_rebuild_tensor_v2"),
                                                   G("torch", "Tensor"),
                                                   (persid("HalfStorage", "3", 8), 0, (2, 4),
                                                    (4, 1), False, HOOKS), {})}),
        "hand_untyped_state.pkl": pickle_of({"u": tensor_v2("UntypedStorage", "k", 16, 0,
                                                            (4, 4), (1, 4)),
                                             "s": call(G("torch._utils",
                                                         "_rebuild_parameter_with_state"),
                                                       w, True, HOOKS, {"a": 1})}),
        "near_bad_global.pkl": pickle_of({"w": call(G("posix", "system"), "true")}),
        "near_memo.pkl": PB(2).raw(b"}q\x00(").str_("w").val(w).raw(b"q\x01h\x01h\x00u").stop(),
        "near_view_past_end.pkl": pickle_of({"w": tensor_v2("DoubleStorage", "0", 5, 3,
                                                            (2, 2), (2, 1))}),
        "near_no_stop.pkl": bytes(PB(2).raw(b"}(").str_("w").val(w).b),
    }
    for n, b in seeds.items():
        with open(os.path.join(d, n), "wb") as f:
            f.write(b)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdir", nargs="?")
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--corpus", metavar="DIR")
    a = ap.parse_args()
    if a.corpus:
        gen_corpus(a.corpus)
        return
    if not a.outdir:
        ap.error("OUTDIR required")
    out = a.outdir
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed)
    man = {"variants": {}, "adapters": {}, "marker": os.path.join(os.path.abspath(out), "PWNED_FILE")}
    gen_ft(out, gen, man)
    gen_adapters(out, gen, man)
    gen_tricky(out, gen)
    gen_valid(out, gen)
    gen_hostile(out, gen)
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(man, f, indent=2)


if __name__ == "__main__":
    main()
