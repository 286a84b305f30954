#!/usr/bin/python3
"""Generate the offline demo study for dora-analyze: a small pre-trained model and three
fine-tuning runs of it (full fine-tuning, LoRA, DoRA) saved in the on-disk layouts real
tools write (HF Trainer checkpoint folders, safetensors, a PyTorch .bin, PEFT adapters).

    /usr/bin/python3 data/gen_study.py data/demo            # the shipped setup
    /usr/bin/python3 data/gen_study.py /tmp/x --config NAME  # another setup of the study
    /usr/bin/python3 data/gen_study.py --list-configs

Needs Debian's PyTorch (`apt-get install python3-torch`, 1.13, CPU) and nothing else; PEFT
and safetensors are not used: their file formats are written here directly.

Time on 2 cores: an estimated 15 minutes when they are free (1600 pre-training steps at 0.3 s,
the three fine-tuning runs 400 steps each, 2-3 minutes apiece); the shipped demo took 32
minutes on a 2-core machine busy with other jobs (pre-training 24.5 min, FT 3.2, LoRA 1.8,
DoRA 2.0). Memory: under 1 GB. --reuse-base skips pre-training.

Deterministic: fixed seeds, torch.use_deterministic_algorithms(True), 2 threads. Each phase
(pre-training, each method) reseeds itself, so --methods subsets give the same files. The
numbers depend on the text found on the machine (the Python 3.11 standard library sources and
/usr/share/common-licenses), so another Debian release gives a slightly different base.

Output (OUT is the first argument):
    OUT/base/                model.safetensors (bf16), config.json, pretrain_log.json
    OUT/ft/checkpoint-S/     model.safetensors (bf16), trainer_state.json; the last
                             checkpoint holds pytorch_model.bin (torch.save, bf16) instead
    OUT/lora/checkpoint-S/   adapter_config.json, adapter_model.safetensors (f32),
                             trainer_state.json
    OUT/dora/checkpoint-S/   the same with use_dora and lora_magnitude_vector
    OUT/study_config.json    every setting used, and the evaluation losses
"""

import argparse
import copy
import glob
import json
import math
import os
import random
import struct
import sys
import time

# one BLAS thread: torch's own 2 threads plus OpenBLAS's would oversubscribe 2 cores
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Settings. BASE_MODEL and PRETRAIN define the pre-trained model (shared by every config);
# CONFIGS define the fine-tuning setups tried in the study (see data/README.md).

BASE_MODEL = dict(vocab=256, d_model=128, n_layers=6, n_heads=4, d_ff=344, ctx=128,
                  rope_theta=10000.0, norm_eps=1e-5, init_std=0.02)

PRETRAIN = dict(seed=1234, steps=1600, batch=16, lr=3e-3, min_lr_frac=0.1, warmup=100,
                weight_decay=0.1, betas=(0.9, 0.95), clip=1.0, eval_batches=40)

FINETUNE_DEFAULTS = dict(
    task="multi",           # multi | licenses | reverse
    steps=400,
    batch=16,
    ckpt=(0.25, 0.5, 0.75, 1.0),  # checkpoint positions as fractions of the steps
    sched="constant",       # constant | linear | cosine (linear/cosine decay to zero)
    warmup=20,
    clip=1.0,
    betas=(0.9, 0.999),
    ft_lr=1e-4, ft_wd=0.0,
    lora_lr=1e-3, lora_wd=0.0, dora_lr=1e-3, dora_wd=0.0,
    r=8, alpha=16, targets=("q_proj", "v_proj"),
    seed=4321, eval_batches=20,
)

