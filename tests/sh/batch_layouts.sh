#!/bin/bash
# batch manifests carry analyze's layout options (issue #16): "rename", "transpose",
# "no_split", "base_quant". Each study's file must equal the one analyze writes with the same
# options (tests/py/check_h5_same.py: dM, dD to 1e-12 relative, and the name_alignment that
# the unit wire format carries into the joined result); a changed option redoes the units
# (it is in the study's fingerprint); bad values are manifest errors (exit 2) naming the field.
# Fixtures: tests/py/gen_layouts.py and tests/py/gen_fused.py.
set -u
SUITE=batch_layouts
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

. "$ROOT/tests/suite_gen.sh"
gen_layouts_fused

# manifest FILE NO_SPLIT: the four studies, "no_split" of the gpt2 study as given
manifest() {
    cat >"$1" <<JSON
{
  "version": 1,
  "studies": [
    {"name": "renamed", "base": "$L/base.safetensors", "output": "$TMP/out/renamed.h5",
     "rename": ["^backbone\\\\.blocks\\\\.=model.layers.", "^unused\\\\.=x"],
     "runs": [{"name": "ddp", "path": "$L/ddp"}, {"name": "renamed", "path": "$L/renamed"}]},
    {"name": "gpt2", "base": "$F/gpt2/base", "output": "$TMP/out/gpt2.h5", "no_split": $2,
     "runs": [{"name": "ft", "path": "$F/gpt2/ft"}, {"name": "lora", "path": "$F/gpt2/lora"}]},
    {"name": "transpose", "base": "$L/base.safetensors", "output": "$TMP/out/transpose.h5",
     "transpose": "mlp\\\\.down_proj", "runs": [{"name": "plain", "path": "$L/plain"}]},
    {"name": "quant", "base": "$F/phi3_qkv/base", "output": "$TMP/out/quant.h5",
     "base_quant": "nf4", "runs": [{"name": "lora", "path": "$F/phi3_qkv/lora"}]}
  ]
}
JSON
}
mkdir -p "$TMP/out"
manifest "$TMP/m.json" false
run batch "$BIN" batch -j 2 "$TMP/m.json"
if ! crashed batch; then
    [ $RC -eq 0 ] && pass batch || fail batch "exit $RC: $(peek "$LOG/batch.err" 600)"
fi

# same LABEL STUDY RUNS -- ANALYZE-ARGS...: batch's file equals analyze's
same() {
    local label=$1 study=$2 runs=$3
    shift 4
    run "analyze-$label" "$BIN" analyze -o "$TMP/$label.h5" "$@"
    crashed "analyze-$label" && return
    if [ $RC -ne 0 ]; then
        fail "$label" "analyze: exit $RC: $(peek "$LOG/analyze-$label.err")"
    # shellcheck disable=SC2086
    elif "$PY" "$TP/check_h5_same.py" "$TMP/out/$study.h5" "$TMP/$label.h5" $runs \
        >"$LOG/$label.check" 2>&1; then
        pass "$label"
    else
        fail "$label" "$(peek "$LOG/$label.check" 400)"
    fi
}
same rename renamed "ddp renamed" -- --base "$L/base.safetensors" \
    --rename '^backbone\.blocks\.=model.layers.' --rename '^unused\.=x' ddp="$L/ddp" \
    renamed="$L/renamed"
same split gpt2 "ft lora" -- --base "$F/gpt2/base" ft="$F/gpt2/ft" lora="$F/gpt2/lora"
same transpose transpose plain -- --base "$L/base.safetensors" --transpose 'mlp\.down_proj' \
    plain="$L/plain"
same base-quant quant lora -- --base "$F/phi3_qkv/base" --base-quant nf4 lora="$F/phi3_qkv/lora"
# the name_alignment of the renamed run went through the journal's unit records
"$PY" -c 'import sys, h5py; a = h5py.File(sys.argv[1])["runs/renamed"].attrs["name_alignment"]; sys.exit(0 if "renamed 16" in str(a) else 1)' \
    "$TMP/out/renamed.h5" 2>/dev/null && pass name-alignment ||
    fail name-alignment "no 'renamed 16' in the batch file's name_alignment"

# run again: nothing to do; "no_split": true changes the gpt2 study's fingerprint: redone whole
run again "$BIN" batch -v "$TMP/m.json"
manifest "$TMP/m.json" true
run nosplit "$BIN" batch -v "$TMP/m.json"
if [ "$(grep -c "analysed in" "$LOG/again.err")" -eq 0 ] &&
    grep -q "gpt2.*analysed in" "$LOG/nosplit.err" && ! grep -q "renamed.*analysed in" "$LOG/nosplit.err"; then
    pass fingerprint
else
    fail fingerprint "again: $(peek "$LOG/again.err" 300) nosplit: $(peek "$LOG/nosplit.err" 300)"
fi
same no-split gpt2 "ft lora" -- --base "$F/gpt2/base" --no-split ft="$F/gpt2/ft" \
    lora="$F/gpt2/lora"

# bad LABEL REGEX JSON-EDIT: the manifest edited by a Python statement on `m`: exit 2
bad() {
    local label=$1 re=$2 edit=$3
    "$PY" -c "import json,sys; m=json.load(open(sys.argv[1])); $edit; json.dump(m, open(sys.argv[2],'w'))" \
        "$TMP/m.json" "$TMP/bad.json"
    run "$label" "$BIN" batch "$TMP/bad.json"
    crashed "$label" && return
    if [ $RC -ne 2 ]; then
        fail "$label" "exit $RC, expected 2: $(peek "$LOG/$label.err")"
    elif ! grep -qE -- "$re" "$LOG/$label.err"; then
        fail "$label" "message does not match /$re/: $(peek "$LOG/$label.err")"
    else
        pass "$label"
    fi
}
bad bad-rename "studies\[0\].*rename\[1\]: .*not REGEX=REPLACEMENT" "m['studies'][0]['rename'][1] = 'abc'"
bad bad-rename-type "'rename' must be a rule" "m['studies'][0]['rename'] = 3"
bad bad-transpose "studies\[2\].*transpose: " "m['studies'][2]['transpose'] = '(x'"
bad bad-no-split "'no_split' must be true or false" "m['studies'][1]['no_split'] = 'yes'"
bad bad-quant "base_quant 'nf5' is not nf4" "m['studies'][3]['base_quant'] = 'nf5'"
finish
