# trajectory.gp - dM and dD against the training step, one line per layer, a pair of
# panels per run (dM above dD).
#
# Loaded by `dora-analyze plot` after a parameter script that sets:
#   term_kind, outfile, datafile, tdir, main_title, nruns, nlayers and
#   layer_num[1..nlayers], and arrays (1..nruns): run_title, xs, ys (axis
#   multipliers of dD and dM), xlab, ylab (their labels).
# Data: one block per run (gnuplot index i-1), rows "step dM dD layer", a blank line
# after each layer's rows. Colour = layer (viridis), its key on the right. The pairs
# wrap into a grid of at most 4 columns; the canvas grows with the rows.

ncols = (nruns <= 4) ? nruns : (nruns <= 8) ? int(ceil(nruns / 2.0)) : 4
nrows = int(ceil(nruns / (1.0 * ncols)))
PW = 440
SH = 250        # one of the pair
PH = 2 * SH + 124  # title 32, the pair with a gap of 20, step labels 72
TH = 44
KW = 200
RH = 24  # a row of the layer key, pixels (layerkey.gp)
W = ncols * PW + KW
H = TH + nrows * PH
if (H < TH + 260) { H = TH + 260 }
load tdir . "/common.gp"

set multiplot title main_title noenhanced font @bigf
set format x "%g"
set format y "%.3g"
set offsets 0, 0, graph 0.05, 0
set yrange [0:*]
do for [p = 1:nruns] {
    L = panel_left(p)
    T = panel_top(p)
    # stats only counts points inside the current ranges: the last panel's go first
    set autoscale x
    set autoscale y
    stats datafile index (p - 1) using 1 nooutput
    if (STATS_max > STATS_min) { set xtics nice(STATS_max - STATS_min) } else { set xtics autofreq }
    if (STATS_max > STATS_min) { set xrange [STATS_min:STATS_max] } else { set xrange [STATS_min - pad(STATS_min):STATS_max + pad(STATS_max)] }
    stats datafile index (p - 1) using ($2 * ys[p]) nooutput
    ytm = (STATS_max > 0) ? nice(STATS_max) : 1
    ymm = (STATS_max > 0) ? NaN : 1   # all zero: an axis of [0:1]
    stats datafile index (p - 1) using ($3 * xs[p]) nooutput
    ytd = (STATS_max > 0) ? nice(STATS_max) : 1
    ymd = (STATS_max > 0) ? NaN : 1
    set label 1 run_title[p] noenhanced at screen sx(L + PW / 2), screen sy(T + 16) center font @bigf
    set lmargin at screen sx(L + 82)
    set rmargin at screen sx(L + PW - 26)
    # dM above, without step labels (the pair shares its x axis)
    set tmargin at screen sy(T + 32)
    set bmargin at screen sy(T + 32 + SH)
    set format x ""
    unset xlabel
    set ytics ytm
    if (ymm == ymm) { set yrange [0:ymm] } else { set yrange [0:*] }
    set ylabel ylab[p]
    plot datafile index (p - 1) using 1:($2 * ys[p]):4 with lines lw 1 lc palette z notitle
    unset label
    set tmargin at screen sy(T + 52 + SH)
    set bmargin at screen sy(T + 52 + 2 * SH)
    set format x "%g"
    set xlabel "step" offset 0, 0.3
    set ytics ytd
    if (ymd == ymd) { set yrange [0:ymd] } else { set yrange [0:*] }
    set ylabel xlab[p]
    plot datafile index (p - 1) using 1:($3 * xs[p]):4 with lines lw 1 lc palette z notitle
}

eval start_keys
layer_lines = 1
load tdir . "/layerkey.gp"
unset multiplot
