#!/bin/bash
# PyTorch zip checkpoints (.bin/.pt/.pth): bin/dora-analyze against torch itself.
#
#   tests/sh/torch.sh     (env: DORA_BIN or BIN = the binary, PY or PYTHON = Debian's
#                          python3 with numpy/h5py/torch, default /usr/bin/python3;
#                          REALDATA = third-party files, default ../shared/realdata
#                          beside the repository)
#
# 1. tests/py/gen_torch.py writes, with the real torch.save, FT runs in bf16/f16/f32/mixed
#    as pytorch_model.bin (Trainer layout, a sharded checkpoint, tied weights) and the same
#    weights as safetensors, LoRA and DoRA adapter runs (adapter_model.bin and .safetensors),
#    files with views/offsets/shared storages/nested dicts, more valid layouts, and hostile
#    files.
# 2. The tool analyses each .bin run and its safetensors twin; tests/py/check_torch.py wants
#    the two HDF5 files and tables bitwise equal and the .bin numbers equal to a float64
#    reference computed with torch.load of the same files (rtol 1e-6), `inspect` listings
#    equal to torch.load's, and views analysed against contiguous copies exactly 0.
# 3. Every hostile file, as a run, as --base and with `inspect`: exit status exactly 1, the
#    message names the file and what is wrong, no output file, no signal, and nothing the
#    pickle asks for is ever run (marker files).
# 4. Third-party torch files of REALDATA: `inspect` must list what torch.load finds; PEFT
#    regression adapter folders: lora_*, ia3_* and adalora_* read.
# Prints `PASS torch/<name>` or `FAIL torch/<name>: <why>`; exits 1 on any FAIL.

set -u
SUITE=torch
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
D=$TMP/data
O=$TMP/out
mkdir -p "$O/inspect"

# ok LABEL CMD... : must exit 0 (no PASS line: the checker judges the content)
ok() {
    local label=$1
    shift
    run "$label" "$@"
    crashed "$label" && return 1
    if [ $RC -ne 0 ]; then
        fail "$label" "exit $RC, expected 0: $(peek "$LOG/$label.err")"
        return 1
    fi
    return 0
}

if [ ! -x "$BIN" ]; then
    fail binary "$BIN not found or not executable (run make)"
    finish
fi

# ---------------------------------------------------------------- generate
if run gen "$PY" "$TP/gen_torch.py" "$D" && [ $RC -eq 0 ]; then
    pass generate
else
    fail generate "$(peek "$LOG/gen.err" 600)"
    finish
fi
# /tmp/PWNED_FILE may belong to someone else: only judge it if it is not there now
PRE_TMP_MARKER=0
[ -e /tmp/PWNED_FILE ] && PRE_TMP_MARKER=1

# ---------------------------------------------------------------- FT runs: .bin and safetensors
for v in bf16 f16 f32 mixed; do
    for f in bin st; do
        r=$D/$v/$f
        if [ $f = bin ]; then c10=$r/ft/checkpoint-10/pytorch_model.bin; else c10=$r/ft/checkpoint-10/model.safetensors; fi
        base=$r/base
        # f16: the base given as a file
        if [ $v = f16 ]; then
            if [ $f = bin ]; then base=$r/base/pytorch_model.bin; else base=$r/base/model.safetensors; fi
        fi
        ok "analyze-$v-$f" "$BIN" analyze -j 2 --base "$base" -o "$O/$v.$f.h5" \
            "ft=$r/ft" "ck10=$c10" "ck20=$r/ft/checkpoint-20"
        cp "$LOG/analyze-$v-$f.out" "$O/$v.$f.tsv"
    done
done

# ---------------------------------------------------------------- adapter runs
ok analyze-adapters-bin "$BIN" analyze --base "$D/f32/bin/base" -o "$O/adapters.bin.h5" \
    "lora=$D/lora/bin/run" "dora=$D/dora/bin/run"
