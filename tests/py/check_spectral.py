#!/usr/bin/python3
"""check_spectral.py - an independent NumPy reference for `dora-analyze spectrum`.

    check_spectral.py gen OUTDIR
        writes, with tests/py/stio.py, the runs tests/sh/spectral.sh needs beside
        tests/py/gen_adapters.py's:
          OUTDIR/base.safetensors    dense.weight [200, 150], flat.weight [240, 200],
                                     c.weight [96, 64] (F32)
          OUTDIR/ftd/checkpoint-{1,2}  full weights: dense.weight + an update with a
                                     decaying spectrum (0.8^i), flat.weight + a random
                                     (flat-spectrum) update, c.weight + noise
          OUTDIR/intr/checkpoint-{1,2} LoRA r=6 on c.weight, the second step 3x the norm
                                     of W0 (its top singular vectors are new directions:
                                     intruders)
          OUTDIR/nan/checkpoint-{1,2}  LoRA on c.weight, a NaN in lora_B of step 2

    check_spectral.py check --h5 FILE [--manifest MANIFEST] [--rtol R] [--sample K]
                            [--expect-method MODULE=CODE ...] [--tsv TABLE]
        recomputes every number of FILE from the files it names (the base, each
        run's checkpoints) with numpy.linalg.svd in float64 and compares:
          sigma          |c - ref| <= rtol |ref| for ref > 1e-6 sigma_1, else <= rtol sigma_1
          fro_norm, sigma1, stable_rank   relative 1e-9
          r90            equal (when the 90% boundary is not within 1e-9 of a step)
          intruders      equal (when no |cos| is within 1e-6 of the threshold), and every
                         largest |cos| within 1e-6
          phi            every grid entry within 1e-6; phi_k, phi_prev, phi_final
          compare        the same for every pair of runs
        With --sample K, only K modules per run (spread over the list) get a dense
        SVD; the others are checked through the r x r Gram matrices of their LoRA
        factors (singular values above 1e-4 sigma_1, Frobenius norm, r90, stable rank).
        Prints the worst errors; exits 1 on any failure (naming run, module, step).

Adapters are read here from their own files: lora_A/lora_B (and .default),
lora_embedding_A/B, DoRA magnitudes (lora_magnitude_vector[.weight|.default[.weight]],
weight_m_wdecomp.weight), modules_to_save weights; r and alpha with PEFT's pattern rule
(Python re, first key K with (.*\\.)?(K)$ matching the module); with --manifest the
generator's r and scale are cross-checked.
"""

import argparse
import json
import math
import os
import re
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stio  # noqa: E402

P = "base_model.model."
ROLES = [
    (".lora_A.default.weight", "A"), (".lora_A.weight", "A"),
    (".lora_B.default.weight", "B"), (".lora_B.weight", "B"),
    (".lora_embedding_A.default", "EA"), (".lora_embedding_A", "EA"),
    (".lora_embedding_B.default", "EB"), (".lora_embedding_B", "EB"),
    (".lora_magnitude_vector.default.weight", "M"), (".lora_magnitude_vector.default", "M"),
    (".lora_magnitude_vector.weight", "M"), (".lora_magnitude_vector", "M"),
    (".weight_m_wdecomp.weight", "M"),
]


