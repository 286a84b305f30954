"""stio: a small, independent safetensors writer and reader for the tests.

Pure Python + NumPy; no code shared with the C tool, so the tests compare two
implementations written apart.  Covers:

  * dtype codecs: BF16 (as uint16 bit patterns, round-to-nearest-even from
    float32), F16, F32, F64, and the integer kinds for "skip me" tensors;
  * write_safetensors / read_safetensors (a strict reader: it applies the
    format rules of shared/REFERENCE.md section 2, so it doubles as an oracle
    for the hostile corpus);
  * write_sharded: model-0000K-of-0000N.safetensors + model.safetensors.index.json;
  * HF Trainer layouts: checkpoint-STEP/ folders with trainer_state.json;
  * load_model / resolve_run: how a model file, a model folder or a run folder
    maps to (step, tensors).

A tensor value handed to the writer is a Tensor(dtype, array) or a bare
ndarray (dtype taken from the array).  For BF16 the array may be float32/64
(rounded RNE) or uint16 (taken as raw bit patterns).
"""

import json
import os
import re
import struct

import numpy as np

MAX_HEADER = 100_000_000
MAX_RANK = 64  # not in the format; the project's own limit (hostile corpus)

# dtype name -> (numpy dtype of the raw little-endian storage, item size)
DTYPES = {
    "BOOL": (np.dtype("u1"), 1),
    "U8": (np.dtype("u1"), 1),
    "I8": (np.dtype("i1"), 1),
    "U16": (np.dtype("<u2"), 2),
    "I16": (np.dtype("<i2"), 2),
    "U32": (np.dtype("<u4"), 4),
    "I32": (np.dtype("<i4"), 4),
    "U64": (np.dtype("<u8"), 8),
    "I64": (np.dtype("<i8"), 8),
    "F16": (np.dtype("<f2"), 2),
    "BF16": (np.dtype("<u2"), 2),  # raw bit patterns
    "F32": (np.dtype("<f4"), 4),
    "F64": (np.dtype("<f8"), 8),
    "F8_E4M3": (np.dtype("u1"), 1),
    "F8_E5M2": (np.dtype("u1"), 1),
}
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")

_NP_TO_ST = {
    np.dtype("float16"): "F16",
    np.dtype("float32"): "F32",
    np.dtype("float64"): "F64",
    np.dtype("int8"): "I8",
    np.dtype("uint8"): "U8",
    np.dtype("int16"): "I16",
    np.dtype("uint16"): "U16",
    np.dtype("int32"): "I32",
    np.dtype("uint32"): "U32",
    np.dtype("int64"): "I64",
    np.dtype("uint64"): "U64",
    np.dtype("bool"): "BOOL",
}


class SafetensorsError(ValueError):
    """A file breaks a safetensors rule; the message names the file."""


class Tensor:
    """A tensor to write: dtype name + array (see module doc for BF16)."""

    def __init__(self, dtype, array):
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}")
        self.dtype = dtype
        self.array = np.asarray(array)

    @property
    def shape(self):
        return tuple(self.array.shape)


# ---------------------------------------------------------------- codecs
def f32_to_bf16_bits(x):
    """float32 (or anything castable) -> uint16 BF16 bits, round to nearest even.

    NaN stays NaN (quiet bit forced so the mantissa cannot round to zero = Inf).
    """
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    u = x.view(np.uint32).astype(np.uint64)
    lsb = (u >> np.uint64(16)) & np.uint64(1)
    rounded = ((u + np.uint64(0x7FFF) + lsb) >> np.uint64(16)).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        qnan = ((u >> np.uint64(16)).astype(np.uint16)) | np.uint16(0x0040)
        rounded = np.where(nan, qnan, rounded)
    return rounded.astype(np.uint16)


def bf16_bits_to_f32(bits):
    b = np.asarray(bits, dtype=np.uint16).astype(np.uint32) << np.uint32(16)
    return b.view(np.float32)


def encode(t):
    """Tensor -> raw little-endian bytes."""
    dt = t.dtype
    a = t.array
    if dt == "BF16":
        if a.dtype == np.uint16:
            raw = a.astype("<u2")
        else:
            raw = f32_to_bf16_bits(a).astype("<u2")
    else:
        raw = a.astype(DTYPES[dt][0])
    return np.ascontiguousarray(raw).tobytes()


