#!/usr/bin/python3
"""Write a corpus of malformed inputs for `dora-analyze`, one rule per case.

    gen_hostile.py OUTDIR

OUTDIR/manifest.json is a list of cases:
  {"name": ..., "path": relative path, "what": the rule broken,
   "role": "file" | "run" | "base",
   "stderr_any": [strings, one of which stderr must contain (the file)],
   "stderr_all": [strings stderr must all contain (the tensor, where there is one)]}
Roles, as tests/sh/hostile.sh uses them:
  file  a malformed .safetensors: tried with `inspect F`, as --base F (valid run),
        and as a run F (valid base, after a valid run)
  run   a run (folder or file) that must make `analyze` fail: valid base, valid run first
  base  a base that must make `analyze` fail, with the valid run
OUTDIR/valid/base.safetensors and OUTDIR/valid/run.safetensors are the valid partners.
Every case must exit with status 1 and name the file.
"""

import json
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stio  # noqa: E402

CASES = []


def case(name, what, role="file", path=None, stderr_all=(), stderr_any=None):
    path = path or f"files/{name}.safetensors"
    if stderr_any is None:
        stderr_any = [os.path.basename(path.rstrip("/"))]
    CASES.append({"name": name, "path": path, "what": what, "role": role,
                  "stderr_any": list(stderr_any), "stderr_all": list(stderr_all)})
    return path


def ent(dtype, shape, b, e):
    return {"dtype": dtype, "shape": shape, "data_offsets": [b, e]}


def raw(out, name, what, header, data=b"", header_len=None):
    p = case(name, what)
    stio.write_raw(os.path.join(out, p), header, data, header_len)


def blob(out, name, what, content):
    p = case(name, what)
    with open(os.path.join(out, p), "wb") as f:
        f.write(content)


