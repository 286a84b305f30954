#!/bin/sh
# make demo: install what is missing, build, analyse the shipped demo runs
# (data/demo/, made by data/gen_study.py), draw the paper's figures into
# paper-figures/, write the HTML report (paper-figures/report.html), and print the
# regression beside the paper's numbers.
set -eu
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/dora-analyze}
DEMO=${DEMO:-data/demo}
OUT=${OUT:-paper-figures}

sh tools/deps.sh
make -s all
for d in base ft lora dora; do
    if [ ! -e "$DEMO/$d" ]; then
        echo "demo: $DEMO/$d is missing; regenerate the runs with: /usr/bin/python3 data/gen_study.py $DEMO" >&2
        exit 1
    fi
done
mkdir -p "$OUT"
echo "== analyze: FT, LoRA and DoRA runs against the pre-trained base"
"$BIN" analyze --base "$DEMO/base" -o "$OUT/demo.h5" --csv "$OUT/demo-table.csv" \
    --modules 'self_attn\.(q|v)_proj\.weight$' \
    ft="$DEMO/ft" lora="$DEMO/lora" dora="$DEMO/dora"
echo "== plot: Fig. 2 (q_proj), Fig. 7 (v_proj), Fig. 8 into $OUT/"
"$BIN" plot "$OUT/demo.h5" -o "$OUT" --modules q_proj,v_proj --format png,pdf \
    --stats >"$OUT/regression.tsv"
echo "== report: runs, regression, figures and per-layer tables in $OUT/report.html"
"$BIN" report "$OUT/demo.h5" -o "$OUT/report.html" --modules q_proj,v_proj
echo
echo "== dD vs dM: Pearson r (pooled over layers and steps, and within steps) and slope"
awk -F '\t' '
    BEGIN { paper["ft"] = "-0.62"; paper["lora"] = "+0.83"; paper["dora"] = "-0.31"
            printf "%-6s %-7s %8s %12s %10s %12s\n", "method", "kind", "r", "within-step", "slope", "paper r" }
    NR > 1 {
        p = ($3 == "q_proj" && ($2 in paper)) ? paper[$2] : "-"
        r = ($8 == "NA") ? "NA" : sprintf("%+.2f", $8)
        w = ($9 == "NA") ? "NA" : sprintf("%+.2f", $9)
        s = ($6 == "NA") ? "NA" : sprintf("%.3g", $6)
        printf "%-6s %-7s %8s %12s %10s %12s\n", $2, $3, r, w, s, p
    }' "$OUT/regression.tsv"
echo
echo "(the paper reports r for the query projection only: FT -0.62, LoRA +0.83, DoRA -0.31;"
echo " data/README.md says how these runs were made and what they show)"

# where the magnitude change comes from (docs/numerics.md): dM / dM_passive per run
# and kind, from the dm_over_passive column of the table; geom_KIND.png shows the split
echo
echo "== where dM comes from: dM / dM_passive (1: only what turning the rows forces)"
awk -F '\t' '
    NR == 1 { for (i = 1; i <= NF; i++) if ($i == "dm_over_passive") c = i }
    NR > 1 && c { printf "%-6s %-7s %8s\n", $2, $3, ($c == "NA") ? "NA" : sprintf("%.2f", $c) }
' "$OUT/regression.tsv"
echo "(figures: $OUT/geom_q_proj.png, $OUT/geom_v_proj.png; per attention head at the final"
echo " step, from the base's config.json: $OUT/heads_q_proj.png, $OUT/heads_v_proj.png)"
