#!/usr/bin/python3
"""check_adapters.py --data GENDIR --h5 OUT.h5 [--runs a,b,...] [--tsv FILE] [--rtol X]

An independent float64 NumPy reference for adapter runs (see gen_adapters.py):
for every run it finds the steps in the run folder itself, reads each step's
adapter_config.json and adapter_model.safetensors (with stio.py's reader),
merges the adapter densely onto the base as PEFT does, and computes per module
and step

    dM = mean_n | ||W_t[n]|| - ||W0[n]|| |
    dD = mean_n ( 1 - cos(W_t[n], W0[n]) )

with 1 - cos = ||b/|b| - a/|a|||^2 / 2, where b/|b| - a/|a| = d/|b| - a (|b| - |a|)/(|a||b|)
and |b| - |a| = (2 a.d + d.d)/(|a| + |b|) (d = W_t - W0, or V - W0 for DoRA), so
nothing cancels. Then it compares with the tool's HDF5:

  * group /runs/NAME: method, source_path and base_path attributes;
  * steps, checkpoints, modules (= the base tensor names, natural order), layer,
    rows / cols (the analysed [out, in] orientation: transposed for
    fan_in_fan_out), rank (the module's LoRA r after rank_pattern, 0 for dense);
  * delta_m, delta_d: |tool - ref| <= rtol * |ref| (default rtol 1e-9; a ref of
    exactly 0 needs |tool| <= 1e-15); zero_rows exactly;
  * delta_m_passive, delta_m_active (where dM comes from, docs/numerics.md) to the
    same rtol, from the merged rows: u = W_t - W0, r = u.w0/|w0|, t = |u - r w0/|w0||
    by projection (not the tool's Lagrange form), h = sqrt(|w0|^2 + t^2),
    passive = t^2/(h + |w0|), active = | r (r + 2|w0|)/(|W_t| + h) |; and per
    module and step dM <= passive + active (the triangle inequality);
  * its own reading of each config (r, scale per module) against manifest.json,
    what the generator meant;
  * --tsv: the tool's stdout table matches the HDF5 numbers exactly.

Prints one line per failed check and a summary with the worst relative errors;
exit 0 if everything matched, 1 otherwise.

Zero rows (the tool's documented rule): a row zero in both W0 and W_t adds 0;
zero in exactly one counts as orthogonal (1 - cos = 1, dM term = the other's
norm); both kinds are counted in zero_rows.
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

PREFIX = "base_model.model."
# adapter tensor name suffix -> role
ROLES = [
    (".lora_A.weight", "A"), (".lora_A.default.weight", "A"),
    (".lora_B.weight", "B"), (".lora_B.default.weight", "B"),
    (".lora_embedding_A", "EA"), (".lora_embedding_A.default", "EA"),
    (".lora_embedding_B", "EB"), (".lora_embedding_B.default", "EB"),
    (".lora_magnitude_vector", "M"), (".lora_magnitude_vector.weight", "M"),
    (".lora_magnitude_vector.default", "M"), (".lora_magnitude_vector.default.weight", "M"),
    (".weight_m_wdecomp.weight", "M"),
]
CKPT = re.compile(r"^checkpoint-([0-9]+)$")


class Failures:
    def __init__(self):
        self.msgs = []

    def __call__(self, msg):
        self.msgs.append(msg)
        print("FAIL " + msg)


# ---------------------------------------------------------------- steps of a run
def _json(path):
    with open(path) as f:
        return json.load(f)


def _state(folder):
    p = os.path.join(folder, "trainer_state.json")
    return _json(p) if os.path.isfile(p) else None


def _weights_file(folder):
    for fn in ("adapter_model.safetensors", "model.safetensors"):
        p = os.path.join(folder, fn)
        if os.path.isfile(p):
            return p
    return None


def _same_file(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return fa.read() == fb.read()


def run_steps(path):
    """[(step, folder)] for a Trainer output folder, with the final model in the
    folder itself when it is not a byte copy of a checkpoint."""
    cks = []
    for e in os.listdir(path):
        m = CKPT.match(e)
        if m and os.path.isdir(os.path.join(path, e)):
            st = _state(os.path.join(path, e))
            step = int(m.group(1))
            if st is not None and st.get("global_step") != step:
                raise ValueError(f"{path}/{e}: global_step {st.get('global_step')} != {step}")
            cks.append((step, os.path.join(path, e), st))
    if not cks:   # a single checkpoint folder: its trainer_state.json, else its name, else 0
        st = _state(path)
        m = CKPT.match(os.path.basename(os.path.normpath(path)))
        if st is not None:
            return [(int(st["global_step"]), path)]
        return [(int(m.group(1)) if m else 0, path)]
    cks.sort()
    out = [(s, d) for s, d, _ in cks]
    final = _weights_file(path)
    if final and not any(_same_file(final, _weights_file(d)) for _, d in out):
        st = _state(path)
        if st is not None:
            step = int(st["global_step"])
        elif cks[-1][2] is not None and cks[-1][2].get("max_steps", -1) > cks[-1][0]:
            step = int(cks[-1][2]["max_steps"])
        else:
            step = cks[-1][0] + 1
        out.append((step, path))
    return out


# ---------------------------------------------------------------- PEFT merge
def pattern_value(patterns, module, default):
    """PEFT: the first key (in dict order) that matches the end of the module name at a
    dot boundary."""
    for key, val in (patterns or {}).items():
        if re.fullmatch(r"(?:.*\.)?(?:" + key + r")", module):
            return val
    return default


def group_adapter(tensors):
    """adapter tensors -> dict module -> dict role -> float64 array ('S': replacement)."""
    mods = {}
    for name, (dt, arr) in tensors.items():
        role, stem = None, name
        for suf, r in ROLES:
            if name.endswith(suf):
                role, stem = r, name[: -len(suf)]
                break
        if role is None:
            if arr.ndim < 2:
                continue        # 1-D modules_to_save entries: not analysed
            if not name.endswith(".weight"):
                raise ValueError(f"unexpected adapter tensor {name}")
            role, stem = "S", name[: -len(".weight")]
        if stem.startswith(PREFIX):
            stem = stem[len(PREFIX):]
        stem = stem.replace(".modules_to_save.default", "")
        d = mods.setdefault(stem, {})
        if role in d:
            raise ValueError(f"two {role} tensors for {stem}")
        d[role] = np.asarray(arr, dtype=np.float64)
    return mods


def merge_module(cfg, module, t, w0):
    """-> (kind, r, scale, fifo, W0 analysed [out, in...] 2-D, D = direction - W0, mag or None)

    W_t's direction is that of W0 + D; its row norms are ||W0 + D|| (LoRA) or |mag| (DoRA)."""
    fifo = bool(cfg.get("fan_in_fan_out")) and "A" in t
    if "S" in t:
        wt = t["S"]
        assert wt.shape == w0.shape, (module, wt.shape, w0.shape)
        k = w0.shape[0]
        return "saved", 0, 0.0, False, w0.reshape(k, -1), (wt - w0).reshape(k, -1), None
    r_cfg = cfg["r"]
    r = int(pattern_value(cfg.get("rank_pattern"), module, r_cfg))
    alpha = float(pattern_value(cfg.get("alpha_pattern"), module, cfg["lora_alpha"]))
    s = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
    if "EA" in t:  # embedding: A [r, num], B [dim, r]; delta = s (B @ A)^T, [num, dim]
        a, b = t["EA"], t["EB"]
        assert a.shape[0] == r and b.shape[1] == r, (module, a.shape, b.shape, r)
        delta = s * (b @ a).T
        kind = "embedding"
        w = w0
    else:
        a, b = t["A"], t["B"]
        assert a.shape[0] == r and b.shape[1] == r, (module, a.shape, b.shape, r)
        kind = "conv" if a.ndim == 4 else "linear"
        if b.ndim == 4:
            assert b.shape[2:] == (1, 1)
            b = b[:, :, 0, 0]
        delta = s * (b @ a.reshape(r, -1))
        w = w0.T if fifo else w0    # Conv1D: stored [in, out], analysed [out, in]
    w = w.reshape(w.shape[0], -1)
    assert delta.shape == w.shape, (module, delta.shape, w.shape)
    mag = t.get("M")
    if mag is not None:
        mag = mag.reshape(-1)
        assert mag.shape[0] == w.shape[0]
    return kind, r, s, fifo, w, delta, mag