# ---------------------------------------------------------------- generator
def gen(out):
    rng = np.random.default_rng(7)
    os.makedirs(out, exist_ok=True)

    def orth(n, k):
        q, _ = np.linalg.qr(rng.standard_normal((n, k)))
        return q

    base = {
        "dense.weight": (rng.standard_normal((200, 150)) * 0.05).astype(np.float32),
        "flat.weight": (rng.standard_normal((240, 200)) * 0.05).astype(np.float32),
        "c.weight": (rng.standard_normal((96, 64)) * 0.05).astype(np.float32),
    }
    stio.write_safetensors(os.path.join(out, "base.safetensors"), base)
    k = 150
    sv = 0.8 ** np.arange(k)
    for step, mult in ((1, 0.5), (2, 1.0)):
        u, v = orth(200, k), orth(150, k)
        upd = (u * (mult * sv)) @ v.T
        ts = {
            "dense.weight": (base["dense.weight"] + upd).astype(np.float32),
            "flat.weight": (base["flat.weight"] + 0.01 * mult * rng.standard_normal((240, 200))).astype(np.float32),
            "c.weight": (base["c.weight"] + 0.001 * rng.standard_normal((96, 64))).astype(np.float32),
        }
        stio.write_checkpoint(os.path.join(out, "ftd"), step, ts, max_steps=2)
    cfg = {"peft_type": "LORA", "r": 6, "lora_alpha": 12, "target_modules": ["c"],
           "fan_in_fan_out": False, "use_rslora": False, "use_dora": False,
           "base_model_name_or_path": "spectral-test"}
    w0n = np.linalg.norm(base["c.weight"])
    a = rng.standard_normal((6, 64)) / 8
    b = rng.standard_normal((96, 6))
    for run, bad in (("intr", False), ("nan", True)):
        for step, rel in ((1, 0.05), (2, 3.0)):
            bb = b * (rel * w0n / np.linalg.norm(2.0 * b @ a))
            if bad and step == 2:
                bb[5, 2] = np.nan
            d = os.path.join(out, run, f"checkpoint-{step}")
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "adapter_config.json"), "w") as f:
                json.dump(cfg, f)
            stio.write_safetensors(os.path.join(d, "adapter_model.safetensors"),
                                   {P + "c.lora_A.weight": a.astype(np.float32),
                                    P + "c.lora_B.weight": bb.astype(np.float32)})
            stio.write_trainer_state(d, step, 2)
    print(f"check_spectral: generated ftd, intr, nan in {out}")


# ---------------------------------------------------------------- reading what a step holds
def f64(a):
    return np.asarray(a, dtype=np.float64)


def pattern_value(patterns, module, default):
    """PEFT: the first key K (config order) with re.match(r'(.*\\.)?(K)$', module)."""
    for key, val in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return val
    return default


class AdapterStep:
    """One adapter checkpoint: per base tensor name, what the update is made of."""

    def __init__(self, folder):
        with open(os.path.join(folder, "adapter_config.json")) as f:
            self.cfg = json.load(f)
        wf = os.path.join(folder, "adapter_model.safetensors")
        ts, _ = stio.read_safetensors(wf)
        self.fifo = bool(self.cfg.get("fan_in_fan_out", False))
        mods = {}
        for name, (_, arr) in ts.items():
            n = name[len(P):] if name.startswith(P) else name
            role = None
            for suf, r in ROLES:
                if n.endswith(suf):
                    role, stem = r, n[: -len(suf)]
                    break
            if role is None:
                if arr.ndim < 2 or not n.endswith(".weight"):
                    continue
                role, stem = "S", n[: -len(".weight")]
            mods.setdefault(stem, {})[role] = f64(arr)
        self.modules = {}
        for stem, t in mods.items():
            m = {"stem": stem}
            if "S" in t:
                m["kind"] = "saved"
                m["W"] = t["S"]
            else:
                if "A" in t:
                    a, b = t["A"], t["B"]
                    r = a.shape[0]
                    m["kind"] = "linear"
                    m["L"] = b.reshape(b.shape[0], r)
                    m["R"] = a.reshape(r, -1)
                else:
                    ea, eb = t["EA"], t["EB"]  # [r, num], [dim, r]: delta = (B A)^T
                    r = ea.shape[0]
                    m["kind"] = "embedding"
                    m["L"] = ea.T
                    m["R"] = eb.T
                rr = pattern_value(self.cfg.get("rank_pattern"), stem, self.cfg["r"])
                alpha = pattern_value(self.cfg.get("alpha_pattern"), stem, self.cfg["lora_alpha"])
                if int(rr) != r:
                    raise SystemExit(f"{wf}: {stem}: factors of rank {r}, config says {rr}")
                m["r"] = r
                m["scale"] = alpha / math.sqrt(r) if self.cfg.get("use_rslora") else alpha / r
                m["mag"] = t["M"].reshape(-1) if "M" in t else None
                m["fifo"] = self.fifo and m["kind"] == "linear"
            self.modules[stem + ".weight"] = m


def load_step(path):
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "adapter_config.json")):
        return AdapterStep(path)
    return {n: f64(a) for n, (dt, a) in stio.load_model(path).items()}


def matrix2d(a):
    return a.reshape(a.shape[0], -1)


