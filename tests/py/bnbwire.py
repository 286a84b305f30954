#!/usr/bin/python3
"""bnbwire.py: bases saved by bitsandbytes and initial adapters in spectrum and batch, for
tests/sh/bnbwire.sh (the data come from quant_ref.py, bnb_saved.py and families.py).

    bnbwire.py plain SAVED OUT
        OUT/model.safetensors: the base folder SAVED (bnb_saved.py's layout) with every
        saved weight dequantised here in NumPy, independently of the tool (4-bit:
        float32(quant_map[code] * absmax), the nested absmax as float32(nested_quant_map[c]
        * nested_absmax) + offset, then the quant state's dtype, round to nearest even;
        int8: float32(float32(q * SCB) * float32(1/127)), F32), the auxiliary tensors left
        out, no config.json: the plain base the tool's dequantised view must equal.
    bnbwire.py same A.h5 B.h5 RUN...
        two spectrum files: every /runs/RUN/spectrum/MODULE/sigma and the per-step
        datasets (fro_norm, sigma1, stable_rank, r90, nsigma, intruders) and each module's
        intruder_cos bit-identical, and the same modules. Exit 1 naming the first difference.
    bnbwire.py bad-initial FAMILIES_DATA OUT
        initial adapters that do not fit families.py's niter_noinit run, OUT/CASE/ and
        OUT/cases.tsv (CASE, '|'-separated substrings the error must hold): lora_A of
        another rank, lora_B of another shape, a module missing, another scale (the rank case: r - 1 in
        every module, its config's r and lora_alpha changed so that the scale is the same).
    bnbwire.py ref H5 RUN [--initial DIR] [--base BASE_DIR]
        the singular values of each module and step of RUN in the spectrum file H5 (read
        from the checkpoints it names) against NumPy's SVD of the update PEFT's PiSSA /
        OLoRA runs made, s (B A - B0 A0) in float64: B0 A0 the initial adapter's
        lora_B lora_A (pissa_niter_K), or recomputed from the base's W0 with
        families.py's initial_factors (pissa, olora); |tool - ref| <= 1e-9 sigma_1 (absolute
        1e-9 for a zero update).
    bnbwire.py bad-saved SAVED OUT
        OUT/absmax_len: the saved 4-bit base SAVED with the first weight's absmax one value
        short, OUT/quant_state_shape: its quant_state's shape one row larger (the packed
        weight no longer fits); OUT/cases.tsv as above.
    bnbwire.py manifest OUT.json STUDY_JSON
        writes a batch manifest of one study (JSON text) to OUT.json.
"""

import json
import os
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import quant_ref  # noqa: E402
import stio  # noqa: E402

F32 = np.float32
QS = ".quant_state.bitsandbytes__"


def dequant(raw, name):
    """The saved 4-bit weight NAME (its quant_state key given) to float64 values of its
    dtype, and that dtype."""
    stem = name[:name.index(QS)]
    qs = json.loads(bytes(raw[name][1]).decode())
    packed = raw[stem][1].reshape(-1)
    n = int(np.prod(qs["shape"]))
    codes = np.empty(2 * packed.size, np.uint8)
    codes[0::2], codes[1::2] = packed >> 4, packed & 15
    absmax = raw[stem + ".absmax"][1]
    if "nested_blocksize" in qs:
        nmap, nam = raw[stem + ".nested_quant_map"][1], raw[stem + ".nested_absmax"][1]
        scale = np.repeat(nam, qs["nested_blocksize"])[:absmax.size]
        absmax = (nmap[absmax] * scale).astype(F32) + F32(qs["nested_offset"])
    qmap = raw[stem + ".quant_map"][1]
    w = (qmap[codes[:n]] * np.repeat(absmax, qs["blocksize"])[:n]).astype(F32)
    dt = {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}[qs["dtype"]]
    return stem, quant_ref.to_dtype(w, dt).reshape(qs["shape"]), dt


