# tests/suite_gen.sh - sourced by tests/sh/{layouts,fused,hub}.sh after lib.sh.
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