def row_split(w0, wt):
    """Per-row (passive, |active|) of the change W0 -> W_t (see the module doc).
    A zero base row: all tangential (passive = |W_t|); a zero W_t: all radial."""
    na = np.sqrt(np.sum(w0 * w0, axis=1))
    nt = np.sqrt(np.sum(wt * wt, axis=1))
    ok = na > 0
    e = w0[ok] / na[ok, None]
    u = wt[ok] - w0[ok]
    r = np.sum(u * e, axis=1)
    q = u - r[:, None] * e
    t2 = np.sum(q * q, axis=1)
    h = np.sqrt(na[ok] ** 2 + t2)
    passive = nt.copy()        # zero base rows
    active = np.zeros(w0.shape[0])
    passive[ok] = t2 / (h + na[ok])
    active[ok] = np.abs(r * (r + 2 * na[ok]) / (nt[ok] + h))
    return passive, active


def row_stats(w0, d, mag=None):
    """Per-row (|dM| term, 1 - cos, zero flag) for W0 rows a and W_t = a + d (or
    mag * (a + d)/||a + d|| for DoRA)."""
    a, dd = w0, d
    na = np.sqrt(np.sum(a * a, axis=1))
    b = a + dd
    nb = np.sqrt(np.sum(b * b, axis=1))
    sad = np.sum(a * dd, axis=1)
    sdd = np.sum(dd * dd, axis=1)
    k = a.shape[0]
    dm = np.zeros(k)
    omc = np.zeros(k)
    zero = np.zeros(k, dtype=np.int64)
    for n in range(k):
        if mag is not None and nb[n] == 0:
            raise ValueError("DoRA row with V = 0: direction undefined")
        nt = abs(mag[n]) if mag is not None else nb[n]   # ||W_t[n]||
        if na[n] == 0 or nt == 0:
            zero[n] = 1
            if na[n] == 0 and nt == 0:
                continue
            dm[n] = nt if na[n] == 0 else na[n]
            omc[n] = 1.0
            continue
        growth = (2 * sad[n] + sdd[n]) / (na[n] + nb[n])     # ||a + d|| - ||a||
        e = dd[n] / nb[n] - a[n] * (growth / (na[n] * nb[n]))  # unit(a + d) - unit(a)
        one_minus = 0.5 * float(np.dot(e, e))
        if mag is not None:
            dm[n] = abs(abs(mag[n]) - na[n])
            if mag[n] < 0:
                one_minus = 2.0 - one_minus
        else:
            dm[n] = abs(growth)
        omc[n] = one_minus
    return dm, omc, zero


