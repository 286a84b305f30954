# tests/suite_gen.sh - sourced by tests/sh/{layouts,fused,hub,spectrum_layouts,batch_layouts}.sh
# after lib.sh.
#
# gen_data GEN.py: the binary must be there; then tests/py/GEN.py writes the fixtures into $D
# (torch.save of many files: a loaded machine may need more than run's 60 s, so 300 s).
gen_data() {
    if [ ! -x "$BIN" ]; then
        fail binary "$BIN not found or not executable (run make)"
        finish
    fi
    if timeout -k 5 300 "$PY" "$TP/$1" "$D" >"$LOG/gen.out" 2>"$LOG/gen.err"; then
        pass generate
    else
        fail generate "exit $?: $(peek "$LOG/gen.err" 600)"
        finish
    fi
}

# gen_layouts_fused: both fixture sets, gen_layouts.py into $L and gen_fused.py into $F (D ends
# as $F).
gen_layouts_fused() {
    D=$TMP/layouts
    gen_data gen_layouts.py
    L=$D
    D=$TMP/fused
    gen_data gen_fused.py
    F=$D
}
