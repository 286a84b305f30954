#!/bin/bash
# cli: the command line around the analyses (issue #18).
#
#   tests/sh/cli.sh     (env: DORA_BIN or BIN = the binary, PY or PYTHON = python with
#                        numpy/h5py, default /usr/bin/python3)
#
# - progress: on a pseudo-terminal (script(1)) a multi-second analyze, a spectrum and a merge
#   draw their progress line (bytes, time left, the run or module) and end with one summary
#   line; with stderr a file and --progress=auto only the summary is printed; always, never,
#   -q and a bad WHEN.
# - inspect of this tool's results files (analyze, spectrum), checked against h5py; an HDF5
#   file this tool did not write is refused by name.
# - help CMD is CMD --help; a mistyped command or long option gets the closest suggested; an
#   option that takes a value given twice is a usage error; --csv - is CSV on stdout;
#   analyze --help names the input formats.
# - undefined regressions: NaN in /regression with defined 0 (and no NaN elsewhere), NA in
#   plot --stats, null in --stats=json; merge and plot read such files back.
set -u
SUITE=cli
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$TMP" || exit 1

first() { head -c 400 "$1" | tr '\n\r' '  '; }
# want LABEL EXIT PATTERN ARGS... : `$BIN ARGS` exits EXIT with PATTERN (grep -E) on stderr
want() {
    local label=$1 code=$2 pat=$3
    shift 3
    run "$label" "$BIN" "$@"
    crashed "$label" && return
    if [ "$RC" -eq "$code" ] && grep -qE -- "$pat" "$LOG/$label.err"; then
        pass "$label"
    else
        fail "$label" "exit $RC (want $code): $(first "$LOG/$label.err")"
    fi
}

"$PY" "$TP/gen_batch_slow.py" slow --steps 24 >/dev/null || { fail gen "gen_batch_slow failed"; finish; }
"$PY" "$TP/gen_small_study.py" small >/dev/null || { fail gen "gen_small_study failed"; finish; }

# ---- progress ----------------------------------------------------------------------------
# a pseudo-terminal: the line is redrawn (\r) with bytes, time left and the run, then the
# summary; the run takes seconds (the LoRA rank makes it compute-bound)
t0=$(date +%s.%N)
script -qefc "'$BIN' analyze -j 1 --base slow/base.safetensors -o pty.h5 lora=slow/lora >pty.tsv" \
    /dev/null >pty.txt 2>&1
rc=$?
secs=$(awk "BEGIN { printf \"%.1f\", $(date +%s.%N) - $t0 }")
if [ $rc -eq 0 ] && grep -q $'\r' pty.txt && grep -qE "MiB/s +[0-9]+:[0-9]{2} left  run 'lora'" pty.txt &&
    grep -qE "wrote pty.h5: 1 run\(s\), 24 step\(s\), 4 tensor\(s\), [0-9.]+ MiB read in [0-9.]+ s" pty.txt; then
    pass "progress-pty-analyze ($secs s, $(tr '\r' '\n' <pty.txt | grep -c left) redraws)"
else
    fail progress-pty-analyze "exit $rc: $(first pty.txt)"
fi
# stderr a file, auto: nothing but the summary line (and the notes that the base, a bare
# .safetensors, has no config.json to group rows by attention head)
run auto "$BIN" analyze --base small/base.safetensors -o auto.h5 small/ft small/lora
if [ $RC -eq 0 ] && [ "$(grep -vc 'no per-head values: the base has no config.json' "$LOG/auto.err")" -eq 1 ] &&
    ! grep -q $'\r' "$LOG/auto.err" &&
    grep -qE "^dora-analyze: wrote auto.h5: 2 run\(s\), [0-9]+ step\(s\), [0-9]+ tensor\(s\), .* read in " "$LOG/auto.err"; then
    pass progress-auto-file-summary-only
else
    fail progress-auto-file-summary-only "exit $RC: $(first "$LOG/auto.err")"