# ---------------------------------------------------------------- one run
def reference_run(base, run_path, man_run, fail, label):
    """-> dict with method, steps, sources, modules {name: info}, dm/dd/zero [S, L] by name."""
    steps = run_steps(run_path)
    out = {"steps": [s for s, _ in steps], "sources": [p for _, p in steps], "per": {}}
    is_adapter = [os.path.isfile(os.path.join(p, "adapter_config.json")) for _, p in steps]
    if any(is_adapter) != all(is_adapter):
        raise ValueError(f"{run_path}: mixed adapter and full checkpoints")
    method = "ft"
    modules = None
    S = len(steps)
    for si, (step, folder) in enumerate(steps):
        if is_adapter[si]:
            cfg = _json(os.path.join(folder, "adapter_config.json"))
            got, _ = stio.read_safetensors(os.path.join(folder, "adapter_model.safetensors"))
            groups = group_adapter(got)
            if cfg.get("use_dora") or cfg.get("peft_type") == "DORA" or \
                    any("M" in g for g in groups.values()):
                method = "dora"
            elif method == "ft":
                method = "lora"
            items = []
            for mod, t in groups.items():
                bn = mod + ".weight"
                if bn not in base:
                    raise ValueError(f"{folder}: {bn} not in the base")
                kind, r, s, fifo, w, d, mag = merge_module(cfg, mod, t, base[bn])
                items.append((bn, {"kind": kind, "r": r, "scale": s, "fan_in_fan_out": fifo,
                                   "dora": mag is not None}, w, d, mag))
        else:
            model = stio.load_model(folder)
            items = []
            for bn, w0 in base.items():
                if w0.ndim < 2 or bn not in model:
                    continue
                wt = model[bn][1].astype(np.float64)
                k = w0.shape[0]
                items.append((bn, {"kind": "dense", "r": 0, "scale": 0.0, "fan_in_fan_out": False,
                                   "dora": False}, w0.reshape(k, -1), (wt - w0).reshape(k, -1), None))
        names = sorted((i[0] for i in items), key=stio.natural_key)
        if modules is None:
            modules = {i[0]: i[1] for i in items}
        elif set(names) != set(modules):
            raise ValueError(f"{folder}: modules differ from the first step")
        for bn, info, w, d, mag in items:
            if info != modules[bn] and not (info["kind"] == modules[bn]["kind"] and
                                            info["r"] == modules[bn]["r"]):
                fail(f"{label}: {bn} adapted differently at step {step}")
            dm, omc, zero = row_stats(w, d, mag)
            p = out["per"].setdefault(bn, {"dm": np.zeros(S), "dd": np.zeros(S),
                                           "zero": np.zeros(S, np.int64),
                                           "pm": np.zeros(S), "am": np.zeros(S),
                                           "m0": float(np.mean(np.sqrt(np.sum(w * w, axis=1)))),
                                           "rows": w.shape[0], "cols": w.shape[1]})
            wt = w + d
            if mag is not None:
                wt = wt * (mag / np.sqrt(np.sum(wt * wt, axis=1)))[:, None]
            pas, act = row_split(w, wt)
            p["pm"][si] = pas.sum() / w.shape[0]
            p["am"][si] = act.sum() / w.shape[0]
            p.setdefault("row_dm", [None] * S)[si] = dm      # per row, for check_heads.py
            p.setdefault("row_dd", [None] * S)[si] = omc
            p["dm"][si] = dm.sum() / w.shape[0]
            p["dd"][si] = omc.sum() / w.shape[0]
            p["zero"][si] = zero.sum()
    out["method"] = method
    out["modules"] = modules
    # the reference's reading of the configs against what the generator meant
    if man_run is not None:
        if man_run["method"] != method:
            fail(f"{label}: reference method {method} != manifest {man_run['method']}")
        if man_run["steps"] is not None and man_run["steps"] != out["steps"]:
            fail(f"{label}: reference steps {out['steps']} != manifest {man_run['steps']}")
        mm = man_run["modules"]
        if set(mm) != set(modules):
            fail(f"{label}: reference modules {sorted(modules)} != manifest {sorted(mm)}")
        for bn in set(mm) & set(modules):
            a, b = mm[bn], modules[bn]
            if a["r"] != b["r"] or a["kind"] != b["kind"] or \
                    abs(a["scale"] - b["scale"]) > 1e-12 * max(1.0, abs(a["scale"])) or \
                    a["fan_in_fan_out"] != b["fan_in_fan_out"] or a["dora"] != b["dora"]:
                fail(f"{label}: {bn}: config read as {b}, generator meant {a}")
    return out


