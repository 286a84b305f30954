#!/usr/bin/python3
"""Tests of the test tools themselves (no dora-analyze needed).

    selftest.py [REALDATA]

  * BF16 rounding against a brute-force nearest-even search;
  * stio writer/reader round trip for every dtype, sharded == single;
  * the strict reader rejects every file of the hostile corpus with
    SafetensorsError and accepts the real files of shared/realdata
    (except the abuse file), sharded gemma == single gemma;
  * check_h5's reference per-row 1-cos against np.longdouble;
  * check_h5 passes a right answer (fake_analyze.py) and fails wrong ones.
Prints PASS/FAIL lines; exits 1 on any FAIL.
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import stio  # noqa: E402
import check_h5  # noqa: E402
import gen_hostile  # noqa: E402
import gen_runs  # noqa: E402

FAILS = []


def result(name, ok, why=""):
    if ok:
        print(f"PASS selftest/{name}")
    else:
        print(f"FAIL selftest/{name}: {why}")
        FAILS.append(name)


def bf16_brute(x):
    """Nearest BF16 by comparing the two neighbours in float64; ties to even."""
    out = np.empty(x.shape, dtype=np.uint16)
    u = x.view(np.uint32)
    with np.errstate(invalid="ignore"):
        x64 = x.astype(np.float64)
    for i, (xv, uv) in enumerate(zip(x64, u)):
        if np.isnan(xv):
            out[i] = 0xFFFF  # marker: any NaN accepted
            continue
        lo = int(uv) >> 16
        hi = lo + 1
        vlo = float(stio.bf16_bits_to_f32(np.array([lo], dtype=np.uint16))[0])
        with np.errstate(over="ignore", invalid="ignore"):
            vhi = float(stio.bf16_bits_to_f32(np.array([hi & 0xFFFF], dtype=np.uint16))[0])
        if (lo & 0x7F80) == 0x7F80:  # already Inf
            out[i] = lo
            continue
        dlo = abs(xv - vlo)
        dhi = abs(vhi - xv) if np.isfinite(vhi) else abs((2.0 ** 128 * np.sign(xv)) - xv)
        if dlo < dhi or (dlo == dhi and lo % 2 == 0):
            out[i] = lo
        else:
            out[i] = hi
    return out


def test_bf16():
    rng = np.random.default_rng(1)
    x = np.concatenate([
        rng.normal(0, 1, 3000).astype(np.float32),
        (rng.normal(0, 1, 500) * 1e-39).astype(np.float32),  # subnormals
        rng.integers(0, 2 ** 32, 3000, dtype=np.uint64).astype(np.uint32).view(np.float32),
        np.array([0x3F808000, 0x3F818000, 0x3F80FFFF, 0x7F7FFFFF, 0x7F7F8000, 0x7F7F7FFF,
                  0x80000000, 0x00000001, 0xFF7FFFFF], dtype=np.uint32).view(np.float32),
        np.array([np.inf, -np.inf, np.nan, 1.0, -2.5], dtype=np.float32),
    ])
    got = stio.f32_to_bf16_bits(x)
    exp = bf16_brute(x)
    nan = np.isnan(x)
    ok_nan = np.all(np.isnan(stio.bf16_bits_to_f32(got[nan])))
    bad = np.nonzero((got != exp) & ~nan)[0]
    result("bf16-rne", len(bad) == 0 and ok_nan,
           f"{len(bad)} differ, first x={x[bad[0]]!r} got {got[bad[0]]:#06x} exp {exp[bad[0]]:#06x}" if len(bad) else "NaN lost")
    # ties: 1 + 2^-8 is halfway between 1 and 1+2^-7 -> even (1.0); 1+3*2^-8 -> 1+2^-6
    t = np.array([1 + 2 ** -8, 1 + 3 * 2 ** -8], dtype=np.float32)
    result("bf16-ties", list(stio.f32_to_bf16_bits(t)) == [0x3F80, 0x3F82], f"{stio.f32_to_bf16_bits(t)}")


def test_roundtrip(tmp):
    rng = np.random.default_rng(2)
    ts = {
        "a.f16": rng.normal(0, 1, (3, 7)).astype(np.float16),
        "a.f32": rng.normal(0, 1, (5, 2, 3)).astype(np.float32),
        "a.f64": rng.normal(0, 1, (4,)),
        "a.bf16": stio.Tensor("BF16", rng.normal(0, 1, (6, 5)).astype(np.float32)),
        "a.bf16raw": stio.Tensor("BF16", rng.integers(0, 2 ** 16, (2, 3), dtype=np.uint64).astype(np.uint16)),
        "a.i64": np.arange(6, dtype=np.int64).reshape(2, 3),
        "a.u8": np.arange(5, dtype=np.uint8),
        "a.bool": np.array([True, False, True]),
        "a.scalar": np.array(3.5, dtype=np.float32),
        "a.empty": np.zeros((0, 4), dtype=np.float32),
    }
    p = os.path.join(tmp, "rt.safetensors")
    stio.write_safetensors(p, ts, {"format": "pt", "note": "ünïcode"})
    got, meta = stio.read_safetensors(p)
    ok = meta == {"format": "pt", "note": "ünïcode"} and set(got) == set(ts)
    why = ""
    for n, v in ts.items():
        t = stio.as_tensor(v)
        dt, a = got[n]
        if dt != t.dtype or a.shape != t.shape:
            ok, why = False, f"{n}: {dt} {a.shape}"
            continue
        if t.dtype == "BF16":
            exp = t.array if t.array.dtype == np.uint16 else stio.f32_to_bf16_bits(t.array)
            same = np.array_equal(stio.f32_to_bf16_bits(a), exp) or np.array_equal(
                a.view(np.uint32) >> 16, exp.astype(np.uint32))
        else:
            same = np.array_equal(a, t.array, equal_nan=False)
        if not same:
            ok, why = False, f"{n}: values differ"
    with open(p, "rb") as f:
        b = f.read()
    n = int.from_bytes(b[:8], "little")
    ok &= (8 + n) % 8 == 0 and b[8:8 + n].rstrip(b" ").endswith(b"}")
    result("roundtrip", ok, why or "header not padded to 8")

    # sharded == single
    d = os.path.join(tmp, "sh")
    files = stio.write_sharded(d, ts, 3)
    one = stio.load_model(d)
    idx = json.load(open(os.path.join(d, stio.INDEX)))
    total = sum(len(stio.encode(stio.as_tensor(v))) for v in ts.values())
    ok = (len(files) == 3 and set(one) == set(ts) and idx["metadata"]["total_size"] == total
          and all(np.array_equal(one[k][1], got[k][1]) for k in ts if got[k][0] != "BF16"))
    result("sharded", ok, f"{files} {idx['metadata']}")


def test_hostile_reader(tmp):
    out = os.path.join(tmp, "hostile")
    gen_hostile.CASES.clear()
    gen_hostile.sys.argv = ["gen_hostile.py", out]
    gen_hostile.main()
    man = json.load(open(os.path.join(out, "manifest.json")))
    nfile = sum(c["role"] == "file" for c in man)
    result("hostile-count", nfile >= 25, f"only {nfile} file cases")
    bad = []
    for c in man:
        p = os.path.join(out, c["path"])
        try:
            if c["role"] == "file":
                stio.read_safetensors(p)
                bad.append(f"{c['name']}: accepted")
            elif c["name"].startswith("idx_"):
                stio.load_model(stio.resolve_run(p)[0][1])
                bad.append(f"{c['name']}: accepted")
        except stio.SafetensorsError as e:
            if c["role"] == "file" and os.path.basename(p) not in str(e):
                bad.append(f"{c['name']}: message lacks the file: {e}")
        except (OSError, ValueError, KeyError, TypeError) as e:
            if c["role"] == "file":
                bad.append(f"{c['name']}: {type(e).__name__} {e}")
    for p in ("valid/base.safetensors", "valid/run.safetensors"):
        try:
            stio.read_safetensors(os.path.join(out, p))
        except Exception as e:
            bad.append(f"{p}: {e}")
    result("hostile-reader", not bad, "; ".join(bad[:5]))


def test_realdata(realdata):
    if not os.path.isdir(realdata):
        if os.environ.get("CI"):  # CI lays shared/ beside the clone
            result("realdata", False, f"{realdata} missing")
        else:
            print(f"SKIP selftest/realdata: {realdata} missing (set REALDATA)")
        return
    bad = []
    for p in sorted(glob.glob(os.path.join(realdata, "**", "*.safetensors"), recursive=True)):
        abuse = "abuse" in os.path.basename(p)
        try:
            stio.read_safetensors(p)
            if abuse:
                bad.append(f"{p}: accepted")
        except stio.SafetensorsError as e:
            if not abuse:
                bad.append(f"{p}: {e}")
    g1 = stio.load_model(os.path.join(realdata, "torchtune", "gemma_hf_checkpoint.safetensors"))
    g2 = stio.load_model(os.path.join(realdata, "sharded-gemma-tiny"))
    if set(g1) != set(g2) or not all(np.array_equal(g1[k][1], g2[k][1]) for k in g1):
        bad.append("sharded gemma differs from the single file")
    result("realdata-reader", not bad, "; ".join(bad[:5]))


def test_reference():
    rng = np.random.default_rng(3)
    worst = 0.0
    for rel in (1e-1, 1e-3, 1e-5, 1e-7):
        a = rng.normal(0, 0.02, (64, 200)).astype(np.float32)
        b = (a.astype(np.float64) * (1 + rel * rng.normal(0, 1, a.shape))).astype(np.float32)
        r = check_h5.per_row_ref(a, b)
        al = a.astype(np.longdouble)
        bl = b.astype(np.longdouble)
        na = np.sqrt(np.sum(al * al, axis=1))
        nb = np.sqrt(np.sum(bl * bl, axis=1))
        d = al / na[:, None] - bl / nb[:, None]
        omc_l = np.sum(d * d, axis=1) / 2
        # naive in longdouble is also fine at these sizes when rel >= 1e-5
        omc_naive = 1 - np.sum(al * bl, axis=1) / (na * nb)
        e1 = np.max(np.abs(r["one_minus_cos"] - omc_l.astype(np.float64)) / omc_l.astype(np.float64))
        e2 = np.max(np.abs(r["m0"] - na.astype(np.float64)) / na.astype(np.float64))
        worst = max(worst, e1, e2)
        if rel >= 1e-5:
            e3 = np.max(np.abs(omc_l - omc_naive) / omc_l)
            worst = max(worst, float(e3) if rel >= 1e-3 else 0.0)
    result("reference-vs-longdouble", worst < 1e-9, f"worst relative error {worst:.3g}")
    z = np.zeros((3, 4))
    z[1] = 1.0
    w = np.zeros((3, 4))
    w[2] = 2.0
    w[1] = -0.0
    r = check_h5.per_row_ref(z, w)
    result("reference-zero-rows", list(r["one_minus_cos"]) == [0.0, 1.0, 1.0] and list(r["cos"]) == [1.0, 0.0, 0.0]
           and int(r["zero"].sum()) == 3, f"{r}")


def test_natural_order():
    names = ["model.layers.10.x", "model.layers.2.x", "lm_head.weight", "model.layers.1.x",
             "model.layers.2.a", "model.embed", "model.layers.100.x", "m.1a.2.w", "m..3.w",
             "a%2Fb", "a/b", "", "x9", "x10", "x.9", "x-9", "xa"]
    exp = ["", "a%2Fb", "a/b", "lm_head.weight", "m..3.w", "m.1a.2.w", "model.embed",
           "model.layers.1.x", "model.layers.2.a", "model.layers.2.x", "model.layers.10.x",
           "model.layers.100.x", "x-9", "x.9", "x9", "x10", "xa"]
    got = sorted(names, key=stio.natural_key)
    lay = [stio.layer_of(x) for x in ["a.1.b.2", "conv1.weight", "h.007.x", "x", "a.1b.3"]]
    result("natural-order", got == exp and lay == [1, -1, 7, -1, 3], f"{got} {lay}")


def test_checker(tmp):
    d = os.path.join(tmp, "runs")
    gen_runs.gen(d, 5)
    runs = [os.path.join(d, r) for r in ("ft-bf16", "ft-f32-tiny", "ft-f16", "ft-zero-rows")]
    out = os.path.join(tmp, "fake.h5")
    tsv = os.path.join(tmp, "fake.tsv")
    py = sys.executable
    for mut, want in (("", 0), ("f32acc", 1), ("order", 1), ("bigendian", 1), ("fixedstr", 1),
                      ("zero", 1), ("step", 1), ("tsvfmt", 1), ("nan", 1)):
        subprocess.run([py, os.path.join(HERE, "fake_analyze.py"), "--base", os.path.join(d, "base"),
                        "-o", out, "--tsv", tsv, "--per-row", "--mutate", mut] + runs, check=True)
        p = subprocess.run([py, os.path.join(HERE, "check_h5.py"), "--base", os.path.join(d, "base"),
                            "--out", out, "--tsv", tsv, "--per-row", "--rtol", "ft-f32-tiny=1e-3"] + runs,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        result(f"checker-{mut or 'right-answer'}", (p.returncode != 0) == bool(want),
               f"exit {p.returncode}, wanted {'failure' if want else 'success'}: {p.stdout[-600:]}")


def main():
    realdata = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "..", "shared", "realdata")
    tmp = tempfile.mkdtemp(prefix="dora-selftest-")
    try:
        test_bf16()
        test_roundtrip(tmp)
        test_natural_order()
        test_reference()
        test_hostile_reader(tmp)
        test_realdata(realdata)
        test_checker(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"selftest: {len(FAILS)} failure(s)")
    return 1 if FAILS else 0


if __name__ == "__main__":
    sys.exit(main())
