# heads.gp - dM and dD per layer and attention head at each run's final step: a heatmap
# pair (dM left, dD right) per run, a row per run.
#
# Loaded by `dora-analyze plot` after a parameter script that sets:
#   term_kind ("png" | "pdf" | "svg"), outfile, datafile, tdir, main_title, nruns,
#   maxheads (the most heads of a module drawn), nlayers and layer_num[1..nlayers], and
#   arrays (1..nruns) run_title, step (the final step drawn).
# Data: one block per run (gnuplot index i-1), rows "layer head dM dD": a cell each.
# Colour: viridis from the smallest to the largest value of the panel.

PW = 520
PH = 380
TH = 44
KW = 0
W = 2 * PW
H = TH + nruns * PH
ncols = 2
load tdir . "/common.gp"
set palette defined (0 '#440154', 1 '#414487', 2 '#2a788e', 3 '#22a884', 4 '#7ad151', 5 '#fde725')
set cbrange [*:*]

set multiplot title main_title noenhanced font @bigf
set xlabel "head" offset 0, 0.3
set ylabel "layer"
set xrange [-0.5:maxheads - 0.5]
set xtics 0, inice(maxheads - 1) out nomirror
set yrange [lay_lo - 0.5:lay_hi + 0.5]
set ytics lay_lo, inice(lay_hi - lay_lo) out nomirror
set format cb "%.2g"
unset grid
do for [i = 1:nruns] {
    do for [p = 1:2] {
        q = 2 * (i - 1) + p
        L = panel_left(q)
        T = panel_top(q)
        set lmargin at screen sx(L + 70)
        set rmargin at screen sx(L + PW - 110)
        set tmargin at screen sy(T + 44)
        set bmargin at screen sy(T + PH - 60)
        set colorbox vertical user origin screen sx(L + PW - 95), screen sy(T + PH - 60) size screen sx(14), screen ((PH - 104.0) / H)
        set cbtics out nomirror scale 0.6 font @smallf
        set label 1 sprintf("%s, step %d: %s", run_title[i], step[i], (p == 1 ? "ΔM" : "ΔD")) noenhanced at screen sx(L + PW / 2 - 20), screen sy(T + 22) center font @bigf
        plot datafile index (i - 1) using 2:1:(0.5):(0.5):(p == 1 ? $3 : $4) with boxxyerror fs solid 1.0 noborder fc palette notitle
        unset label
    }
}
unset multiplot
