#!/usr/bin/python3
"""check_torch.py --data D --out O [--real LIST]

Checks what tests/sh/torch.sh had bin/dora-analyze write for the files of
tests/py/gen_torch.py (D) into O, against

  (i)  the tool's own output for the same weights as safetensors: every dataset
       of /runs/NAME and the TSV on stdout must be bitwise the same;
  (ii) a float64 reference computed with PyTorch from torch.load of the very
       files (dM, dD per README "Formulas", rtol 1e-6), adapters merged as PEFT
       merges them;
  (iii) `inspect` listings (name, dtype, shape, bytes) against torch.load of
       the same file (or, for hand-made pickles torch 1.13 cannot load, the
       generator's NAME.expect.json);
  (iv) views, transposes, offsets and shared storages: analysed against a base
       holding contiguous copies, every dM and dD must be exactly 0 and the
       per-row norms those of PyTorch's tensors.

--real LIST: lines LABEL <tab> FILE <tab> INSPECT-TSV <tab> EXIT-STATUS of
`inspect` runs on third-party files; each must have exited 0 and list what
torch.load(map_location='cpu', weights_only=True) finds.

Only the trusted files written by gen_torch.py (never OUTDIR/hostile) and the
listed real files are loaded with torch.load. Prints `PASS torch/NAME` or
`FAIL torch/NAME: why` per check; exit status 1 if anything failed.
Run with Debian's /usr/bin/python3.
"""

import argparse
import json
import math
import os
import pickle
import sys
import types

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stio  # noqa: E402

RTOL = 1e-6
DT = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
      torch.float64: "F64", torch.int64: "I64", torch.int32: "I32", torch.int16: "I16",
      torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}
FAILS = []


def report(name, ok, why=""):
    if ok:
        print(f"PASS torch/{name}")
    else:
        print(f"FAIL torch/{name}: {why}")
        FAILS.append(name)


class _StateDictUnpickler(pickle.Unpickler):
    """For third-party files that torch 1.13's weights-only unpickler refuses (it lacks
    torch._tensor._rebuild_from_type_v2): only the globals a state dict needs."""

    ALLOWED = {("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"),
               ("torch._utils", "_rebuild_parameter"), ("torch._tensor", "_rebuild_from_type_v2"),
               ("torch", "Tensor"), ("torch._tensor", "Tensor"),
               ("torch.nn.parameter", "Parameter"), ("torch", "device"),
               ("torch", "bfloat16"), ("torch", "float32"), ("torch", "float16")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED or (module == "torch" and name.endswith("Storage")):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"reference loader refuses global {module}.{name}")


_SAFE_PICKLE = types.SimpleNamespace(Unpickler=_StateDictUnpickler, load=None,
                                     __name__="state_dict_pickle")