CONFIGS = {
    # the study's runs (data/README.md has their results); every one multi-task, 400 steps
    "const-nowd": dict(sched="constant", ckpt=(0.2, 0.5, 0.7, 1.0)),
    "linear-wd0.1": dict(sched="linear", ft_wd=0.1, lora_wd=0.1, dora_wd=0.1,
                         ckpt=(0.2, 0.5, 0.7, 1.0)),
    "linear-wd1-spread": dict(sched="linear", ft_wd=1.0, lora_wd=1.0, dora_wd=1.0,
                              ckpt=(0.25, 0.5, 0.75, 1.0)),
    # shipped: the same training run as linear-wd1-spread, checkpoints late in the run
    "linear-wd1-late": dict(sched="linear", ft_wd=1.0, lora_wd=1.0, dora_wd=1.0,
                            ckpt=(0.7, 0.8, 0.9, 1.0)),
}
DEFAULT_CONFIG = "linear-wd1-late"


def config_settings(name, overrides):
    cfg = dict(FINETUNE_DEFAULTS)
    cfg.update(CONFIGS[name])
    for k, v in overrides.items():
        if v is not None:
            cfg[k] = v
    return cfg


# ---------------------------------------------------------------------------------------------
# Data

PY_ROOT = "/usr/lib/python3.11"
LICENSE_ROOT = "/usr/share/common-licenses"


def read_pretrain_corpus():
    """Python standard-library sources, files in sorted order, every 20th file held out."""
    paths = sorted(set(os.path.realpath(p) for p in
                       glob.glob(os.path.join(PY_ROOT, "**", "*.py"), recursive=True)
                       if "site-packages" not in p and "dist-packages" not in p))
    train, val = bytearray(), bytearray()
    for i, p in enumerate(paths):
        with open(p, "rb") as f:
            data = f.read()
        (val if i % 20 == 7 else train).extend(data)
    if len(train) < 1_000_000:
        sys.exit("gen_study: expected the Python 3.11 sources under %s" % PY_ROOT)
    return (torch.frombuffer(train, dtype=torch.uint8).long(),
            torch.frombuffer(val, dtype=torch.uint8).long(), len(paths))


def read_licenses():
    paths = sorted(set(os.path.realpath(p) for p in glob.glob(os.path.join(LICENSE_ROOT, "*"))
                       if os.path.isfile(p)))
    texts = []
    for p in paths:
        with open(p, "rb") as f:
            texts.append(f.read())
    if not texts:
        sys.exit("gen_study: no license texts under %s" % LICENSE_ROOT)
    return texts


class TextTask:
    """Language modelling on one long byte string; random windows."""

    def __init__(self, data, name):
        self.data, self.name = data, name

    def batch(self, g, n, ctx):
        ix = torch.randint(0, len(self.data) - ctx - 1, (n,), generator=g)
        x = torch.stack([self.data[i:i + ctx] for i in ix.tolist()])
        y = torch.stack([self.data[i + 1:i + ctx + 1] for i in ix.tolist()])
        return x, y


class SyntheticTask:
    """Packed lines of a generated string task, e.g. 'rev abcde = edcba'. Deterministic
    in the generator g; the loss covers every byte (plain language modelling)."""

    def __init__(self, name, make_line):
        self.name, self.make_line = name, make_line

    def batch(self, g, n, ctx):
        rnd = random.Random(int(torch.randint(0, 2**31 - 1, (1,), generator=g)))
        rows = []
        for _ in range(n):
            s = bytearray()
            while len(s) < ctx + 1 + rnd.randint(0, 30):
                s.extend(self.make_line(rnd))
            off = rnd.randint(0, 20)
            rows.append(list(s[off:off + ctx + 1]) if len(s) >= off + ctx + 1
                        else list(s[:ctx + 1]))
        t = torch.tensor(rows, dtype=torch.long)
        return t[:, :-1], t[:, 1:]


LETTERS = "abcdefghijklmnopqrstuvwxyz"


def line_reverse(rnd):
    w = "".join(rnd.choice(LETTERS) for _ in range(rnd.randint(3, 9)))
    return ("rev %s = %s\n" % (w, w[::-1])).encode()


def line_sort(rnd):
    ds = [rnd.randint(0, 9) for _ in range(rnd.randint(3, 8))]
    return ("sort %s = %s\n" % ("".join(map(str, ds)), "".join(map(str, sorted(ds))))).encode()


