# fig2.gp - dD vs dM scatter, one panel per run (the DoRA paper's Fig. 2 / Fig. 7),
# or every run in one panel (overlay = 1).
#
# Loaded by `dora-analyze plot` after a parameter script that sets:
#   term_kind ("png" | "pdf" | "svg"), outfile, datafile, tdir, main_title, nruns,
#   overlay, nlayers and layer_num[1..nlayers] (the layers drawn, ascending),
#   nsteps and step_num[1..nsteps] (every run's steps, ascending), and arrays
#   (1..nruns): run_title, xs, ys (axis multipliers), xlab, ylab (axis labels),
#   slope, icpt, corr, defined, wcorr, wdefined, npts, and the 95% intervals
#   flo, fhi, fdef (Fisher-z of r), blo, bhi, bdef (layer bootstrap of r),
#   wlo, whi, wbdef (layer bootstrap of the within-step r).
# Data: one block per run (gnuplot index i-1), rows "dD dM layer step step_rank final".
# Colour = layer (viridis, colour-blind safe; overlaid: colour = run), step = marker
# (up to 5 steps) or point size growing with the step (more), a run's final step
# filled; line = least squares. Panels wrap into a grid of at most 4 columns; the
# canvas grows with the rows; the keys stand in a column of their own on the right.

npan = overlay ? 1 : nruns
ncols = (npan <= 4) ? npan : (npan <= 8) ? int(ceil(npan / 2.0)) : 4
nrows = int(ceil(npan / (1.0 * ncols)))
PW = overlay ? 640 : 440
PH = overlay ? 540 : 440
TH = 44
KW = overlay ? 340 : 250
RH = 24  # a row of a key, pixels (layerkey.gp too)
W = ncols * PW + KW
H = TH + nrows * PH
# the keys need this much height (below the title): the overlay's runs, the steps, the layers
use_markers = (nsteps <= 5)
nkey_steps = use_markers ? nsteps : 5
key_need = 24 + RH * (nkey_steps + 1) + 30 + (overlay ? RH * nruns : (nlayers <= 8 ? RH * nlayers : 220))
if (H < TH + key_need + 20) { H = TH + key_need + 20 }
load tdir . "/common.gp"

# step: open markers for intermediate steps, a filled one for a run's final step;
# or, beyond five steps, an open circle whose size grows with the step number
array step_pt[5] = [6, 8, 4, 12, 10]
array step_fpt[5] = [7, 9, 5, 13, 11]
s_lo = step_num[1]
s_hi = (step_num[nsteps] > s_lo) ? step_num[nsteps] : s_lo + 1
pt_of(rank, fin) = use_markers ? ((fin > 0.5) ? step_fpt[int(rank)] : step_pt[int(rank)]) : ((fin > 0.5) ? 7 : 6)
ps_of(step) = psf * (use_markers ? 1.3 : 0.45 + 1.6 * (step - s_lo) / (s_hi - s_lo))

# each run's least-squares line, only over the run's own dD range (xv in the axis units)
array rx0[nruns]
array rx1[nruns]
do for [i = 1:nruns] {
    stats datafile index (i - 1) using 1 nooutput
    rx0[i] = STATS_min
    rx1[i] = STATS_max
}
reg(i, xv, xsc, ysc) = (defined[i] && xv / xsc >= rx0[i] && xv / xsc <= rx1[i]) ? (icpt[i] + slope[i] * xv / xsc) * ysc : NaN
set samples 1000
# a 95% interval as "[-0.82, -0.29]", or a dash when it is undefined
ci_text(d, lo, hi) = d ? sprintf("[%+.2f, %+.2f]", lo, hi) : "[no interval]"

set multiplot title main_title noenhanced font @bigf
set style textbox opaque noborder margins 1,1