def tload(path, trusted=False):
    """torch.load with the weights-only unpickler, else with a restricted one (real
    files); files this test generated itself (trusted) may also use the full unpickler
    (torch 1.13's weights-only one lacks BINFLOAT, ...). Hostile files never come here."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001
        if trusted:
            return torch.load(path, map_location="cpu")
        return torch.load(path, map_location="cpu", pickle_module=_SAFE_PICKLE)


def guard(label, fn, *args):
    """Run one group of checks; an exception is a FAIL line, not a crash."""
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001
        report(label, False, f"checker error: {type(e).__name__}: {e}")


def flatten(obj, prefix=""):
    """Dotted names as the tool gives them: dict keys, list/tuple indices."""
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


def load_bin_model(path):
    """A .bin/.pt file, or a folder with pytorch_model.bin or its index + shards."""
    if os.path.isfile(path):
        return flatten(tload(path, True))
    idx = os.path.join(path, "pytorch_model.bin.index.json")
    if os.path.isfile(idx):
        with open(idx) as f:
            wm = json.load(f)["weight_map"]
        out = {}
        for fn in sorted(set(wm.values())):
            part = flatten(tload(os.path.join(path, fn), True))
            out.update({n: t for n, t in part.items() if wm.get(n) == fn})
        return out
    return flatten(tload(os.path.join(path, "pytorch_model.bin"), True))


# ---------------------------------------------------------------- inspect listings
def parse_inspect(tsv):
    """-> (dict name -> (dtype, shape tuple, bytes), list of duplicate names)."""
    rows, dups, header = {}, [], False
    with open(tsv, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("#") or not line:
                continue
            parts = line.split("\t")
            if not header:
                header = True
                if parts[:4] != ["name", "dtype", "shape", "bytes"]:
                    raise ValueError(f"unexpected header {parts!r}")
                continue
            name, dt, shape, nbytes = parts[:4]
            if name in rows:
                dups.append(name)
            rows[name] = (dt, tuple(json.loads(shape)), int(nbytes))
    return rows, dups


def expect_of(tensors):
    return {n: (DT[t.dtype], tuple(t.shape), t.numel() * t.element_size())
            for n, t in tensors.items()}


def compare_listing(label, tsv, want):
    try:
        got, dups = parse_inspect(tsv)
    except (OSError, ValueError) as e:
        report(label, False, f"cannot read inspect output: {e}")
        return
    why = []
    if dups:
        why.append(f"names listed twice: {dups[:3]}")
    miss = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    if miss:
        why.append(f"{len(miss)} missing, e.g. {miss[:3]}")
    if extra:
        why.append(f"{len(extra)} unexpected, e.g. {extra[:3]}")
    bad = [f"{n}: got {got[n]} want {want[n]}" for n in sorted(set(got) & set(want))
           if got[n] != want[n]]
    if bad:
        why.append(f"{len(bad)} differ, e.g. {bad[:2]}")
    report(label, not why, "; ".join(why))


# ---------------------------------------------------------------- dM / dD reference
def rows_of(t):
    t = t.detach().to(torch.float64)
    return t.reshape(t.shape[0], -1)


def dm_dd(a, b):
    """float64 reference of paper Eq. 3/4 with the README's zero-row rules."""
    na, nb = a.norm(dim=1), b.norm(dim=1)
    za, zb = na == 0, nb == 0
    dm = (nb - na).abs()
    ua = a / torch.where(za, torch.ones_like(na), na)[:, None]
    ub = b / torch.where(zb, torch.ones_like(nb), nb)[:, None]
    dd = 0.5 * ((ua - ub) ** 2).sum(dim=1)          # 1 - cos without cancellation
    dd = torch.where(za & zb, torch.zeros_like(dd), dd)
    dd = torch.where(za ^ zb, torch.ones_like(dd), dd)
    return dm.mean().item(), dd.mean().item(), int((za | zb).sum())


def layer_of(name):
    for c in name.split("."):
        if c.isdigit() and c.isascii():
            return int(c)
    return -1


def close(x, y):
    return abs(x - y) <= RTOL * abs(y) + 1e-300 or (x == y)


