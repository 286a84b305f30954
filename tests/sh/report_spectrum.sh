#!/bin/bash
# report_spectrum: `report --spectrum SPEC.h5` adds the spectral summary of a results file of
# `spectrum` to the page: its tables hold the numbers of the file, recomputed by
# tests/py/check_report_spectrum.py with h5py and NumPy (with and without the base, with and
# without --compare). The spectrum file is input like any other: a file that is not one, or
# whose datasets have the wrong shape or impossible values, is refused naming the file and the
# dataset, and no page is written; the page never replaces it. Headless Chromium (when
# installed) finds the tables in the DOM.
set -u
SUITE=report_spectrum
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$TMP" || exit 1
D=$ROOT/data/demo

run analyze "$BIN" analyze -q --base "$D/base" -o study.h5 ft="$D/ft" lora="$D/lora" dora="$D/dora"
[ $RC -eq 0 ] && pass analyze || fail analyze "exit $RC: $(peek "$LOG/analyze.err")"
run spectrum "$BIN" spectrum -q --base "$D/base" --compare -o spec.h5 ft="$D/ft" lora="$D/lora" dora="$D/dora"
[ $RC -eq 0 ] && pass spectrum || fail spectrum "exit $RC: $(peek "$LOG/spectrum.err")"
run spectrum-nobase "$BIN" spectrum -q -o spec-nobase.h5 lora="$D/lora"
[ $RC -eq 0 ] && pass spectrum-nobase || fail spectrum-nobase "exit $RC: $(peek "$LOG/spectrum-nobase.err")"

checked() { # LABEL SPEC PAGE: the page's tables against the file
    "$PY" "$TP/check_report_spectrum.py" "$2" "$3" >"$LOG/$1.out" 2>&1
    sed "s|report_spectrum/|report_spectrum/$1/|" "$LOG/$1.out" | grep -E '^(PASS|FAIL) '
    NPASS=$((NPASS + $(grep -c '^PASS ' "$LOG/$1.out")))
    NFAIL=$((NFAIL + $(grep -c '^FAIL ' "$LOG/$1.out")))
    grep -q '^PASS report_spectrum/row-count' "$LOG/$1.out" || fail "$1-ran" "$(tail -3 "$LOG/$1.out")"
}
run write "$BIN" report study.h5 --spectrum spec.h5 -o report.html
[ $RC -eq 0 ] && [ -s report.html ] && pass write || fail write "exit $RC: $(peek "$LOG/write.err")"
checked base spec.h5 report.html
grep -q 'href="#spectrum"' report.html && pass contents-link || fail contents-link "no link to the section"
run write-nobase "$BIN" report study.h5 --spectrum spec-nobase.h5 -o nobase.html
[ $RC -eq 0 ] && pass write-nobase || fail write-nobase "exit $RC: $(peek "$LOG/write-nobase.err")"
checked nobase spec-nobase.h5 nobase.html
run plain "$BIN" report study.h5 -o plain.html
[ $RC -eq 0 ] && ! grep -q 'id="spectrum"' plain.html && pass no-section-without-option \
    || fail no-section-without-option "exit $RC, or a spectrum section without --spectrum"

# -- the spectrum file is input
expect() { # LABEL WANT-EXIT WANT-IN-MESSAGE ARGS...
    local label=$1 want=$2 msg=$3
    shift 3
    rm -f bad.html
    run "$label" "$BIN" report "$@"
    if [ $RC -ne "$want" ]; then
        fail "$label" "exit $RC, expected $want: $(peek "$LOG/$label.err")"
    elif ! grep -qF -- "$msg" "$LOG/$label.err"; then
        fail "$label" "message lacks '$msg': $(peek "$LOG/$label.err")"
    elif [ -e bad.html ]; then
        fail "$label" "bad.html written"
    else
        pass "$label"
    fi
}
spoil() { # NAME PYTHON: a copy of spec.h5 as NAME.h5, changed by PYTHON (f is the file)
    cp spec.h5 "$1.h5"
    "$PY" -c "import h5py, numpy as np
f = h5py.File('$1.h5', 'r+')
$2
f.close()" || fail "spoil-$1" "h5py failed"
}
expect analyze-file 1 "not a results file of \`dora-analyze spectrum\`" study.h5 --spectrum study.h5 -o bad.html
expect missing 1 "nothere.h5" study.h5 --spectrum nothere.h5 -o bad.html
spoil phi 'f["runs/ft/phi_prev"][1, 0] = 5.0'
expect phi-range 1 "/runs/ft/phi_prev" study.h5 --spectrum phi.h5 -o bad.html
spoil nan 'f["runs/lora/stable_rank"][0, 0] = np.nan'
expect nan 1 "/runs/lora/stable_rank" study.h5 --spectrum nan.h5 -o bad.html
spoil shape 'del f["runs/dora/r90"]; f["runs/dora/r90"] = np.zeros((3, 2), dtype="i8")'
expect shape 1 "/runs/dora/r90' does not have the shape" study.h5 --spectrum shape.h5 -o bad.html
spoil r90 'f["runs/ft/r90"][0, 0] = 10**9'
expect r90-range 1 "r90 or intruders" study.h5 --spectrum r90.h5 -o bad.html
spoil pairs 'f["runs/ft/phi_pairs"][0, 0] = 99'
expect pairs 1 "phi_pairs" study.h5 --spectrum pairs.h5 -o bad.html
spoil cmp 'g = f["compare"]; a = list(g)[0]; b = list(g[a])[0]; g[a][b].attrs["run_a"] = "nobody"'
expect compare-run 1 "run_a and run_b" study.h5 --spectrum cmp.h5 -o bad.html
spoil update 'del f["runs/lora/update"]; f["runs/lora/update"] = ["weird"] * 12'
expect update 1 "/runs/lora/update" study.h5 --spectrum update.h5 -o bad.html
spoil layout 'f.attrs["layout_version"] = np.int32(7)'
expect layout 1 "layout_version 7" study.h5 --spectrum layout.h5 -o bad.html
cp spec.h5 spec.copy
expect refuse-spectrum-as-output 2 "it is the input" study.h5 --spectrum spec.h5 -o spec.h5 --force
cmp -s spec.h5 spec.copy && pass spectrum-untouched || fail spectrum-untouched "spec.h5 changed"
expect usage-needs-value 2 "needs a value" study.h5 -o bad.html --spectrum
expect usage-twice 2 "spectrum" study.h5 -o bad.html --spectrum spec.h5 --spectrum spec.h5

# -- in a browser
CHROME=${CHROMIUM-$(command -v chromium || command -v chromium-browser || true)}
if [ -z "$CHROME" ]; then
    if [ -n "${CI:-}" ]; then
        fail chromium "chromium is not installed (tools/deps.sh installs it) and CI is set"
    else
        echo "SKIP report_spectrum/chromium: chromium is not installed (apt-get install chromium)"
    fi
else
    timeout -k 5 90 "$CHROME" --headless --no-sandbox --disable-gpu --no-first-run \
        --user-data-dir="$TMP/chrome-profile" --host-resolver-rules="MAP * ~NOTFOUND" \
        --dump-dom "file://$TMP/report.html" >"$LOG/dom.out" 2>"$LOG/dom.err"
    n=$(grep -c '<table class="spectrum' "$LOG/dom.out")
    [ "$n" -eq 2 ] && pass chromium-dom || fail chromium-dom "$n spectrum tables in the DOM"
fi
finish