def step_update(st, name, base):
    """-> (dW, W_t or None, kind, factors (L, R, scale) or None, fifo) in float64."""
    if isinstance(st, AdapterStep):
        m = st.modules[name]
        if m["kind"] == "saved":
            wt = matrix2d(m["W"])
            return wt - matrix2d(base[name]), wt, "dense", None, False
        w0 = None
        if base is not None:
            w0 = base[name].T if m["fifo"] else matrix2d(base[name])
        upd = m["scale"] * (m["L"] @ m["R"])
        if m["mag"] is not None and w0 is not None:
            v = w0 + upd
            wt = m["mag"][:, None] * v / np.linalg.norm(v, axis=1, keepdims=True)
            return wt - w0, wt, "dora", None, m["fifo"]
        return upd, (None if w0 is None else w0 + upd), "lora", (m["L"], m["R"], m["scale"]), m["fifo"]
    wt = matrix2d(st[name])
    return wt - matrix2d(base[name]), wt, "dense", None, False


# ---------------------------------------------------------------- references
EPS = np.finfo(np.float64).eps


def num_rank(s, m, n):
    if len(s) == 0 or s[0] <= 0:
        return 0
    return int(np.sum(s > max(m, n) * EPS * s[0]))


def r90_ref(s, total):
    """-> (r90, ambiguous): smallest k with cumsum >= 0.9 total; -1 if not reached."""
    if total <= 0:
        return 0, False
    c = np.cumsum(s.astype(np.float64) ** 2)
    idx = np.nonzero(c >= 0.9 * total)[0]
    amb = bool(np.any(np.abs(c / total - 0.9) < 1e-9))
    return (int(idx[0]) + 1 if len(idx) else -1), amb


def phi_grid(u1, k1, u2, k2):
    g = (u1[:, :k1].T @ u2[:, :k2]) ** 2
    c = np.cumsum(np.cumsum(g, axis=0), axis=1)
    i = np.arange(1, k1 + 1)[:, None]
    j = np.arange(1, k2 + 1)[None, :]
    return c / np.minimum(i, j)


class Checker:
    def __init__(self, rtol):
        self.rtol = rtol
        self.fails = []
        self.worst = {}

    def fail(self, where, msg):
        self.fails.append(f"{where}: {msg}")

    def note(self, key, err, where):
        if key not in self.worst or err > self.worst[key][0]:
            self.worst[key] = (err, where)

    def close(self, key, where, got, ref, rtol, atol=0.0):
        err = abs(got - ref)
        rel = err / abs(ref) if ref != 0 else err
        self.note(key, rel, where)
        if not (np.isfinite(got) and err <= atol + rtol * abs(ref)):
            self.fail(where, f"{key} {got!r} vs reference {ref!r}")


def gram_sigma(L, R, scale):
    """singular values of scale L R from the r x r Gram matrices (no dense SVD)."""
    g = (L.T @ L) @ (R @ R.T) * scale * scale
    ev = np.sort(np.abs(np.linalg.eigvals(g).real))[::-1]
    return np.sqrt(ev)


def check_tsv(ck, h, path):
    """The table on stdout holds the HDF5 numbers (17 significant digits, NA for -1)."""
    with open(path) as f:
        lines = f.read().split("\n")
    head = lines[0].split("\t")
    want = ["run", "method", "step", "module", "layer", "update", "rank", "fro_norm", "sigma1",
            "r90", "stable_rank", "intruders", "phi_prev", "phi_final"]
    if head != want:
        ck.fail(path, f"header {head}")
        return
    rows = [ln.split("\t") for ln in lines[1:] if ln]
    i = 0
    for run in h["runs"]:
        g = h["runs"][run]
        mods = [m.decode() if isinstance(m, bytes) else m for m in g["modules"][:]]
        for s, st in enumerate(g["steps"][:]):
            for l, name in enumerate(mods):
                if i >= len(rows):
                    ck.fail(path, "fewer rows than the HDF5 file holds")
                    return
                r = rows[i]
                i += 1
                where = f"{path} row {i}"
                if r[0] != run or int(r[2]) != st or r[3] != name:
                    ck.fail(where, f"{r[:4]} vs {run} {st} {name}")
                    continue

                def num(x, neg):
                    return neg if x == "NA" else float(x)
                pairs = [(num(r[7], -1), g["fro_norm"][s, l]), (num(r[8], -1), g["sigma1"][s, l]),
                         (num(r[9], -1), g["r90"][s, l]), (num(r[10], -1), g["stable_rank"][s, l]),
                         (num(r[12], -1), g["phi_prev"][s, l]), (num(r[13], -1), g["phi_final"][s, l]),
                         (num(r[11], -1), g["intruders"][s, l] if "intruders" in g else -1)]
                for got, ref in pairs:
                    if got != float(ref):
                        ck.fail(where, f"table {got!r} vs HDF5 {float(ref)!r}")
    if i != len(rows):
        ck.fail(path, f"{len(rows)} rows, the HDF5 file holds {i}")


