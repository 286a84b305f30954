"""bench_spectrum: `spectrum` on full fine-tuning updates against the NumPy script an
informed researcher writes for the same numbers (issue #22's case).

Generates (never commits) a bf16 base of MODULES square weights [N, N] with a pre-trained
like spectrum (a decaying head over a Marchenko-Pastur bulk) and an FT run of STEPS
checkpoints whose updates grow step by step (a low-rank head plus a dense tail), then times,
warm, the whole `spectrum --base` process for 1 and for STEPS steps, and the NumPy script:
one SVD of each W0 (for its left vectors); per step, a values-only SVD of each update, the
top-10 left vectors of each W_t and the top-K of each update by a randomised range finder
with 4 power iterations. Prints best and median wall seconds and the ratios the issue sets.
"""
import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "py"))
import stio  # noqa: E402

NUMPY_PEER = r'''
import sys, time, numpy as np
sys.path.insert(0, sys.argv[1])
import stio
base = {k: v[1] for k, v in stio.read_safetensors(sys.argv[2])[0].items()}
steps = sys.argv[3:]
t0 = time.perf_counter()
rng = np.random.default_rng(0)
def top_left(a, k, p=10, q=4):
    x = a @ rng.standard_normal((a.shape[1], k + p))
    for _ in range(q):
        x, _ = np.linalg.qr(x)
        x, _ = np.linalg.qr(a.T @ x)
        x = a @ x
    qm, _ = np.linalg.qr(x)
    u, s, vt = np.linalg.svd(qm.T @ a, full_matrices=False)
    return (qm @ u)[:, :k]
names = sorted(base)
w0 = {n: base[n].astype(np.float64) for n in names}
u0 = {n: np.linalg.svd(w0[n], full_matrices=False)[0] for n in names}
out = []
for st in steps:
    wt = {k: v[1] for k, v in stio.read_safetensors(st)[0].items()}
    for n in names:
        w = wt[n].astype(np.float64)
        dw = w - w0[n]
        s = np.linalg.svd(dw, compute_uv=False)
        e = np.cumsum(s * s) / np.sum(s * s)
        r90 = int(np.searchsorted(e, 0.9) + 1)
        ut = top_left(w, 10)
        ud = top_left(dw, 16)
        intr = int(np.sum(np.max(np.abs(u0[n].T @ ut), axis=0) < 0.5))
        out.append((r90, intr, ud.shape))
print(time.perf_counter() - t0)
'''


LLAMA7B_LAYER = [("self_attn.q_proj", 4096, 4096), ("self_attn.k_proj", 4096, 4096),
                 ("self_attn.v_proj", 4096, 4096), ("self_attn.o_proj", 4096, 4096),
                 ("mlp.gate_proj", 11008, 4096), ("mlp.up_proj", 11008, 4096),
                 ("mlp.down_proj", 4096, 11008)]


def shapes(n, modules, llm7b):
    if llm7b:
        return [(f"model.layers.0.{k}.weight", o, i) for k, o, i in LLAMA7B_LAYER]
    return [(f"model.layers.{i}.self_attn.q_proj.weight", n, n) for i in range(modules)]


def write_study(folder, n, modules, steps, llm7b=False, seed=1):
    rng = np.random.default_rng(seed)
    shp = shapes(n, modules, llm7b)
    names = [s[0] for s in shp]
    base = {}
    for name, o, i in shp:
        g = rng.standard_normal((o, i), dtype=np.float32) / np.float32(np.sqrt(i))
        u, _ = np.linalg.qr(rng.standard_normal((o, 32)))
        v, _ = np.linalg.qr(rng.standard_normal((i, 32)))
        head = (u * (3.0 / (1 + np.arange(32)) ** 0.7)) @ v.T
        base[name] = (0.02 * (g + head)).astype(np.float32)
    stio.write_safetensors(os.path.join(folder, "base.safetensors"),
                           {k: stio.Tensor("BF16", v) for k, v in base.items()})
    run = os.path.join(folder, "ft")
    os.makedirs(run)
    dirs = {k: (rng.standard_normal((o, 8)), rng.standard_normal((8, i))) for k, o, i in shp}
    for s in range(1, steps + 1):
        t = {}
        for name, o, i in shp:
            a, b = dirs[name]
            noise = rng.standard_normal((o, i), dtype=np.float32)
            upd = 2e-4 * s * (a @ b) / np.sqrt(i) + 2e-5 * s * noise
            t[name] = stio.Tensor("BF16", base[name] + upd)
        stio.write_checkpoint(run, 100 * s, t)
    return os.path.join(folder, "base.safetensors"), run