def check_run(label, grp, base, steps_models, method, rank_of=None):
    """Compare /runs/NAME against the reference. steps_models: [(step, {name: W})]."""
    why = []
    steps = [s for s, _ in steps_models]
    got_steps = list(grp["steps"][()])
    if got_steps != steps:
        report(label, False, f"steps {got_steps}, expected {steps}")
        return
    if grp.attrs.get("method") != method:
        why.append(f"method {grp.attrs.get('method')!r}, expected {method!r}")
    names = [n for n, t in base.items() if t.is_floating_point() and t.dim() >= 2
             and t.shape[0] > 0 and all(n in m for _, m in steps_models)]
    names.sort(key=stio.natural_key)
    mods = [m.decode() if isinstance(m, bytes) else m for m in grp["modules"][()]]
    if mods != names:
        report(label, False, f"modules differ: {len(mods)} vs {len(names)} expected; "
               f"first difference {next(((a, b) for a, b in zip(mods, names) if a != b), None)}")
        return
    dmg, ddg, zg = grp["delta_m"][()], grp["delta_d"][()], grp["zero_rows"][()]
    for j, n in enumerate(names):
        if grp["layer"][j] != layer_of(n):
            why.append(f"{n}: layer {grp['layer'][j]}")
        if grp["rows"][j] != base[n].shape[0] or grp["cols"][j] != base[n][0].numel():
            why.append(f"{n}: rows/cols {grp['rows'][j]}/{grp['cols'][j]}")
        want_rank = rank_of(n) if rank_of else 0
        if grp["rank"][j] != want_rank:
            why.append(f"{n}: rank {grp['rank'][j]}, expected {want_rank}")
    worst = 0.0
    a0 = {n: rows_of(base[n]) for n in names}
    for i, (s, m) in enumerate(steps_models):
        for j, n in enumerate(names):
            dm, dd, z = dm_dd(a0[n], rows_of(m[n]))
            for what, g, w in (("dM", dmg[i, j], dm), ("dD", ddg[i, j], dd)):
                if not math.isfinite(g) or not close(g, w):
                    why.append(f"step {s} {n} {what}: tool {g!r}, reference {w!r}")
                elif w != 0:
                    worst = max(worst, abs(g - w) / abs(w))
            if zg[i, j] != z:
                why.append(f"step {s} {n}: zero_rows {zg[i, j]}, reference {z}")
    report(label, not why, f"{len(why)} mismatches, e.g. {why[:3]}")
    if not why:
        print(f"    {label}: {len(names)} tensors x {len(steps)} steps, "
              f"worst relative error {worst:.2e}")


# ---------------------------------------------------------------- bitwise equality
DATASETS = ("steps", "modules", "layer", "rows", "cols", "rank", "delta_m", "delta_d",
            "zero_rows")


def check_bitwise(label, pa, pb, ta=None, tb=None):
    why = []
    try:
        fa, fb = h5py.File(pa, "r"), h5py.File(pb, "r")
    except OSError as e:
        report(label, False, f"cannot open: {e}")
        return
    with fa, fb:
        ra, rb = sorted(fa["runs"]), sorted(fb["runs"])
        if ra != rb:
            why.append(f"runs {ra} vs {rb}")
        for r in sorted(set(ra) & set(rb)):
            ga, gb = fa["runs"][r], fb["runs"][r]
            if ga.attrs.get("method") != gb.attrs.get("method"):
                why.append(f"{r}: method {ga.attrs.get('method')} vs {gb.attrs.get('method')}")
            if ga["checkpoints"].shape != gb["checkpoints"].shape:
                why.append(f"{r}: checkpoints {ga['checkpoints'].shape} vs {gb['checkpoints'].shape}")
            for k in DATASETS:
                x, y = ga[k][()], gb[k][()]
                same = (x.shape == y.shape and x.dtype == y.dtype and
                        (list(x) == list(y) if x.dtype.kind == "O" else x.tobytes() == y.tobytes()))
                if not same:
                    why.append(f"{r}/{k} differs")
    if ta and tb:
        with open(ta, "rb") as f1, open(tb, "rb") as f2:
            if f1.read() != f2.read():
                why.append("stdout tables differ")
    report(label, not why, "; ".join(why[:4]))


