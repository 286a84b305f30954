#!/usr/bin/python3
"""bnb_saved.py: bases saved by bitsandbytes through transformers (a model loaded in 4 or 8
bits, then save_pretrained), for tests/sh/quant.sh.

    bnb_saved.py gen OUTDIR [--seed N]

Writes quant_ref.py's data (its base, LoRA run) into OUTDIR unless there, then OUTDIR/saved_Q
for Q in nf4, fp4, nf4-dq, int8: the base with its six nn.Linear weights (not lm_head, the
embedding or the Conv1D) in bitsandbytes' serialised layout, written from NumPy:

  4-bit   NAME: U8 [(n + 1) // 2, 1], two codes a byte, the first in the high nibble;
          NAME.absmax F32 [blocks of 64] (U8 codes with double quantisation, plus
          NAME.nested_absmax F32 [blocks of 256] and NAME.nested_quant_map F32 [256]);
          NAME.quant_map F32 [16]; NAME.quant_state.bitsandbytes__nf4|fp4: U8 bytes of
          the JSON {quant_type, blocksize, dtype, shape[, nested_blocksize, nested_dtype,
          nested_offset]} (QuantState.as_dict(packed=True))
  int8    NAME.weight I8 [out, in], NAME.SCB F32 [out] (row absmax), NAME.weight_format U8

and a config.json with the quantization_config transformers writes. Before writing, each
file is dequantised here independently (quant_map[code] * absmax, the nested absmax as
nested_quant_map[code] * nested_absmax + offset, float32, then the weight's dtype; int8:
float32(q * SCB) * float32(1/127)) and must equal quant_ref.py's round trip of the
original weight bit for bit, so quant_ref.py's check of the tool's W0 (m0 per row) holds
the tool to this dequantisation. Also OUTDIR/saved_bad/CASE bases and saved_bad/cases.tsv.
"""

import argparse
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import quant_ref  # noqa: E402
import stio  # noqa: E402

F32 = np.float32
QUANTISED = [m + ".weight" for m in quant_ref.LINEAR if m != "lm_head"]
DT_NAME = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}


def codes_of(flat, bs, code):
    """bitsandbytes' quantize_blockwise as indices into CODE: (codes, absmax)."""
    order = np.argsort(code, kind="stable")
    srt = code[order]
    mids = (srt[:-1] + srt[1:]) / F32(2)
    n, nb = flat.size, -(-flat.size // bs)
    absmax, q = np.empty(nb, F32), np.empty(n, np.uint8)
    for k in range(nb):
        x = flat[k * bs:(k + 1) * bs]
        am = np.abs(x).max()
        absmax[k] = am
        den = np.maximum(am, F32(1e-38))
        y = np.clip(x * (F32(1) / den) if x.size == bs else x / den, F32(-1), F32(1)).astype(F32)
        q[k * bs:(k + 1) * bs] = order[np.searchsorted(mids, y, side="left")]
    return q, absmax


def dequant_4bit(ts, name):
    """The reference: the saved tensors of NAME back to float32 values of its shape."""
    qs = json.loads(bytes(ts[name + ".quant_state.bitsandbytes__" + QT[name]].array).decode())
    packed = ts[name].array.reshape(-1)
    n = int(np.prod(qs["shape"]))
    codes = np.empty(2 * packed.size, np.uint8)
    codes[0::2], codes[1::2] = packed >> 4, packed & 15
    absmax = ts[name + ".absmax"].array
    if "nested_blocksize" in qs:
        nb = qs["nested_blocksize"]
        nmap, nam = ts[name + ".nested_quant_map"].array, ts[name + ".nested_absmax"].array
        absmax = (nmap[absmax] * np.repeat(nam, nb)[:absmax.size]).astype(F32) + F32(qs["nested_offset"])
    qmap = ts[name + ".quant_map"].array
    w = (qmap[codes[:n]] * np.repeat(absmax, qs["blocksize"])[:n]).astype(F32)
    return w.reshape(qs["shape"])


QT = {}


def save_4bit(ts, name, w, dtype, kind, dq):
    flat = w.reshape(-1).astype(F32)
    qmap = quant_ref.NF4 if kind == "nf4" else quant_ref.FP4
    qmap = np.where(qmap == 0, F32(0), qmap).astype(F32)   # bitsandbytes' table has +0 only
    codes, absmax = codes_of(flat, 64, qmap)
    qs = {"quant_type": kind, "blocksize": 64, "dtype": DT_NAME[dtype], "shape": list(w.shape)}
    if len(codes) % 2:
        codes = np.append(codes, np.uint8(0))
    ts[name] = stio.Tensor("U8", ((codes[0::2] << 4) | codes[1::2]).astype(np.uint8).reshape(-1, 1))
    if dq:
        offset = F32(absmax.astype(np.float64).mean())
        dmap = quant_ref.dynamic_map()
        c2, am2 = codes_of((absmax - offset).astype(F32), 256, dmap)
        ts[name + ".absmax"] = stio.Tensor("U8", c2)
        ts[name + ".nested_absmax"] = stio.Tensor("F32", am2)
        ts[name + ".nested_quant_map"] = stio.Tensor("F32", dmap)
        qs.update(nested_blocksize=256, nested_dtype="float32", nested_offset=float(offset))
    else:
        ts[name + ".absmax"] = stio.Tensor("F32", absmax)
    ts[name + ".quant_map"] = stio.Tensor("F32", qmap)
    blob = np.frombuffer(json.dumps(qs).encode(), np.uint8)
    ts[name + ".quant_state.bitsandbytes__" + kind] = stio.Tensor("U8", blob.copy())
    QT[name] = kind


def save_int8(ts, name, w):
    x = w.astype(np.float16).astype(F32)
    s = np.abs(x).max(axis=1).astype(F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(s[:, None] == 0, 0, np.rint(x * (F32(127) / s[:, None])))
    stem = name[:-len(".weight")]
    ts[name] = stio.Tensor("I8", q.astype(np.int8))
    ts[stem + ".SCB"] = stio.Tensor("F32", s)
    ts[stem + ".weight_format"] = stio.Tensor("U8", np.array(0, np.uint8))


def saved_base(base, quant):
    """The tensors of the base saved in QUANT, each checked against quant_ref's round trip."""
    ts = {k: v for k, v in base.items() if k not in QUANTISED}
    for name in QUANTISED:
        w = base[name].array.astype(F32)
        dtype = base[name].dtype
        ref = quant_ref.roundtrip(stio.cast(w, dtype).astype(F32), quant)
        if quant == "int8":
            save_int8(ts, name, stio.cast(w, dtype).astype(F32))
            stem = name[:-len(".weight")]
            got = (ts[name].array.astype(F32) * ts[stem + ".SCB"].array[:, None]).astype(F32) * F32(7.874015718698502e-3)
            same = np.array_equal(got, ref)  # bitwise but for the sign of zero (int8 has no -0)
        else:
            save_4bit(ts, name, stio.cast(w, dtype).astype(F32), dtype, quant.split("-")[0], quant.endswith("-dq"))
            got = dequant_4bit(ts, name)
            same = np.array_equal(quant_ref.to_dtype(got, dtype), quant_ref.to_dtype(ref, dtype))
        if not same:
            raise SystemExit(f"saved {quant} {name}: the file's dequantisation differs from the round trip")
    return ts


def qconfig(quant):
    if quant == "int8":
        return {"quant_method": "bitsandbytes", "load_in_8bit": True, "load_in_4bit": False,
                "llm_int8_threshold": 6.0, "llm_int8_skip_modules": None}
    return {"quant_method": "bitsandbytes", "load_in_4bit": True, "load_in_8bit": False,
            "bnb_4bit_quant_type": quant.split("-")[0], "bnb_4bit_use_double_quant": quant.endswith("-dq"),
            "bnb_4bit_compute_dtype": "bfloat16", "bnb_4bit_quant_storage": "uint8"}


def write_base(folder, ts, quant):
    os.makedirs(folder)
    stio.write_safetensors(os.path.join(folder, "model.safetensors"), ts)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"architectures": ["LlamaForCausalLM"], "quantization_config": qconfig(quant)}, f)


