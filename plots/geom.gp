# geom.gp - where magnitude change comes from: passive and active dM against dD, one
# panel per run (docs/numerics.md, "Where magnitude change comes from").
#
# Loaded by `dora-analyze plot` after a parameter script that sets:
#   term_kind ("png" | "pdf" | "svg"), outfile, datafile, tdir, main_title, nruns,
#   nlayers and layer_num[1..nlayers], and arrays (1..nruns) run_title, ratio,
#   ratio_defined (dM / dM_passive of the run's points).
# Data: one block per run (gnuplot index i-1), rows "dD passive active dM layer" per
# (step, module). Passive: filled circles; active: open triangles; dM itself: small
# grey crosses. A run whose points all sit on the passive curve changes magnitudes
# only as much as turning its rows forces.

npan = nruns
ncols = (npan <= 4) ? npan : 4
nrows = int(ceil(npan / (1.0 * ncols)))
PW = 440
PH = 440
TH = 44
KW = 250
RH = 24
W = ncols * PW + KW
H = TH + nrows * PH
if (H < TH + 4 * RH + 60) { H = TH + 4 * RH + 60 }
load tdir . "/common.gp"

set multiplot title main_title noenhanced font @bigf
do for [p = 1:npan] {
    L = panel_left(p)
    T = panel_top(p)
    set lmargin at screen sx(L + 92)
    set rmargin at screen sx(L + PW - 26)
    set tmargin at screen sy(T + 60)
    set bmargin at screen sy(T + PH - 76)
    unset label
    set xlabel "ΔD" offset 0, 0.3
    set ylabel "ΔM: passive, active" offset 1, 0
    set format x "%.2g"
    set format y "%.2g"
    # three to five ticks on x (common.gp's nice), the y axis from 0
    set autoscale xfix
    stats datafile index (p - 1) using 1 name "SX" nooutput
    if (SX_max > SX_min) { set xtics nice(SX_max - SX_min) } else { set xtics autofreq; set xrange [SX_min - pad(SX_min):SX_max + pad(SX_max)] }
    set yrange [0:*]
    set offsets graph 0.05, graph 0.05, graph 0.05, 0
    set label 1 run_title[p] noenhanced at screen sx(L + PW / 2), screen sy(T + 14) center font @bigf
    stat1 = ratio_defined[p] ? sprintf("ΔM / ΔM_{passive} = %.3g", ratio[p]) : "ΔM / ΔM_{passive} undefined"
    set label 2 stat1 at screen sx(L + 82), screen sy(T + 38) left font @smallf
    plot datafile index (p - 1) using 1:4 with points pt 1 ps psf * 0.6 lc rgb "#999999" notitle, \
         datafile index (p - 1) using 1:2 with points pt 7 ps psf * 0.9 lc rgb "#0072B2" notitle, \
         datafile index (p - 1) using 1:3 with points pt 8 ps psf * 1.0 lc rgb "#D55E00" notitle
}

eval start_keys
set tmargin at screen sy(ky + 20)
set bmargin at screen sy(ky + 20 + RH * 3)
set key at screen sx(KL), screen sy(ky + 18) left top Left reverse samplen 1 spacing 1.15 font @smallf
plot NaN with points pt 7 ps psf * 1.1 lc rgb "#0072B2" title "passive (turning)", \
     NaN with points pt 8 ps psf * 1.1 lc rgb "#D55E00" title "active (the rest)", \
     NaN with points pt 1 ps psf * 0.8 lc rgb "#999999" title "ΔM"
unset multiplot
