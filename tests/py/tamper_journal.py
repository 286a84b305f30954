#!/usr/bin/python3
"""tamper_journal.py IN.journal OUT.journal MODE

A batch journal (docs/batch.md: 8-byte magic, then records of u32 type, u32 0, u64 length,
u64 FNV-1a 64 of the payload, payload) copied with the HEAD section of the first unit
record that has one changed, its length and checksum made right again, so that only the
unit result's own checks (src/results/wire.c) can refuse it. MODE:
  count  the first module's head count + 1 (no longer its rows / head_dim)
  module the first module index set past the modules
  cut    the section cut 8 bytes into its values (then END): short
  nan    the first per-head dM a NaN
  strip  the section removed (as a record of an earlier version): read, with no heads
Exit 0 when done, 1 when no unit record has a HEAD section.
"""
import struct
import sys

MAGIC_LEN = 8
TAG, END = b"HEAD", b"END."


def fnv1a64(data):
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def head_section(p):
    """Where the HEAD section of record P starts (the last section before END, packed
    last), or -1: the tag whose counts account for every byte up to END."""
    at = len(p)
    while p.endswith(END):
        at = p.rfind(TAG, 0, at)
        if at < 0 or at + 20 > len(p):
            return -1
        h = struct.unpack_from("<Q", p, at + 4)[0]
        pairs = at + 20
        if h == 0 or pairs + 16 * h > len(p) - 4:
            continue
        nh = sum(struct.unpack_from("<Q", p, pairs + 16 * i + 8)[0] for i in range(h))
        left = len(p) - 4 - (pairs + 16 * h)
        if nh and left % (16 * nh) == 0:
            return at
    return -1


def tamper(p, mode):
    at = head_section(p)
    if at < 0:
        return None
    h = struct.unpack_from("<Q", p, at + 4)[0]
    values = at + 20 + 16 * h  # after the tag, H, head_dim and H (module, heads) pairs
    q = bytearray(p)
    if mode == "count":
        struct.pack_into("<Q", q, at + 28, struct.unpack_from("<Q", p, at + 28)[0] + 1)
    elif mode == "module":
        struct.pack_into("<Q", q, at + 20, 1 << 20)
    elif mode == "nan":
        struct.pack_into("<d", q, values, float("nan"))
    elif mode == "cut":
        q = q[: values + 8] + END
    elif mode == "strip":
        q = q[:at] + END
    else:
        sys.exit(f"unknown mode {mode}")
    return bytes(q)


def main():
    src, dst, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    data = open(src, "rb").read()
    out, off, done = bytearray(data[:MAGIC_LEN]), MAGIC_LEN, False
    while off < len(data):
        typ, zero, n, _ = struct.unpack_from("<IIQQ", data, off)
        payload = data[off + 24: off + 24 + n]
        off += 24 + n
        if typ == 2 and not done:
            t = tamper(payload, mode)
            if t is not None:
                payload, done = t, True
        out += struct.pack("<IIQQ", typ, zero, len(payload), fnv1a64(payload)) + payload
    open(dst, "wb").write(out)
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