# ---------------------------------------------------------------- zero-difference views
def check_views(label, h5, run, tensors, prefix=""):
    """Tool analysed tensors against their own contiguous copies: dM = dD = 0 exactly,
    no zero rows, and per-row norms those of PyTorch's float64 norms."""
    want = {prefix + n: t for n, t in tensors.items()
            if t.is_floating_point() and t.dim() >= 2 and t.shape[0] > 0}
    why = []
    try:
        f = h5py.File(h5, "r")
    except OSError as e:
        report(label, False, f"cannot open {h5}: {e}")
        return
    with f:
        g = f["runs"][run]
        mods = [m.decode() if isinstance(m, bytes) else m for m in g["modules"][()]]
        if sorted(mods) != sorted(want):
            why.append(f"modules {sorted(mods)} vs {sorted(want)}")
        dm, dd, z = g["delta_m"][()], g["delta_d"][()], g["zero_rows"][()]
        for j, n in enumerate(mods):
            if dm[0, j] != 0.0 or dd[0, j] != 0.0:
                why.append(f"{n}: dM {dm[0, j]!r} dD {dd[0, j]!r}, expected exactly 0")
            if z[0, j] != 0:
                why.append(f"{n}: zero_rows {z[0, j]}")
            if n not in want or "per_row" not in g:
                continue
            pr = g["per_row"][n.replace("%", "%25").replace("/", "%2F")]
            ref = rows_of(want[n]).norm(dim=1).numpy()
            m0, m = pr["m0"][()], pr["m"][()]
            if m0.shape != ref.shape or not np.allclose(m0, ref, rtol=1e-12, atol=0):
                why.append(f"{n}: row norms {m0[:3]} vs PyTorch {ref[:3]}")
            if m.tobytes() != m0.reshape(1, -1).tobytes():
                why.append(f"{n}: m differs from m0")
    report(label, not why, f"{len(why)} problems, e.g. {why[:3]}")


# ---------------------------------------------------------------- main
def check_ft(D, O, v, info):
    """(i) + (ii) for one dtype variant."""
    pb, ps = os.path.join(O, f"{v}.bin.h5"), os.path.join(O, f"{v}.st.h5")
    if not (os.path.isfile(pb) and os.path.isfile(ps)):
        report(f"ft-{v}-bitwise", False, "missing output (analyze failed)")
        return
    check_bitwise(f"ft-{v}-bitwise", pb, ps, os.path.join(O, f"{v}.bin.tsv"),
                  os.path.join(O, f"{v}.st.tsv"))
    base = load_bin_model(os.path.join(D, v, "bin", "base"))
    with h5py.File(pb, "r") as f:
        for run, steps in info["runs"].items():
            if run not in f["runs"]:
                report(f"ft-{v}-{run}-reference", False, "run missing from the HDF5 file")
                continue
            sm = [(s, load_bin_model(os.path.join(D, v, "bin", p))) for s, p, _ in steps]
            check_run(f"ft-{v}-{run}-reference", f["runs"][run], base, sm, "ft")


def check_adapters(D, O, man):
    """LoRA and DoRA adapter_model.bin runs: bitwise vs safetensors, merged in float64."""
    pb, ps = os.path.join(O, "adapters.bin.h5"), os.path.join(O, "adapters.st.h5")
    if not (os.path.isfile(pb) and os.path.isfile(ps)):
        report("adapters-bitwise", False, "missing output (analyze failed)")
        return
    check_bitwise("adapters-bitwise", pb, ps, os.path.join(O, "adapters.bin.tsv"),
                  os.path.join(O, "adapters.st.tsv"))
    base = load_bin_model(os.path.join(D, "f32", "bin", "base"))
    with h5py.File(pb, "r") as f:
        for kind, info in man["adapters"].items():
            cfg = info["config"]
            s = cfg["lora_alpha"] / cfg["r"]
            sm = []
            for st in info["steps"]:
                sd = tload(os.path.join(D, kind, "bin", "run", f"checkpoint-{st}",
                                        "adapter_model.bin"), True)
                merged = {}
                for n, w0 in base.items():
                    pre = "base_model.model." + n[:-len(".weight")]
                    if pre + ".lora_A.weight" not in sd:
                        continue
                    A = sd[pre + ".lora_A.weight"].double()
                    B = sd[pre + ".lora_B.weight"].double()
                    V = w0.double() + s * (B @ A)            # PEFT's merge
                    if kind == "dora":
                        mag = sd[pre + ".lora_magnitude_vector"].double()
                        V = mag[:, None] * V / V.norm(dim=1)[:, None]
                    merged[n] = V
                sm.append((st, merged))
            adapted = {n: base[n] for n in sm[0][1]}
            if kind not in f["runs"]:
                report(f"adapter-{kind}-reference", False, "run missing")
                continue
            check_run(f"adapter-{kind}-reference", f["runs"][kind], adapted, sm, kind,
                      rank_of=lambda n, r=cfg["r"]: r)


