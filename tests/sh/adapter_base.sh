#!/bin/bash
# analyze without --base takes the base the adapters' adapter_config.json names
# (base_model_name_or_path, issue #16): a path relative to the adapter's folder, or a hub id
# found in the Hugging Face cache; the numbers equal those with --base given. Runs that name
# different bases, a run that names none, and full weights without --base are usage errors
# (exit 2) that say why.
set -u
SUITE=adapter_base
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
D=$TMP/data
if ! "$PY" "$TP/gen_adapter_base.py" "$D" >"$LOG/gen.out" 2>&1; then
    fail generate "$(peek "$LOG/gen.out")"
    finish
fi

same_tsv() { # LABEL A B
    if cmp -s "$2" "$3"; then pass "$1"; else fail "$1" "tables differ: $(diff "$2" "$3" | head -3 | tr '\n' ' ')"; fi
}

run given "$BIN" analyze --base "$D/base" -o "$TMP/given.h5" lora="$D/lora"
[ $RC -eq 0 ] || fail given "exit $RC: $(peek "$LOG/given.err")"
run named "$BIN" analyze -o "$TMP/named.h5" lora="$D/lora"
if [ $RC -ne 0 ]; then
    fail named "exit $RC: $(peek "$LOG/named.err")"
elif ! grep -q "base '$D/base', as the adapters' base_model_name_or_path names it" "$LOG/named.err"; then
    fail named-note "$(peek "$LOG/named.err")"
else
    same_tsv named "$LOG/given.out" "$LOG/named.out"
fi

# the hub id, from a cache laid out as huggingface_hub leaves it
C=$TMP/hub/models--test-org--tiny
H=0123456789abcdef0123456789abcdef01234567
mkdir -p "$C/blobs" "$C/refs" "$C/snapshots/$H"
cp "$D/base/model.safetensors" "$C/blobs/aaaa"
ln -s ../../blobs/aaaa "$C/snapshots/$H/model.safetensors"
printf '%s' "$H" >"$C/refs/main"
HF_HUB_CACHE=$TMP/hub run hub "$BIN" analyze -q -o "$TMP/hub.h5" lora="$D/hub"
if [ $RC -eq 0 ]; then
    "$BIN" analyze -q --base "$D/base" -o "$TMP/hubref.h5" lora="$D/hub" >"$LOG/hubref.out" 2>&1
    same_tsv hub "$LOG/hubref.out" "$LOG/hub.out"
else
    fail hub "exit $RC: $(peek "$LOG/hub.err")"
fi
HF_HUB_CACHE=$TMP/empty-hub run hub-missing "$BIN" analyze -o "$TMP/x.h5" lora="$D/hub"
[ $RC -eq 1 ] && grep -q "empty-hub" "$LOG/hub-missing.err" && pass hub-missing ||
    fail hub-missing "exit $RC: $(peek "$LOG/hub-missing.err")"

usage() { # LABEL WANT ARGS...
    local label=$1 want=$2
    shift 2
    run "$label" "$BIN" analyze -o "$TMP/u.h5" "$@"
    if [ $RC -eq 2 ] && grep -qF -- "$want" "$LOG/$label.err" && [ ! -e "$TMP/u.h5" ]; then
        pass "$label"
    else
        fail "$label" "exit $RC, want 2 and '$want': $(peek "$LOG/$label.err")"
    fi
}
usage different "the runs name different bases: '$D/base'" a="$D/lora" b="$D/other"
usage names-none "names no base_model_name_or_path" a="$D/none"
usage full-weights "holds full weights" a="$D/ft"
usage mixed "holds full weights" a="$D/lora" b="$D/ft"
finish
