#!/bin/bash
# plot: figures in every format, the regression numbers against NumPy, the
# missing-gnuplot message, usage errors. One PASS/FAIL line per check.
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${BIN:-$top/bin/dora-analyze}
PYTHON=${PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
pass() { echo "PASS plot/$1"; }
fail() { echo "FAIL plot/$1: $2"; fails=$((fails + 1)); }

"$PYTHON" "$top/tests/py/gen_small_study.py" "$tmp/study" >/dev/null || { fail gen "generator failed"; exit 1; }
cd "$tmp/study" || exit 1
"$BIN" analyze -q --base base.safetensors -o study.h5 ft=ft lora=lora dora=dora >/dev/null 2>"$tmp/err" \
    && pass analyze || fail analyze "$(cat "$tmp/err")"

if "$BIN" plot study.h5 -o figs --format png,pdf,svg --stats=json >stats.json 2>"$tmp/err"; then
    pass plot-run
else
    fail plot-run "$(cat "$tmp/err")"
fi
"$PYTHON" "$top/tests/py/check_plot.py" study.h5 stats.json figs png,pdf,svg || fails=$((fails + 1))
leftover=$(find figs \( -name '*.tmp-*' -o -name '*dora-tmp*' \) | head -1)
[ -z "$leftover" ] && pass no-temp-files || fail no-temp-files "$leftover"

# the demo's LoRA and DoRA runs, whose base has a config.json: per-head values, so the
# heads heatmap is drawn beside the others (and checked by check_plot.py)
"$BIN" analyze -q --base "$top/data/demo/base" -o demo.h5 --modules 'self_attn\.(q|v)_proj\.weight$' \
    lora="$top/data/demo/lora" dora="$top/data/demo/dora" >/dev/null 2>"$tmp/err" &&
    "$BIN" plot demo.h5 -o demofigs --modules q_proj,v_proj --format png,svg --stats=json \
        >demo.json 2>>"$tmp/err" && pass demo-plot || fail demo-plot "$(cat "$tmp/err")"
"$PYTHON" "$top/tests/py/check_plot.py" demo.h5 demo.json demofigs png,svg | sed 's#plot/#plot/demo-#' \
    | grep -v '^regression' || fails=$((fails + 1))

# a study of 6 runs x 20 steps x 32 layers (written directly in the layout of docs/hdf5.md):
# the panels wrap into a grid that grows, the layers get a colour bar, the steps sizes
"$PYTHON" "$top/tests/py/gen_big_study.py" big.h5 && "$BIN" plot big.h5 -o bigfigs \
    --format png,svg --stats=json >big.json 2>"$tmp/err" && pass big-plot || fail big-plot "$(cat "$tmp/err")"
"$PYTHON" "$top/tests/py/check_plot.py" big.h5 big.json bigfigs png,svg | sed 's#plot/#plot/big-#' \
    | grep -v '^regression' || fails=$((fails + 1))
# edges: one run of one step and one layer; every value 0 (a checkpoint that is the base)
"$PYTHON" "$top/tests/py/gen_big_study.py" one.h5 1 1 1 2>/dev/null
"$BIN" plot one.h5 -o one --format png,svg,pdf 2>"$tmp/err" && "$BIN" plot one.h5 -o one-ov --overlay \
    --format png 2>>"$tmp/err" && pass one-point || fail one-point "$(cat "$tmp/err")"
"$PYTHON" -c "
import h5py, shutil; shutil.copy('big.h5', 'zero.h5')
with h5py.File('zero.h5', 'r+') as f:
    for r in f['runs'].values(): r['delta_m'][...] = 0; r['delta_d'][...] = 0"
"$BIN" plot zero.h5 -o zero --format png,svg 2>"$tmp/err" && pass all-zero || fail all-zero "$(cat "$tmp/err")"
# overlay: one panel, each run (and its r) in the key
"$BIN" plot study.h5 -o figs-ov --overlay --modules q_proj --format png,svg 2>"$tmp/err" \
    || fail overlay "$(cat "$tmp/err")"
"$PYTHON" - figs/fig2_q_proj.png figs-ov/fig2_q_proj.png figs-ov/fig2_q_proj.svg bigfigs/fig2_q_proj.png <<'PY' \
    && pass overlay-and-grid || fail overlay-and-grid "see above"
import struct, sys
size = lambda p: struct.unpack(">II", open(p, "rb").read()[16:24])
three, over, big = size(sys.argv[1]), size(sys.argv[2]), size(sys.argv[4])
svg = open(sys.argv[3], encoding="utf-8").read()
ok = over[0] < three[0] and all(f"({r}): " in svg for r in ("ft", "lora", "dora"))
# six panels: three columns, two rows, so the same width and nearly twice the height
ok = ok and big[0] == three[0] and big[1] > 1.8 * three[1]
print(f"3 panels {three}, overlay {over}, 6 panels {big}")
sys.exit(0 if ok else 1)
PY

# TSV table: header and one row per run and kind
"$BIN" plot study.h5 --stats --no-figures >stats.tsv 2>"$tmp/err"
rows=$(tail -n +2 stats.tsv | wc -l)
head -1 stats.tsv | grep -q $'^run\tmethod\tmodule_kind\tn\tlayers\tslope\tintercept\tpearson_r\twithin_step_r\tpearson_r_ci_fisher_lo\t' \
    && [ "$rows" -eq 6 ] && pass stats-tsv || fail stats-tsv "$rows rows: $(head -2 stats.tsv)"

# panel order and subset follow --runs
"$BIN" plot study.h5 -o figs2 --runs dora,ft --modules v_proj --format png 2>"$tmp/err" \
    && [ -f figs2/fig2_v_proj.png ] && [ ! -f figs2/fig2_q_proj.png ] && pass runs-modules \
    || fail runs-modules "$(cat "$tmp/err")"

# gnuplot missing: one clear line, exit 1
PATH=/nonexistent "$BIN" plot study.h5 -o figs3 --format png >/dev/null 2>"$tmp/err"
rc=$?
[ $rc -eq 1 ] && grep -q "apt-get install gnuplot-nox" "$tmp/err" && pass no-gnuplot \
    || fail no-gnuplot "exit $rc: $(cat "$tmp/err")"

# bad input and usage
check_exit() { # name expected-exit args...
    local name=$1 want=$2
    shift 2
    "$BIN" plot "$@" >/dev/null 2>"$tmp/err"
    local rc=$?
    [ $rc -eq "$want" ] && pass "$name" || fail "$name" "exit $rc, expected $want: $(cat "$tmp/err")"
}
check_exit usage-format 2 study.h5 -o figs --format gif
check_exit usage-no-output 2 study.h5
check_exit usage-stats-kind 2 study.h5 --stats=xml --no-figures
check_exit unknown-run 1 study.h5 -o figs --runs nope
check_exit unknown-kind 1 study.h5 -o figs --modules k_proj
check_exit not-hdf5 1 base.safetensors -o figs
check_exit missing-file 1 nope.h5 -o figs
"$BIN" plot --help >/dev/null && pass help || fail help "exit $?"

[ $fails -eq 0 ]