SIZE = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
        "U8": 1, "BOOL": 1}


def check_valid(D, O, name, path, ref, exp):
    """A valid file: inspect listing and (float tensors of rank >= 2) exact values."""
    tsv = os.path.join(O, "inspect", f"valid-{name}.tsv")
    if exp != "-":          # hand-made pickle torch 1.13 cannot load: generator's list
        with open(exp) as fh:
            want = {n: (d, tuple(sh), SIZE[d] * int(np.prod(sh, dtype=np.int64)))
                    for n, (d, sh) in json.load(fh).items()}
        tensors = None
    else:
        tensors = flatten(tload(path, True))
        want = expect_of(tensors)
    compare_listing(f"valid-{name}-inspect", tsv, want)
    if ref != "-":
        if tensors is None:
            tensors = dict(zip(*_read_ref(ref)))
        check_views(f"valid-{name}-values", os.path.join(O, f"valid-{name}.h5"), "x", tensors)


def check_real(label, path, tsv, rc):
    if rc != "0":
        report(f"real-{label}", False, f"inspect exit {rc}")
        return
    try:
        want = expect_of(flatten(tload(path)))
    except Exception as e:  # noqa: BLE001 - report, do not crash
        report(f"real-{label}", False, f"torch.load failed: {e}")
        return
    compare_listing(f"real-{label}", tsv, want)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--real")
    a = ap.parse_args()
    D, O = a.data, a.out
    with open(os.path.join(D, "manifest.json")) as f:
        man = json.load(f)

    for v, info in man["variants"].items():
        guard(f"ft-{v}", check_ft, D, O, v, info)
    guard("adapters", check_adapters, D, O, man)

    # (iii) inspect listings of the tricky files
    for name in ("tricky", "nested_state_dict", "views"):
        guard(f"inspect-{name}", lambda n=name: compare_listing(
            f"inspect-{n}", os.path.join(O, "inspect", f"{n}.tsv"),
            expect_of(flatten(tload(os.path.join(D, "tricky", n + ".pt"), True)))))
    # (iv) values of views, transposes, offsets, shared storages
    views = flatten(tload(os.path.join(D, "tricky", "views.pt"), True))
    guard("views-vs-contiguous", check_views, "views-vs-contiguous",
          os.path.join(O, "views.h5"), "views", views)
    guard("contiguous-vs-views", check_views, "contiguous-vs-views",
          os.path.join(O, "views_rev.h5"), "rev", views)

    with open(os.path.join(D, "valid", "list.tsv")) as f:
        for line in f:
            if line.strip():
                row = line.rstrip("\n").split("\t")
                guard(f"valid-{row[0]}", check_valid, D, O, *row)

    if a.real:
        with open(a.real) as f:
            for line in f:
                if line.strip():
                    row = line.rstrip("\n").split("\t")
                    guard(f"real-{row[0]}", check_real, *row)
    sys.exit(1 if FAILS else 0)


def _read_ref(path):
    """NAME.ref.safetensors (hand-made files) -> (names, torch tensors)."""
    got, _ = stio.read_safetensors(path)
    names, ts = [], []
    for n, (dt, arr) in got.items():
        t = torch.from_numpy(np.array(arr))      # BF16 comes back as exact float32
        names.append(n)
        ts.append(t)
    return names, ts


if __name__ == "__main__":
    main()
