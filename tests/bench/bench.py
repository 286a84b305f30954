#!/usr/bin/env python3
"""make bench: time `dora-analyze analyze` on a generated Llama-shaped bf16 pair.

Generates (never commits) a ~1 GiB bf16 base and one fine-tuned checkpoint of the
same shapes in a temporary folder, warms the page cache, runs the tool several
times and reports the best whole-process wall time, the input rate in GB/s and
the peak anonymous resident set (RssAnon). Then the same for a ~4 GiB pair (the
same shapes, more layers), to show RssAnon does not grow with the model; the
first generation of those files takes a few minutes.
Then a LoRA run of 100 checkpoints (r = 64) for its peak RssAnon (--no-steps skips it),
and with --llm7b a 7B-shaped sharded model (see llm7b_case; ~30 GB under --scratch).
Usage: bench.py [--bin BIN] [--keep DIR] [--repeat N] [--no-big] [--no-steps] [--llm7b]
                [--scratch DIR].
"""
import argparse
import json
import os
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

HIDDEN, INTER, LAYERS, VOCAB = 2048, 5632, 9, 32000
BIG_LAYERS = 40  # 3.95 GiB of bf16: a model 4x the size with nothing else changed
COLD_ROUNDS = 3  # evict-and-read rounds of the cold case, cat and the tool in turn
RSS_TARGET = 64  # MiB of RssAnon, plus a small per-thread buffer (issue #10)


def shapes(layers=LAYERS, hidden=HIDDEN, inter=INTER, vocab=VOCAB, full=False):
    """A Llama's tensors; FULL: with every norm and lm_head too."""
    yield "model.embed_tokens.weight", (vocab, hidden)
    for i in range(layers):
        p = f"model.layers.{i}."
        for m in ("q_proj", "k_proj", "v_proj", "o_proj"):
            yield p + f"self_attn.{m}.weight", (hidden, hidden)
        yield p + "mlp.gate_proj.weight", (inter, hidden)
        yield p + "mlp.up_proj.weight", (inter, hidden)
        yield p + "mlp.down_proj.weight", (hidden, inter)
        yield p + "input_layernorm.weight", (hidden,)
        if full:
            yield p + "post_attention_layernorm.weight", (hidden,)
    if full:
        yield "model.norm.weight", (hidden,)
        yield "lm_head.weight", (vocab, hidden)


