# fig8.gp - dM and dD by layer at each run's final step, runs overlaid (the DoRA
# paper's Fig. 8).
#
# Loaded by `dora-analyze plot` after a parameter script that sets:
#   term_kind, outfile, datafile, tdir, main_title, nruns, arrays (1..nruns) run_title,
#   nlayers and layer_num[1..nlayers], and axis multipliers mscale, dscale with labels
#   mlab, dlab.
# Data: one block per run, rows "layer dM dD" at the run's final step.
# Both y axes start at 0, so that the runs' changes compare as sizes; the key of runs
# stands in a column of its own on the right.

PW = 560
PH = 440
TH = 44
KW = 300
RH = 24  # a row of the key, pixels
W = 2 * PW + KW
H = TH + PH
if (H < TH + 40 + RH * nruns) { H = TH + 40 + RH * nruns }
ncols = 2
load tdir . "/common.gp"

# both axes from 0; an axis whose values are all 0 goes to 1 (before any range is set:
# stats counts only the points inside the ranges)
stats datafile using ($2 * mscale) name "SM" nooutput
stats datafile using ($3 * dscale) name "SD" nooutput

set multiplot title main_title noenhanced font @bigf
set xlabel "layer" offset 0, 0.3
set xtics lay_lo, inice(lay_hi - lay_lo)
set xrange [lay_lo - 0.5:lay_hi + 0.5]
set format y "%.3g"
set offsets 0, 0, graph 0.05, 0
pts = psf * (nlayers > 32 ? 0.7 : 1.1)

do for [p = 1:2] {
    L = panel_left(p)
    T = panel_top(p)
    set lmargin at screen sx(L + 82)
    set rmargin at screen sx(L + PW - 26)
    set tmargin at screen sy(T + 40)
    set bmargin at screen sy(T + PH - 76)
    set label 1 (p == 1 ? "magnitude change" : "direction change") at screen sx(L + PW / 2), screen sy(T + 18) center font @bigf
    set ylabel (p == 1 ? mlab : dlab)
    top = (p == 1 ? SM_max : SD_max)
    if (top > 0) { set yrange [0:*] } else { set yrange [0:1] }
    if (p == 1) {
        plot for [i = 1:nruns] datafile index (i - 1) using 1:($2 * mscale) \
             with linespoints lw 1.5 pt rpt_of(i) ps pts lc rgb lc_of(i) notitle
    } else {
        plot for [i = 1:nruns] datafile index (i - 1) using 1:($3 * dscale) \
             with linespoints lw 1.5 pt rpt_of(i) ps pts lc rgb lc_of(i) notitle
    }
    unset label
}

eval start_keys
set tmargin at screen sy(ky + 20)
set bmargin at screen sy(ky + 20 + RH * nruns)
set label 1 "run" at screen sx(KL), screen sy(ky + 8) left font @smallf
set key at screen sx(KL), screen sy(ky + 18) left top Left reverse samplen 2 spacing 1.15 font @smallf noenhanced
plot for [i = 1:nruns] NaN with linespoints lw 1.5 pt rpt_of(i) ps pts lc rgb lc_of(i) title run_title[i]
unset multiplot