# ---------------------------------------------------------------- comparison
class Worst:
    def __init__(self):
        self.v = {"delta_m": (0.0, ""), "delta_d": (0.0, ""), "delta_m_passive": (0.0, ""),
                  "delta_m_active": (0.0, "")}

    def see(self, key, err, where):
        if err > self.v[key][0]:
            self.v[key] = (err, where)


def compare_run(f, name, ref, rtol, fail, worst, mod_re):
    label = f"runs/{name}"
    if f"runs/{name}" not in f:
        fail(f"{label}: missing from the HDF5 file")
        return 0
    g = f[f"runs/{name}"]
    nfail0 = len(fail.msgs)
    meth = g.attrs.get("method")
    meth = meth.decode() if isinstance(meth, bytes) else meth
    if meth != ref["method"]:
        fail(f"{label}: method attr {meth!r}, expected {ref['method']!r}")
    for a in ("source_path", "base_path"):
        if a not in g.attrs:
            fail(f"{label}: no {a} attribute")
    steps = list(g["steps"][()])
    if steps != ref["steps"]:
        fail(f"{label}: steps {steps}, expected {ref['steps']}")
        return 1
    if g["steps"].dtype != np.dtype("<i8"):
        fail(f"{label}: steps dtype {g['steps'].dtype}")
    cps = list(g["checkpoints"].asstr()[()]) if "checkpoints" in g else None
    if cps is not None:
        for c, src in zip(cps, ref["sources"]):
            c0 = os.path.normpath(c)
            if not (os.path.exists(c0) and os.path.samefile(c0, src)) and \
                    not (os.path.basename(c0) == os.path.basename(os.path.normpath(src))
                         or os.path.dirname(c0) == os.path.normpath(src)
                         or os.path.basename(os.path.dirname(c0)) == os.path.basename(src)):
                fail(f"{label}: checkpoint path {c!r} does not name {src!r}")
    mods = list(g["modules"].asstr()[()])
    want = [m for m in ref["modules"] if mod_re is None or re.search(mod_re, m)]
    want = sorted(want, key=stio.natural_key)
    if mods != want:
        fail(f"{label}: modules {mods} != expected {want}")
        return 1
    L, S = len(mods), len(steps)
    rank = g["rank"][()] if "rank" in g else None
    if rank is None:
        fail(f"{label}: no rank dataset")
    elif rank.dtype != np.dtype("<i4"):
        fail(f"{label}: rank dtype {rank.dtype}, expected int32")
    for key, dt in (("layer", "<i4"), ("rows", "<i8"), ("cols", "<i8"), ("delta_m", "<f8"),
                    ("delta_d", "<f8"), ("zero_rows", "<i8")):
        if g[key].dtype != np.dtype(dt):
            fail(f"{label}: {key} dtype {g[key].dtype}, expected {dt}")
    for key, shape in (("layer", (L,)), ("rows", (L,)), ("cols", (L,)), ("rank", (L,)),
                       ("delta_m", (S, L)), ("delta_d", (S, L)), ("zero_rows", (S, L))):
        if key in g and g[key].shape != shape:
            fail(f"{label}: {key} shape {g[key].shape}, expected {shape}")
            return 1
    layer, rows, cols = g["layer"][()], g["rows"][()], g["cols"][()]
    dm, dd, zr = g["delta_m"][()], g["delta_d"][()], g["zero_rows"][()]
    for key in ("delta_m_passive", "delta_m_active"):
        if key not in g or g[key].dtype != np.dtype("<f8") or g[key].shape != (S, L):
            fail(f"{label}: {key} missing, or not float64 [{S}, {L}]")
            return 1
    pm, am = g["delta_m_passive"][()], g["delta_m_active"][()]
    for l, m in enumerate(mods):
        info, per = ref["modules"][m], ref["per"][m]
        if layer[l] != stio.layer_of(m):
            fail(f"{label}: {m}: layer {layer[l]}, expected {stio.layer_of(m)}")
        if rows[l] != per["rows"] or cols[l] != per["cols"]:
            fail(f"{label}: {m}: rows x cols {rows[l]} x {cols[l]}, expected {per['rows']} x {per['cols']}")
        if rank is not None and rank[l] != info["r"]:
            fail(f"{label}: {m}: rank {rank[l]}, expected {info['r']}")
        for s in range(S):
            where = f"{name} step {steps[s]} {m}"
            if dm[s, l] > (pm[s, l] + am[s, l]) * (1 + 1e-12):
                fail(f"{where}: delta_m {dm[s, l]!r} > passive + active {pm[s, l] + am[s, l]!r}")
            for key, got, exp in (("delta_m", dm[s, l], per["dm"][s]), ("delta_d", dd[s, l], per["dd"][s]),
                                  ("delta_m_passive", pm[s, l], per["pm"][s]),
                                  ("delta_m_active", am[s, l], per["am"][s])):
                if not np.isfinite(got):
                    fail(f"{where}: {key} = {got}")
                    continue
                if exp == 0:
                    if abs(got) > 1e-15:
                        fail(f"{where}: {key} = {got!r}, expected exactly 0")
                    continue
                # an unturned row: the projection leaves t^2 ~ (1e-16 |w0|)^2, passive
                # ~ 1e-32 |w0|, where the tool's Lagrange form gives 0
                if key == "delta_m_passive" and abs(got - exp) <= 1e-20 * per["m0"]:
                    continue
                err = abs(got - exp) / abs(exp)
                worst.see(key, err, where)
                if err > rtol:
                    fail(f"{where}: {key} = {got!r}, reference {exp!r} (relative error {err:.3g} > {rtol:g})")
            if zr[s, l] != per["zero"][s]:
                fail(f"{where}: zero_rows {zr[s, l]}, expected {per['zero'][s]}")
    return len(fail.msgs) - nfail0


