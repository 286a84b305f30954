# tests/adapter_lib.sh - what tests/sh/quant.sh and tests/sh/families.sh share; sourced after
# tests/lib.sh (which sets BIN, PY, TP, LOG and the PASS/FAIL helpers). Not a suite itself.

# generate DIR SCRIPT ARGS... : the binary must exist and `$PY $TP/SCRIPT ARGS` must make the
# data in DIR; else FAIL and finish
generate() {
    if [ ! -x "$BIN" ]; then
        fail binary "$BIN not found or not executable (run make)"
        finish
    fi
    local script=$1
    shift
    if "$PY" "$TP/$script" "$@" >"$LOG/gen.out" 2>&1; then
        pass generate
    else
        fail generate "$(peek "$LOG/gen.out")"
        finish
    fi
}

# checked SCRIPT LABEL CHECKER_ARGS... : `$PY $TP/SCRIPT CHECKER_ARGS` (a reference checker)
# must exit 0; its last line is shown
checked() {
    local script=$1 label=$2
    shift 2
    if "$PY" "$TP/$script" "$@" >"$LOG/$label.check" 2>&1; then
        pass "$label"
        tail -1 "$LOG/$label.check" | sed "s/^/    $label: /"
    else
        fail "$label" "$(grep -m3 -E '^FAIL|Error' "$LOG/$label.check" | tr '\n' ' ')"
    fi
}

# refused_by CMD LABEL WANTS ARGS... : `CMD -q -o $OUT/LABEL.h5 ARGS` must exit 1 with every
# '|'-separated substring of WANTS on stderr, and leave no output
refused_by() {
    local cmd=$1 label=$2 wants=$3
    shift 3
    rm -f "$OUT/$label.h5"
    run "$label" "$BIN" "$cmd" -q -o "$OUT/$label.h5" "$@"
    crashed "$label" && return
    if [ $RC -ne 1 ]; then
        fail "$label" "exit $RC, expected 1: $(peek "$LOG/$label.err")"
        return
    fi
    local IFS='|' w
    for w in $wants; do
        if ! grep -qF -- "$w" "$LOG/$label.err"; then
            fail "$label" "message lacks '$w': $(peek "$LOG/$label.err")"
            return
        fi
    done
    if [ -n "$(leftovers "$OUT/$label.h5")" ]; then
        fail "$label" "left $(leftovers "$OUT/$label.h5")"
    else
        pass "$label"
    fi
}

# refused LABEL WANTS ARGS... : refused_by analyze
refused() {
    refused_by analyze "$@"
}