def file_cases(out):
    z16 = bytes(16)
    good = {"w.a": ent("F32", [2, 2], 0, 16)}

    # header length
    p = case("hdr_over_limit", "header length 100,000,001 > 100,000,000 (sparse file that long)")
    with open(os.path.join(out, p), "wb") as f:
        f.write(struct.pack("<Q", 100_000_001) + b'{"w.a":')
        f.truncate(8 + 100_000_001)
    raw(out, "hdr_len_u64max", "header length 2^64-1 (8 + N wraps)", b"{}", header_len=2 ** 64 - 1)
    raw(out, "hdr_past_eof", "header length 1000, file has 48 bytes",
        json.dumps(good).encode()[:40], header_len=1000)
    full = json.dumps(good).encode()
    raw(out, "hdr_truncated_json", "header JSON cut short (N counts the cut text)", full[:len(full) // 2], z16)
    raw(out, "hdr_len_zero", "header length 0 (empty JSON text)", b"", z16)
    blob(out, "empty_file", "empty file", b"")
    blob(out, "seven_bytes", "7-byte file (shorter than the length prefix)", b"\x02\x00\x00\x00\x00\x00\x00")

    # JSON and UTF-8
    raw(out, "invalid_json", "invalid JSON (double comma)",
        b'{"w.a": {"dtype": "F32",, "shape": [2, 2], "data_offsets": [0, 16]}}', z16)
    raw(out, "json_trailing_garbage", "JSON followed by non-space bytes",
        json.dumps(good).encode() + b" xyz", z16)
    raw(out, "nul_padding", "header padded with NUL bytes instead of spaces",
        json.dumps(good).encode() + b"\x00" * 6, z16)
    raw(out, "bad_utf8_name", "invalid UTF-8 bytes in a tensor name",
        b'{"w.\xff\xfe": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}', z16)
    raw(out, "name_lone_surrogate", "tensor name with an escaped lone surrogate (\\udc80), not Unicode",
        b'{"w.\\udc80": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}', z16)
    raw(out, "json_not_object", "header JSON is an array", b'[{"dtype": "F32"}]', z16)
    raw(out, "json_offsets_nan", "non-standard JSON literal NaN in offsets",
        b'{"w.a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [NaN, 16]}}', z16)
    raw(out, "deep_nesting_open", "100000 '[' (unterminated), recursion bomb", b"[" * 100000, z16)
    raw(out, "deep_nesting_balanced", "tensor entry nested 100000 arrays deep (valid JSON, not an object)",
        b'{"w.a":' + b"[" * 100000 + b"]" * 100000 + b"}", z16)
    raw(out, "deep_nesting_objects", "50000 nested objects as a tensor entry",
        b'{"w.a":' + b'{"a":' * 50000 + b"1" + b"}" * 50000 + b"}", z16)

    # entries
    raw(out, "entry_not_object", "tensor entry is an array", {"w.a": [0, 16]}, z16)
    raw(out, "missing_dtype", "entry without dtype", {"w.a": {"shape": [2, 2], "data_offsets": [0, 16]}}, z16)
    raw(out, "missing_shape", "entry without shape", {"w.a": {"dtype": "F32", "data_offsets": [0, 16]}}, z16)
    raw(out, "missing_offsets", "entry without data_offsets", {"w.a": {"dtype": "F32", "shape": [2, 2]}}, z16)
    raw(out, "unknown_dtype", "dtype F12", {"w.a": ent("F12", [2, 2], 0, 16)}, z16)
    raw(out, "dtype_not_string", "dtype is a number", {"w.a": ent(7, [2, 2], 0, 16)}, z16)
    raw(out, "negative_dim", "shape [-2, -2]", {"w.a": ent("F32", [-2, -2], 0, 16)}, z16)
    raw(out, "dim_float", "shape [2.0, 2]", b'{"w.a": {"dtype": "F32", "shape": [2.0, 2], "data_offsets": [0, 16]}}', z16)
    raw(out, "dim_over_u64", "dimension 2^64 (does not fit 64 bits)",
        b'{"w.a": {"dtype": "F32", "shape": [18446744073709551616, 1], "data_offsets": [0, 0]}}')
    raw(out, "shape_product_overflow", "shape [2^32, 2^32, 2]: element count wraps to 0 mod 2^64; offsets [0, 0]",
        {"w.a": ent("F32", [2 ** 32, 2 ** 32, 2], 0, 0)})
    raw(out, "bytes_overflow", "shape [2^62, 1] F32: count fits, bytes wrap to 0 mod 2^64; offsets [0, 0]",
        {"w.a": ent("F32", [2 ** 62, 1], 0, 0)})
    raw(out, "shape_not_list", "shape is a number", {"w.a": ent("F32", 4, 0, 16)}, z16)
    raw(out, "huge_rank", "rank 1000 (1000 dims of 1)", {"w.a": ent("F32", [1] * 1000, 0, 4)}, bytes(4))
    raw(out, "claims_4gib", "shape [2^30] F32 = 4 GiB claimed, 16 bytes present",
        {"w.a": ent("F32", [2 ** 30, 1], 0, 2 ** 32)}, z16)

    # offsets
    raw(out, "offsets_end_lt_begin", "data_offsets [16, 0]", {"w.a": ent("F32", [2, 2], 16, 0)}, z16)
    raw(out, "offsets_size_mismatch", "END - BEGIN = 12 for a [2,2] F32 (16)", {"w.a": ent("F32", [2, 2], 0, 12)}, bytes(12))
    raw(out, "offsets_float", "data_offsets as floats",
        b'{"w.a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0.0, 16.0]}}', z16)
    raw(out, "offsets_string", "data_offsets as strings",
        b'{"w.a": {"dtype": "F32", "shape": [2, 2], "data_offsets": ["0", "16"]}}', z16)
    raw(out, "offsets_len3", "data_offsets with 3 numbers", {"w.a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16, 16]}}, z16)
    raw(out, "offsets_negative", "data_offsets [-16, 0]", {"w.a": ent("F32", [2, 2], -16, 0)}, z16)
    raw(out, "gap_between", "gap: [0,16] then [32,48]",
        {"w.a": ent("F32", [2, 2], 0, 16), "w.b": ent("F32", [2, 2], 32, 48)}, bytes(48))
    raw(out, "overlap", "overlap: [0,16] and [8,24]",
        {"w.a": ent("F32", [2, 2], 0, 16), "w.b": ent("F32", [2, 2], 8, 24)}, bytes(24))
    raw(out, "first_not_at_zero", "only tensor begins at 16", {"w.a": ent("F32", [2, 2], 16, 32)}, bytes(32))
    raw(out, "missing_bytes", "buffer 10 bytes, last END 16", good, bytes(10))
    raw(out, "trailing_bytes", "buffer 20 bytes, last END 16", good, bytes(20))
    raw(out, "duplicate_names", "the same tensor name twice",
        b'{"w.a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}, '
        b'"w.a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [16, 32]}}', bytes(32))
    raw(out, "metadata_nonstring", "__metadata__ value is a number",
        {"__metadata__": {"format": 1}, "w.a": ent("F32", [2, 2], 0, 16)}, z16)
    raw(out, "metadata_not_object", "__metadata__ is a string",
        {"__metadata__": "pt", "w.a": ent("F32", [2, 2], 0, 16)}, z16)


def valid_pair(rng):
    base = {"w.a": rng.normal(0, 1, (4, 4)).astype(np.float32),
            "w.b": rng.normal(0, 1, (3, 5)).astype(np.float32),
            "norm": np.ones(4, dtype=np.float32)}
    run = {k: (v * 1.01 + 0.01).astype(v.dtype) for k, v in base.items()}
    return base, run


def run_cases(out, base, run):
    def ck(d, step, tensors, nshards=1):
        return stio.write_checkpoint(os.path.join(out, d), step, tensors, nshards=nshards, extras=False)

    # sharded checkpoints with a broken index
    d = case("idx_missing_shard", "index names a shard that is not there", "run", "runs/idx_missing_shard",
             stderr_any=["model-00002-of-00002.safetensors"])
    c = ck(d, 1, run, nshards=2)
    os.remove(os.path.join(c, "model-00002-of-00002.safetensors"))

    d = case("idx_tensor_missing", "weight_map names a tensor its shard lacks", "run", "runs/idx_tensor_missing",
             stderr_all=["w.b"], stderr_any=["model-00001-of-00002.safetensors", "model.safetensors.index.json"])
    c = ck(d, 1, run, nshards=2)
    ip = os.path.join(c, "model.safetensors.index.json")
    idx = json.load(open(ip))
    idx["weight_map"]["w.b"] = "model-00001-of-00002.safetensors"
    json.dump(idx, open(ip, "w"))

    d = case("idx_bad_json", "index JSON is broken", "run", "runs/idx_bad_json",
             stderr_any=["model.safetensors.index.json"])
    c = ck(d, 1, run, nshards=2)
    with open(os.path.join(c, "model.safetensors.index.json"), "w") as f:
        f.write('{"metadata": {"total_size": 10}, "weight_map": {"w.a": "model-00001-of-00002.safetensors",')

    d = case("idx_weight_map_not_object", "index weight_map is a list", "run", "runs/idx_weight_map_not_object",
             stderr_any=["model.safetensors.index.json"])
    c = ck(d, 1, run, nshards=2)
    with open(os.path.join(c, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 10}, "weight_map": ["model-00001-of-00002.safetensors"]}, f)

    d = case("idx_no_weight_map", "index without weight_map", "run", "runs/idx_no_weight_map",
             stderr_any=["model.safetensors.index.json"])
    c = ck(d, 1, run, nshards=2)
    with open(os.path.join(c, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 10}}, f)

    d = case("idx_shard_malformed", "a shard named by the index has a gap between tensors", "run",
             "runs/idx_shard_malformed", stderr_any=["model-00002-of-00002.safetensors"])
    c = ck(d, 1, run, nshards=2)
    stio.write_raw(os.path.join(c, "model-00002-of-00002.safetensors"),
                   {"w.b": ent("F32", [3, 5], 4, 64)}, bytes(64))

    d = case("idx_path_traversal", "weight_map value ../../../../../../../../etc/passwd", "run",
             "runs/idx_path_traversal", stderr_any=["passwd", "model.safetensors.index.json"])
    c = ck(d, 1, run, nshards=2)
    ip = os.path.join(c, "model.safetensors.index.json")
    idx = json.load(open(ip))
    idx["weight_map"]["w.b"] = "../../../../../../../../etc/passwd"
    json.dump(idx, open(ip, "w"))

    # shape mismatch
    d = case("shape_mismatch", "checkpoint-2 has w.b [5,3] against base [3,5] (same count)", "run",
             "runs/shape_mismatch", stderr_all=["w.b"], stderr_any=["checkpoint-2"])
    ck(d, 1, run)
    bad = dict(run)
    bad["w.b"] = run["w.b"].reshape(5, 3)
    ck(d, 2, bad)

    d = case("shape_mismatch_rank", "w.a [4,2,2] against base [4,4] (same rows and cols)", "run",
             "runs/shape_mismatch_rank", stderr_all=["w.a"], stderr_any=["checkpoint-1"])
    bad = dict(run)
    bad["w.a"] = run["w.a"].reshape(4, 2, 2)
    ck(d, 1, bad)

    # NaN / Inf
    d = case("nan_f32", "NaN in w.a of checkpoint-2 (F32)", "run", "runs/nan_f32",
             stderr_all=["w.a"], stderr_any=["checkpoint-2"])
    ck(d, 1, run)
    bad = dict(run)
    bad["w.a"] = run["w.a"].copy()
    bad["w.a"][2, 3] = np.nan
    ck(d, 2, bad)

    p = case("inf_bf16", "+Inf in w.b (BF16) of a single-file run", "run", "runs/inf_bf16.safetensors",
             stderr_all=["w.b"])
    wb = stio.f32_to_bf16_bits(run["w.b"])
    wb[1, 1] = 0x7F80
    stio.write_safetensors(os.path.join(out, p), {"w.a": stio.Tensor("BF16", run["w.a"]),
                                                 "w.b": stio.Tensor("BF16", wb),
                                                 "norm": stio.Tensor("BF16", run["norm"])})

    p = case("nan_f16", "NaN in w.a (F16) of a single-file run", "run", "runs/nan_f16.safetensors",
             stderr_all=["w.a"])
    wa = run["w.a"].astype(np.float16)
    wa[0, 0] = np.nan
    stio.write_safetensors(os.path.join(out, p), {"w.a": wa, "w.b": run["w.b"].astype(np.float16),
                                                 "norm": run["norm"]})

    p = case("ninf_f64", "-Inf in w.b (F64) of a single-file run", "run", "runs/ninf_f64.safetensors",
             stderr_all=["w.b"])
    wb = run["w.b"].astype(np.float64)
    wb[2, 4] = -np.inf
    stio.write_safetensors(os.path.join(out, p), {"w.a": run["w.a"], "w.b": wb, "norm": run["norm"]})

    # NaN bit patterns a converter might turn into numbers: signalling NaNs,
    # and in the last element of a [3,5] tensor (the tail of a vector loop)
    for nm, dt, bits in (("snan_f16_tail", "F16", 0x7C01), ("snan_bf16_tail", "BF16", 0x7F81),
                         ("snan_f32_tail", "F32", 0x7F800001), ("nnan_bf16_tail", "BF16", 0xFFC1)):
        p = case(nm, f"{dt} NaN bits {bits:#x} in the last element of w.b", "run",
                 f"runs/{nm}.safetensors", stderr_all=["w.b"])
        if dt == "F16":
            u = run["w.b"].astype(np.float16).view(np.uint16).copy()
            u[2, 4] = bits
            wb = stio.Tensor("F16", u.view(np.float16))
        elif dt == "BF16":
            u = stio.f32_to_bf16_bits(run["w.b"])
            u[2, 4] = bits
            wb = stio.Tensor("BF16", u)
        else:
            u = run["w.b"].view(np.uint32).copy()
            u[2, 4] = bits
            wb = stio.Tensor("F32", u.view(np.float32))
        stio.write_safetensors(os.path.join(out, p), {"w.a": run["w.a"], "w.b": wb, "norm": run["norm"]})

    d = case("nan_final_model", "NaN in the final model of a run folder", "run", "runs/nan_final_model",
             stderr_all=["w.b"], stderr_any=["nan_final_model/model.safetensors"])
    ck(d, 1, run)
    bad = dict(run)
    bad["w.b"] = run["w.b"].copy()
    bad["w.b"][0, 0] = np.nan
    stio.write_safetensors(os.path.join(out, d, "model.safetensors"), bad)

    p = case("nan_in_base", "NaN in w.b of the base", "base", "bases/nan_in_base.safetensors",
             stderr_all=["w.b"])
    bad = dict(base)
    bad["w.b"] = base["w.b"].copy()
    bad["w.b"][1, 2] = np.nan
    stio.write_safetensors(os.path.join(out, p), bad)

    # paths
    d = case("run_empty_dir", "run folder with no checkpoints and no model", "run", "runs/run_empty_dir")
    os.makedirs(os.path.join(out, d), exist_ok=True)
    case("run_missing", "run path does not exist", "run", "runs/no_such_run")
    case("base_missing", "base path does not exist", "base", "bases/no_such_base.safetensors")
    d = case("base_empty_dir", "base folder with no model", "base", "bases/empty_base_dir")
    os.makedirs(os.path.join(out, d), exist_ok=True)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: gen_hostile.py OUTDIR")
    out = sys.argv[1]
    for sub in ("files", "runs", "bases", "valid"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    rng = np.random.default_rng(7)
    base, run = valid_pair(rng)
    stio.write_safetensors(os.path.join(out, "valid", "base.safetensors"), base)
    stio.write_safetensors(os.path.join(out, "valid", "run.safetensors"), run)
    file_cases(out)
    run_cases(out, base, run)
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names)), "duplicate case names"
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(CASES, f, indent=1)


if __name__ == "__main__":
    main()
