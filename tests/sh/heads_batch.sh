#!/bin/bash
# Per-head values through batch and merge, and merge --bootstrap.
#
#   tests/sh/heads_batch.sh   (env: DORA_BIN or BIN = the binary, PY or PYTHON = python with
#                              numpy/h5py, default /usr/bin/python3)
#
# FT (bf16), LoRA and DoRA runs of tests/py/gen_adapters.py on a base with a config.json
# (8 query heads, 2 key/value heads of 16 rows): `batch` (whole, and as two shards joined by
# `merge`) must write /runs/NAME/heads as `analyze` does (tests/py/check_heads_same.py: to
# 1e-12, reported when bit for bit), each checked against the float64 NumPy reference
# (tests/py/check_heads.py, rtol 1e-9). `merge --bootstrap 2000` must give the /regression
# intervals of `analyze --bootstrap 2000` of the same runs (1e-12), the same twice, and
# others than the default 10000 replicates. Journals whose HEAD sections were damaged with
# the checksums made right (tests/py/tamper_journal.py) are refused with a message naming
# the journal, the record and the run; one without the section (an earlier version's
# record) is read, and the run then has no heads, with a note.
# Prints `PASS heads_batch/<name>` or `FAIL heads_batch/<name>: <why>`; exits 1 on any FAIL.

set -u
SUITE=heads_batch
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
D=$TMP/data
OUT=$TMP/out
mkdir -p "$OUT" "$TMP/m"

if [ ! -x "$BIN" ]; then
    fail binary "$BIN not found or not executable (run make)"
    finish
fi
if "$PY" "$TP/gen_adapters.py" "$D" --seed 7 >"$LOG/gen.out" 2>&1; then
    mkdir -p "$D/base-heads" && cp "$D/base/"* "$D/base-heads/" &&
        echo '{"num_attention_heads": 8, "num_key_value_heads": 2, "hidden_size": 128}' \
            >"$D/base-heads/config.json" && pass generate
else
    fail generate "$(peek "$LOG/gen.out")"
    finish
fi
RUNS=(ft="$D/ft" lora="$D/lora" dora="$D/dora")

