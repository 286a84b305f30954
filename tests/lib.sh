# tests/lib.sh - what the test scripts in tests/sh/ share. Sourced, not run (tests/run_all.sh
# runs every tests/sh/*.sh): set SUITE, then `. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"`.
#
# Sets ROOT (the checkout), BIN (DORA_BIN, else BIN as tests/run_all.sh exports it, else
# bin/dora-analyze; made absolute), PY (PY, else PYTHON, else /usr/bin/python3), REALDATA
# (default ../shared/realdata beside the checkout), TP (tests/py), TMP (a fresh folder,
# removed on exit) and LOG (TMP/log), and the PASS/FAIL helpers below.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${DORA_BIN:-${BIN:-$ROOT/bin/dora-analyze}}
case $BIN in /*) ;; *) BIN=$ROOT/$BIN ;; esac
PY=${PY:-${PYTHON:-/usr/bin/python3}}
REALDATA=${REALDATA:-$ROOT/../shared/realdata}
TP=$ROOT/tests/py
TMP=$(mktemp -d "${TMPDIR:-/tmp}/dora-$SUITE.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
LOG=$TMP/log
mkdir -p "$LOG"
NPASS=0
NFAIL=0

pass() { echo "PASS $SUITE/$1"; NPASS=$((NPASS + 1)); }
fail() { echo "FAIL $SUITE/$1: $2"; NFAIL=$((NFAIL + 1)); }
# the first bytes of a file, on one line
peek() { head -c "${2:-300}" "$1" | tr '\n\t' '  '; }
# the summary line; exit 1 if anything failed
finish() {
    echo "$SUITE: $NPASS passed, $NFAIL failed"
    [ "$NFAIL" -eq 0 ]
    exit $?
}

# run LABEL CMD... : 60 s timeout; stdout/stderr in $LOG/LABEL.{out,err}; sets RC
run() {
    local label=$1
    shift
    timeout -k 5 60 "$@" >"$LOG/$label.out" 2>"$LOG/$label.err"
    RC=$?
}

# crashed LABEL [NAME] : true (and reports NAME, default LABEL) on a timeout, a signal or a
# sanitizer report in $LOG/LABEL.err
crashed() {
    local shown=${2:-$1}
    if [ $RC -eq 124 ] || [ $RC -eq 137 ]; then
        fail "$shown" "timed out"
        return 0
    fi
    if [ $RC -ge 128 ]; then
        fail "$shown" "killed by signal $((RC - 128)): $(peek "$LOG/$1.err")"
        return 0
    fi
    if grep -qE 'Sanitizer|runtime error:' "$LOG/$1.err"; then
        fail "$shown" "sanitizer report: $(grep -m1 -E 'Sanitizer|runtime error:' "$LOG/$1.err")"
        return 0
    fi
    return 1
}

# leftovers FILE : the output file, or temporary files beside it, that a failed command left
leftovers() {
    local f=$1
    ls -d "$f" "$f".tmp* "$(dirname "$f")"/.*tmp* 2>/dev/null | head -3 | tr '\n' ' '
}

# writes_ok LABEL H5 COMMAND ARGS... : `$BIN COMMAND -o H5 ARGS` must exit 0 and write H5
writes_ok() {
    local label=$1 h5=$2 cmd=$3
    shift 3
    rm -f "$h5"
    run "$label" "$BIN" "$cmd" -o "$h5" "$@"
    crashed "$label" && return 1
    if [ $RC -ne 0 ]; then
        fail "$label" "exit $RC, expected 0: $(peek "$LOG/$label.err")"
        return 1
    fi
    if [ ! -s "$h5" ]; then
        fail "$label" "no output file $h5"
        return 1
    fi
    return 0
}