def plain(saved, out):
    raw, _ = stio.read_safetensors(os.path.join(saved, "model.safetensors"))
    ts, aux = {}, set()
    for k in raw:
        if QS in k:
            stem, w, dt = dequant(raw, k)
            ts[stem] = stio.Tensor(dt, w.astype(F32))
            aux.update({k, stem + ".absmax", stem + ".quant_map", stem + ".nested_absmax",
                        stem + ".nested_quant_map"})
        elif k.endswith(".SCB"):
            stem = k[:-len(".SCB")]
            q = raw[stem + ".weight"][1].astype(F32)
            w = (q * raw[k][1][:, None]).astype(F32) * F32(7.874015718698502e-3)
            ts[stem + ".weight"] = stio.Tensor("F32", w.astype(F32))
            aux.update({k, stem + ".weight", stem + ".weight_format"})
    for k, (dt, v) in raw.items():
        if k not in aux and k not in ts:
            ts[k] = stio.Tensor(dt, v)
    os.makedirs(out)
    stio.write_safetensors(os.path.join(out, "model.safetensors"), ts)
    print(f"{out}: {len(aux)} auxiliary tensors dequantised into the plain base")


def same(a_path, b_path, runs):
    with h5py.File(a_path, "r") as fa, h5py.File(b_path, "r") as fb:
        n = 0
        for run in runs:
            a, b = fa["runs/" + run], fb["runs/" + run]
            for key in ("fro_norm", "sigma1", "stable_rank", "r90", "nsigma", "intruders"):
                if key in a or key in b:
                    if not np.array_equal(a[key][()], b[key][()]):
                        raise SystemExit(f"FAIL {run} {key}: {a[key][()]} vs {b[key][()]}")
            ma, mb = sorted(a["spectrum"].keys()), sorted(b["spectrum"].keys())
            if ma != mb:
                raise SystemExit(f"FAIL {run}: modules {ma} vs {mb}")
            for m in ma:
                for key in ("sigma", "intruder_cos"):
                    if key not in a["spectrum"][m] and key not in b["spectrum"][m]:
                        continue
                    sa, sb = a["spectrum"][m][key][()], b["spectrum"][m][key][()]
                    if sa.shape != sb.shape or not np.array_equal(sa, sb):
                        d = np.abs(sa - sb).max() if sa.shape == sb.shape else "shape"
                        raise SystemExit(f"FAIL {run} {m}: {key} differs (max |d| {d})")
                n += a["spectrum"][m]["sigma"].size
        print(f"{n} singular values bit-identical in {len(runs)} run(s)")


def bad_initial(data, out):
    init = os.path.join(data, "niter_init")
    raw, _ = stio.read_safetensors(os.path.join(init, "adapter_model.safetensors"))
    with open(os.path.join(init, "adapter_config.json")) as f:
        cfg = json.load(f)
    a_key = next(k for k in sorted(raw) if k.endswith("q_proj.lora_A.weight"))
    b_key = a_key.replace("lora_A", "lora_B")
    module = a_key[len("base_model.model."):-len(".lora_A.weight")]
    cases = []

    def add(case, change, wants, cfg_change=None):
        ts = {k: stio.Tensor(dt, v) for k, (dt, v) in raw.items()}
        change(ts)
        d = os.path.join(out, case)
        os.makedirs(d)
        stio.write_safetensors(os.path.join(d, "adapter_model.safetensors"), ts)
        c = dict(cfg, **(cfg_change or {}))
        with open(os.path.join(d, "adapter_config.json"), "w") as f:
            json.dump(c, f)
        cases.append((case, "|".join(w.replace("@", d + "/") for w in wants)))

    b = raw[b_key][1]

    def rank(ts):   # one rank fewer in every module: lora_A [r - 1, in], lora_B [out, r - 1]
        for k in list(ts):
            if k.endswith("lora_A.weight"):
                ts[k] = stio.Tensor("F32", ts[k].array[:-1])
            elif k.endswith("lora_B.weight"):
                ts[k] = stio.Tensor("F32", ts[k].array[:, :-1])

    def shape(ts):  # lora_B of one row more
        ts[b_key] = stio.Tensor("F32", np.vstack([b, b[:1]]))
    r, sc = cfg["r"], cfg["lora_alpha"] / cfg["r"]  # the same scale at rank r - 1
    add("rank", rank, ["@adapter_model.safetensors", "other factors", "lora_A [4, "],
        {"r": r - 1, "lora_alpha": sc * (r - 1)})
    add("shape", shape, ["@adapter_model.safetensors", module, "other factors"])
    add("missing", lambda ts: (ts.pop(a_key), ts.pop(b_key)),
        ["@adapter_model.safetensors", module, "no factors"])
    add("scale", lambda ts: None, ["@adapter_config.json", "scale"],
        {"lora_alpha": cfg["lora_alpha"] * 2})
    with open(os.path.join(out, "cases.tsv"), "w") as f:
        for c, w in cases:
            f.write(f"{c}\t{w}\n")