def check_tsv(path, f, names, fail):
    with open(path) as fh:
        lines = fh.read().splitlines()
    if not lines or lines[0].split("\t") != ["run", "method", "step", "module", "layer",
                                             "delta_m", "delta_d"]:
        fail(f"{path}: bad header {lines[:1]}")
        return
    rows = {}
    for ln in lines[1:]:
        p = ln.split("\t")
        if len(p) != 7:
            fail(f"{path}: bad line {ln!r}")
            return
        rows.setdefault(p[0], []).append(p)
    for name in names:
        if f"runs/{name}" not in f:
            continue
        g = f[f"runs/{name}"]
        steps, mods = g["steps"][()], list(g["modules"].asstr()[()])
        meth = g.attrs["method"]
        meth = meth.decode() if isinstance(meth, bytes) else meth
        got = rows.get(name, [])
        if len(got) != len(steps) * len(mods):
            fail(f"{path}: {len(got)} rows for run {name}, expected {len(steps) * len(mods)}")
            continue
        seen = set()
        for p in got:
            try:
                s = list(steps).index(int(p[2]))
                l = mods.index(p[3])
            except ValueError:
                fail(f"{path}: row {p} names an unknown step or module")
                continue
            seen.add((s, l))
            if p[1] != meth or int(p[4]) != g["layer"][l] or \
                    float(p[5]) != g["delta_m"][s, l] or float(p[6]) != g["delta_d"][s, l]:
                fail(f"{path}: row {p} differs from the HDF5 "
                     f"({meth}, {g['layer'][l]}, {g['delta_m'][s, l]!r}, {g['delta_d'][s, l]!r})")
        if len(seen) != len(got):
            fail(f"{path}: duplicate rows for run {name}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="folder written by gen_adapters.py")
    ap.add_argument("--h5", required=True)
    ap.add_argument("--runs", help="comma-separated run names (default: every run in the manifest "
                    "that the file holds); GROUP=RUN when the file's group differs from the "
                    "run, GROUP=RUN/SUBFOLDER for one checkpoint folder of a run")
    ap.add_argument("--tsv", help="the tool's stdout table, to compare with the file")
    ap.add_argument("--modules", help="the --modules regular expression the tool was given")
    ap.add_argument("--rtol", type=float, default=1e-9)
    ap.add_argument("--exact-runs", action="store_true",
                    help="the file must hold exactly the runs checked")
    args = ap.parse_args()
    man = _json(os.path.join(args.data, "manifest.json"))
    fail = Failures()
    base = {n: np.asarray(v, dtype=np.float64)
            for n, (dt, v) in stio.load_model(os.path.join(args.data, man["base"])).items()
            if dt in stio.FLOAT_DTYPES}
    f = h5py.File(args.h5, "r")
    in_file = sorted(f["runs"]) if "runs" in f else []
    if args.runs:
        pairs = [(p.split("=", 1) if "=" in p else (p, p)) for p in args.runs.split(",")]
    else:
        pairs = [(n, n) for n in man["runs"] if n in in_file]
    if args.exact_runs and sorted(n for n, _ in pairs) != in_file:
        fail(f"{args.h5}: holds runs {in_file}, expected {sorted(n for n, _ in pairs)}")
    worst = Worst()
    nvals = 0
    for name, rn in pairs:
        rn, _, sub = rn.partition("/")
        if rn not in man["runs"]:
            fail(f"{rn}: not in the manifest")
            continue
        mr = man["runs"][rn]
        path = os.path.join(args.data, mr["path"])
        if sub:    # part of a run (one checkpoint folder): steps are not the manifest's
            path = os.path.join(path, sub)
            mr = dict(mr, steps=None)
        try:
            ref = reference_run(base, path, mr, fail, f"ref/{rn}")
        except (ValueError, AssertionError, KeyError) as e:
            fail(f"ref/{rn}: the reference failed: {type(e).__name__}: {e}")
            continue
        compare_run(f, name, ref, args.rtol, fail, worst, args.modules)
        nvals += 4 * len(ref["steps"]) * len(ref["modules"])
    if args.tsv:
        check_tsv(args.tsv, f, [n for n, _ in pairs], fail)
    for key in worst.v:
        e, where = worst.v[key]
        print(f"worst relative error {key}: {e:.3g} ({where})")
    runs = ",".join(n for n, _ in pairs)
    if fail.msgs:
        print(f"check_adapters: {len(fail.msgs)} failure(s) in runs {runs}")
        return 1
    print(f"check_adapters: OK, runs {runs}: {nvals} values within rtol {args.rtol:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
