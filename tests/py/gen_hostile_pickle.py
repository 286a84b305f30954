#!/usr/bin/python3
"""Write .pt files whose pickles attack the interpreter's bounds (memory, time, depth, NULs).

    gen_hostile_pickle.py OUTDIR

Each file is a real torch.save-layout zip archive (ARCHIVE/data.pkl, ARCHIVE/data/0,
ARCHIVE/byteorder = "little", ARCHIVE/version); the storage records are stored, the pickle is
deflated where that makes a small file of a large pickle (as a hostile file would).
OUTDIR/valid/base.pt and OUTDIR/valid/run.pt are a valid pair of one 4x4 F32 tensor "w".
OUTDIR/manifest.json lists the cases:
  {"name", "path" (relative), "what",
   "expect": "ok" (exit 0: a valid file that is expensive to read) | "fail" (exit 1),
   "stderr_all": [strings the message must hold besides the file's name],
   "bound": "rss" (peak RSS under the suite's limit) | "time" (well inside a time limit) | "",
   "analyze": true when `analyze --base base.pt -o OUT run.pt F` applies (F's tensor "w" is
              the base's shape), false for inspect only}
"""

import json
import os
import struct
import sys
import zipfile

CASES = []


# ---------------------------------------------------------------- pickle pieces
def S(s):
    """BINUNICODE"""
    e = s.encode() if isinstance(s, str) else s
    return b"X" + struct.pack("<I", len(e)) + e


def I(n):
    """the shortest integer opcode torch.save would use"""
    if 0 <= n < 256:
        return b"K" + bytes([n])
    if 0 <= n < 65536:
        return b"M" + struct.pack("<H", n)
    return b"J" + struct.pack("<i", n)


def tup(*items):
    return b"(" + b"".join(items) + b"t"


def G(mod, name):
    return b"c" + mod + b"\n" + name + b"\n"


REBUILD = G(b"torch._utils", b"_rebuild_tensor_v2")
ODICT = G(b"collections", b"OrderedDict") + b")R"


def tensor(key="0", numel=16, shape=(4, 4), stride=(4, 1), rebuild=REBUILD,
           tag=b"storage"):
    """_rebuild_tensor_v2(persistent storage, 0, shape, stride, False, OrderedDict())"""
    pid = tup(S(tag), G(b"torch", b"FloatStorage"), S(key), S("cpu"), I(numel)) + b"Q"
    return rebuild + tup(pid, I(0), tup(*map(I, shape)), tup(*map(I, stride)), b"\x89",
                         ODICT) + b"R"


def batched(items, op, per=1000):
    """MARK item... op, in batches of PER, as the pickler does"""
    out = bytearray()
    for i in range(0, len(items), per):
        out += b"(" + b"".join(items[i:i + per]) + op
    return bytes(out)


def state_dict(pairs):
    """{key: value, ...} from (key bytes, value bytes) pairs, SETITEMS in batches"""
    return b"}" + batched([k + v for k, v in pairs], b"u")


F32 = struct.pack("<16f", *[0.25 * i - 1.0 for i in range(16)])
F32_RUN = struct.pack("<16f", *[0.25 * i - 0.5 + (i % 3) * 0.125 for i in range(16)])


def write_pt(path, pkl, records=None, deflate=False):
    records = {"0": F32} if records is None else records
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        info = zipfile.ZipInfo("archive/data.pkl", (2020, 1, 1, 0, 0, 0))
        z.writestr(info, pkl, zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED)
        for k, b in records.items():
            z.writestr(f"archive/data/{k}", b)
        z.writestr("archive/byteorder", b"little")
        z.writestr("archive/version", b"3\n")


def case(out, name, what, pkl, expect, stderr_all=(), bound="", analyze=True, deflate=False):
    path = f"files/{name}.pt"
    write_pt(os.path.join(out, path), pkl, deflate=deflate)
    CASES.append({"name": name, "path": path, "what": what, "expect": expect,
                  "stderr_all": list(stderr_all), "bound": bound, "analyze": analyze})