def check_file(args):
    ck = Checker(args.rtol)
    want_method = dict(kv.split("=") for kv in args.expect_method)
    man = None
    if args.manifest:
        with open(args.manifest) as f:
            man = json.load(f)
    with h5py.File(args.h5, "r") as h:
        if h.attrs.get("analysis") != "spectrum":
            raise SystemExit(f"{args.h5}: not a spectrum file")
        base_path = h.attrs["base_path"]
        base_path = base_path.decode() if isinstance(base_path, bytes) else base_path
        thr = float(h.attrs["threshold"])
        top = int(h.attrs["top"])
        K = int(h.attrs["subspace"])
        base = None
        if base_path:
            base = {n: f64(a) for n, (dt, a) in stio.load_model(base_path).items()}
        vecs = {}  # (run, module, step index) -> (U, rank)
        u0cache = {}
        nrows = 0
        for run in h["runs"]:
            g = h["runs"][run]
            steps = g["steps"][:]
            paths = [p.decode() if isinstance(p, bytes) else p for p in g["checkpoints"][:]]
            mods = [m.decode() if isinstance(m, bytes) else m for m in g["modules"][:]]
            L = len(mods)
            sample = set(range(L))
            if args.sample and args.sample < L:
                sample = set(int(round(i * (L - 1) / (args.sample - 1))) for i in range(args.sample)) \
                    if args.sample > 1 else {0}
            loaded = [load_step(p) for p in paths]
            if man and run in man["runs"]:
                mr = man["runs"][run]
                if list(steps) != list(mr["steps"]):
                    ck.fail(run, f"steps {list(steps)} vs manifest {mr['steps']}")
            for l, name in enumerate(mods):
                sg = g["spectrum"][name.replace("%", "%25").replace("/", "%2F")]
                sigma = sg["sigma"][:]
                nsig = int(g["nsigma"][l])
                for s in range(len(steps)):
                    where = f"run {run} module {name} step {steps[s]}"
                    nrows += 1
                    dw, wt, kind, fac, fifo = step_update(loaded[s], name, base)
                    m, n = dw.shape
                    if man and run in man["runs"] and isinstance(loaded[s], AdapterStep):
                        mm = man["runs"][run]["modules"].get(name)
                        st = loaded[s].modules[name]
                        if mm and mm["kind"] != "saved" and (mm["r"] != st["r"] or abs(mm["scale"] - st["scale"]) > 1e-12 * mm["scale"]):
                            ck.fail(where, f"reading r/scale {st['r']}/{st['scale']} vs manifest {mm['r']}/{mm['scale']}")
                    if (int(g["rows"][l]), int(g["cols"][l])) != (m, n):
                        ck.fail(where, f"shape {g['rows'][l]}x{g['cols'][l]} vs {m}x{n}")
                        continue
                    upd = g["update"][l]
                    upd = upd.decode() if isinstance(upd, bytes) else upd
                    exp_upd = {"lora": "lora" if not (fac and isinstance(loaded[s], AdapterStep) and loaded[s].modules[name]["mag"] is not None) else "lora-part",
                               "dora": "dora", "dense": "dense"}[kind]
                    if upd != exp_upd:
                        ck.fail(where, f"update '{upd}', expected '{exp_upd}'")
                    meth = int(g["svd_method"][s, l])
                    if name in want_method and str(meth) != want_method[name]:
                        ck.fail(where, f"svd_method {meth}, expected {want_method[name]}")
                    if kind == "lora" and meth != 1:
                        ck.fail(where, f"a LoRA update used svd_method {meth}, not the low-rank path")
                    mn = min(m, n)
                    exp_ns = min(fac[0].shape[1], mn) if kind == "lora" else mn
                    if top:
                        exp_ns = min(exp_ns, top)
                    if nsig != exp_ns:
                        ck.fail(where, f"nsigma {nsig}, expected {exp_ns}")
                    c = sigma[s, :nsig]
                    if np.any(~np.isfinite(c)) or np.any(np.diff(c) > 1e-12 * max(c[0], 1e-300)):
                        ck.fail(where, "sigma not finite / not descending")
                    fro2 = float(np.sum(dw * dw))
                    dense_ref = l in sample
                    if dense_ref:
                        u, sref, _ = np.linalg.svd(dw, full_matrices=False)
                    else:
                        if fac is None:
                            ck.fail(where, "--sample needs LoRA updates outside the sample")
                            continue
                        sref = gram_sigma(*fac)
                        u = None
                    s1 = sref[0] if len(sref) else 0.0
                    lim = min(nsig, len(sref))
                    for i in range(lim):
                        if not dense_ref and sref[i] <= 1e-4 * s1:
                            continue
                        big = sref[i] > 1e-6 * s1
                        err = abs(c[i] - sref[i])
                        tol = self_tol = args.rtol * (sref[i] if big else s1)
                        ck.note("sigma (relative)" if big else "sigma (small, / sigma_1)",
                                err / (sref[i] if big else max(s1, 1e-300)), where + f" sigma_{i + 1}")
                        if not err <= self_tol:
                            ck.fail(where, f"sigma_{i + 1} {c[i]!r} vs numpy {sref[i]!r} (tolerance {tol:.3g})")
                    ck.close("fro_norm", where, float(g["fro_norm"][s, l]), math.sqrt(fro2), 1e-9, 1e-300)
                    ck.close("sigma1", where, float(g["sigma1"][s, l]), float(s1), 1e-9, 1e-12 * math.sqrt(fro2) + 1e-300)
                    srk = fro2 / s1 ** 2 if s1 > 0 else 0.0
                    ck.close("stable_rank", where, float(g["stable_rank"][s, l]), srk, 1e-9)
                    # r90: from the reference's values, as many as the tool computed
                    got90 = int(g["r90"][s, l])
                    ref90, amb = r90_ref(sref, fro2)
                    if meth in (1, 2):  # every nonzero value computed
                        ok90 = got90 == ref90
                    else:  # the top K (or more) computed: -1 means 90% lies beyond them
                        ok90 = got90 == ref90 or (got90 == -1 and ref90 > nsig)
                    if not ok90 and not amb:
                        ck.fail(where, f"r90 {got90} vs {ref90}" + ("" if dense_ref else " (Gram)"))
                    if dense_ref:
                        vecs[(run, name, s)] = (u, num_rank(sref, m, n))
                    # intruders
                    if base is not None:
                        if "intruders" not in g:
                            ck.fail(run, "no intruders dataset with a base")
                        else:
                            key = (name, fifo)
                            if key not in u0cache:
                                u0cache[key] = np.linalg.svd(wt - dw, full_matrices=False)[0]
                            u0 = u0cache[key]
                            ut = np.linalg.svd(wt, full_matrices=False)[0][:, : min(10, mn)]
                            mc = np.max(np.abs(u0.T @ ut), axis=0)
                            cnt = int(np.sum(mc < thr))
                            gotc = sg["intruder_cos"][s, :]
                            for k in range(10):
                                ref = float(mc[k]) if k < len(mc) else -1.0
                                ck.close("intruder |cos|", where + f" vector {k + 1}", float(gotc[k]), ref, 0, 1e-6)
                            amb = bool(np.any(np.abs(mc - thr) < 1e-6))
                            if int(g["intruders"][s, l]) != cnt and not amb:
                                ck.fail(where, f"intruders {int(g['intruders'][s, l])} vs {cnt}")
                    elif "intruders" in g:
                        ck.fail(run, "intruders written without a base")
                # phi of the run's pairs
                pairs = g["phi_pairs"][:]
                phi = sg["phi"][:]
                phik = sg["phi_k"][:]
                if not all((run, name, s) in vecs for s in range(len(steps))):
                    continue
                S = len(steps)
                for p, (a, b) in enumerate(pairs):
                    where = f"run {run} module {name} pair ({steps[a]}, {steps[b]})"
                    ua, ra = vecs[(run, name, a)]
                    ub, rb = vecs[(run, name, b)]
                    ka, kb = min(K, ra), min(K, rb)
                    if (int(phik[p, 0]), int(phik[p, 1])) != (ka, kb):
                        ck.fail(where, f"phi_k {list(phik[p])} vs ({ka}, {kb})")
                        continue
                    ref = -np.ones((K, K))
                    if ka and kb:
                        ref[:ka, :kb] = phi_grid(ua, ka, ub, kb)
                    err = float(np.max(np.abs(phi[p] - ref)))
                    ck.note("phi", err, where)
                    if err > 1e-6:
                        ck.fail(where, f"phi grid differs by {err:.3g}")
                    k = min(ka, kb)
                    summ = ref[k - 1, k - 1] if k else -1.0
                    if b == a + 1 and abs(g["phi_prev"][b, l] - summ) > 1e-6:
                        ck.fail(where, f"phi_prev {g['phi_prev'][b, l]} vs {summ}")
                    if b == S - 1 and abs(g["phi_final"][a, l] - summ) > 1e-6:
                        ck.fail(where, f"phi_final {g['phi_final'][a, l]} vs {summ}")
                fin = 1.0 if vecs[(run, name, S - 1)][1] > 0 else -1.0
                if g["phi_final"][S - 1, l] != fin:
                    ck.fail(f"run {run} module {name}", f"phi_final of the final step {g['phi_final'][S - 1, l]}")
                if g["phi_prev"][0, l] != -1:
                    ck.fail(f"run {run} module {name}", "phi_prev of the first step is not -1")
        if args.tsv:
            check_tsv(ck, h, args.tsv)
        # comparisons between runs
        ncmp = 0
        if "compare" in h:
            for ra_ in h["compare"]:
                for rb_ in h["compare"][ra_]:
                    cg = h["compare"][ra_][rb_]
                    mods = [x.decode() if isinstance(x, bytes) else x for x in cg["modules"][:]]
                    sa, sb = cg["steps_a"][:], cg["steps_b"][:]
                    stA = list(h["runs"][ra_]["steps"][:])
                    stB = list(h["runs"][rb_]["steps"][:])
                    shared = [x for x in stA if x in stB]
                    exp = [(x, x) for x in shared]
                    if not exp or exp[-1] != (stA[-1], stB[-1]):
                        exp.append((stA[-1], stB[-1]))
                    if list(zip(sa, sb)) != exp:
                        ck.fail(f"compare {ra_}/{rb_}", f"step pairs {list(zip(sa, sb))} vs {exp}")
                        continue
                    for mi, name in enumerate(mods):
                        grid = cg["grid"][name.replace("%", "%25").replace("/", "%2F")]["phi"][:]
                        for p in range(len(sa)):
                            ia, ib = stA.index(sa[p]), stB.index(sb[p])
                            if (ra_, name, ia) not in vecs or (rb_, name, ib) not in vecs:
                                continue
                            ncmp += 1
                            ua, rka = vecs[(ra_, name, ia)]
                            ub, rkb = vecs[(rb_, name, ib)]
                            ka, kb = min(K, rka), min(K, rkb)
                            ref = -np.ones((K, K))
                            if ka and kb:
                                ref[:ka, :kb] = phi_grid(ua, ka, ub, kb)
                            where = f"compare {ra_}/{rb_} module {name} steps ({sa[p]}, {sb[p]})"
                            err = float(np.max(np.abs(grid[p] - ref)))
                            ck.note("phi (between runs)", err, where)
                            if err > 1e-6:
                                ck.fail(where, f"phi grid differs by {err:.3g}")
                            k = min(ka, kb)
                            summ = ref[k - 1, k - 1] if k else -1.0
                            if abs(cg["phi"][p, mi] - summ) > 1e-6 or int(cg["k"][p, mi]) != k:
                                ck.fail(where, f"phi {cg['phi'][p, mi]} k {cg['k'][p, mi]} vs {summ} k {k}")
    for key in sorted(ck.worst):
        err, where = ck.worst[key]
        print(f"worst {key}: {err:.3g} ({where})")
    print(f"checked {nrows} (run, module, step) rows and {ncmp} run-to-run pairs")
    if ck.fails:
        for f in ck.fails[:20]:
            print("MISMATCH " + f)
        print(f"{len(ck.fails)} mismatch(es)")
        return 1
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("outdir")
    c = sub.add_parser("check")
    c.add_argument("--h5", required=True)
    c.add_argument("--manifest")
    c.add_argument("--rtol", type=float, default=1e-6)
    c.add_argument("--sample", type=int, default=0)
    c.add_argument("--expect-method", action="append", default=[])
    c.add_argument("--tsv", help="the table the command printed: must hold the same numbers")
    args = ap.parse_args()
    if args.cmd == "gen":
        gen(args.outdir)
        return 0
    return check_file(args)


if __name__ == "__main__":
    sys.exit(main())