do for [p = 1:npan] {
    L = panel_left(p)
    T = panel_top(p)
    set lmargin at screen sx(L + 82)
    set rmargin at screen sx(L + PW - 26)
    set tmargin at screen sy(T + 88)
    set bmargin at screen sy(T + PH - 76)
    unset label
    unset title
    set xlabel xlab[p] offset 0, 0.3
    set ylabel ylab[p]
    set format x "%.3g"
    set format y "%.3g"
    # three to five ticks per axis, at 1, 2 or 5 x 10^k, so labels never crowd
    # (one column at a time: stats of two columns fits a line, which warns on one point)
    # stats only counts points inside the current ranges: the last panel's go first
    set autoscale xfix
    set autoscale yfix
    q = overlay ? 1 : p
    if (overlay) {
        stats datafile using ($1 * xs[q]) name "SX" nooutput
        stats datafile using ($2 * ys[q]) name "SY" nooutput
    } else {
        stats datafile index (p - 1) using ($1 * xs[q]) name "SX" nooutput
        stats datafile index (p - 1) using ($2 * ys[q]) name "SY" nooutput
    }
    if (SX_max > SX_min) { set xtics nice(SX_max - SX_min) } else { set xtics autofreq; set xrange [SX_min - pad(SX_min):SX_max + pad(SX_max)] }
    if (SY_max > SY_min) { set ytics nice(SY_max - SY_min) } else { set ytics autofreq; set yrange [SY_min - pad(SY_min):SY_max + pad(SY_max)] }
    set offsets graph 0.05, graph 0.05, graph 0.05, graph 0.05
    if (overlay) {
        set label 1 "all runs: colour = run (regressions in the key)" at screen sx(L + PW / 2), screen sy(T + 24) center font @smallf
        plot for [i = 1:nruns] datafile index (i - 1) using ($1 * xs[1]):($2 * ys[1]):(ps_of($4)):(pt_of($5, $6)) \
                 with points ps variable pt variable lc rgb lc_of(i) notitle, \
             for [i = 1:nruns] reg(i, x, xs[1], ys[1]) \
                 with lines dt 2 lw 1.5 lc rgb lc_of(i) notitle
    } else {
        set label 1 run_title[p] noenhanced at screen sx(L + PW / 2), screen sy(T + 14) center font @bigf
        # three short lines, so that they fit the panel's width at every font size
        if (defined[p]) {
            stat1 = sprintf("r = %+.2f %s   slope = %.3g", corr[p], ci_text(fdef[p], flo[p], fhi[p]), slope[p])
            stat2 = sprintf("layer bootstrap %s   n = %d", ci_text(bdef[p], blo[p], bhi[p]), npts[p])
        } else {
            stat1 = "regression undefined"
            stat2 = sprintf("n = %d", npts[p])
        }
        stat3 = wdefined[p] ? sprintf("within-step r = %+.2f %s", wcorr[p], ci_text(wbdef[p], wlo[p], whi[p])) : "within-step r undefined"
        set label 2 stat1 at screen sx(L + 60), screen sy(T + 36) left font @smallf
        set label 3 stat2 at screen sx(L + 60), screen sy(T + 54) left font @smallf
        set label 4 stat3 at screen sx(L + 60), screen sy(T + 72) left font @smallf
        plot datafile index (p - 1) using ($1 * xs[p]):($2 * ys[p]):(ps_of($4)):(pt_of($5, $6)):($3) \
                 with points ps variable pt variable lc palette z notitle, \
             reg(p, x, xs[p], ys[p]) with lines dt 2 lw 1.5 lc rgb "#222222" notitle
    }
}

# the keys: a column of their own on the right, so they never cover a point
eval start_keys
if (overlay) {
    set tmargin at screen sy(ky + 20)
    set bmargin at screen sy(ky + 20 + RH * nruns)
    set label 1 "run: r, slope" at screen sx(KL), screen sy(ky + 8) left font @smallf
    set key at screen sx(KL), screen sy(ky + 18) left top Left reverse samplen 1 spacing 1.15 font @smallf noenhanced
    plot for [i = 1:nruns] NaN with points pt 7 ps psf * 1.2 lc rgb lc_of(i) \
        title (defined[i] ? sprintf("%s: %+.2f, %.3g", run_title[i], corr[i], slope[i]) : sprintf("%s: undefined", run_title[i]))
    unset label
    ky = ky + 28 + RH * nruns
}
set tmargin at screen sy(ky + 20)
set bmargin at screen sy(ky + 20 + RH * (nkey_steps + 1))
set label 1 "step (filled: last of its run)" at screen sx(KL), screen sy(ky + 8) left font @smallf
set key at screen sx(KL), screen sy(ky + 18) left top Left reverse samplen 1 spacing 1.15 font @smallf
if (use_markers) {
    plot for [s = 1:nsteps] NaN with points pt step_pt[s] ps ps_of(0) lc rgb "#444444" \
        title sprintf("step %d", step_num[s])
} else {
    # five sizes, from the first step to the last
    plot for [k = 0:4] NaN with points pt 6 ps ps_of(step_num[1 + int((nsteps - 1) * k / 4.0 + 0.5)]) \
        lc rgb "#444444" title sprintf("step %d", step_num[1 + int((nsteps - 1) * k / 4.0 + 0.5)])
}
unset label
ky = ky + 30 + RH * (nkey_steps + 1)
if (!overlay) { load tdir . "/layerkey.gp" }
unset multiplot
