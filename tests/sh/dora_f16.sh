#!/bin/bash
# LoRA / DoRA / FT runs on an F16 base: dM, dD, passive and active dM, and the per-head
# values, against the float64 NumPy reference (rtol 1e-9).
#
#   tests/sh/dora_f16.sh   (env: DORA_BIN or BIN = the binary, PY or PYTHON = python with
#                           numpy/h5py, default /usr/bin/python3)
#
# tests/py/gen_adapters.py writes its runs on a BF16 base (tests/sh/adapters.sh checks them
# there, and the F32 layers of heads-across-units); here the same data with every BF16 tensor
# of the base rounded to F16 (the float16 numbers the file then holds are the base for the
# tool and for the reference alike), and a config.json giving 8 query heads and 2 key/value
# heads. tests/py/check_adapters.py checks every number of each run (DoRA's magnitude
# vector, in the PEFT and the paper's format, and its fan_in_fan_out form; LoRA; FT),
# tests/py/check_heads.py every per-head value (of the runs that adapt q, k, v).
# Prints `PASS dora_f16/<name>` or `FAIL dora_f16/<name>: <why>`; exits 1 on any FAIL.

set -u
SUITE=dora_f16
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
D=$TMP/data
OUT=$TMP/out
mkdir -p "$OUT"

if [ ! -x "$BIN" ]; then
    fail binary "$BIN not found or not executable (run make)"
    finish
fi
# the base's BF16 tensors rewritten as F16 (each shard in place, the index unchanged)
if "$PY" "$TP/gen_adapters.py" "$D" --seed 7 >"$LOG/gen.out" 2>&1 &&
    "$PY" - "$D/base" "$TP" <<'EOF' >>"$LOG/gen.out" 2>&1; then
import glob, json, sys
import numpy as np
sys.path.insert(0, sys.argv[2])
import stio
n16 = 0
for path in sorted(glob.glob(sys.argv[1] + "/*.safetensors")):
    tensors, meta = stio.read_safetensors(path)
    out = {}
    for name, (dt, a) in tensors.items():
        if dt == "BF16":
            h = a.astype(np.float16)
            assert np.all(np.isfinite(h)), name
            out[name] = stio.Tensor("F16", h)
            n16 += 1
        else:
            out[name] = stio.Tensor(dt, a)
    stio.write_safetensors(path, out, meta)
json.dump({"num_attention_heads": 8, "num_key_value_heads": 2, "hidden_size": 128},
          open(sys.argv[1] + "/config.json", "w"))
assert n16 > 20, n16
print(f"{n16} tensors of the base now F16")
EOF
    pass generate
else
    fail generate "$(peek "$LOG/gen.out" 600)"
    finish
fi
"$PY" - "$D/base" "$TP" <<'EOF' >"$LOG/dtypes.out" 2>&1 && pass base-is-f16 || fail base-is-f16 "$(peek "$LOG/dtypes.out")"
import sys
sys.path.insert(0, sys.argv[2])
import stio
d = {n: dt for n, (dt, _) in stio.load_model(sys.argv[1]).items()}
q = [dt for n, dt in d.items() if n.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight"))]
sys.exit(not (q and set(q) == {"F16"} and "BF16" not in d.values()))
EOF

RUNS=(dora dorapaper dorafifo lora ft)
ARGS=()
for r in "${RUNS[@]}"; do ARGS+=("$r=$D/$r"); done
run analyze "$BIN" analyze -o "$OUT/f16.h5" --base "$D/base" -j 2 "${ARGS[@]}"
if ! crashed analyze && [ $RC -eq 0 ]; then
    if "$PY" "$TP/check_adapters.py" --data "$D" --h5 "$OUT/f16.h5" --rtol 1e-9 \
        --runs "$(IFS=,; echo "${RUNS[*]}")" --exact-runs --tsv "$LOG/analyze.out" \
        >"$LOG/f16.check" 2>&1; then
        pass numbers-passive-active
        grep '^worst' "$LOG/f16.check" | sed 's/^/    /'
    else
        fail numbers-passive-active "$(grep -m3 -E '^FAIL|Error|failure' "$LOG/f16.check" | tr '\n' ' ')"
    fi
    # dorafifo adapts only GPT-2-style c_attn/c_proj tensors of the base: no q/k/v heads
    if "$PY" "$TP/check_heads.py" --base "$D/base" --h5 "$OUT/f16.h5" dora="$D/dora" \
        dorapaper="$D/dorapaper" lora="$D/lora" ft="$D/ft" \
        >"$LOG/heads.check" 2>&1; then
        pass per-head
        grep -E '^(worst|check_heads)' "$LOG/heads.check" | sed 's/^/    /'
    else
        fail per-head "$(grep -m3 -E '^FAIL|Error|failure' "$LOG/heads.check" | tr '\n' ' ')"
    fi
else
    fail analyze "exit $RC: $(peek "$LOG/analyze.err")"
fi
finish