cp "$LOG/analyze-adapters-bin.out" "$O/adapters.bin.tsv"
ok analyze-adapters-st "$BIN" analyze --base "$D/f32/st/base" -o "$O/adapters.st.h5" \
    "lora=$D/lora/st/run" "dora=$D/dora/st/run"
cp "$LOG/analyze-adapters-st.out" "$O/adapters.st.tsv"

# ---------------------------------------------------------------- tricky tensors
for n in tricky nested_state_dict views; do
    ok "inspect-$n-run" "$BIN" inspect "$D/tricky/$n.pt" &&
        cp "$LOG/inspect-$n-run.out" "$O/inspect/$n.tsv"
done
ok views-run "$BIN" analyze --per-row --base "$D/tricky/views_base.safetensors" \
    -o "$O/views.h5" "views=$D/tricky/views.pt"
ok views-rev-run "$BIN" analyze --per-row --base "$D/tricky/views.pt" \
    -o "$O/views_rev.h5" "rev=$D/tricky/views_base.safetensors"

# ---------------------------------------------------------------- more valid files
while IFS=$'\t' read -r name path ref _exp; do
    ok "valid-$name-inspect-run" "$BIN" inspect "$path" &&
        cp "$LOG/valid-$name-inspect-run.out" "$O/inspect/valid-$name.tsv"
    if [ "$ref" != "-" ]; then
        ok "valid-$name-values-run" "$BIN" analyze --per-row --base "$ref" \
            -o "$O/valid-$name.h5" "x=$path"
    fi
done <"$D/valid/list.tsv"

# ---------------------------------------------------------------- real third-party files
: >"$O/real.list"
if [ -d "$REALDATA" ]; then
    i=0
    for p in "$REALDATA"/torchtune/tests/assets/*.pt \
        "$REALDATA"/peft/tests/regression/*/0.6.1/adapter_model.bin \
        "$REALDATA"/peft/tests/regression/*/0.6.1/output.pt \
        "$REALDATA"/fms-hf-tuning/tests/artifacts/*/pytorch_model_fsdp.bin; do
        [ -f "$p" ] || continue
        i=$((i + 1))
        label=$(echo "${p#"$REALDATA"/}" | sed 's#/tests/regression/#/#; s#/tests/artifacts/#/#; s#/tests/assets/#/#; s#/0\.6\.1/#/#; s#/#:#g')
        run "real-$i" "$BIN" inspect "$p"
        crashed "real-$i" "real-$label" && continue
        printf '%s\t%s\t%s\t%s\n' "$label" "$p" "$LOG/real-$i.out" "$RC" >>"$O/real.list"
    done
    [ $i -gt 0 ] || fail realdata "no torch files found under $REALDATA"
    # PEFT regression adapter folders: LoRA, IA3 and AdaLoRA read
    for dir in "$REALDATA"/peft/tests/regression/*/0.6.1; do
        [ -f "$dir/adapter_config.json" ] || continue
        kind=$(basename "$(dirname "$dir")")
        label="real-folder-$kind"
        run "$label" "$BIN" inspect "$dir/"
        crashed "$label" && continue
        ptype=$(sed -n 's/.*"peft_type": *"\([A-Za-z0-9_]*\)".*/\1/p' "$dir/adapter_config.json" | head -1)
        case $kind in
        lora_*)
            if [ $RC -eq 0 ] && grep -q "peft_type LORA" "$LOG/$label.out"; then
                pass "$label"
            else
                fail "$label" "exit $RC, expected 0 and a LORA adapter: $(peek "$LOG/$label.err")"
            fi
            ;;
        ia3_* | adalora_*) # read since issue #17 (tests/sh/families.sh checks their numbers)
            if [ $RC -eq 0 ] && grep -qF "peft_type $ptype" "$LOG/$label.out"; then
                pass "$label"
            else
                fail "$label" "exit $RC, expected 0 and a $ptype adapter: $(peek "$LOG/$label.err")"
            fi
            ;;
        esac
    done