def gen(out, seed):
    if not os.path.isdir(os.path.join(out, "base")):  # quant.sh made it already
        quant_ref.gen(out, seed)
    raw, _ = stio.read_safetensors(os.path.join(out, "base", "model.safetensors"))
    base = {k: stio.Tensor(dt, v) for k, (dt, v) in raw.items()}
    saved = {}
    for q in ("nf4", "fp4", "nf4-dq", "int8"):
        saved[q] = saved_base(base, q)
        write_base(os.path.join(out, "saved_" + q), saved[q], q)
    bad = os.path.join(out, "saved_bad")
    os.makedirs(bad)
    q0 = QUANTISED[0]
    cases = []

    def add(case, quant, change, wants):
        ts = dict(saved[quant])
        change(ts)
        write_base(os.path.join(bad, case), ts, quant)
        cases.append((case, "|".join(wants)))

    def setv(key, t):
        return lambda ts: ts.__setitem__(key, t)
    qm = saved["nf4"][q0 + ".quant_map"].array.copy()
    qm[3] += F32(0.01)
    add("quant_map", "nf4", setv(q0 + ".quant_map", stio.Tensor("F32", qm)),
        [q0 + ".quant_map", "entry 3", "ambiguous"])
    add("packed", "nf4", setv(q0, stio.Tensor("U8", saved["nf4"][q0].array[:-1])),
        [q0, "packed 4-bit weight", "U8 bytes"])
    add("json", "nf4", setv(q0 + ".quant_state.bitsandbytes__nf4", stio.Tensor("U8", np.frombuffer(b"{\"quant", np.uint8).copy())),
        [q0 + ".quant_state.bitsandbytes__nf4", "not a JSON object"])
    add("absmax", "nf4", lambda ts: ts.pop(q0 + ".absmax"), [q0, "lacks its .absmax"])
    add("nested", "nf4-dq", lambda ts: ts.pop(q0 + ".nested_absmax"), [q0, "lacks .nested_absmax"])
    stem = q0[:-len(".weight")]
    add("scb", "int8", setv(stem + ".SCB", stio.Tensor("F32", np.ones(3, F32))), [stem + ".SCB", "SCB"])
    with open(os.path.join(bad, "cases.tsv"), "w") as f:
        for c, w in cases:
            f.write(f"{c}\t{w}\n")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("out")
    g.add_argument("--seed", type=int, default=3)
    a = ap.parse_args()
    gen(a.out, a.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