def decode(dtype, shape, buf):
    """raw bytes -> ndarray; floats come back as their own kind (BF16 as float32)."""
    npdt, _ = DTYPES[dtype]
    a = np.frombuffer(buf, dtype=npdt).reshape(shape)
    if dtype == "BF16":
        return bf16_bits_to_f32(a).reshape(shape)
    if dtype == "BOOL":
        return a.astype(bool)
    return a.copy()


def as_tensor(v):
    if isinstance(v, Tensor):
        return v
    a = np.asarray(v)
    if a.dtype not in _NP_TO_ST:
        raise ValueError(f"no safetensors dtype for {a.dtype}")
    return Tensor(_NP_TO_ST[a.dtype], a)


def cast(array, dtype):
    """Round a float array to what `dtype` can store, returned as float64."""
    a = np.asarray(array)
    if dtype == "BF16":
        return bf16_bits_to_f32(f32_to_bf16_bits(a)).astype(np.float64)
    return a.astype(DTYPES[dtype][0]).astype(np.float64)


# ---------------------------------------------------------------- writer
def _data_order(names, tensors):
    # HF writes data sorted by (alignment desc, name); the JSON keys come out
    # sorted by name. So data order and key order differ: readers must use offsets.
    return sorted(names, key=lambda n: (-DTYPES[tensors[n].dtype][1], n))


def build_safetensors(tensors, metadata=None, align=8):
    """dict name -> Tensor|ndarray  ->  bytes of a valid safetensors file."""
    ts = {n: as_tensor(v) for n, v in tensors.items()}
    order = _data_order(list(ts), ts)
    header = {}
    chunks = []
    off = 0
    for n in order:
        b = encode(ts[n])
        header[n] = {"dtype": ts[n].dtype, "shape": list(ts[n].shape),
                     "data_offsets": [off, off + len(b)]}
        chunks.append(b)
        off += len(b)
    obj = {}
    if metadata is not None:
        obj["__metadata__"] = dict(metadata)
    for n in sorted(header):
        obj[n] = header[n]
    hj = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if align:
        hj += b" " * ((-(8 + len(hj))) % align)
    return struct.pack("<Q", len(hj)) + hj + b"".join(chunks)


def write_safetensors(path, tensors, metadata=None):
    """Write a valid file; returns its size in bytes."""
    if metadata is None:
        metadata = {"format": "pt"}
    data = build_safetensors(tensors, metadata)
    with open(path, "wb") as f:
        f.write(data)
    return len(data)


def write_raw(path, header, data=b"", header_len=None):
    """Hostile-file helper: header is bytes/str/obj; header_len overrides the prefix."""
    if isinstance(header, (dict, list)):
        header = json.dumps(header).encode("utf-8")
    elif isinstance(header, str):
        header = header.encode("utf-8")
    n = len(header) if header_len is None else header_len
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", n) + header + data)