else
    # CI lays shared/ beside the clone, so there its absence is a failure
    if [ -n "${CI:-}" ]; then fail realdata "$REALDATA not found (set REALDATA)"
    else echo "SKIP torch/realdata: $REALDATA not found (set REALDATA)"; fi
fi

# ---------------------------------------------------------------- compare with torch
run check "$PY" "$TP/check_torch.py" --data "$D" --out "$O" --real "$O/real.list"
cat "$LOG/check.out"
NPASS=$((NPASS + $(grep -c '^PASS ' "$LOG/check.out")))
NFAIL=$((NFAIL + $(grep -c '^FAIL ' "$LOG/check.out")))
if [ $RC -ne 0 ] && ! grep -q '^FAIL ' "$LOG/check.out"; then
    fail check_torch "exit $RC without a FAIL line: $(tail -c 600 "$LOG/check.err" | tr '\n' ' ')"
fi

# ---------------------------------------------------------------- hostile files
ctl=$D/hostile/good_control.pt
run hostile-control "$BIN" analyze --base "$ctl" -o "$O/ctl.h5" "c=$ctl"
if ! crashed hostile-control; then
    if [ $RC -eq 0 ] && [ -s "$O/ctl.h5" ]; then pass hostile-control; else
        fail hostile-control "the unmodified file is refused: $(peek "$LOG/hostile-control.err")"
    fi
fi

# refused LABEL PATH REGEX OUTFILE : exit 1, message names PATH's file and, once the
# paths are taken out of it, matches REGEX (case-insensitive); no OUTFILE left
refused() {
    local label=$1 path=$2 re=$3 outf=$4
    local name=${path##*/}
    crashed "$label" && return
    local why="" msg
    msg=$(cat "$LOG/$label.err")
    msg=${msg//"$path"/}
    msg=${msg//"$ctl"/}
    [ $RC -eq 1 ] || why="exit $RC, expected 1"
    grep -qF -- "$name" "$LOG/$label.err" || why="${why:+$why; }message does not name $name"
    printf '%s' "$msg" | grep -qEi -- "$re" || why="${why:+$why; }message does not match /$re/"
    if [ -n "$outf" ]; then
        local left
        left=$(ls -d "$outf" "$outf".tmp* 2>/dev/null | head -2 | tr '\n' ' ')
        [ -z "$left" ] || why="${why:+$why; }left $left"
    elif grep -qv '^#' "$LOG/$label.out"; then
        why="${why:+$why; }tensors listed on stdout"
    fi
    if [ -e "$D/PWNED_FILE" ] || { [ $PRE_TMP_MARKER -eq 0 ] && [ -e /tmp/PWNED_FILE ]; }; then
        why="${why:+$why; }THE PICKLE'S COMMAND RAN (marker file written)"
    fi
    if [ -z "$why" ]; then pass "$label"; else fail "$label" "$why: $(peek "$LOG/$label.err")"; fi
}

NH=0
while IFS=$'\t' read -r name path re; do
    NH=$((NH + 1))
    h5=$O/h-$name.h5
    run "hostile-$name-run" "$BIN" analyze --base "$ctl" -o "$h5" "h=$path"
    refused "hostile-$name-run" "$path" "$re" "$h5"
    run "hostile-$name-base" "$BIN" analyze --base "$path" -o "$h5" "c=$ctl"
    refused "hostile-$name-base" "$path" "$re" "$h5"
    run "hostile-$name-inspect" "$BIN" inspect "$path"
    refused "hostile-$name-inspect" "$path" "$re" ""
done <"$D/hostile/cases.tsv"
if [ $NH -lt 40 ]; then fail hostile-cases "only $NH hostile cases listed"; fi
if [ -e "$D/PWNED_FILE" ] || { [ $PRE_TMP_MARKER -eq 0 ] && [ -e /tmp/PWNED_FILE ]; }; then
    fail no-code-executed "a marker file was written: a pickle's command ran"
else
    pass no-code-executed
fi

finish