fi
run always "$BIN" analyze --progress=always --base slow/base.safetensors -o always.h5 lora=slow/lora
[ $RC -eq 0 ] && grep -q $'\r' "$LOG/always.err" && grep -q "left  run 'lora'" "$LOG/always.err" &&
    pass progress-always || fail progress-always "exit $RC: $(first "$LOG/always.err")"
script -qefc "'$BIN' analyze --progress=never --base small/base.safetensors -o never.h5 small/ft >/dev/null" \
    /dev/null >never.txt 2>&1
! grep -q "left" never.txt && grep -q "wrote never.h5" never.txt && pass progress-never-pty ||
    fail progress-never-pty "$(first never.txt)"
script -qefc "'$BIN' analyze -q --base small/base.safetensors -o quiet.h5 small/ft >/dev/null" \
    /dev/null >quiet.txt 2>&1
[ ! -s quiet.txt ] && pass progress-quiet-pty || fail progress-quiet-pty "$(first quiet.txt)"
want progress-bad-when 2 "\-\-progress wants auto, always or never, not 'sometimes'" \
    analyze --progress=sometimes --base slow/base.safetensors -o x.h5 slow/lora
# spectrum: modules counted, the module in the line
script -qefc "'$BIN' spectrum --progress=always -o spec.h5 lora=slow/lora >/dev/null" /dev/null >spec.txt 2>&1
grep -qE "[0-9]+/4 modules .*left  module 'model\.layers" spec.txt &&
    grep -qE "wrote spec.h5: 1 run\(s\), 4 module\(s\) in " spec.txt && pass progress-spectrum ||
    fail progress-spectrum "$(first spec.txt)"
# merge: the shards' journals read
cat >m.json <<'EOF'
{"studies": [{"name": "s", "base": "small/base.safetensors",
  "runs": [{"name": "ft", "path": "small/ft"}, {"name": "lora", "path": "small/lora"}],
  "output": "shard.h5"}]}
EOF
"$BIN" batch -q --shard 1/2 m.json && "$BIN" batch -q --shard 2/2 m.json
run merge "$BIN" merge --progress=always merged.h5 shard.shard-1-of-2.h5 shard.shard-2-of-2.h5
[ $RC -eq 0 ] && grep -qE "[0-2]/2 shards .*left  'shard.shard-[12]-of" "$LOG/merge.err" &&
    grep -qE "wrote merged.h5: 2 shard file\(s\) merged, .* read in " "$LOG/merge.err" && pass progress-merge ||
    fail progress-merge "exit $RC: $(first "$LOG/merge.err")"

# ---- inspect of results files --------------------------------------------------------------
"$BIN" analyze -q --base small/base.safetensors -o study.h5 ft=small/ft lora=small/lora >/dev/null
run inspect "$BIN" inspect study.h5
if [ $RC -eq 0 ] && "$PY" - "$LOG/inspect.out" study.h5 spec.h5 <<'EOF' >"$LOG/inspect.check" 2>&1
import sys, h5py
out = open(sys.argv[1]).read().splitlines()
with h5py.File(sys.argv[2]) as f:
    head = f"# {sys.argv[2]}: dora-analyze results, analysis analyze, layout_version {int(f.attrs['layout_version'])}"
    assert out[0].startswith(head), (out[0], head)
    assert any(l == f"# regression: {len(f['regression/run'])} row(s) (run, module kind)" for l in out), out
    rows = out[out.index("run\tmethod\tsteps\tmodules\tstep_list") + 1:]
    want = []
    for name in ("ft", "lora"):
        g = f["runs"][name]
        steps = [int(s) for s in g["steps"][:]]
        want.append(f"{name}\t{g.attrs['method']}\t{len(steps)}\t{len(g['modules'])}\t" + ",".join(map(str, steps)))
    assert rows == want, (rows, want)
print("ok")
EOF
then pass inspect-analyze; else fail inspect-analyze "exit $RC: $(first "$LOG/inspect.check")"; fi
run inspect-spectrum "$BIN" inspect spec.h5
[ $RC -eq 0 ] && grep -q "^# spec.h5: dora-analyze results, analysis spectrum, layout_version " "$LOG/inspect-spectrum.out" &&
    grep -qE "^lora	lora	24	4	10,20,.*,240$" "$LOG/inspect-spectrum.out" && pass inspect-spectrum ||
    fail inspect-spectrum "exit $RC: $(first "$LOG/inspect-spectrum.out")"
