#!/bin/bash
# Issue #14, views and sizes: files whose views lie about their size or overlap, tensors
# without elements but with huge dims, a NaN in a LoRA factor, and 10^5 of anything.
#
#   tests/sh/hostile_views.sh   (env: DORA_BIN or BIN = the binary, PY = Debian's python3
#                                with numpy and torch)
#
# tests/py/gen_hostile_views.py writes the inputs (see its docstring). Each refused case
# runs three ways (inspect F, analyze --base F, analyze with F as a run) in an output
# folder of its own and must: exit 1 (no signal, no timeout, no sanitizer report), name
# the file and the tensor, leave nothing in the output folder, and stay under 64 MiB of
# peak RSS (256 MiB under build-san: ASan's baseline). Time bounds are hang and
# complexity guards, several times the fixed cost (4x looser under build-san).
# Prints `PASS hostile_views/<label>` or `FAIL hostile_views/<label>: <why>`.

set -u
SUITE=hostile_views
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
D=$TMP/data
RSS_MAX=65536
SLOW=1
case $BIN in *build-san*) RSS_MAX=262144 SLOW=4 ;; esac

if [ ! -x "$BIN" ]; then
    fail binary "$BIN not found or not executable (run make)"
    finish
fi
if run gen "$PY" "$TP/gen_hostile_views.py" "$D" && [ $RC -eq 0 ]; then
    pass generate
else
    fail generate "$(peek "$LOG/gen.err" 600)"
    finish
fi
GOOD=$D/good

# measured LABEL SECONDS CMD... : run CMD with cwd = a fresh output folder $OD, under
# /usr/bin/time; sets RC, RSS (KiB) and SECS, the CPU seconds (user + system: the machine
# is shared, so wall time says little). More than SECONDS (x SLOW) of CPU, or a timeout
# (wall time 4 x that + 30 s), is a failure reported here (returns 1).
measured() {
    local label=$1 limit=$2
    shift 2
    OD=$TMP/out/$label
    mkdir -p "$OD"
    (cd "$OD" && timeout -k 5 $((4 * limit * SLOW + 30)) /usr/bin/time -f '%U %S %M' \
        -o "$LOG/$label.time" "$@" >"$LOG/$label.out" 2>"$LOG/$label.err")
    RC=$?
    local u s
    read -r u s RSS <<<"$(tail -1 "$LOG/$label.time" 2>/dev/null)"
    SECS=$(awk -v u="${u:-0}" -v s="${s:-0}" 'BEGIN { print u + s }')
    : "${RSS:=0}"
    crashed "$label" && return 1
    if awk -v s="$SECS" -v l="$limit" -v k="$SLOW" 'BEGIN { exit !(s > l * k) }'; then
        fail "$label" "took $SECS s of CPU, over the guard of $((limit * SLOW)) s"
        return 1
    fi
    return 0
}

# refused LABEL FILE REGEX TENSOR : the three ways; exit 1, message naming FILE and
# 'TENSOR' and matching REGEX, no output left, RSS under the bound
refused() {
    local name=$1 f=$2 re=$3 tensor=$4 how
    for how in inspect base run; do
        local label=$name-$how
        case $how in
        inspect) measured "$label" 10 "$BIN" inspect "$f" || continue ;;
        base) measured "$label" 10 "$BIN" analyze --base "$f" -o out.h5 ft="$GOOD/ck.safetensors" || continue ;;
        run) measured "$label" 10 "$BIN" analyze --base "$GOOD/base.safetensors" -o out.h5 ft="$f" || continue ;;
        esac
        local left
        left=$(ls -A "$OD")
        if [ $RC -ne 1 ]; then
            fail "$label" "exit $RC, expected 1: $(peek "$LOG/$label.err")"
        elif ! grep -qF "'$f'" "$LOG/$label.err" || ! grep -qF "'$tensor'" "$LOG/$label.err"; then
            fail "$label" "the message does not name '$f' and tensor '$tensor': $(peek "$LOG/$label.err")"
        elif ! grep -qE "$re" "$LOG/$label.err"; then
            fail "$label" "the message does not match /$re/: $(peek "$LOG/$label.err")"
        elif [ -n "$left" ]; then
            fail "$label" "left in the output folder: $left"
        elif [ "$RSS" -gt "$RSS_MAX" ]; then
            fail "$label" "peak RSS $RSS KiB, over $RSS_MAX KiB"
        else
            pass "$label"
        fi
    done
}

# ---------------------------------------------------------------- views that lie or overlap
V=$D/views
refused view-wrap "$V/wrap.bin" "byte size overflows 64 bits" w
refused view-big "$V/big.bin" "repeats elements of its storage.*over the 16777216 bytes" w
refused view-expand "$V/expand.bin" "repeats elements of its storage.*over the 16777216 bytes" w
refused view-overlap "$V/overlap.bin" "repeats elements of its storage" w
refused view-overlap3d "$V/overlap3d.bin" "repeats elements of its storage" w
refused view-budget "$V/budget.bin" "repeats elements of its storage.*over the 6291456 bytes" b
# within the budget, an expanded view is read: 4 rows, each the storage's 5 values
if measured view-expand-small 10 "$BIN" inspect "$V/expand_small.bin" && [ $RC -eq 0 ] &&
    grep -qE $'^w\tF32\t\[4, 5\]\t80\t' "$LOG/view-expand-small.out"; then
    pass view-expand-small