# same MODE LABEL A B ARGS... : check_heads_same.py, PASS/FAIL with its line
same() {
    local mode=$1 label=$2
    shift 2
    if "$PY" "$TP/check_heads_same.py" "$mode" "$@" >"$LOG/$label.same" 2>&1; then
        pass "$label"
        sed "s/^/    $label: /" "$LOG/$label.same"
    else
        fail "$label" "$(head -3 "$LOG/$label.same" | tr '\n' ' ')"
    fi
}
# numpy LABEL H5 [BASE RUN...] : every per-head value of H5 against the float64 reference
numpy() {
    local label=$1 h5=$2 base=$D/base-heads runs=("${RUNS[@]}")
    [ $# -gt 2 ] && base=$3 && runs=("${@:4}")
    if "$PY" "$TP/check_heads.py" --base "$base" --h5 "$h5" "${runs[@]}" \
        >"$LOG/$label.check" 2>&1; then
        pass "$label"
        grep '^check_heads' "$LOG/$label.check" | sed "s/^/    $label: /"
    else
        fail "$label" "$(grep -m3 -E '^FAIL|Error|failure' "$LOG/$label.check" | tr '\n' ' ')"
    fi
}
# ok LABEL CMD... : exit 0 wanted
ok() {
    local label=$1
    shift
    run "$label" "$@"
    crashed "$label" && return 1
    [ $RC -eq 0 ] && return 0
    fail "$label" "exit $RC: $(peek "$LOG/$label.err")"
    return 1
}

# ---------------------------------------------------------------- analyze, the reference
ok analyze "$BIN" analyze -q -o "$OUT/a.h5" --base "$D/base-heads" -j 2 "${RUNS[@]}" &&
    numpy analyze-numpy "$OUT/a.h5"

# ---------------------------------------------------------------- batch, whole and sharded
cat >"$TMP/m/heads.json" <<EOF
{"studies": [{"name": "heads", "base": "$D/base-heads",
  "runs": [{"name": "ft", "path": "$D/ft"}, {"name": "lora", "path": "$D/lora"},
           {"name": "dora", "path": "$D/dora"}],
  "output": "$OUT/b.h5"}]}
EOF
if ok batch "$BIN" batch -q -j 2 "$TMP/m/heads.json"; then
    same heads batch-heads-equal-analyze "$OUT/b.h5" "$OUT/a.h5" ft lora dora
    numpy batch-numpy "$OUT/b.h5"
fi
sed "s#$OUT/b.h5#$OUT/s.h5#" "$TMP/m/heads.json" >"$TMP/m/shards.json"
ok shard-1 "$BIN" batch -q -j 2 --shard 1/2 "$TMP/m/shards.json" &&
    ok shard-2 "$BIN" batch -q -j 2 --shard 2/2 "$TMP/m/shards.json"
S1=$OUT/s.shard-1-of-2.h5 S2=$OUT/s.shard-2-of-2.h5
if ok merge "$BIN" merge -q "$OUT/m.h5" "$S1" "$S2"; then
    same heads merge-heads-equal-analyze "$OUT/m.h5" "$OUT/a.h5" ft lora dora
    numpy merge-numpy "$OUT/m.h5"
    same regression merge-regression-default "$OUT/m.h5" "$OUT/a.h5"
fi

# ---------------------------------------------------------------- merge --bootstrap
# Three layers give few distinct resamples (the 2.5% and 97.5% points are the extremes
# whatever B): a 12-layer FT run (f32, q/k/v 32 x 32 in 4 heads of 8 rows, 4 steps, the
# update's size varying by layer and step), so that B = 2000 and 10000 can differ.
"$PY" - "$D/deep" "$TP" <<'EOF' >"$LOG/deep.gen" 2>&1
import json, os, sys
import numpy as np
sys.path.insert(0, sys.argv[2])
import stio
d, rng = sys.argv[1], np.random.default_rng(11)
base = {f"model.layers.{i}.self_attn.{p}_proj.weight": (rng.standard_normal((32, 32)) * 0.05).astype(np.float32)
        for i in range(12) for p in "qkv"}
os.makedirs(f"{d}/base", exist_ok=True)
stio.write_safetensors(f"{d}/base/model.safetensors", {n: stio.Tensor("F32", w) for n, w in base.items()})
json.dump({"num_attention_heads": 4, "hidden_size": 32}, open(f"{d}/base/config.json", "w"))
scale = {n: rng.uniform(0.2, 3.0) for n in base}
for step in (100, 200, 300, 400):
    ws = {}
    for n, w in base.items():
        u = rng.standard_normal(w.shape) * 1e-3 * scale[n] * step / 100
        shrink = 1 - 1e-3 * rng.uniform(0, 2) * step / 100
        ws[n] = stio.Tensor("F32", (w * shrink + u).astype(np.float32))
    stio.write_checkpoint(f"{d}/ft", step, ws)
EOF
cat >"$TMP/m/deep.json" <<EOF
{"studies": [{"name": "deep", "base": "$D/deep/base",
  "runs": [{"name": "ft", "path": "$D/deep/ft"}], "output": "$OUT/deep.h5"}]}
EOF
DS1=$OUT/deep.shard-1-of-2.h5 DS2=$OUT/deep.shard-2-of-2.h5
if [ -s "$D/deep/base/config.json" ] &&
    ok deep-analyze-b2000 "$BIN" analyze -q -o "$OUT/deep-a2000.h5" --base "$D/deep/base" \
        --bootstrap 2000 ft="$D/deep/ft" &&
    ok deep-shard-1 "$BIN" batch -q --shard 1/2 "$TMP/m/deep.json" &&
    ok deep-shard-2 "$BIN" batch -q --shard 2/2 "$TMP/m/deep.json" &&
    ok merge-default "$BIN" merge -q "$OUT/deep-m.h5" "$DS1" "$DS2" &&
    ok merge-b2000 "$BIN" merge -q --bootstrap 2000 "$OUT/deep-m2000.h5" "$DS1.journal" "$DS2.journal" &&
    ok merge-b2000-again "$BIN" merge -q --bootstrap 2000 "$OUT/deep-m2000b.h5" "$DS2" "$DS1"; then
    numpy deep-merge-numpy "$OUT/deep-m.h5" "$D/deep/base" ft="$D/deep/ft"
    same heads deep-merge-heads-equal-analyze "$OUT/deep-m2000.h5" "$OUT/deep-a2000.h5" ft
    same regression merge-bootstrap-equals-analyze "$OUT/deep-m2000.h5" "$OUT/deep-a2000.h5"
    same regression merge-bootstrap-reproducible "$OUT/deep-m2000.h5" "$OUT/deep-m2000b.h5"
    same regression merge-bootstrap-differs-from-default "$OUT/deep-m2000.h5" "$OUT/deep-m.h5" --differ
    b=$("$PY" -c 'import h5py, sys; print(h5py.File(sys.argv[1])["regression"].attrs["bootstrap_replicates"])' "$OUT/deep-m2000.h5" 2>&1)
    [ "$b" = 2000 ] && pass merge-bootstrap-recorded || fail merge-bootstrap-recorded "bootstrap_replicates $b"
else
    fail deep "$(peek "$LOG/deep.gen")"
fi
for bad in 99 1000001 2k ""; do
    run "merge-usage-$bad" "$BIN" merge --bootstrap "$bad" "$OUT/u.h5" "$S1"
    if ! crashed "merge-usage-$bad" && [ $RC -eq 2 ] &&
        grep -q "merge.*--bootstrap wants a whole number of replicates from 100 to 1000000" \
            "$LOG/merge-usage-$bad.err" && [ ! -e "$OUT/u.h5" ]; then
        pass "merge-bootstrap-usage-'$bad'"
    else
        fail "merge-bootstrap-usage-'$bad'" "exit $RC: $(peek "$LOG/merge-usage-$bad.err")"
    fi
done
"$BIN" merge --help | grep -q -- "--bootstrap B" && pass merge-help-bootstrap ||
    fail merge-help-bootstrap "not in merge --help"

# ---------------------------------------------------------------- hostile HEAD sections
# refused: exit 1, a message naming the journal, the record, the run and what is wrong
while read -r mode want; do
    if ! "$PY" "$TP/tamper_journal.py" "$OUT/b.h5.journal" "$OUT/t-$mode.journal" "$mode" \
        >"$LOG/tamper-$mode.out" 2>&1; then
        fail "hostile-$mode" "tamper_journal: $(peek "$LOG/tamper-$mode.out")"
        continue
    fi
    run "hostile-$mode" "$BIN" merge -q "$OUT/t-$mode.h5" "$OUT/t-$mode.journal"
    crashed "hostile-$mode" && continue
    if [ $RC -eq 1 ] && grep -q "t-$mode.journal': record at byte [0-9]*: run '[a-z]*': $want" \
        "$LOG/hostile-$mode.err" && [ -z "$(leftovers "$OUT/t-$mode.h5")" ]; then
        pass "hostile-$mode"
    else
        fail "hostile-$mode" "exit $RC: $(peek "$LOG/hostile-$mode.err") $(leftovers "$OUT/t-$mode.h5")"
    fi
done <<'EOF'
count a per-head section that does not match the modules ('model.layers.0.self_attn.k_proj.weight': 32 rows are not 3 heads
module a per-head section that does not match the modules (module index 1048576
cut a per-head section cut short
nan a non-finite per-head value (step
EOF
# a record without the section (an earlier version's): read; that run has no heads, noted
mkdir -p "$OUT/old"
sed "s#$OUT/b.h5#$OUT/old/b.h5#" "$TMP/m/heads.json" >"$TMP/m/old.json"
if "$PY" "$TP/tamper_journal.py" "$OUT/b.h5.journal" "$OUT/old/b.h5.journal" strip \
    >"$LOG/tamper-strip.out" 2>&1 && ok batch-old-record "$BIN" batch -j 2 "$TMP/m/old.json"; then
    if grep -q "run 'ft': no per-head values: some of the run's units were analysed by an earlier version" \
        "$LOG/batch-old-record.err" && ! grep -q "analysed in" "$LOG/batch-old-record.err" &&
        "$PY" -c "
import h5py, sys
f = h5py.File(sys.argv[1])
sys.exit(not ('heads' not in f['runs/ft'] and 'heads' in f['runs/lora'] and 'heads' in f['runs/dora']))" \
            "$OUT/old/b.h5"; then
        pass old-record-no-heads
        same heads old-record-other-runs "$OUT/old/b.h5" "$OUT/a.h5" lora dora
    else
        fail old-record-no-heads "$(peek "$LOG/batch-old-record.err" 600)"
    fi
fi

finish
