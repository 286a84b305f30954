#!/bin/bash
# Reading files that are not in the page cache (issue #19): rows not all cached are read
# from the mapping (analyze_read.c), the rest of a chunk with pread, so a chunk may mix the
# two. tests/bench/bench_steps.py writes a base of four 1024 x 1024 bf16 projections (a few
# chunks each, so both ways are taken) and a LoRA run of 3 adapters; an FT run of two
# checkpoints of the same base is written beside it. Each run is analysed warm, then with
# the base's file, the steps' files or all of them dropped from the page cache first
# (POSIX_FADV_DONTNEED, this test's files only), at -j 2 and -j 1: every number must equal
# the warm run's bit for bit.
set -u
SUITE=cold
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
D=$TMP/data

if [ ! -x "$BIN" ]; then
    fail binary "$BIN not found or not executable (run make)"
    finish
    exit
fi
if timeout -k 5 300 "$PY" "$ROOT/tests/bench/bench_steps.py" "$D/lora" --dim 1024 --modules 4 \
    --steps 3 --r 16 --distinct 3 >"$LOG/gen.out" 2>"$LOG/gen.err" &&
    timeout -k 5 300 "$PY" - "$D" "$ROOT/tests/bench" >>"$LOG/gen.out" 2>>"$LOG/gen.err" <<'EOF'; then
import json, os, sys
import numpy as np
sys.path.insert(0, sys.argv[2])
import bench_steps
d = sys.argv[1]
with open(os.path.join(d, "lora", "base.safetensors"), "rb") as f:
    n = int.from_bytes(f.read(8), "little")
    header, data = json.loads(f.read(n)), f.read()
rng = np.random.default_rng(3)
for s in (1, 2):
    ts = []
    for name, e in sorted(header.items()):
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        w = (np.frombuffer(data[a:b], np.uint16).astype(np.uint32) << 16).view(np.float32)
        w = w + rng.standard_normal(w.shape, dtype=np.float32) * 0.001 * s
        ts.append((name, "BF16", bench_steps.bf16(w), e["shape"]))
    os.makedirs(os.path.join(d, "ft", f"checkpoint-{s}"))
    bench_steps.write_st(os.path.join(d, "ft", f"checkpoint-{s}", "model.safetensors"), ts)
EOF
    pass generate
else
    fail generate "$(peek "$LOG/gen.err" 600)"
    finish
    exit
fi
B=$D/lora/base.safetensors
STEPS_FT=$(echo "$D"/ft/checkpoint-*/model.safetensors)
STEPS_LORA=$(echo "$D"/lora/run/checkpoint-*/adapter_model.safetensors)

# drop these files (and no others) from the page cache
evict() {
    "$PY" -c 'import os, sys
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)' "$@"
}

for m in ft lora; do
    steps=$STEPS_FT rundir=$D/ft
    [ $m = lora ] && steps=$STEPS_LORA rundir=$D/lora/run
    run "$m-warm" "$BIN" analyze -q -j 2 --base "$B" -o "$TMP/$m-warm.h5" "$m=$rundir"
    crashed "$m-warm" && continue
    if [ $RC -ne 0 ]; then
        fail "$m-warm" "exit $RC: $(peek "$LOG/$m-warm.err")"
        continue
    fi
    pass "$m-warm"
    for v in "all:$B $steps" "base:$B" "steps:$steps"; do
        for j in 2 1; do
            label=$m-${v%%:*}-j$j
            # shellcheck disable=SC2086  # the file lists are words
            evict ${v#*:}
            run "$label" "$BIN" analyze -q -j $j --base "$B" -o "$TMP/$label.h5" "$m=$rundir"
            crashed "$label" && continue
            if [ $RC -ne 0 ]; then
                fail "$label" "exit $RC: $(peek "$LOG/$label.err")"
            elif "$PY" "$TP/check_mem.py" same "$TMP/$m-warm.h5" "$TMP/$label.h5" 0 >"$LOG/$label.same" 2>&1; then
                pass "$label"
            else
                fail "$label" "$(peek "$LOG/$label.same" 400)"
            fi
        done
    done
done
finish