def line_add(rnd):
    a, b = rnd.randint(0, 999), rnd.randint(0, 999)
    return ("add %d+%d = %d\n" % (a, b, a + b)).encode()


def make_tasks(kind):
    lic = torch.frombuffer(bytearray(b"\n\n".join(read_licenses())), dtype=torch.uint8).long()
    all_tasks = {
        "licenses": TextTask(lic, "licenses"),
        "reverse": SyntheticTask("reverse", line_reverse),
        "sort": SyntheticTask("sort", line_sort),
        "add": SyntheticTask("add", line_add),
    }
    if kind == "multi":
        return [all_tasks[k] for k in ("licenses", "reverse", "sort", "add")]
    return [all_tasks[kind]]


def multitask_batch(tasks, g, n, ctx):
    """n rows split evenly over the tasks (the paper fine-tunes on four tasks at once)."""
    xs, ys = [], []
    per = [n // len(tasks) + (1 if i < n % len(tasks) else 0) for i in range(len(tasks))]
    for t, k in zip(tasks, per):
        if k:
            x, y = t.batch(g, k, ctx)
            xs.append(x)
            ys.append(y)
    return torch.cat(xs), torch.cat(ys)


# ---------------------------------------------------------------------------------------------
# Model: a Llama-style decoder (RMSNorm, rotary positions, SwiGLU MLP, bias-free projections),
# with Llama's parameter names so the files look like a real checkpoint's.

class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(ctx, head_dim, theta):
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2).float() / head_dim))
    ang = torch.outer(torch.arange(ctx).float(), inv)
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos(), ang.sin()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["d_model"]
        self.n_heads, self.head_dim = c["n_heads"], d // c["n_heads"]
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)

    def forward(self, x, cos, sin, mask):
        B, T, D = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        q = q * cos[:T] + rotate_half(q) * sin[:T]
        k = k * cos[:T] + rotate_half(k) * sin[:T]
        att = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        att = att.masked_fill(mask[:T, :T], float("-inf")).softmax(-1)
        return self.o_proj((att @ v).transpose(1, 2).reshape(B, T, D))


class MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate_proj = nn.Linear(c["d_model"], c["d_ff"], bias=False)
        self.up_proj = nn.Linear(c["d_model"], c["d_ff"], bias=False)
        self.down_proj = nn.Linear(c["d_ff"], c["d_model"], bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c["d_model"], c["norm_eps"])
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c["d_model"], c["norm_eps"])
        self.mlp = MLP(c)

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Decoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab"], c["d_model"])
        self.layers = nn.ModuleList(Layer(c) for _ in range(c["n_layers"]))
        self.norm = RMSNorm(c["d_model"], c["norm_eps"])