def write_sharded(folder, tensors, nshards, metadata=None):
    """Split tensors (in name order, round-robin by size) into nshards files + index.

    Returns the list of shard file names.
    """
    os.makedirs(folder, exist_ok=True)
    ts = {n: as_tensor(v) for n, v in tensors.items()}
    names = sorted(ts)
    if nshards < 1 or nshards > len(names):
        raise ValueError("bad shard count")
    # contiguous blocks of names, like HF (which fills shards up to a size)
    per = -(-len(names) // nshards)
    weight_map = {}
    files = []
    total = 0
    for k in range(nshards):
        part = names[k * per:(k + 1) * per]
        if not part:
            continue
        fname = f"model-{k + 1:05d}-of-{nshards:05d}.safetensors"
        sub = {n: ts[n] for n in part}
        write_safetensors(os.path.join(folder, fname), sub,
                          metadata if metadata is not None else {"format": "pt"})
        total += sum(len(encode(ts[n])) for n in part)
        for n in part:
            weight_map[n] = fname
        files.append(fname)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
    return files


def write_trainer_state(folder, global_step, max_steps=None, **extra):
    st = {"best_metric": None, "epoch": float(global_step) / 100.0,
          "global_step": int(global_step), "is_world_process_zero": True,
          "log_history": [{"loss": 1.0 / (1 + global_step), "step": int(global_step)}]}
    if max_steps is not None:
        st["max_steps"] = int(max_steps)
    st.update(extra)
    with open(os.path.join(folder, "trainer_state.json"), "w") as f:
        json.dump(st, f, indent=2)


def write_checkpoint(run_dir, step, tensors, max_steps=None, nshards=1,
                     extras=True):
    """run_dir/checkpoint-STEP/ with model file(s), trainer_state.json and the
    side files a Trainer leaves (which the tool must ignore). Returns the folder."""
    d = os.path.join(run_dir, f"checkpoint-{step}")
    os.makedirs(d, exist_ok=True)
    if nshards == 1:
        write_safetensors(os.path.join(d, "model.safetensors"), tensors)
    else:
        write_sharded(d, tensors, nshards)
    write_trainer_state(d, step, max_steps)
    if extras:
        rng = np.random.default_rng(step)
        for fn in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"):
            with open(os.path.join(d, fn), "wb") as f:
                f.write(rng.integers(0, 256, 64 + step % 13, dtype=np.uint8).tobytes())
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump({"architectures": ["LlamaForCausalLM"], "torch_dtype": "bfloat16"}, f)
    return d


# ---------------------------------------------------------------- reader
def _no_dup_object(pairs):
    obj = {}
    for k, v in pairs:
        if k in obj:
            raise SafetensorsError(f"duplicate key {k!r}")
        obj[k] = v
    return obj


def _reject_constant(name):
    raise SafetensorsError(f"non-standard JSON constant {name}")


def _is_uint(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _check_unicode(path, s):
    # json happily returns lone surrogates from \udXXX escapes; they are not UTF-8.
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise SafetensorsError(f"{path}: string is not valid Unicode: {s!r}")


def parse_header(path, blob, file_size):
    """Validate the header of a safetensors file; returns (entries, metadata, data_start).

    entries: list of (name, dtype, shape tuple, begin, end) in JSON order.
    """
    if file_size < 8:
        raise SafetensorsError(f"{path}: file has {file_size} bytes, less than the 8-byte header length")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > MAX_HEADER:
        raise SafetensorsError(f"{path}: header length {n} over {MAX_HEADER}")
    if 8 + n > file_size:
        raise SafetensorsError(f"{path}: header length {n} past end of file ({file_size} bytes)")
    raw = bytes(blob[8:8 + n])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SafetensorsError(f"{path}: header is not UTF-8: {e}")
    try:
        obj = json.loads(text, object_pairs_hook=_no_dup_object,
                         parse_constant=_reject_constant)
    except SafetensorsError as e:
        raise SafetensorsError(f"{path}: {e}")
    except (ValueError, RecursionError) as e:
        raise SafetensorsError(f"{path}: header is not valid JSON: {type(e).__name__}: {str(e)[:80]}")
    if not isinstance(obj, dict):
        raise SafetensorsError(f"{path}: header JSON is not an object")
    meta = None
    entries = []
    for name, e in obj.items():
        _check_unicode(path, name)
        if name == "__metadata__":
            if e is None:  # written by MLX; the reference reader takes null as "none"
                continue
            if not isinstance(e, dict):
                raise SafetensorsError(f"{path}: __metadata__ is not an object")
            for k, v in e.items():
                _check_unicode(path, k)
                if not isinstance(v, str):
                    raise SafetensorsError(f"{path}: __metadata__ value {k!r} is not a string")
                _check_unicode(path, v)
            meta = e
            continue
        if not isinstance(e, dict):
            raise SafetensorsError(f"{path}: tensor {name!r}: entry is not an object")
        for key in ("dtype", "shape", "data_offsets"):
            if key not in e:
                raise SafetensorsError(f"{path}: tensor {name!r}: missing {key}")
        dt = e["dtype"]
        if not isinstance(dt, str) or dt not in DTYPES:
            raise SafetensorsError(f"{path}: tensor {name!r}: unknown dtype {dt!r}")
        shape = e["shape"]
        if not isinstance(shape, list):
            raise SafetensorsError(f"{path}: tensor {name!r}: shape is not a list")
        if len(shape) > MAX_RANK:
            raise SafetensorsError(f"{path}: tensor {name!r}: rank {len(shape)} over {MAX_RANK}")
        numel = 1
        for d in shape:
            if not _is_uint(d):
                raise SafetensorsError(f"{path}: tensor {name!r}: bad dimension {d!r}")
            numel *= d
            if numel >= 2 ** 64:
                raise SafetensorsError(f"{path}: tensor {name!r}: element count overflows 64 bits")
        nbytes = numel * DTYPES[dt][1]
        if nbytes >= 2 ** 64:
            raise SafetensorsError(f"{path}: tensor {name!r}: byte size overflows 64 bits")
        offs = e["data_offsets"]
        if not (isinstance(offs, list) and len(offs) == 2 and all(_is_uint(o) for o in offs)):
            raise SafetensorsError(f"{path}: tensor {name!r}: bad data_offsets {offs!r}")
        b, en = offs
        if en < b:
            raise SafetensorsError(f"{path}: tensor {name!r}: END {en} < BEGIN {b}")
        if en - b != nbytes:
            raise SafetensorsError(f"{path}: tensor {name!r}: {en - b} bytes for {nbytes} expected")
        entries.append((name, dt, tuple(shape), b, en))
    pos = 0
    for name, dt, shape, b, en in sorted(entries, key=lambda t: (t[3], t[4])):
        if b != pos:
            what = "gap" if b > pos else "overlap"
            raise SafetensorsError(f"{path}: tensor {name!r}: {what}: begins at {b}, expected {pos}")
        pos = en
    if file_size - 8 - n != pos:
        raise SafetensorsError(f"{path}: data buffer has {file_size - 8 - n} bytes, tensors need {pos}")
    return entries, meta, 8 + n


def read_header(path):
    with open(path, "rb") as f:
        blob = f.read()
    entries, meta, start = parse_header(path, blob, len(blob))
    return entries, meta


def read_safetensors(path, names=None):
    """-> (dict name -> (dtype, ndarray), metadata). Floats in their own kind."""
    with open(path, "rb") as f:
        blob = f.read()
    entries, meta, start = parse_header(path, blob, len(blob))
    out = {}
    for name, dt, shape, b, en in entries:
        if names is not None and name not in names:
            continue
        out[name] = (dt, decode(dt, shape, blob[start + b:start + en]))
    return out, meta


# ---------------------------------------------------------------- models & runs
INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


def model_source(folder):
    """The model a folder holds, in the tool's documented order of preference:
    the index (sharded), model.safetensors, or the only *.safetensors; else None."""
    for name in (INDEX, SINGLE):
        p = os.path.join(folder, name)
        if os.path.isfile(p):
            return p
    only = [e for e in os.listdir(folder)
            if e.endswith(".safetensors") and os.path.isfile(os.path.join(folder, e))]
    if len(only) == 1:
        return os.path.join(folder, only[0])
    return None


def load_model(path):
    """file / folder / index -> dict name -> (dtype, ndarray)."""
    if os.path.isdir(path):
        src = model_source(path)
        if src is None:
            raise SafetensorsError(f"{path}: no model.safetensors or index")
        path = src
    if path.endswith(".index.json"):
        try:
            with open(path, "rb") as f:
                idx = json.loads(f.read().decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise SafetensorsError(f"{path}: not valid JSON: {e}")
        wm = idx.get("weight_map") if isinstance(idx, dict) else None
        if not isinstance(wm, dict) or not all(isinstance(v, str) for v in wm.values()):
            raise SafetensorsError(f"{path}: no weight_map object of file names")
        folder = os.path.dirname(path)
        out = {}
        by_file = {}
        for name, fn in wm.items():
            by_file.setdefault(fn, set()).add(name)
        for fn, names in sorted(by_file.items()):
            if not os.path.isfile(os.path.join(folder, fn)):
                raise SafetensorsError(f"{fn}: shard named by {path} is missing")
            got, _ = read_safetensors(os.path.join(folder, fn))
            missing = names - set(got)
            if missing:
                raise SafetensorsError(f"{fn}: lacks {sorted(missing)[0]!r} named by the index")
            for n in names:
                out[n] = got[n]
        return out
    got, _ = read_safetensors(path)
    return got


def _state(folder):
    p = os.path.join(folder, "trainer_state.json")
    if not os.path.isfile(p):
        return None
    with open(p) as f:
        return json.load(f)


def _same_bytes(a, b):
    if not (a and b and a.endswith(".safetensors") and b.endswith(".safetensors")):
        return False
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return fa.read() == fb.read()


_CKPT = re.compile(r"^checkpoint-([0-9]+)$")


def resolve_run(path):
    """Run path -> list of (step or None, source path) in step order.

    Rules (README "What a run path can be"): checkpoint-STEP/ folders sorted by
    STEP; a final model in the run folder is one more step unless byte-identical
    to a checkpoint's; its step: the run folder's trainer_state.json global_step,
    else the last checkpoint's max_steps, else last STEP + 1; equal to the last
    checkpoint's step: that checkpoint is used; smaller: an error.

    source path = the model file (model.safetensors / a .safetensors) or the
    index file of a sharded model. step None = unknown (single file, or a
    lone model folder with no trainer_state.json and no checkpoint-N name).
    """
    if os.path.isfile(path):
        return [(None, path)]
    path = path.rstrip("/") or "/"
    ckpts = []
    for e in os.listdir(path):
        m = _CKPT.match(e)
        full = os.path.join(path, e)
        if m and os.path.isdir(full):
            st = _state(full)
            step = st["global_step"] if st and "global_step" in st else int(m.group(1))
            src = model_source(full)
            if src is None:
                raise SafetensorsError(f"{full}: no model")
            ckpts.append((int(step), src, st))
    ckpts.sort(key=lambda t: t[0])
    if not ckpts:
        src = model_source(path)
        if src is None:
            raise SafetensorsError(f"{path}: no checkpoints and no model")
        st = _state(path)
        step = None
        if st and "global_step" in st:
            step = int(st["global_step"])
        else:
            m = _CKPT.match(os.path.basename(path))
            if m:
                step = int(m.group(1))
        return [(step, src)]
    out = [(s, src) for s, src, _ in ckpts]
    final = model_source(path)
    if final is not None and not any(_same_bytes(final, src) for _, src in out):
        st = _state(path)
        if st and "global_step" in st:
            step = int(st["global_step"])
        elif ckpts[-1][2] and "max_steps" in ckpts[-1][2]:
            step = int(ckpts[-1][2]["max_steps"])
        else:
            step = out[-1][0] + 1
        if step < out[-1][0]:
            raise SafetensorsError(f"{path}: final model step {step} before the last checkpoint's")
        if step > out[-1][0]:
            out.append((step, final))
        # step == last: the checkpoint stands for that step (the tool notes it)
    return out


def default_run_name(path):
    p = path.rstrip("/")
    b = os.path.basename(p)
    if os.path.isfile(p) and b.endswith(".safetensors"):
        b = b[: -len(".safetensors")]
    return b


# ---------------------------------------------------------------- naming rules
_DIGITS = re.compile(rb"[0-9]+")


def natural_key(name):
    """Sort key: byte order, except that runs of digits compare as numbers.

    The name is read as UTF-8 bytes; each non-digit byte is a token (its value)
    and each digit run one token that sorts where a digit byte would (0x30..0x39
    lie between other bytes) and, against another run, by its number. Equal
    keys (leading zeros) are settled by the raw bytes. So layers.2 < layers.10,
    and "m..3" < "m.1a" as in plain byte order.
    """
    b = name.encode("utf-8")
    key = []
    pos = 0
    for m in _DIGITS.finditer(b):
        key.extend((c, 0) for c in b[pos:m.start()])
        key.append((0x30, int(m.group())))
        pos = m.end()
    key.extend((c, 0) for c in b[pos:])
    return (key, b)


INT32_MAX = 2 ** 31 - 1


def layer_of(name):
    """First dot-separated all-digit component as a number; -1 if none (or if
    it does not fit an int32, where the tool may differ: not tested)."""
    for part in name.split("."):
        if part and all("0" <= ch <= "9" for ch in part):
            v = int(part)
            return v if v <= INT32_MAX else -1
    return -1