"$PY" -c "import h5py; h5py.File('foreign.h5', 'w')['x'] = [1, 2]"
want inspect-foreign 1 "foreign.h5': an HDF5 file, but not a results file of dora-analyze" inspect foreign.h5

# ---- help, suggestions, repeated options, - for stdout -------------------------------------
for c in analyze spectrum merge batch inspect plot; do
    "$BIN" "$c" --help >h1.txt 2>&1
    "$BIN" help "$c" >h2.txt 2>&1
    rc=$?
    [ $rc -eq 0 ] && [ -s h1.txt ] && cmp -s h1.txt h2.txt && pass "help-$c" ||
        fail "help-$c" "exit $rc: $(first h2.txt)"
done
want help-unknown 2 "'analyse' is not a command; did you mean 'analyze'\?" help analyse
want command-typo 2 "'spectrun' is not a command; did you mean 'spectrum'\?" spectrun
want command-far 2 "'frobnicate' is not a command\.$" frobnicate
want option-typo 2 "unknown option '--moduels'; did you mean '--modules'\?" \
    analyze --moduels q --base small/base.safetensors -o x.h5 small/ft
want option-typo-value 2 "unknown option '--progess=never'; did you mean '--progress'\?" \
    merge --progess=never x.h5 y.h5
want option-typo-batch 2 "unknown option '--dryrun'; did you mean '--dry-run'\?" batch --dryrun m.json
want option-typo-plot 2 "unknown option '--overlya'; did you mean '--overlay'\?" plot x.h5 --overlya
want option-twice-report 2 "--output given twice" report x.h5 -o a.html -o b.html
want option-twice 2 "\-\-modules given twice" \
    analyze --modules q_proj --modules v_proj --base small/base.safetensors -o x.h5 small/ft
want option-twice-short 2 "\-\-output given twice" \
    analyze -o a.h5 --output b.h5 --base small/base.safetensors small/ft
want option-twice-spectrum 2 "\-\-top given twice" spectrum --top 2 --top 3 -o x.h5 small/lora
[ ! -e x.h5 ] && [ ! -e a.h5 ] && [ ! -e b.h5 ] && pass usage-writes-nothing || fail usage-writes-nothing "$(ls | tr "\n" " ")"
run csv-stdout "$BIN" analyze -q --csv - --base small/base.safetensors -o csv.h5 ft=small/ft
if [ $RC -eq 0 ] && [ ! -e ./- ] && head -1 "$LOG/csv-stdout.out" | grep -qx "run,method,step,module,layer,delta_m,delta_d" &&
    [ "$(grep -c '^ft,ft,' "$LOG/csv-stdout.out")" -gt 0 ] && [ -s csv.h5 ]; then
    pass csv-dash-is-stdout
else
    fail csv-dash-is-stdout "exit $RC, $(ls -d ./- 2>/dev/null): $(first "$LOG/csv-stdout.out")"
fi
"$BIN" analyze --help >ah.txt
ok=1
for f in safetensors model.safetensors.index.json PyTorch .bin .pt .pth adapter_config.json PEFT DoRA MLX; do
    grep -qF -- "$f" ah.txt || { ok=0; fail analyze-help-formats "no '$f' in analyze --help"; }
done
[ $ok -eq 1 ] && pass analyze-help-formats

# ---- undefined regressions: NaN in the file, NA and null in the tables ----------------------
TP="$TP" "$PY" - <<'EOF' || fail gen-undefined "python failed"
import os, sys
import numpy as np
sys.path.insert(0, os.environ["TP"])
import stio
rng = np.random.default_rng(3)
base = {"model.layers.0.q_proj.weight": rng.standard_normal((8, 6)).astype(np.float32),
        "model.layers.0.v_proj.weight": rng.standard_normal((8, 6)).astype(np.float32),
        "model.layers.1.v_proj.weight": rng.standard_normal((8, 6)).astype(np.float32)}