P2 = b"\x80\x02"
W = (S("w"), tensor())  # the one tensor of the valid pair


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    write_pt(os.path.join(out, "valid/base.pt"), P2 + state_dict([W]) + b".")
    write_pt(os.path.join(out, "valid/run.pt"), P2 + state_dict([W]) + b".", {"0": F32_RUN})

    # ------------------------------------------------ memory amplification
    case(out, "none_pop", "5,000,000 NONE/POP pairs before a valid state dict (10 KB file)",
         P2 + b"N0" * 5_000_000 + state_dict([W]) + b".", "ok", bound="rss", deflate=True)
    case(out, "list_pop", "3,000,000 EMPTY_LIST/POP pairs (new objects, dropped at once)",
         P2 + b"]0" * 3_000_000 + state_dict([W]) + b".", "ok", bound="rss", deflate=True)
    # T memoised at 0, L1 = [T] * 1000 at 1, L2 = [L1] * 1000: 10^6 paths to one tensor
    dag = (tensor() + b"q\x00" + b"0" + b"]" + batched([b"h\x00"] * 1000, b"e") + b"q\x01" +
           b"0" + b"]" + batched([b"h\x01"] * 1000, b"e"))
    case(out, "memo_dag", "a list of 1000 references to a list of 1000 references to one "
         "tensor: 10^6 names for 1 tensor", P2 + state_dict([(S("w"), dag)]) + b".", "fail",
         ["distinct"], bound="rss", deflate=True)
    fan = tensor() + b"q\x00" + b"0" + b"]" + batched([b"h\x00"] * 1_000_000, b"e")
    case(out, "memo_fanout", "a list of 10^6 references to one tensor",
         P2 + state_dict([(S("w"), fan)]) + b".", "fail", ["distinct"], bound="rss",
         deflate=True)
    # 1000 nested dicts, every key the same memoised 4000-byte string: a 4 MB name
    key = S("k" * 4000) + b"q\x00"
    chain = b"}" + key + (b"}" + b"h\x00") * 999 + tensor() + b"s" * 1000
    case(out, "long_name", "1000 nested dicts keyed by one memoised 4000-byte string",
         P2 + chain + b".", "fail", ["longer than 4096"], bound="rss", analyze=False,
         deflate=True)

    # ------------------------------------------------ quadratic paths
    n = 100_000
    case(out, "dict_1e5_setitems", "a dict of 10^5 keys in SETITEMS batches of 1000",
         P2 + state_dict([(S(f"k{i}"), I(i % 256)) for i in range(n)] + [W]) + b".", "ok",
         bound="time")
    case(out, "dict_1e5_setitem", "a dict of 10^5 keys, one SETITEM each",
         P2 + b"}" + b"".join(S(f"k{i}") + b"N" + b"s" for i in range(n)) + W[0] + W[1] +
         b"s.", "ok", bound="time")
    # 10^5 tensors, one storage: the persistent id memoised, each tensor its own REDUCE
    pid = tup(S("storage"), G(b"torch", b"FloatStorage"), S("0"), S("cpu"), I(16)) + b"Q"
    args = tup(b"h\x01", I(0), tup(I(4), I(4)), tup(I(4), I(1)), b"\x89", ODICT) + b"q\x02"
    first = REBUILD + b"q\x00" + pid + b"q\x01" + b"0" + args + b"R"
    again = b"h\x00h\x02R"
    case(out, "dict_1e5_tensors", "a dict of 10^5 tensors sharing one storage",
         P2 + b"}" + batched([S(f"k{i}") + (first if i == 0 else again) for i in range(n)],
                            b"u") + b".", "ok", bound="time", analyze=False)

    # ------------------------------------------------ names and depth
    case(out, "global_nul", "GLOBAL module 'torch._utils\\0junk'",
         P2 + state_dict([(S("w"), tensor(rebuild=G(b"torch._utils\0junk",
                                                     b"_rebuild_tensor_v2")))]) + b".",
         "fail", ["NUL"])
    case(out, "global_name_nul", "GLOBAL name '_rebuild_tensor_v2\\0x'",
         P2 + state_dict([(S("w"), tensor(rebuild=G(b"torch._utils",
                                                     b"_rebuild_tensor_v2\0x")))]) + b".",
         "fail", ["NUL"])
    sg = S("torch._utils\0") + S("_rebuild_tensor_v2") + b"\x93"
    case(out, "stack_global_nul", "STACK_GLOBAL of 'torch._utils\\0'",
         b"\x80\x04" + state_dict([(S("w"), tensor(rebuild=sg))]) + b".", "fail", ["NUL"])
    case(out, "persid_tag_nul", "persistent id tagged 'storage\\0x'",
         P2 + state_dict([(S("w"), tensor(tag=b"storage\0x"))]) + b".", "fail",
         ["persistent id"])
    # _rebuild_from_type_v2(_rebuild_from_type_v2, Tensor, (... (rebuild, Tensor, args))),
    # 100,000 deep, made of TUPLE3 (no MARK, so the MARK limit does not stop it)
    depth = 100_000
    ft = G(b"torch._tensor", b"_rebuild_from_type_v2") + b"q\x01" + b"0"
    ty = G(b"torch", b"Tensor") + b"q\x02" + b"0"
    inner_args = tup(tup(S("storage"), G(b"torch", b"FloatStorage"), S("0"), S("cpu"),
                         I(16)) + b"Q", I(0), tup(I(4), I(4)), tup(I(4), I(1)), b"\x89", ODICT)
    chain = (ft + ty + b"h\x01" + b"h\x01h\x02" * depth + REBUILD + b"h\x02" + inner_args +
             b"\x87" + b"\x87" * depth + b"R")
    case(out, "from_type_chain", "a 100,000-deep chain of _rebuild_from_type_v2",
         P2 + state_dict([(S("w"), chain)]) + b".", "fail", ["deeper"], deflate=True)
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(CASES, f, indent=1)


if __name__ == "__main__":
    main()
