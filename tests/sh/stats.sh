#!/bin/bash
# stats: the uncertainty of the regressions (issue #20). Fisher intervals and Spearman's
# rho against SciPy, the layer bootstrap against NumPy (tests/py/ref_stats.py), in the
# HDF5 file and in plot's table, on generated studies, the demo and edge shapes (NaN only
# beside a flag 0, null / NA in the tables); reproducible under the seed; --bootstrap B in
# analyze, plot, report and batch; the intervals in the Fig. 2 panels and the report; the CPU
# cost at B = 10000.
# One PASS/FAIL line per check; exit 1 if any failed.
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${BIN:-$top/bin/dora-analyze}
case "$BIN" in /*) ;; *) BIN="$top/$BIN" ;; esac
PYTHON=${PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
pass() { echo "PASS stats/$1"; }
fail() { echo "FAIL stats/$1: $2"; fails=$((fails + 1)); }
ref() { # NAME H5 JSON [B]: ref_stats.py prints its own lines, prefixed by NAME here
    "$PYTHON" "$top/tests/py/ref_stats.py" "$2" "$3" ${4:+"$4"} >"$tmp/ref.out" 2>&1
    local rc=$?
    sed "s#^\(PASS\|FAIL\) stats/#\1 stats/$1-#" "$tmp/ref.out" | grep -v '^PASS'
    echo "PASS-COUNT $1: $(grep -c '^PASS' "$tmp/ref.out")"
    [ "$rc" -eq 0 ] && pass "$1" || fail "$1" "ref_stats.py failed (exit $rc)"
}
"$PYTHON" -c "import scipy" 2>/dev/null || { fail scipy "python3-scipy is missing (tools/deps.sh)"; exit 1; }
cd "$tmp" || exit 1

# ---- a generated study and the demo: file and table against SciPy / NumPy
"$PYTHON" "$top/tests/py/gen_small_study.py" small >/dev/null || { fail gen "generator failed"; exit 1; }
(cd small && "$BIN" analyze -q --base base.safetensors -o ../small.h5 ft=ft lora=lora dora=dora \
    >/dev/null) 2>"$tmp/err" && pass analyze-small || fail analyze-small "$(cat "$tmp/err")"
"$BIN" plot small.h5 --stats=json --no-figures >small.json 2>"$tmp/err" || fail plot-small "$(cat "$tmp/err")"
ref small small.h5 small.json

demo=$top/data/demo
"$BIN" analyze -q --base "$demo/base" -o demo.h5 ft="$demo/ft" lora="$demo/lora" dora="$demo/dora" \
    >/dev/null 2>"$tmp/err" && pass analyze-demo || fail analyze-demo "$(cat "$tmp/err")"
"$BIN" plot demo.h5 --stats=json --no-figures >demo.json 2>"$tmp/err" || fail plot-demo "$(cat "$tmp/err")"
ref demo demo.h5 demo.json

# ---- another B: analyze and plot both take it, and the reference follows
"$BIN" analyze -q --bootstrap 2000 --base "$demo/base" -o demo2k.h5 lora="$demo/lora" \
    dora="$demo/dora" >/dev/null 2>"$tmp/err" && pass analyze-bootstrap || fail analyze-bootstrap "$(cat "$tmp/err")"
"$BIN" plot demo2k.h5 --bootstrap 2000 --stats=json --no-figures >demo2k.json 2>"$tmp/err" \
    || fail plot-bootstrap "$(cat "$tmp/err")"
ref demo-b2000 demo2k.h5 demo2k.json 2000
# a row's interval does not depend on the other runs of the file; another B changes it
"$PYTHON" - demo.json demo2k.json <<'EOF' && pass independent-of-runs || fail independent-of-runs "see above"
import json, sys
a = {(r["run"], r["module_kind"]): r for r in json.load(open(sys.argv[1]))}
b = {(r["run"], r["module_kind"]): r for r in json.load(open(sys.argv[2]))}
ok = True
for k, r in b.items():
    if r["bootstrap"] != 2000 or r["pearson_r_ci_fisher"] != a[k]["pearson_r_ci_fisher"] \
            or r["pearson_r_ci_bootstrap"] == a[k]["pearson_r_ci_bootstrap"]:
        print("differs:", k, r, a[k]); ok = False
sys.exit(0 if ok else 1)
EOF

# ---- reproducible: the same data give the same file values and the same table
"$BIN" analyze -q --base "$demo/base" -o demo-again.h5 ft="$demo/ft" lora="$demo/lora" \
    dora="$demo/dora" >/dev/null 2>&1
"$PYTHON" - demo.h5 demo-again.h5 <<'EOF' && pass reproducible-h5 || fail reproducible-h5 "the /regression values differ"
import sys, h5py, numpy as np
a, b = (h5py.File(p, "r")["regression"] for p in sys.argv[1:3])
names = [k for k in a if "ci" in k or "spearman" in k]
sys.exit(0 if len(names) == 8 and all(np.array_equal(a[k][:], b[k][:], equal_nan=True) for k in names) else 1)
EOF
"$BIN" plot demo.h5 --stats --no-figures >t1.tsv 2>/dev/null
"$BIN" plot demo.h5 --stats --no-figures >t2.tsv 2>/dev/null
cmp -s t1.tsv t2.tsv && pass reproducible-table || fail reproducible-table "two runs of plot --stats differ"
head -1 t1.tsv | grep -q $'\twithin_step_r\tpearson_r_ci_fisher_lo\tpearson_r_ci_fisher_hi\tpearson_r_ci_bootstrap_lo\tpearson_r_ci_bootstrap_hi\twithin_step_r_ci_bootstrap_lo\twithin_step_r_ci_bootstrap_hi\tspearman_rho\tdm_over_passive$' \
    && pass tsv-header || fail tsv-header "$(head -1 t1.tsv)"

# ---- edge shapes (runs steps layers): undefined intervals are null / NA, never NaN
for shape in "1 1 1" "1 2 1" "2 1 3" "1 3 2" "2 3 5"; do
    set -- $shape
    "$PYTHON" "$top/tests/py/gen_big_study.py" "e$1$2$3.h5" "$@" 2>/dev/null
    "$BIN" plot "e$1$2$3.h5" --stats=json --no-figures >"e$1$2$3.json" 2>"$tmp/err" \
        || fail "plot-$1x$2x$3" "$(cat "$tmp/err")"
    ref "shape-$1x$2x$3" "e$1$2$3.h5" "e$1$2$3.json"
done
"$BIN" plot e111.h5 --stats --no-figures >e111.tsv 2>/dev/null
awk -F'\t' 'NR > 1 { for (i = 10; i <= 15; i++) if ($i != "NA") bad = 1 } END { exit bad }' e111.tsv \
    && ! grep -qi nan e111.tsv && pass na-tsv || fail na-tsv "$(cat e111.tsv)"
grep -qi nan e111.json && fail null-json "NaN in JSON" || pass null-json
# one layer, written by analyze: NaN with the flag 0 in the file
"$BIN" analyze -q --base "$demo/base" -o one.h5 --modules 'layers\.0\.self_attn\.q_proj' \
    lora="$demo/lora" >/dev/null 2>"$tmp/err" || fail analyze-one "$(cat "$tmp/err")"
"$BIN" plot one.h5 --stats=json --no-figures >one.json 2>/dev/null
ref one-layer one.h5 one.json

# ---- --bootstrap usage errors (exit 2, the option named) in every command that takes it
for cmd in "analyze --base $demo/base -o x.h5 $demo/lora" "plot demo.h5 --stats --no-figures" "report demo.h5 -o x.html" \
    "batch m.json"; do
    for b in 5 abc 2000000; do
        $BIN $cmd --bootstrap "$b" >/dev/null 2>"$tmp/err"
        rc=$?
        [ "$rc" -eq 2 ] && grep -q -- "--bootstrap wants" "$tmp/err" && pass "usage-${cmd%% *}-$b" \
            || fail "usage-${cmd%% *}-$b" "exit $rc: $(cat "$tmp/err")"
    done
done

# ---- batch --bootstrap: its results file records and uses B
cat >m.json <<EOF
{"version": 1, "studies": [{"name": "s", "base": "$tmp/small/base.safetensors",
  "runs": [{"name": "lora", "path": "$tmp/small/lora"}, {"name": "dora", "path": "$tmp/small/dora"}],
  "output": "$tmp/batch.h5"}]}
EOF
"$BIN" batch -q --bootstrap 3000 m.json >/dev/null 2>"$tmp/err" && pass batch-bootstrap \
    || fail batch-bootstrap "$(cat "$tmp/err")"
"$BIN" plot batch.h5 --bootstrap 3000 --stats=json --no-figures >batch.json 2>/dev/null
ref batch batch.h5 batch.json 3000

# ---- Fig. 2: each panel prints r with its Fisher interval and the bootstrap ones
"$BIN" plot demo.h5 -o figs --format svg --modules q_proj 2>"$tmp/err" || fail fig2 "$(cat "$tmp/err")"
"$PYTHON" - demo.json figs/fig2_q_proj.svg <<'EOF' && pass fig2-intervals || fail fig2-intervals "see above"
import json, sys
rows = [r for r in json.load(open(sys.argv[1])) if r["module_kind"] == "q_proj"]
svg = open(sys.argv[2], encoding="utf-8").read()
f = lambda v: "%+.2f" % v
ok = True
for r in rows:
    want = ["r = %s [%s, %s]" % (f(r["pearson_r"]), *map(f, r["pearson_r_ci_fisher"])),
            "layer bootstrap [%s, %s]" % tuple(map(f, r["pearson_r_ci_bootstrap"])),
            "within-step r = %s [%s, %s]" % (f(r["within_step_r"]), *map(f, r["within_step_r_ci_bootstrap"]))]
    for w in want:
        if w not in svg:
            print("not in the figure:", w); ok = False
sys.exit(0 if ok else 1)
EOF

# ---- report: its regression table shows the bootstrap intervals of the B asked for
"$BIN" report demo2k.h5 -o r.html --bootstrap 2000 2>"$tmp/err" || fail report "$(cat "$tmp/err")"
"$PYTHON" - demo2k.json r.html <<'EOF' && pass report-intervals || fail report-intervals "see above"
import json, sys
page = open(sys.argv[2], encoding="utf-8").read()
ok = True
for r in json.load(open(sys.argv[1])):
    want = "[%+.2f, %+.2f] (B = 2000)" % tuple(r["pearson_r_ci_bootstrap"])
    if want not in page:
        print("not in the report:", r["run"], r["module_kind"], want); ok = False
sys.exit(0 if ok else 1)
EOF

# ---- cost: B = 10000 on the demo's 13 regressions, in CPU seconds (user + system)
/usr/bin/time -f "%U %S" -o cpu.txt "$BIN" plot demo.h5 --stats --no-figures >/dev/null 2>&1
/usr/bin/time -f "%U %S" -o cpu100.txt "$BIN" plot demo.h5 --bootstrap 100 --stats --no-figures >/dev/null 2>&1
cpu=$(awk '{ print $1 + $2 }' cpu.txt)
cpu100=$(awk '{ print $1 + $2 }' cpu100.txt)
echo "plot --stats on the demo: $cpu CPU s at B = 10000, $cpu100 at B = 100"
awk -v c="$cpu" 'BEGIN { exit !(c < 1.0) }' && pass cost || fail cost "$cpu CPU seconds at B = 10000"

echo "stats: done, $fails failed"
[ "$fails" -eq 0 ]
