#!/bin/bash
# report: `dora-analyze report` writes one self-contained HTML page whose numbers are the
# file's (tests/py/check_report.py against h5py and NumPy), with every text from the file
# escaped; headless Chromium loads it without a console error or a network request, its
# DOM holds the figures and tables, and it takes a screenshot (kept when REPORT_SHOT names
# a file). The page is written like every output: never over its input, not over a file
# that is not a report without --force, never half-written. Without Chromium the browser
# checks SKIP, unless CI is set: then they FAIL.
set -u
SUITE=report
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$TMP" || exit 1

# a 6 runs x 20 steps x 32 layers study; one run's name and one source path hold <, &, quotes
"$PY" "$TP/gen_big_study.py" study.h5 && "$PY" - <<'PY' || fail gen "generator failed"
import h5py
with h5py.File("study.h5", "r+") as f:
    f["runs"].move("lora-1", "<i>lo&ra\"1'&amp;")
PY

run write "$BIN" report study.h5 -o report.html
if ! crashed write; then
    [ $RC -eq 0 ] && [ -s report.html ] && pass write || fail write "exit $RC: $(peek "$LOG/write.err")"
fi
"$PY" "$TP/check_report.py" study.h5 report.html >"$LOG/check.out" 2>&1
grep -E '^(PASS|FAIL) ' "$LOG/check.out"
NPASS=$((NPASS + $(grep -c '^PASS ' "$LOG/check.out")))
NFAIL=$((NFAIL + $(grep -c '^FAIL ' "$LOG/check.out")))
grep -q '^PASS report/figures' "$LOG/check.out" || fail check-ran "$(tail -3 "$LOG/check.out")"

# -- headless Chromium: load, console, DOM, screenshot
# CHROMIUM names the browser (set empty: as if it were not installed)
CHROME=${CHROMIUM-$(command -v chromium || command -v chromium-browser || true)}
chrome() { # LABEL PAGE ARGS... : Chromium on PAGE, no network, a private profile
    local label=$1 page=$2
    shift 2
    timeout -k 5 90 "$CHROME" --headless --no-sandbox --disable-gpu --no-first-run \
        --user-data-dir="$TMP/chrome-profile" --host-resolver-rules="MAP * ~NOTFOUND" \
        --enable-logging=stderr --v=0 "$@" "file://$TMP/$page" \
        >"$LOG/$label.out" 2>"$LOG/$label.err"
    RC=$?
}
if [ -z "$CHROME" ]; then
    if [ -n "${CI:-}" ]; then
        fail chromium "chromium is not installed (tools/deps.sh installs it) and CI is set"
    else
        echo "SKIP report/chromium: chromium is not installed (apt-get install chromium)"
    fi
else
    # the console check sees an error: a page that logs one
    echo '<!DOCTYPE html><title>t</title><script>console.error("boom")</script>' >console.html
    chrome console console.html --dump-dom
    grep -q 'CONSOLE.*boom' "$LOG/console.err" && pass console-check-works \
        || fail console-check-works "no CONSOLE line for console.error: $(grep -v dbus "$LOG/console.err" | tail -2)"
    chrome dom report.html --dump-dom
    if [ $RC -ne 0 ]; then
        fail chromium-load "exit $RC: $(grep -v dbus "$LOG/dom.err" | tail -2)"
    else
        pass chromium-load
        # console messages (and failed loads) are logged as CONSOLE lines
        errs=$(grep -E 'CONSOLE|ERR_NAME_NOT_RESOLVED|Failed to load' "$LOG/dom.err" | head -3)
        [ -z "$errs" ] && pass console-clean || fail console-clean "$errs"
        "$PY" - "$LOG/dom.out" <<'PY' && pass dom || fail dom "$(cat "$LOG/dom.py" 2>/dev/null)"
import re, sys
dom = open(sys.argv[1], encoding="utf-8").read()
svgs = len(re.findall(r"<svg[\s>]", dom))
tables = re.findall(r'<table class="([a-z]+)"', dom)
# two module kinds: 3 figures and a per-layer table each, beside the runs and the regression
ok = svgs == 6 and tables.count("layers") == 2 and "runs" in tables and "regression" in tables
ok = ok and "<i>" not in dom and "&lt;i&gt;lo&amp;ra" in dom
print(f"{svgs} svg, tables {tables}", file=open(sys.argv[1] + ".py", "w"))
sys.exit(0 if ok else 1)
PY
        cp "$LOG/dom.out.py" "$LOG/dom.py" 2>/dev/null
    fi
    chrome shot report.html --screenshot="$TMP/report.png" --window-size=1400,2400 --hide-scrollbars
    size=$(stat -c %s "$TMP/report.png" 2>/dev/null || echo 0)
    [ $RC -eq 0 ] && [ "$size" -gt 50000 ] && pass screenshot || fail screenshot "exit $RC, $size bytes"
    [ -n "${REPORT_SHOT:-}" ] && cp "$TMP/report.png" "$REPORT_SHOT"
fi

# -- outputs: never the input, never a foreign file without --force, never half-written
expect() { # LABEL WANT-EXIT ARGS...
    local label=$1 want=$2
    shift 2
    run "$label" env ${NOPATH:+PATH=/nonexistent} "$BIN" report "$@"
    crashed "$label" && return
    [ $RC -eq "$want" ] && pass "$label" || fail "$label" "exit $RC, expected $want: $(peek "$LOG/$label.err")"
}
cp study.h5 copy.h5
expect refuse-input 2 study.h5 -o study.h5
cmp -s study.h5 copy.h5 && pass input-untouched || fail input-untouched "study.h5 changed"
ln -s study.h5 link.h5
expect refuse-input-link 2 study.h5 -o link.h5 --force
echo "notes" >notes.html
expect refuse-foreign 2 study.h5 -o notes.html
[ "$(cat notes.html)" = notes ] && pass foreign-untouched || fail foreign-untouched "notes.html changed"
expect force 0 study.h5 -o notes.html --force
expect own-report 0 study.h5 -o report.html --modules v_proj
grep -c '<svg' report.html | grep -qx 3 && pass modules || fail modules "$(grep -c '<svg' report.html) svg"
expect not-hdf5 1 notes.html -o bad.html
expect no-kind 1 study.h5 -o bad.html --modules k_proj
NOPATH=1 expect no-gnuplot 1 study.h5 -o bad.html
grep -q gnuplot "$LOG/no-gnuplot.err" && pass no-gnuplot-message || fail no-gnuplot-message "$(peek "$LOG/no-gnuplot.err")"
[ ! -e bad.html ] && pass no-partial || fail no-partial "bad.html written"
left=$(ls -a | grep -E 'tmp' | head -2)
[ -z "$left" ] && pass no-temp-files || fail no-temp-files "$left"
expect usage-no-output 2 study.h5
expect usage-two-inputs 2 study.h5 study.h5 -o x.html
expect usage-unknown 2 study.h5 -o x.html --bogus
expect help 0 --help
finish