def child_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


CPU = {}  # label: CPU seconds (user + sys) of each repeat


def timed(cmd, repeat, env=None, label=None):
    ts, cs = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), child_cpu()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
        ts.append(time.perf_counter() - t0)
        cs.append(child_cpu() - c0)
    CPU[label or cmd[-1]] = cs
    return min(ts), float(np.median(ts))


def cpu_lines(steps):
    """CPU seconds (user + sys, best of the repeats) and their ratios: on a machine that
    other work loads, these compare where wall times do not."""
    best = {k: min(v) for k, v in CPU.items()}
    print("CPU seconds (user + sys), best: " +
          ", ".join(f"{k} {v:.2f}" for k, v in best.items()))
    if "1 step" in best and "steps" in best:
        print(f"CPU: {steps} steps vs 1 step: {best['steps'] / best['1 step']:.2f}x")
    if "steps" in best and "numpy" in best:
        print(f"CPU: {steps} steps vs NumPy: {best['steps'] / best['numpy']:.2f}x")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="bin/dora-analyze")
    ap.add_argument("--python", default="/usr/bin/python3")
    ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--modules", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", help="generate into (and reuse) this folder")
    ap.add_argument("--llm7b-layer", action="store_true",
                    help="one LLaMA-7B-shaped layer (q/k/v/o 4096 x 4096, gate/up/down with "
                         "11008), 4 steps, no NumPy peer unless --peer (about 1.5 GB of files)")
    ap.add_argument("--peer", action="store_true", help="with --llm7b-layer: run the NumPy peer")
    a = ap.parse_args()
    if a.llm7b_layer and a.steps == 3:
        a.steps = 4
    work = a.keep or tempfile.mkdtemp(prefix="dora-bench-spectrum.")
    os.makedirs(work, exist_ok=True)  # a --keep folder that is not there yet
    try:
        base = os.path.join(work, "base.safetensors")
        run = os.path.join(work, "ft")
        if not os.path.exists(base):
            base, run = write_study(work, a.n, a.modules, a.steps, a.llm7b_layer)
        cks = sorted((os.path.join(run, d) for d in os.listdir(run)),
                     key=lambda p: int(p.rsplit("-", 1)[1]))
        one = os.path.join(work, "ft1")
        if not os.path.exists(one):
            os.makedirs(one)
            os.symlink(cks[0], os.path.join(one, os.path.basename(cks[0])))
        out = os.path.join(work, "spec.h5")
        cmd = [a.bin, "spectrum", "--force", "-q", "--base", base, "-o", out]
        b1, m1 = timed(cmd + ["ft=" + one], a.repeat, label="1 step")
        bs, ms = timed(cmd + ["ft=" + run], a.repeat, label="steps")
        what = ("one LLaMA-7B-shaped layer (7 modules)" if a.llm7b_layer else
                f"{a.modules} modules of {a.n} x {a.n}")
        if a.llm7b_layer and not a.peer:
            print(f"spectrum, {what} bf16, FT with --base")
            print(f"{'spectrum, 1 step':28s} {b1:8.2f} {m1:9.2f}")
            print(f"{'spectrum, %d steps' % a.steps:28s} {bs:8.2f} {ms:9.2f}")
            print(f"{a.steps} steps vs 1 step: {bs / b1:.2f}x")
            cpu_lines(a.steps)
            return
        peer = os.path.join(work, "peer.py")
        with open(peer, "w") as f:
            f.write(NUMPY_PEER)
        files = [os.path.join(c, "model.safetensors") for c in cks]
        pb, pm = timed([a.python, peer, os.path.dirname(stio.__file__), base] + files, a.repeat,
                       label="numpy")
        print(f"spectrum, {what} bf16, FT with --base")
        print(f"{'case':28s} {'best s':>8s} {'median s':>9s}")
        print(f"{'spectrum, 1 step':28s} {b1:8.2f} {m1:9.2f}")
        print(f"{'spectrum, %d steps' % a.steps:28s} {bs:8.2f} {ms:9.2f}")
        print(f"{'NumPy peer, %d steps' % a.steps:28s} {pb:8.2f} {pm:9.2f}")
        print(f"{a.steps} steps vs NumPy: {bs / pb:.2f}x (target <= 1.2x)")
        print(f"{a.steps} steps vs 1 step: {bs / b1:.2f}x (target <= 2x)")
        cpu_lines(a.steps)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
