#!/bin/bash
# kohya-ss sd-scripts / LyCORIS / OneTrainer adapter files (one .safetensors, no config):
# (OneTrainer's workspace/save names NAME-save-STEP-EPOCH-EPOCHSTEP too)
# LoRA and LoCon (3x3 down, 1x1 up), LoHa, LoKr, and DoRA's dora_scale in both forms;
# LyCORIS's Tucker forms (lora_mid, hada_t1/t2, lokr_t2) and 4-D lokr_w2;
# ([1, in] column norms, [out, 1] rows), keys matched to a base with diffusers-like UNet
# and text-encoder names; folders of kohya's step and epoch files. Every dM / dD against
# tests/py/kohya.py's independent NumPy merge (|tool - ref| <= 1e-15 + 1e-9 |ref|), the
# method in the HDF5 file and the table, inspect's parameters, and the bad inputs, each
# exit 1 naming the file and the tensor or module.
#
#   tests/sh/kohya.sh     (env: DORA_BIN or BIN, PY or PYTHON; see tests/lib.sh)

set -u
SUITE=kohya
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
. "$ROOT/tests/adapter_lib.sh"
D=$TMP/data
OUT=$TMP/out
mkdir -p "$OUT"

generate kohya.py gen "$D" --seed 7

# check LABEL CHECKER_ARGS... : the reference checker
check() { checked kohya.py "$@"; }

# has LABEL FILE TEXT... : every TEXT in FILE
has() {
    local label=$1 file=$2 t
    shift 2
    for t in "$@"; do
        if ! grep -qF -- "$t" "$file"; then
            fail "$label" "no '$t' in: $(peek "$file")"
            return
        fi
    done
    pass "$label"
}

RUNS="lora,dcol,depoch,onet,drow,loha,lokr,tucker,tuckd,lohat,lokrt,lokr4,full,ia3,glora,oft,single,single25"
if writes_ok all "$OUT/all.h5" analyze -j 2 --base "$D/base" lora="$D/lora" dcol="$D/dcol" depoch="$D/depoch" onet="$D/onet" \
    drow="$D/drow.safetensors" loha="$D/loha.safetensors" lokr="$D/lokr.safetensors" \
    tucker="$D/tucker.safetensors" tuckd="$D/tuckd.safetensors" lohat="$D/lohat.safetensors" \
    lokrt="$D/lokrt.safetensors" lokr4="$D/lokr4.safetensors" full="$D/full.safetensors" ia3="$D/ia3.safetensors" \
    glora="$D/glora.safetensors" oft="$D/oft.safetensors" single="$D/single" single25="$D/single25"; then
    check all check --data "$D" --h5 "$OUT/all.h5" --runs "$RUNS"
    want="dora ft glora ia3 loha lokr lora oft"
    got=$(cut -f2 "$LOG/all.out" | tail -n +2 | LC_ALL=C sort -u | tr '\n' ' ' | sed 's/ $//')
    if [ "$got" = "$want" ]; then
        pass table-method
    else
        fail table-method "methods in the table: '$got', expected '$want'"
    fi
    # the folders' steps: kohya's ss_steps metadata (its last save NAME.safetensors too);
    # without it, a -E file's epoch (noted), and a last save left out (noted)
    has notes "$LOG/all.err" "epoch E taken as the step" "depoch/e.safetensors': left out" \
        "mylora.safetensors': no step in its name: step 25" \
        "single/mylora.safetensors': the folder's one kohya file, no step in its name or its metadata (ss_steps): a run of one step, taken as step 0" \
        "single25/last.safetensors': the folder's one kohya file, no step in its name: a run of one step, step 25 from its metadata"
    "$PY" - "$OUT/all.h5" >"$LOG/steps.out" 2>&1 <<'PY'
import sys, h5py
h = h5py.File(sys.argv[1], "r")
print([[int(x) for x in h["runs"][r]["steps"][()]] for r in ("lora", "dcol", "depoch", "onet", "drow", "single", "single25")])
PY
    has steps "$LOG/steps.out" "[[10, 20, 25], [15, 30], [1, 3], [40, 120], [0], [0], [25]]"
fi

# one file alone, with one thread, gives the same numbers
writes_ok alone "$OUT/drow.h5" analyze -q -j 1 --base "$D/base" drow="$D/drow.safetensors" &&
    check alone check --data "$D" --h5 "$OUT/drow.h5" --runs drow

# inspect shows the file's parameters and conventions
run inspect "$BIN" inspect "$D/drow.safetensors"
if [ $RC -eq 0 ]; then
    has inspect "$LOG/inspect.out" "format kohya" "method dora" "lora_te_ 1" "lora_unet_ 3" \
        "0 [1, in] (column norms), 4 [out, 1]" "kohya-conv"
else
    fail inspect "exit $RC: $(peek "$LOG/inspect.err")"
fi
run inspect-lokr "$BIN" inspect "$D/lokr.safetensors"
[ $RC -eq 0 ] && has inspect-lokr "$LOG/inspect-lokr.out" "method lokr" "lokr	24	10000	1	[24, 24]"

# LyCORIS's Tucker forms and 4-D LoKr: the layout, r, alpha and scale per module
# (a LoKr with both sides full: scale 1 whatever alpha says)
run inspect-tucker "$BIN" inspect "$D/tucker.safetensors"
[ $RC -eq 0 ] && has inspect-tucker "$LOG/inspect-tucker.out" "1 conv(s)" "kohya-tucker	4	2	0.5	[16, 4] x [4, 72]"
run inspect-lohat "$BIN" inspect "$D/lohat.safetensors"
[ $RC -eq 0 ] && has inspect-lohat "$LOG/inspect-lohat.out" "loha-tucker	9	1.5	0.5	[16, 9] x [9, 72]"
run inspect-lokrt "$BIN" inspect "$D/lokrt.safetensors"
[ $RC -eq 0 ] && has inspect-lokrt "$LOG/inspect-lokrt.out" "lokr-tucker	4	3	1.5	[16, 4] x [4, 72]"
run inspect-lokr4 "$BIN" inspect "$D/lokr4.safetensors"
[ $RC -eq 0 ] && has inspect-lokr4 "$LOG/inspect-lokr4.out" "2 conv(s)" "lokr-conv	8	7	1	[16, 8] x [8, 72]" \
    "lokr-conv	2	0.5	0.5	[16, 2] x [2, 8]"

# LyCORIS's full and OFT modules are formed against the base: inspect names them
run inspect-oft "$BIN" inspect "$D/oft.safetensors"
[ $RC -eq 0 ] && has inspect-oft "$LOG/inspect-oft.out" "method oft" "	oft	-	-	-	F32 [8, 4, 4]"
run inspect-full "$BIN" inspect "$D/full.safetensors"
[ $RC -eq 0 ] && has inspect-full "$LOG/inspect-full.out" "method ft" "	full	-	-	-	F32 [16, 8, 3, 3]"
run inspect-glora "$BIN" inspect "$D/glora.safetensors"
[ $RC -eq 0 ] && has inspect-glora "$LOG/inspect-glora.out" "method glora" "	glora	6	6	2	[32, 6] x [6, 24]"

# spectrum reads them too
writes_ok spectrum "$OUT/spec.h5" spectrum -q --base "$D/base" lora="$D/lora" && pass spectrum-reads

while IFS=$'\t' read -r c base wants; do
    in=$D/bad/$c.safetensors
    [ -d "$D/bad/$c" ] && in=$D/bad/$c
    refused "bad-$c" "$wants" --base "$D/$base" "x=$in"
done <"$D/bad/cases.tsv"
finish