def write_bf16(path, seed, base=None, layers=LAYERS):
    """Write all tensors as bf16 (truncated float32), one tensor in memory at a
    time; a checkpoint is derived from BASE tensor by tensor."""
    rng = np.random.default_rng(seed)
    header, offset, entries = {}, 0, list(shapes(layers))
    for name, shp in entries:
        n = int(np.prod(shp)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shp), "data_offsets": [offset, offset + n]}
        offset += n
    hjson = json.dumps(header, separators=(",", ":")).encode()
    hjson += b" " * (-len(hjson) % 8)
    # through a .part file, so an interrupted run is not taken for a finished file
    # by the next --keep run
    with open(path + ".part", "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for name, shp in entries:
            if base is None:
                w = (rng.standard_normal(shp, dtype=np.float32) * 0.02)
            else:
                w = base.tensor(name) * (1 + 0.01 * rng.standard_normal((shp[0],) + (1,) * (len(shp) - 1), dtype=np.float32))
                w += 0.002 * rng.standard_normal(shp, dtype=np.float32)
            f.write((w.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes())
    os.replace(path + ".part", path)
    return offset + 8 + len(hjson)


def write_adapter(folder, base, seed, r=16, dora=False, layers=LAYERS):
    """PEFT adapter with r=16 f32 factors on every linear weight of the base."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    tensors = []
    for name, shp in shapes(layers):
        if len(shp) != 2 or "embed" in name:
            continue
        m = "base_model.model." + name[: -len(".weight")]
        tensors.append((m + ".lora_A.weight", (rng.standard_normal((r, shp[1]), dtype=np.float32) * 0.01)))
        tensors.append((m + ".lora_B.weight", (rng.standard_normal((shp[0], r), dtype=np.float32) * 0.01)))
        if dora:
            norms = np.linalg.norm(base.tensor(name), axis=1).astype(np.float32)
            tensors.append((m + ".lora_magnitude_vector", norms * (1 + 0.01 * rng.standard_normal(shp[0], dtype=np.float32))))
    header, off = {}, 0
    for k, v in tensors:
        header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [off, off + v.nbytes]}
        off += v.nbytes
    hj = json.dumps(header).encode()
    with open(os.path.join(folder, "adapter_model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(hj)) + hj)
        for _, v in tensors:
            f.write(v.tobytes())
    with open(os.path.join(folder, "adapter_config.json"), "w") as f:
        json.dump({"peft_type": "LORA", "r": r, "lora_alpha": 2 * r, "use_dora": dora,
                   "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}, f)


def poll_peak(p):
    """The peak RssAnon (KiB) of the running process P until it exits, polling /proc
    every 2 ms (also tests/py/peak_rss.py's)."""
    peak = 0
    while p.poll() is None:
        try:
            with open(f"/proc/{p.pid}/status") as f:
                for line in f:
                    if line.startswith("RssAnon:"):
                        peak = max(peak, int(line.split()[1]))
        except OSError:
            pass
        time.sleep(0.002)
    return peak


def run_measured(cmd):
    """Run CMD; return (wall seconds, peak RssAnon in MiB), polling /proc every 2 ms."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    peak = poll_peak(p)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(f"bench: {' '.join(cmd)} exited {p.returncode}")
    return wall, peak / 1024


def summary(runs):
    """Best and median wall time of (wall, rss) RUNS, and the largest peak RssAnon."""
    walls = sorted(w for w, _ in runs)
    return walls[0], walls[len(walls) // 2], max(m for _, m in runs)


def timed(cmd, repeat):
    """Best and median wall time over REPEAT runs, and the largest peak RssAnon."""
    return summary([run_measured(cmd) for _ in range(repeat)])


def timed_together(cmds, repeat):
    """timed() of several commands run in turn, round after round, so that a machine
    whose memory speed drifts (seen here: the probe from 0.15 to 0.23 s within hours)
    moves them all alike and their ratios hold."""
    runs = [[] for _ in cmds]
    for _ in range(repeat):
        for i, c in enumerate(cmds):
            runs[i].append(run_measured(c))
    return [summary(r) for r in runs]


def warm(*paths):
    for p in paths:
        for root, _, files in os.walk(p) if os.path.isdir(p) else [("", [], [p])]:
            for name in files:
                with open(os.path.join(root, name), "rb") as f:
                    while f.read(1 << 24):
                        pass


def evict(*paths):
    """Drop these files (and no others) from the page cache: written back first, then
    POSIX_FADV_DONTNEED. Needs no root, and leaves the cache of the machine's other
    work alone (drop_caches would empty it for everyone, spoiling their cold runs)."""
    for p in paths:
        for root, _, files in os.walk(p) if os.path.isdir(p) else [("", [], [p])]:
            for name in files:
                fd = os.open(os.path.join(root, name), os.O_RDONLY)
                try:
                    os.fsync(fd)
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)


class Reader:
    def __init__(self, path):
        with open(path, "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            self.header = json.loads(f.read(n))
        self.data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)

    def tensor(self, name):
        e = self.header[name]
        b, end = e["data_offsets"]
        u16 = self.data[b:end].view(np.uint16).astype(np.uint32) << 16
        return u16.view(np.float32).reshape(e["shape"])


def big_case(a, work, out):
    """Generate (once, with --keep) the ~4 GiB pair and a LoRA r=16 adapter on it,
    and time them; return two table rows, or None when the disk has no room."""
    base, ck = os.path.join(work, "base-4g.safetensors"), os.path.join(work, "ft-4g.safetensors")
    lora = os.path.join(work, "lora-4g")
    size = 8 + 2 * sum(int(np.prod(s)) for _, s in shapes(BIG_LAYERS))  # header aside
    need = size * ((not os.path.exists(base)) + (not os.path.exists(ck))) + (1 << 30)
    if need > (1 << 30) and shutil.disk_usage(work).free < need:
        print(f"bench: skipping the 4 GiB case: it needs {need / 1e9:.1f} GB free in {work}", file=sys.stderr)
        return None
    if not (os.path.exists(base) and os.path.exists(ck)):
        print(f"bench: generating 2 x {size / 2**30:.2f} GiB bf16 for the 4 GiB case in {work} "
              "(a few minutes; kept with --keep, skipped with --no-big)", file=sys.stderr)
        t = time.perf_counter()
        if not os.path.exists(base):
            write_bf16(base, 11, layers=BIG_LAYERS)
        if not os.path.exists(ck):
            write_bf16(ck, 12, Reader(base), layers=BIG_LAYERS)
        print(f"generated 2 x {os.path.getsize(base) / 2**30:.2f} GiB bf16 in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    if not os.path.exists(os.path.join(lora, "adapter_config.json")):  # written last
        write_adapter(lora, Reader(base), 13, layers=BIG_LAYERS)
    warm(base, ck, lora)
    total, base_bytes = os.path.getsize(base) + os.path.getsize(ck), os.path.getsize(base)
    tool = lambda *args: [a.bin, "analyze", "-q", "--base", base, "-o", out] + list(args)
    # 8 GiB of input per run: fewer repeats
    repeat = max(1, min(3, a.repeat // 2))
    return [("FT pair 4 GiB, -j 2", total, *timed(tool("-j", "2", "ft=" + ck), repeat)),
            ("LoRA r=16 4 GiB", base_bytes, *timed(tool("lora=" + lora), repeat))]



# ---- issue #19: many steps on the LoRA path, and a 7B-shaped model ----------------------

STEPS_CASE = dict(dim=2048, modules=4, steps=100, r=64, distinct=10)


def steps_case(a, work, out):
    """A LoRA run of 100 checkpoints, r = 64, on 4 modules of 2048 x 2048 (bench_steps.py):
    the float64 factors of all its steps would be 420 MiB; --mem (56 MiB by default) takes
    them in groups. One table row."""
    import bench_steps
    d = os.path.join(work, "steps")
    base, run = bench_steps.generate(d, **STEPS_CASE)
    warm(base, run)
    cmd = [a.bin, "analyze", "-q", "-j", "2", "--base", base, "-o", out, "lora=" + run]
    return ("LoRA r=64, 100 steps", os.path.getsize(base), *timed(cmd, max(1, min(3, a.repeat))))


LLM7B = dict(hidden=4096, inter=11008, layers=32, vocab=32000)


def llm_shapes(scale):
    """LLaMA-7B's tensors, every size divided by SCALE (--llm7b-scale, for trying the case)."""
    h, i = LLM7B["hidden"] // scale, LLM7B["inter"] // scale
    v, n = LLM7B["vocab"] // scale, max(1, LLM7B["layers"] // scale)
    return shapes(n, h, i, v, full=True)


def write_sharded(folder, entries, seed, base=None, shard_bytes=5 << 30):
    """A sharded bf16 model (model-0000K-of-0000N.safetensors and its index), a tensor in
    memory at a time; a checkpoint is BASE (a {name: reader} map) changed row by row."""
    rng = np.random.default_rng(seed)
    shards, cur, size = [], [], 0
    for name, shp in entries:
        n = int(np.prod(shp)) * 2
        if cur and size + n > shard_bytes:
            shards.append(cur)
            cur, size = [], 0
        cur.append((name, shp))
        size += n
    shards.append(cur)
    os.makedirs(folder, exist_ok=True)
    wmap = {}
    for k, tensors in enumerate(shards):
        fn = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        header, off = {}, 0
        for name, shp in tensors:
            n = int(np.prod(shp)) * 2
            header[name] = {"dtype": "BF16", "shape": list(shp), "data_offsets": [off, off + n]}
            off += n
            wmap[name] = fn
        hj = json.dumps(header, separators=(",", ":")).encode()
        hj += b" " * (-len(hj) % 8)
        path = os.path.join(folder, fn)
        with open(path + ".part", "wb") as f:
            f.write(struct.pack("<Q", len(hj)) + hj)
            for name, shp in tensors:
                rows = shp[0]
                step = max(1, (64 << 20) // (4 * int(np.prod(shp[1:])))) if len(shp) > 1 else rows
                for r0 in range(0, rows, step):  # 64 MiB of float32 at a time
                    part = (min(step, rows - r0),) + tuple(shp[1:])
                    if base is None:
                        w = rng.standard_normal(part, dtype=np.float32) * 0.02
                    else:
                        w = base[name](r0, r0 + part[0])
                        w = w * (1 + 0.01 * rng.standard_normal((part[0],) + (1,) * (len(shp) - 1), dtype=np.float32))
                        w += 0.002 * rng.standard_normal(part, dtype=np.float32)
                    f.write((w.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16).tobytes())
        os.replace(path + ".part", path)
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": wmap}, f)


def sharded_rows(folder):
    """{name: rows(r0, r1) as float32} of a sharded model written by write_sharded."""
    idx = json.load(open(os.path.join(folder, "model.safetensors.index.json")))["weight_map"]
    readers, out = {}, {}
    for name, fn in idx.items():
        r = readers.setdefault(fn, Reader(os.path.join(folder, fn)))
        e = r.header[name]
        b = e["data_offsets"][0]
        row = 2 * int(np.prod(e["shape"][1:]))

        def rows(r0, r1, r=r, b=b, row=row, shape=e["shape"]):
            u = r.data[b + r0 * row: b + r1 * row].view(np.uint16).astype(np.uint32) << 16
            return u.view(np.float32).reshape((r1 - r0,) + tuple(shape[1:]))
        out[name] = rows
    return out


def llm7b_case(a, scale):
    """The opt-in LLM-scale case: a 7B-shaped sharded bf16 base (~13.5 GB), an FT
    checkpoint of it, and a LoRA run of 20 checkpoints (r = 16 on every linear layer of
    the decoder; 2 distinct adapters, hard-linked). Wall time of the FT pair and of the
    LoRA run against `cat` of the same bytes, cold (their files evicted from the page cache),
    and peak RssAnon. Files under --scratch (default: the bench's folder), removed after."""
    scratch = tempfile.mkdtemp(prefix="dora-bench-7b-", dir=a.scratch)
    try:
        entries = list(llm_shapes(scale))
        model_bytes = sum(2 * int(np.prod(s)) for _, s in entries)
        need = 2 * model_bytes + 20 * (1 << 20) + (1 << 30)
        free = shutil.disk_usage(scratch).free
        if free < need:
            print(f"bench: skipping --llm7b: it needs {need / 1e9:.1f} GB free in {scratch}, "
                  f"{free / 1e9:.1f} GB are", file=sys.stderr)
            return
        base, ft, lora = (os.path.join(scratch, x) for x in ("base", "ft", "lora"))
        t = time.perf_counter()
        shard = (5 << 30) // scale ** 3  # shards of 5 GiB at full size, as many when scaled
        write_sharded(base, entries, 21, shard_bytes=shard)
        write_sharded(ft, entries, 22, sharded_rows(base), shard_bytes=shard)
        import bench_steps
        lin = [(n, s) for n, s in entries if len(s) == 2 and "layers." in n]
        for k in range(1, 21):
            d = os.path.join(lora, f"checkpoint-{k}")
            os.makedirs(d)
            if k > 2:
                src = os.path.join(lora, f"checkpoint-{(k - 1) % 2 + 1}")
                for f in ("adapter_model.safetensors", "adapter_config.json"):
                    os.link(os.path.join(src, f), os.path.join(d, f))
                continue
            rng = np.random.default_rng(30 + k)
            ts = []
            for n, (o, i) in lin:
                m = "base_model.model." + n[: -len(".weight")]
                ts.append((m + ".lora_A.weight", "F32", (rng.standard_normal((16, i), dtype=np.float32) * 0.01).tobytes(), (16, i)))
                ts.append((m + ".lora_B.weight", "F32", (rng.standard_normal((o, 16), dtype=np.float32) * 0.001 * k).tobytes(), (o, 16)))
            bench_steps.write_st(os.path.join(d, "adapter_model.safetensors"), ts)
            with open(os.path.join(d, "adapter_config.json"), "w") as f:
                json.dump({"peft_type": "LORA", "r": 16, "lora_alpha": 32,
                           "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}, f)
        print(f"bench: generated the 7B-shaped case (scale 1/{scale}, 2 x {model_bytes / 1e9:.2f} GB) in "
              f"{time.perf_counter() - t:.0f} s", file=sys.stderr)
        out = os.path.join(scratch, "out.h5")
        adapters = [os.path.join(lora, f"checkpoint-{k}", "adapter_model.safetensors") for k in (1, 2)]
        shards = lambda d: sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".safetensors"))
        rows = []
        for label, files, cmd in (
                ("7B FT pair", shards(base) + shards(ft),
                 [a.bin, "analyze", "-q", "-j", "2", "--base", base, "-o", out, "ft=" + ft]),
                ("7B LoRA r=16, 20 steps", shards(base) + adapters,
                 [a.bin, "analyze", "-q", "-j", "2", "--base", base, "-o", out, "lora=" + lora])):
            nbytes = sum(os.path.getsize(f) for f in files)
            evict(*files)
            t = time.perf_counter()
            subprocess.run(["cat"] + files, stdout=subprocess.DEVNULL, check=True)
            cat = time.perf_counter() - t
            evict(*files)
            wall, rss = run_measured(cmd)
            rows.append((label, nbytes, wall, cat, rss))
        print(f"\n7B-shaped case (scale 1/{scale}; cold: its files evicted from the page cache before each)")
        print(f"{'case':24s} {'GB in':>6s} {'tool s':>7s} {'cat s':>7s} {'ratio':>6s} {'RssAnon MiB':>11s}")
        for label, nbytes, wall, cat, rss in rows:
            print(f"{label:24s} {nbytes / 1e9:6.2f} {wall:7.2f} {cat:7.2f} {wall / cat:6.2f} {rss:11.1f}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.environ.get("BIN", "bin/dora-analyze"))
    ap.add_argument("--keep", help="generate into (and keep) this folder")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--probe", default="build/bench_probe", help="the fused-pass probe binary")
    ap.add_argument("--python", default="/usr/bin/python3")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer")
    ap.add_argument("--no-big", action="store_true", help="skip the ~4 GiB case (quick runs)")
    ap.add_argument("--no-steps", action="store_true", help="skip the 100-step LoRA case")
    ap.add_argument("--llm7b", action="store_true",
                    help="also the 7B-shaped case (~30 GB of disk under --scratch; slow)")
    ap.add_argument("--llm7b-scale", type=int, default=1, help=argparse.SUPPRESS)  # tests: sizes / N
    ap.add_argument("--scratch", help="folder for the --llm7b files (default: the system's temporary one)")
    a = ap.parse_args()
    work = a.keep or tempfile.mkdtemp(prefix="dora-bench-")
    os.makedirs(work, exist_ok=True)
    base, ck = os.path.join(work, "base.safetensors"), os.path.join(work, "ft.safetensors")
    try:
        if not (os.path.exists(base) and os.path.exists(ck)):
            t = time.perf_counter()
            write_bf16(base, 1)
            write_bf16(ck, 2, Reader(base))
            print(f"generated 2 x {os.path.getsize(base) / 2**30:.2f} GiB bf16 in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        total = os.path.getsize(base) + os.path.getsize(ck)
        out = os.path.join(work, "out.h5")
        lora, dora = os.path.join(work, "lora"), os.path.join(work, "dora")
        if not os.path.exists(lora):
            write_adapter(lora, Reader(base), 3)
            write_adapter(dora, Reader(base), 4, dora=True)
        # three FT checkpoints of the same base, for the S+1 reads claim
        multi = os.path.join(work, "multi")
        if not os.path.exists(multi):
            for s in (1, 2, 3):
                os.makedirs(os.path.join(multi, f"checkpoint-{s}"))
                os.link(ck, os.path.join(multi, f"checkpoint-{s}", "model.safetensors"))
        warm(base, ck, lora, dora)
        base_bytes = os.path.getsize(base)
        tool = lambda *args: [a.bin, "analyze", "-q", "--base", base, "-o", out] + list(args)

        rows = []
        # the cases whose ratios are targets, in turn: the probe, FT at -j 2 and -j 1, three
        # checkpoints, LoRA, DoRA. -j 2 spelled out (the default is all cores): the probe's
        # thread count, and the same per-thread buffers as the 4 GiB row on any machine
        (probe, (best, med, rss), (best1, med1, rss1), (bm, mm, rm), (bl, ml, rl),
         (bd, md, rd)) = timed_together(
            [[a.probe, base, ck, "2"], tool("-j", "2", "ft=" + ck), tool("-j", "1", "ft=" + ck),
             tool("ft=" + multi), tool("lora=" + lora), tool("dora=" + dora)], a.repeat)
        ft_time, ft_rss = best, rss
        rows.append(("FT pair, -j 2", total, best, med, rss))
        rows.append(("FT pair, -j 1", total, best1, med1, rss1))
        rows.append(("FT, 3 checkpoints", base_bytes * 4, bm, mm, rm))
        rows.append(("LoRA r=16", base_bytes, bl, ml, rl))
        rows.append(("DoRA r=16", base_bytes, bd, md, rd))

        # cold cache: the tool against a plain sequential read of the same files, each
        # after those files (only) are evicted from the page cache; COLD_ROUNDS rounds in
        # turn, as one round is at the disk's mercy (seen here: cat 0.70 s in one run,
        # 2.52-3.61 s in six rounds minutes later, the tool 0.87 and 0.64-0.73 s)
        seqs, cws = [], []
        for _ in range(COLD_ROUNDS):
            evict(base, ck)
            t = time.perf_counter()
            subprocess.run(["cat", base, ck], stdout=subprocess.DEVNULL, check=True)
            seqs.append(time.perf_counter() - t)
            evict(base, ck)
            cws.append(run_measured(tool("ft=" + ck))[0])
        cold = (min(seqs), min(cws), statistics.median(seqs), statistics.median(cws))
        warm(base, ck)

        peer = None
        if not a.no_torch:
            r = subprocess.run([a.python, os.path.join(os.path.dirname(__file__), "bench_torch_peer.py"),
                                base, ck], capture_output=True, text=True)
            if r.returncode == 0:
                peer = float(r.stdout.strip().splitlines()[-1])
            else:
                print(f"bench: PyTorch peer failed: {r.stderr.strip()[-300:]}", file=sys.stderr)

        if not a.no_steps:
            rows.append(steps_case(a, work, out))
        # last: warming 8 GiB may evict the 1 GiB files from the page cache
        big = None if a.no_big else big_case(a, work, out)
        if big:
            rows += big

        print(f"\n{'case':22s} {'GB in':>6s} {'best s':>7s} {'median s':>8s} {'GB/s':>6s} {'RssAnon MiB':>11s}")
        for label, nbytes, b, m, rss in rows:
            print(f"{label:22s} {nbytes / 1e9:6.2f} {b:7.3f} {m:8.3f} {nbytes / 1e9 / b:6.2f} {rss:11.1f}")
        print(f"{'probe (fused pass)':22s} {total / 1e9:6.2f} {probe[0]:7.3f} {probe[1]:8.3f} {total / 1e9 / probe[0]:6.2f} {probe[2]:11.1f}")
        if peer is not None:
            print(f"{'PyTorch peer (compute)':22s} {total / 1e9:6.2f} {peer:7.3f} {'':8s} {total / 1e9 / peer:6.2f}")
        print()
        print(f"FT pair vs probe (whole process): {ft_time / probe[0]:.2f}x the probe's time (target <= 1.20x, issue #19)")
        if peer is not None:
            print(f"PyTorch peer compute time / tool whole-process time: {peer / ft_time:.1f}x (target >= 30x)")
        print(f"3 checkpoints vs 1: {bm / ft_time:.2f}x the time for {4 / 2:.1f}x the reads if the base is read once "
              f"(S+1 = 4 reads vs 2); reading the base per checkpoint would be 6 reads, 3.0x")
        print(f"-j 1 / -j 2: {best1 / ft_time:.2f}x")
        print(f"LoRA / FT: {bl / ft_time:.2f}x, DoRA / FT: {bd / ft_time:.2f}x (target <= 1.25x, issue #19)")
        if big:
            print(f"peak RssAnon, 1 GiB -> 4 GiB model: FT pair -j 2 {ft_rss:.1f} -> {big[0][4]:.1f} MiB "
                  f"({big[0][4] - ft_rss:+.1f}), LoRA r=16 {rl:.1f} -> {big[1][4]:.1f} MiB ({big[1][4] - rl:+.1f}) "
                  f"(target: under {RSS_TARGET} MiB plus a small per-thread buffer, alike for both sizes)")
        else:
            print("peak RssAnon vs model size: 4 GiB case " + ("skipped (--no-big)" if a.no_big else "not run (no disk room)")
                  + f"; 1 GiB: FT pair -j 2 {ft_rss:.1f} MiB, LoRA r=16 {rl:.1f} MiB (target: under {RSS_TARGET} MiB)")
        if not a.no_steps:
            print(f"LoRA r=64 over 100 checkpoints: peak RssAnon {rows[5][4]:.1f} MiB (target <= {RSS_TARGET} MiB; "
                  f"the float64 factors of every step together would be "
                  f"{STEPS_CASE['modules'] * STEPS_CASE['steps'] * STEPS_CASE['r'] * (STEPS_CASE['dim'] + 8) * 8 / 2**20:.0f} MiB)")
        print(f"cold cache, best of {COLD_ROUNDS} rounds: FT pair {cold[1]:.2f} s ({total / 1e9 / cold[1]:.2f} GB/s) "
              f"against a plain sequential read (cat) of the same files {cold[0]:.2f} s "
              f"({total / 1e9 / cold[0]:.2f} GB/s): {cold[1] / cold[0]:.2f}x (target <= 1.10x); medians "
              f"{cold[3]:.2f} s against {cold[2]:.2f} s: {cold[3] / cold[2]:.2f}x")
        if a.llm7b:
            llm7b_case(a, max(1, a.llm7b_scale))
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