os.makedirs("u/run/checkpoint-10", exist_ok=True)
stio.write_safetensors("u/base.safetensors", base)
# one step: q_proj has 1 point (undefined); v_proj 2 points with spread (defined)
ck = {k: v + 0.1 * (i + 1) * rng.standard_normal(v.shape).astype(np.float32) for i, (k, v) in enumerate(base.items())}
stio.write_safetensors("u/run/checkpoint-10/model.safetensors", ck)
EOF
run undef "$BIN" analyze -q --base u/base.safetensors -o undef.h5 ft=u/run
if [ $RC -eq 0 ] && "$PY" - undef.h5 <<'EOF' >"$LOG/undef.check" 2>&1
import sys, h5py, numpy as np
with h5py.File(sys.argv[1]) as f:
    r = f["regression"]
    kinds = [k.decode() if isinstance(k, bytes) else k for k in r["module_kind"][:]]
    d, wd = r["defined"][:], r["within_step_defined"][:]
    q, v = kinds.index("q_proj"), kinds.index("v_proj")
    assert d[q] == 0 and wd[q] == 0 and d[v] == 1, (kinds, d, wd)
    for name in ("slope", "intercept", "pearson_r"):
        x = r[name][:]
        assert np.isnan(x[q]) and np.isfinite(x[v]), (name, x)
    assert np.isnan(r["within_step_r"][q])
    assert "NaN" in r.attrs["definition"], r.attrs["definition"]
    # no computed result is NaN: every number outside /regression, and every defined one in it
    def walk(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.dtype.kind == "f" and not name.startswith("regression"):
            assert not np.isnan(obj[()]).any(), name
    f.visititems(walk)
print("ok")
EOF
then pass undefined-nan-in-h5; else fail undefined-nan-in-h5 "exit $RC: $(first "$LOG/undef.check")"; fi
run stats-tsv "$BIN" plot undef.h5 --stats --no-figures
[ $RC -eq 0 ] && grep -qP "^ft\tft\tq_proj\t1\t1\tNA\tNA\tNA\tNA(\tNA){7}\t([0-9.eE+-]+|NA)$" "$LOG/stats-tsv.out" &&
    ! grep -qi nan "$LOG/stats-tsv.out" && pass undefined-stats-tsv-na || fail undefined-stats-tsv-na "exit $RC: $(first "$LOG/stats-tsv.out")"
run stats-json "$BIN" plot undef.h5 --stats=json --no-figures
if [ $RC -eq 0 ] && "$PY" - "$LOG/stats-json.out" <<'EOF' >"$LOG/stats-json.check" 2>&1
import json, sys
rows = json.load(open(sys.argv[1]), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
q = [r for r in rows if r["module_kind"] == "q_proj"][0]
assert q["slope"] is None and q["intercept"] is None and q["pearson_r"] is None and q["within_step_r"] is None, q
v = [r for r in rows if r["module_kind"] == "v_proj"][0]
assert isinstance(v["slope"], float), v
print("ok")
EOF
then pass undefined-stats-json-null; else fail undefined-stats-json-null "exit $RC: $(first "$LOG/stats-json.check")"; fi
# a batch study with the undefined regression, sharded and merged back
cat >u.json <<'EOF'
{"studies": [{"name": "u", "base": "u/base.safetensors", "runs": [{"name": "ft", "path": "u/run"}],
  "output": "ushard.h5"}]}
EOF
"$BIN" batch -q --shard 1/1 u.json
run undef-merge "$BIN" merge -q umerged.h5 ushard.shard-1-of-1.h5
[ $RC -eq 0 ] && "$PY" -c "
import h5py, numpy as np
a, b = h5py.File('undef.h5'), h5py.File('umerged.h5')
for k in ('slope', 'pearson_r', 'defined'):
    assert np.array_equal(a['regression'][k][:], b['regression'][k][:], equal_nan=True), k
" && pass undefined-merge-reads-back || fail undefined-merge-reads-back "exit $RC: $(first "$LOG/undef-merge.err")"

finish