else
    fail view-expand-small "exit $RC: $(peek "$LOG/view-expand-small.out") $(peek "$LOG/view-expand-small.err")"
fi

# real torch.save of transposed / permuted weights: analysed exactly like their
# contiguous copies (the gather keeps their values; memory bounded by the file's bytes)
if measured transposed-bin 20 "$BIN" analyze --per-row --base "$V/base_t.safetensors" -o t.h5 ck="$V/ck_t.bin" &&
    [ $RC -eq 0 ] && cp "$LOG/transposed-bin.out" "$TMP/t_bin.tsv" &&
    measured transposed-st 20 "$BIN" analyze --per-row --base "$V/base_t.safetensors" -o t.h5 ck="$V/ck.safetensors" &&
    [ $RC -eq 0 ]; then
    if [ "$(wc -l <"$TMP/t_bin.tsv")" -ne 3 ]; then
        fail transposed "expected a header and 2 rows (w, c): $(peek "$TMP/t_bin.tsv")"
    elif ! cmp -s "$TMP/t_bin.tsv" "$LOG/transposed-st.out"; then
        fail transposed "dM/dD of the transposed .bin differ from the contiguous copy: $(diff "$TMP/t_bin.tsv" "$LOG/transposed-st.out" | head -4 | tr '\n' ' ')"
    elif [ "$RSS" -gt "$RSS_MAX" ]; then
        fail transposed "peak RSS $RSS KiB, over $RSS_MAX KiB"
    else
        pass transposed
    fi
elif [ $RC -ne 0 ]; then
    fail transposed "exit $RC: $(peek "$LOG/transposed-bin.err") $(peek "$LOG/transposed-st.err" 2>/dev/null)"
fi

# ---------------------------------------------------------------- tensors without elements
E=$D/empty
for pair in st:base.safetensors:ck.safetensors bin:base.bin:ck.bin mix:base.safetensors:ck.bin \
    mix2:base.bin:ck.safetensors; do
    IFS=: read -r tag b c <<<"$pair"
    label=empty-$tag
    measured "$label" 5 "$BIN" analyze --base "$E/$b" -o e.h5 ft="$E/$c" || continue
    if [ $RC -ne 0 ]; then
        fail "$label" "exit $RC, expected 0: $(peek "$LOG/$label.err")"
    elif ! grep -q "without elements" "$LOG/$label.err" || ! grep -qF "'e1'" "$LOG/$label.err"; then
        fail "$label" "no note naming the empty tensor 'e1': $(peek "$LOG/$label.err")"
    elif ! grep -qP '^ft\tft\t0\tw\t' "$LOG/$label.out" || grep -qP '\te[12]\t' "$LOG/$label.out"; then
        fail "$label" "expected the row of w only: $(peek "$LOG/$label.out")"
    else
        pass "$label"
    fi
done

# ---------------------------------------------------------------- NaN in a LoRA factor
N=$D/nan
for c in lora_a:lora_A:1 lora_b:lora_B:5; do
    IFS=: read -r dir tname row <<<"$c"
    label=nan-$dir
    measured "$label" 5 "$BIN" analyze --base "$N/base.safetensors" -o n.h5 lora="$N/$dir" || continue
    want="q_proj.$tname.weight': row $row holds NaN"
    if [ $RC -ne 1 ]; then
        fail "$label" "exit $RC, expected 1: $(peek "$LOG/$label.err")"
    elif ! grep -qF "$want" "$LOG/$label.err" || ! grep -qF "'$N/$dir/adapter_model.safetensors'" "$LOG/$label.err"; then
        fail "$label" "expected the file and \"$want\": $(peek "$LOG/$label.err")"
    elif [ -n "$(ls -A "$OD")" ]; then
        fail "$label" "left in the output folder: $(ls -A "$OD")"
    else
        pass "$label"
    fi
done

# ---------------------------------------------------------------- 10^5 of anything
Q=$D/quad
# an index naming 100,000 shards, none there: refused fast, naming the index and a shard
if measured quad-index 4 "$BIN" analyze --base "$Q/index" -o q.h5 ft="$GOOD/ck.safetensors"; then
    if [ $RC -ne 1 ] || ! grep -qF "'$Q/index/model.safetensors.index.json'" "$LOG/quad-index.err" ||
        ! grep -q "missing" "$LOG/quad-index.err"; then
        fail quad-index "exit $RC, expected 1 naming the index and a missing shard: $(peek "$LOG/quad-index.err")"
    else
        pass quad-index
    fi
fi
# 40,000 tensors of a torch file, one storage each
if measured quad-torch 10 "$BIN" inspect "$Q/many.bin"; then
    if [ $RC -ne 0 ] || ! grep -qP '^layers\.39999\tF32\t\[2, 3\]' "$LOG/quad-torch.out"; then
        fail quad-torch "exit $RC, expected 0 and layers.39999: $(peek "$LOG/quad-torch.err")"
    else
        pass quad-torch
    fi
fi

finish
