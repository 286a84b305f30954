#!/bin/sh
# make demo: install what is missing, build, analyse the shipped demo runs
# (data/demo/, made by data/gen_study.py), draw the paper's figures into
# paper-figures/, decompose the updates (spectrum), write the HTML report
# (paper-figures/report.html), and print the
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
echo "== spectrum: r90, stable rank, intruders and subspace similarity of the updates"
"$BIN" spectrum -q --base "$DEMO/base" --compare -o "$OUT/spectrum.h5" \
    --modules 'self_attn\.(q|v)_proj\.weight$' \
    ft="$DEMO/ft" lora="$DEMO/lora" dora="$DEMO/dora" >"$OUT/spectrum.tsv"
echo "== report: runs, regression, figures, per-layer tables and the spectra in $OUT/report.html"
"$BIN" report "$OUT/demo.h5" --spectrum "$OUT/spectrum.h5" -o "$OUT/report.html" \
    --modules q_proj,v_proj
echo
echo "== dD vs dM: Pearson r (pooled over layers and steps, and within steps) with 95% intervals"
awk -F '\t' '
    function iv(lo, hi) { return (lo == "NA") ? "NA" : sprintf("[%+.2f, %+.2f]", lo, hi) }
    function fisher(r, n,   z, h) { # the Fisher-z 95% interval, as for the paper r below
        z = 0.5 * log((1 + r) / (1 - r)); h = 1.959963984540054 / sqrt(n - 3)
        return sprintf("[%+.2f, %+.2f]", tanh(z - h), tanh(z + h)) }
    function tanh(x) { return (exp(2 * x) - 1) / (exp(2 * x) + 1) }
    BEGIN { paper["ft"] = -0.62; paper["lora"] = 0.83; paper["dora"] = -0.31
            printf "%-6s %-7s %-24s %-17s %-24s %-8s %s\n", "method", "kind", "r [Fisher 95%]",
                   "layer bootstrap", "within-step r [bootstr.]", "slope", "paper r [Fisher, n = 24]" }
    NR > 1 {
        p = ($3 == "q_proj" && ($2 in paper)) ? sprintf("%+.2f %s", paper[$2], fisher(paper[$2], 24)) : "-"
        r = ($8 == "NA") ? "NA" : sprintf("%+.2f %s", $8, iv($10, $11))
        w = ($9 == "NA") ? "NA" : sprintf("%+.2f %s", $9, iv($14, $15))
        s = ($6 == "NA") ? "NA" : sprintf("%.3g", $6)
        printf "%-6s %-7s %-24s %-17s %-24s %-8s %s\n", $2, $3, r, iv($12, $13), w, s, p
    }' "$OUT/regression.tsv"
echo
echo "(the paper reports r for the query projection only, without intervals: FT -0.62, LoRA"
echo " +0.83, DoRA -0.31; its Fisher interval for DoRA includes 0. The layer bootstrap resamples"
echo " whole layers with all their steps; B = 10000, seeded. data/README.md says how these runs"
echo " were made and what they show)"
echo
echo "== Fig. 8: does DoRA deviate less than LoRA? dM and dD per layer at the final step"
awk -F ',' '
    NR > 1 && ($2 == "lora" || $2 == "dora") {
        n = split($4, part, "."); kind = part[n - 1]
        if ($3 + 0 > last[$2, kind] + 0) last[$2, kind] = $3
        k = $2 SUBSEP kind SUBSEP $5
        step[k] = $3; dm[k, $3] = $6; dd[k, $3] = $7
        kinds[kind] = 1; layers[kind, $5] = 1
    }
    function yn(b) { return b ? "yes" : "no" }
    END {
        printf "%-7s %5s %10s %10s %-6s %10s %10s %-6s\n", "kind", "layer", "dM LoRA", "dM DoRA",
               "less", "dD LoRA", "dD DoRA", "less"
        nk = split("q_proj v_proj", order, " ") # the modules analysed above, in this order
        for (ki = 1; ki <= nk; ki++) {
            kind = order[ki]
            if (!(kind in kinds)) continue
            nl = 0; bm = 0; bd = 0
            for (l = 0; l < 4096; l++) {
                if (!((kind, l) in layers)) continue
                a = "lora" SUBSEP kind SUBSEP l; b = "dora" SUBSEP kind SUBSEP l
                sa = last["lora", kind]; sb = last["dora", kind]
                if (!((a, sa) in dm) || !((b, sb) in dm)) continue
                lm = dm[b, sb] < dm[a, sa]; ld = dd[b, sb] < dd[a, sa]
                nl++; bm += lm; bd += ld
                printf "%-7s %5d %10.4g %10.4g %-6s %10.4g %10.4g %-6s\n", kind, l, dm[a, sa],
                       dm[b, sb], yn(lm), dd[a, sa], dd[b, sb], yn(ld)
            }
            printf "%-7s overall: DoRA below LoRA in dM in %d of %d layers, in dD in %d of %d: %s\n",
                   kind, bm, nl, bd, nl, (nl && bm == nl && bd == nl) ? "yes" : "no"
        }
    }' "$OUT/demo-table.csv"
echo "(the paper, Fig. 8, for LLaMA2-7B: DoRA deviates less from the pre-trained weights than LoRA)"

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