def adapter(folder):
    with open(os.path.join(folder, "adapter_config.json")) as f:
        cfg = json.load(f)
    raw, _ = stio.read_safetensors(os.path.join(folder, "adapter_model.safetensors"))
    return cfg, {k: v.astype(np.float64) for k, (_, v) in raw.items()}


def ref(h5, run, initial, base):
    import families  # noqa: E402  (its initial_factors: PEFT's B0 A0, in NumPy)
    init = adapter(initial)[1] if initial else None
    braw = stio.read_safetensors(os.path.join(base, "model.safetensors"))[0] if base else {}
    worst, n = 0.0, 0
    with h5py.File(h5, "r") as f:
        g = f["runs/" + run]
        mods = [m.decode() if isinstance(m, bytes) else m for m in g["modules"][()]]
        paths = [c.decode() if isinstance(c, bytes) else c for c in g["checkpoints"][()]]
        for si, path in enumerate(paths):
            cfg, ts = adapter(path)
            sc = cfg["lora_alpha"] / cfg["r"]
            for m in mods:
                stem = "base_model.model." + m[:-len(".weight")]
                b, a = ts[stem + ".lora_B.weight"], ts[stem + ".lora_A.weight"]
                if init is not None:
                    b0, a0 = init[stem + ".lora_B.weight"], init[stem + ".lora_A.weight"]
                else:
                    dt, w = braw[m]
                    b0, a0 = families.initial_factors(cfg["init_lora_weights"],
                                                      stio.cast(w, dt), cfg["r"], sc)
                want = np.linalg.svd(sc * (b @ a - b0 @ a0), compute_uv=False)
                got = g["spectrum"][m]["sigma"][si]
                k = int(g["nsigma"][mods.index(m)])
                err = np.abs(got[:k] - want[:k]).max() / (want[0] if want[0] > 0 else 1.0)
                worst, n = max(worst, err), n + k
                if not err <= 1e-9:
                    raise SystemExit(f"FAIL {run} {m} step {si}: sigma off by {err:.3g} sigma_1")
    print(f"{n} singular values within {worst:.2g} sigma_1 of NumPy's")


def bad_saved(saved, out):
    raw, _ = stio.read_safetensors(os.path.join(saved, "model.safetensors"))
    qkey = sorted(k for k in raw if QS in k)[0]
    stem = qkey[:qkey.index(QS)]
    cases = []

    def add(case, key, t, wants):
        ts = {k: stio.Tensor(dt, v) for k, (dt, v) in raw.items()}
        ts[key] = t
        d = os.path.join(out, case)
        os.makedirs(d)
        stio.write_safetensors(os.path.join(d, "model.safetensors"), ts)
        cases.append((case, "|".join([os.path.join(d, "model.safetensors")] + wants)))
    am = raw[stem + ".absmax"][1]
    add("absmax_len", stem + ".absmax", stio.Tensor("F32", am[:-1]),
        [stem + ".absmax", f"{am.size} float32 values"])
    qs = json.loads(bytes(raw[qkey][1]).decode())
    qs["shape"][0] += 1
    blob = np.frombuffer(json.dumps(qs).encode(), np.uint8).copy()
    add("quant_state_shape", qkey, stio.Tensor("U8", blob), [qkey, "packed 4-bit weight"])
    with open(os.path.join(out, "cases.tsv"), "w") as f:
        for c, w in cases:
            f.write(f"{c}\t{w}\n")


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "plain":
        plain(*args)
    elif cmd == "same":
        same(args[0], args[1], args[2:])
    elif cmd == "bad-initial":
        bad_initial(*args)
    elif cmd == "ref":
        opt = {args[i]: args[i + 1] for i in range(2, len(args), 2)}
        ref(args[0], args[1], opt.get("--initial"), opt.get("--base"))
    elif cmd == "bad-saved":
        bad_saved(*args)
    elif cmd == "manifest":
        with open(args[0], "w") as f:
            json.dump({"studies": [json.loads(args[1])]}, f, indent=1)
    else:
        raise SystemExit(f"unknown command {cmd}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