class CausalLM(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.model = Decoder(c)
        self.lm_head = nn.Linear(c["d_model"], c["vocab"], bias=False)
        cos, sin = rope_tables(c["ctx"], c["d_model"] // c["n_heads"], c["rope_theta"])
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.register_buffer("causal", torch.triu(torch.ones(c["ctx"], c["ctx"],
                                                             dtype=torch.bool), 1),
                             persistent=False)
        for mod in self.modules():
            if isinstance(mod, (nn.Linear, nn.Embedding)):
                nn.init.normal_(mod.weight, std=c["init_std"])

    def forward(self, idx, targets=None):
        x = self.model.embed_tokens(idx)
        for layer in self.model.layers:
            x = layer(x, self.rope_cos, self.rope_sin, self.causal)
        logits = self.lm_head(self.model.norm(x))
        if targets is None:
            return logits
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


# ---------------------------------------------------------------------------------------------
# LoRA and DoRA layers (what PEFT does for nn.Linear, written out)

class LoraLinear(nn.Module):
    """W0 frozen; LoRA: W = W0 + s B A. DoRA: W = m * V / ||V||_row with V = W0 + s B A,
    the row norm detached from the graph (paper Sec. 4.3), m initialised to ||W0||_row."""

    def __init__(self, base, r, alpha, dora):
        super().__init__()
        self.weight = nn.Parameter(base.weight.detach().clone(), requires_grad=False)
        out_f, in_f = self.weight.shape
        self.scaling = alpha / r
        self.lora_A = nn.Parameter(torch.empty(r, in_f))
        self.lora_B = nn.Parameter(torch.zeros(out_f, r))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # PEFT's default init
        self.dora = dora
        if dora:
            self.magnitude = nn.Parameter(self.weight.norm(p=2, dim=1).detach().clone())

    def merged(self, detach_norm=True):
        v = self.weight + self.scaling * (self.lora_B @ self.lora_A)
        if not self.dora:
            return v
        norm = v.norm(p=2, dim=1)
        if detach_norm:
            norm = norm.detach()
        return (self.magnitude / norm).unsqueeze(1) * v

    def forward(self, x):
        return F.linear(x, self.merged())


def attach_adapters(model, targets, r, alpha, dora):
    names = []
    for li, layer in enumerate(model.model.layers):
        for t in targets:
            base = getattr(layer.self_attn, t)
            setattr(layer.self_attn, t, LoraLinear(base, r, alpha, dora))
            names.append("model.layers.%d.self_attn.%s" % (li, t))
    return names


# ---------------------------------------------------------------------------------------------
# File formats

def st_dtype(t):
    return {torch.bfloat16: "BF16", torch.float32: "F32", torch.float16: "F16"}[t.dtype]


def tensor_bytes(t):
    t = t.detach().contiguous().cpu()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().astype("<i2").tobytes()
    if t.dtype == torch.float16:
        return t.numpy().astype("<f2").tobytes()
    return t.numpy().astype("<f4").tobytes()


def write_safetensors(path, tensors, metadata=None):
    """safetensors: u64 LE header length, JSON header (space-padded to a multiple of 8),
    then the tensors back to back in the header's order."""
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        b = tensor_bytes(tensors[name])
        header[name] = {"dtype": st_dtype(tensors[name]), "shape": list(tensors[name].shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = dict(metadata or {"format": "pt"})
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def full_state(model, dtype):
    return {k: v.detach().to(dtype).clone() for k, v in model.state_dict().items()}


def hf_config(c):
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": c["vocab"], "hidden_size": c["d_model"],
        "intermediate_size": c["d_ff"], "num_hidden_layers": c["n_layers"],
        "num_attention_heads": c["n_heads"], "num_key_value_heads": c["n_heads"],
        "max_position_embeddings": c["ctx"], "rope_theta": c["rope_theta"],
        "rms_norm_eps": c["norm_eps"], "hidden_act": "silu", "tie_word_embeddings": False,
        "attention_bias": False, "torch_dtype": "bfloat16",
        "initializer_range": c["init_std"],
        "tokenizer": "raw bytes (token id = byte value)",
    }


def trainer_state(step, max_steps, log, save_steps, batch):
    return {
        "global_step": step, "max_steps": max_steps, "epoch": None,
        "logging_steps": 10, "save_steps": save_steps, "train_batch_size": batch,
        "num_train_epochs": 1, "best_metric": None, "best_model_checkpoint": None,
        "is_local_process_zero": True, "is_world_process_zero": True,
        "log_history": [e for e in log if e["step"] <= step],
    }


# ---------------------------------------------------------------------------------------------
# Training

def setup_torch(threads):
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def lr_at(step, total, peak, warmup, sched, min_frac=0.0):
    if step < warmup:
        return peak * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    if sched == "constant":
        return peak
    if sched == "linear":
        return peak * (min_frac + (1 - min_frac) * (1 - p))
    if sched == "cosine":
        return peak * (min_frac + (1 - min_frac) * 0.5 * (1 + math.cos(math.pi * p)))
    raise ValueError(sched)


def param_groups(model, wd):
    """HF Trainer's rule: no weight decay on biases and norm weights, decay on the rest."""
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if (n.endswith("norm.weight") or n.endswith("bias")) else decay).append(p)
    return [{"params": decay, "weight_decay": wd}, {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def evaluate(model, batches):
    model.eval()
    tot = sum(float(model(x, y)) for x, y in batches) / len(batches)
    model.train()
    return tot


def unigram_baseline(train, val):
    counts = torch.bincount(train, minlength=256).double() + 1.0
    logp = (counts / counts.sum()).log()
    return float(-logp[val].mean())


def pretrain(out, c, p, threads, log=print):
    setup_torch(threads)
    torch.manual_seed(p["seed"])
    g = torch.Generator().manual_seed(p["seed"])
    train, val, nfiles = read_pretrain_corpus()
    task_tr, task_va = TextTask(train, "py"), TextTask(val, "py")
    gv = torch.Generator().manual_seed(p["seed"] + 1)
    val_batches = [task_va.batch(gv, 32, c["ctx"]) for _ in range(p["eval_batches"])]
    model = CausalLM(c)
    nparams = sum(q.numel() for q in model.parameters())
    log("pre-training: %d parameters, %d files, %.1f MB train / %.2f MB validation"
        % (nparams, nfiles, len(train) / 1e6, len(val) / 1e6))
    opt = torch.optim.AdamW(param_groups(model, p["weight_decay"]), lr=p["lr"],
                            betas=p["betas"])
    history, t0 = [], time.time()
    for step in range(p["steps"]):
        lr = lr_at(step, p["steps"], p["lr"], p["warmup"], "cosine", p["min_lr_frac"])
        for grp in opt.param_groups:
            grp["lr"] = lr
        x, y = task_tr.batch(g, p["batch"], c["ctx"])
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), p["clip"])
        opt.step()
        if step % 100 == 0 or step == p["steps"] - 1:
            history.append({"step": step + 1, "loss": float(loss), "learning_rate": lr})
            log("  step %5d  loss %.3f  lr %.2e  %.0fs" % (step + 1, float(loss), lr,
                                                           time.time() - t0))
    # the published base is the bf16 rounding of the trained weights; every fine-tuning run
    # starts from exactly these values, so dM and dD measure fine-tuning only
    with torch.no_grad():
        for q in model.parameters():
            q.copy_(q.to(torch.bfloat16).float())
    val_loss = evaluate(model, val_batches)
    uni = unigram_baseline(train, val)
    log("pre-training done in %.0fs: validation loss %.3f nats/byte (unigram baseline %.3f)"
        % (time.time() - t0, val_loss, uni))
    os.makedirs(out, exist_ok=True)
    write_safetensors(os.path.join(out, "model.safetensors"), full_state(model, torch.bfloat16))
    write_json(os.path.join(out, "config.json"), hf_config(c))
    write_json(os.path.join(out, "pretrain_log.json"), {
        "parameters": nparams, "settings": p, "corpus_files": nfiles,
        "train_bytes": len(train), "val_bytes": len(val),
        "val_loss_nats_per_byte": val_loss, "unigram_val_loss_nats_per_byte": uni,
        "seconds": time.time() - t0, "log_history": history})
    return model


def load_base(out, c):
    model = CausalLM(c)
    path = os.path.join(out, "model.safetensors")
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        buf = f.read()
    sd = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        assert info["dtype"] == "BF16"
        t = torch.frombuffer(bytearray(buf[a:b]), dtype=torch.int16).view(torch.bfloat16)
        sd[name] = t.reshape(info["shape"]).float()
    model.load_state_dict(sd)
    return model


def finetune(method, base_model, out_root, c, f, threads, base_path, log=print):
    """method: ft | lora | dora. Writes OUT_ROOT/METHOD/checkpoint-S/ for each checkpoint."""
    setup_torch(threads)
    seed = f["seed"] + {"ft": 0, "lora": 1, "dora": 2}[method]
    torch.manual_seed(seed)
    model = copy.deepcopy(base_model)
    if method == "ft":
        lr, wd = f["ft_lr"], f["ft_wd"]
    else:
        for q in model.parameters():
            q.requires_grad_(False)
        attach_adapters(model, f["targets"], f["r"], f["alpha"], method == "dora")
        lr, wd = f["%s_lr" % method], f["%s_wd" % method]
    tasks = make_tasks(f["task"])
    g = torch.Generator().manual_seed(f["seed"])  # same data order for every method
    gv = torch.Generator().manual_seed(f["seed"] + 99)
    evals = {t.name: [t.batch(gv, 16, c["ctx"]) for _ in range(f["eval_batches"])]
             for t in tasks}
    opt = torch.optim.AdamW(param_groups(model, wd), lr=lr, betas=f["betas"])
    steps = f["steps"]
    ckpts = sorted(set(max(1, int(round(fr * steps))) for fr in f["ckpt"]))
    run_dir = os.path.join(out_root, method)
    os.makedirs(run_dir, exist_ok=True)
    before = {k: evaluate(model, b) for k, b in evals.items()}
    history, t0 = [], time.time()
    log("%s: %d trainable parameters, lr %.1e, weight decay %g, %s schedule, %d steps"
        % (method, sum(q.numel() for q in model.parameters() if q.requires_grad), lr, wd,
           f["sched"], steps))
    for step in range(steps):
        cur = lr_at(step, steps, lr, f["warmup"], f["sched"])
        for grp in opt.param_groups:
            grp["lr"] = cur
        x, y = multitask_batch(tasks, g, f["batch"], c["ctx"])
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_([q for q in model.parameters() if q.requires_grad], f["clip"])
        opt.step()
        s = step + 1
        if s % 10 == 0 or s == 1:
            history.append({"step": s, "loss": round(float(loss), 4),
                            "learning_rate": cur, "epoch": None})
        if s in ckpts:
            save_checkpoint(method, model, run_dir, s, steps, history, ckpts, f, base_path)
            log("  %s step %4d  loss %.3f  %.0fs" % (method, s, float(loss), time.time() - t0))
    after = {k: evaluate(model, b) for k, b in evals.items()}
    log("  %s eval loss per task, before -> after: %s" % (method, ", ".join(
        "%s %.3f -> %.3f" % (k, before[k], after[k]) for k in before)))
    return {"eval_before": before, "eval_after": after, "seconds": time.time() - t0,
            "checkpoints": ckpts}


def save_checkpoint(method, model, run_dir, step, steps, history, ckpts, f, base_path):
    d = os.path.join(run_dir, "checkpoint-%d" % step)
    os.makedirs(d, exist_ok=True)
    # the spacing of the last checkpoints, as a Trainer with save_total_limit=4 leaves them
    save_steps = ckpts[-1] - ckpts[-2] if len(ckpts) > 1 else ckpts[0]
    write_json(os.path.join(d, "trainer_state.json"),
               trainer_state(step, steps, history, save_steps, f["batch"]))
    if method == "ft":
        sd = full_state(model, torch.bfloat16)
        if step == ckpts[-1]:
            # the last FT checkpoint as an older Trainer (save_safetensors=False) writes it
            torch.save(sd, os.path.join(d, "pytorch_model.bin"))
        else:
            write_safetensors(os.path.join(d, "model.safetensors"), sd)
        return
    tensors, targets = {}, set()
    for li, layer in enumerate(model.model.layers):
        for t in f["targets"]:
            mod = getattr(layer.self_attn, t)
            key = "base_model.model.model.layers.%d.self_attn.%s" % (li, t)
            tensors[key + ".lora_A.weight"] = mod.lora_A.detach().float().clone()
            tensors[key + ".lora_B.weight"] = mod.lora_B.detach().float().clone()
            if mod.dora:
                tensors[key + ".lora_magnitude_vector"] = mod.magnitude.detach().float().clone()
            targets.add(t)
    write_safetensors(os.path.join(d, "adapter_model.safetensors"), tensors)
    write_json(os.path.join(d, "adapter_config.json"), {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "auto_mapping": None,
        "base_model_name_or_path": base_path, "revision": None, "inference_mode": True,
        "r": f["r"], "lora_alpha": f["alpha"], "lora_dropout": 0.0,
        "target_modules": sorted(targets), "use_dora": method == "dora",
        "use_rslora": False, "fan_in_fan_out": False, "bias": "none",
        "modules_to_save": None, "init_lora_weights": True, "layers_to_transform": None,
        "layers_pattern": None, "rank_pattern": {}, "alpha_pattern": {},
    })


# ---------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", help="output folder (e.g. data/demo)")
    ap.add_argument("--config", default=DEFAULT_CONFIG, choices=sorted(CONFIGS))
    ap.add_argument("--list-configs", action="store_true")
    ap.add_argument("--methods", default="ft,lora,dora")
    ap.add_argument("--reuse-base", metavar="DIR",
                    help="take base/ from DIR/base (made by an earlier run of this script "
                         "with the same BASE_MODEL and PRETRAIN) instead of pre-training")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layers", type=int,
                    help="decoder layers of the pre-trained model (default %d); another "
                         "value pre-trains a new base" % BASE_MODEL["n_layers"])
    for k in ("steps", "batch"):
        ap.add_argument("--" + k, type=int)
    for k in ("ft_lr", "ft_wd", "lora_lr", "lora_wd", "dora_lr", "dora_wd"):
        ap.add_argument("--" + k.replace("_", "-"), dest=k, type=float)
    ap.add_argument("--sched", choices=("constant", "linear", "cosine"))
    ap.add_argument("--task", choices=("multi", "licenses", "reverse", "sort", "add"))
    ap.add_argument("--seed", type=int, help="fine-tuning seed (data order, adapter init)")
    ap.add_argument("--ckpt", type=lambda s: tuple(float(x) for x in s.split(",")),
                    help="checkpoint positions as fractions of the steps, e.g. 0.7,0.8,0.9,1")
    a = ap.parse_args()
    if a.list_configs:
        for name in sorted(CONFIGS):
            print("%-22s %s" % (name + (" (default)" if name == DEFAULT_CONFIG else ""),
                                json.dumps(CONFIGS[name])))
        return
    if not a.out:
        ap.error("the output folder is required")
    f = config_settings(a.config, {k: getattr(a, k) for k in
                                   ("steps", "batch", "ft_lr", "ft_wd", "lora_lr", "lora_wd",
                                    "dora_lr", "dora_wd", "sched", "task", "ckpt", "seed")})
    c = dict(BASE_MODEL, n_layers=a.layers) if a.layers else BASE_MODEL
    if c["n_layers"] < 1:
        ap.error("--layers must be at least 1")
    t0 = time.time()
    base_dir = os.path.join(a.out, "base")
    if a.reuse_base:
        src = os.path.join(a.reuse_base, "base")
        if os.path.realpath(src) != os.path.realpath(base_dir):
            os.makedirs(base_dir, exist_ok=True)
            for fn in ("model.safetensors", "config.json", "pretrain_log.json"):
                with open(os.path.join(src, fn), "rb") as fi, \
                        open(os.path.join(base_dir, fn), "wb") as fo:
                    fo.write(fi.read())
        base = load_base(base_dir, c)
    else:
        pretrain(base_dir, c, PRETRAIN, a.threads)
        base = load_base(base_dir, c)  # exactly the published bf16 weights
    results = {}
    for m in a.methods.split(","):
        results[m] = finetune(m, base, a.out, c, f, a.threads, "../base")
    with open(os.path.join(base_dir, "pretrain_log.json")) as fi:
        pre = json.load(fi)
    write_json(os.path.join(a.out, "study_config.json"), {
        "config": a.config, "base_model": c, "pretrain": PRETRAIN,
        "pretrain_val_loss": pre["val_loss_nats_per_byte"],
        "pretrain_unigram_loss": pre["unigram_val_loss_nats_per_byte"],
        "finetune": f, "results": results, "threads": a.threads,
        "seconds_total_this_invocation": time.time() - t0})
    print("done in %.0fs" % (time.time() - t0))


if __name__ == "__main__":
    main()
