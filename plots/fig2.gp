# fig2.gp - dD vs dM scatter, one panel per run (the DoRA paper's Fig. 2 / Fig. 7).
#
# Loaded by `dora-analyze plot` after a parameter script that sets:
#   term_kind ("png" | "pdf" | "svg"), outfile, datafile, main_title, nruns,
#   nlayers, nsteps, and arrays (1..nruns): run_title, xs, ys (axis multipliers),
#   xlab, ylab (axis labels), slope, icpt, corr, defined, wcorr, wdefined, npts;
#   arrays (1..nsteps): step_label.
# Data: one block per run (gnuplot index i-1), rows "dD dM layer step final".
# Colour = layer (viridis, colour-blind safe), marker = step, line = least squares.

set encoding utf8
if (term_kind eq "png") {
    fs = 13
    psf = 1.0
    set terminal pngcairo size 1500,560 font "DejaVu Sans,13" linewidth 1.5
} else {
    if (term_kind eq "pdf") {
        fs = 8
        psf = 0.45
        set terminal pdfcairo size 7.2in,2.75in font "DejaVu Sans,8" linewidth 1
    } else {
        fs = 12
        psf = 0.8
        set terminal svg size 1200,450 font "DejaVu Sans,12" linewidth 1.2 background "white"
    }
}
set output outfile
# font sizes relative to the terminal's, as macros (some commands take only a literal)
bigf = sprintf("\",%d\"", fs + 2)
smallf = sprintf("\",%d\"", fs - 1)

# viridis, stopped before its pale yellow end so every point shows on white
set palette defined (0 '#440154', 1 '#414487', 2 '#2a788e', 3 '#22a884', 4 '#7ad151', 5 '#bddf26')
set cbrange [0:(nlayers > 1 ? nlayers - 1 : 1)]
unset colorbox

# open markers for intermediate steps, a filled one for the final step
array step_pt[8] = [6, 8, 4, 12, 10, 14, 2, 1]
pt_of(s, fin) = (fin > 0.5) ? 7 : step_pt[int(s - 1) % 8 + 1]
ps_of(fin) = psf * ((fin > 0.5) ? 1.5 : 1.3)

# a tick step of 1, 2 or 5 x 10^k giving three to five ticks over a range r
tick_e(r) = 10**floor(log10(r / 3.0))
tick_f(r) = r / 3.0 / tick_e(r)
nice(r) = (tick_f(r) < 1.5 ? 1 : tick_f(r) < 3.5 ? 2 : tick_f(r) < 7.5 ? 5 : 10) * tick_e(r)

set multiplot title main_title noenhanced font @bigf
key_w = 0.16
panel_w = (1.0 - key_w) / nruns
set style textbox opaque noborder margins 2,2
set border 3 lw 1
set tics nomirror out scale 0.6
set grid lc rgb "#dddddd" lw 0.8
set key off

do for [i = 1:nruns] {
    set size panel_w, 0.9
    set origin (i - 1) * panel_w, 0.02
    set title run_title[i] noenhanced
    set xlabel xlab[i]
    set ylabel ylab[i] offset 1,0
    set format x "%.3g"
    set format y "%.3g"
    # three to five ticks per axis, at 1, 2 or 5 x 10^k, so labels never crowd
    stats datafile index (i - 1) using ($1 * xs[i]):($2 * ys[i]) nooutput
    if (STATS_max_x > STATS_min_x) { set xtics nice(STATS_max_x - STATS_min_x) } else { set xtics autofreq }
    if (STATS_max_y > STATS_min_y) { set ytics nice(STATS_max_y - STATS_min_y) } else { set ytics autofreq }
    set autoscale fix
    set offsets graph 0.06, graph 0.06, graph 0.30, graph 0.06  # room for the r/slope box
    unset label
    if (defined[i]) {
        if (wdefined[i]) {
            set label 1 sprintf("r = %+.2f   slope = %.3g\nwithin-step r = %+.2f   n = %d", \
                corr[i], slope[i], wcorr[i], npts[i]) at graph 0.03, graph 0.97 left front boxed font @smallf
        } else {
            set label 1 sprintf("r = %+.2f   slope = %.3g\nn = %d", corr[i], slope[i], npts[i]) \
                at graph 0.03, graph 0.97 left front boxed font @smallf
        }
        plot datafile index (i - 1) using ($1 * xs[i]):($2 * ys[i]):(pt_of($4, $5)):($3) \
                 with points pt variable ps ps_of(0) lc palette z notitle, \
             (icpt[i] + slope[i] * x / xs[i]) * ys[i] with lines dt 2 lw 1.5 lc rgb "#222222" notitle
    } else {
        set label 1 sprintf("regression undefined\nn = %d", npts[i]) \
            at graph 0.03, graph 0.97 left front boxed font @smallf
        plot datafile index (i - 1) using ($1 * xs[i]):($2 * ys[i]):(pt_of($4, $5)):($3) \
                 with points pt variable ps ps_of(0) lc palette z notitle
    }
}

# the legend: its own panel on the right, so it never covers a point
set size key_w, 0.9
set origin 1.0 - key_w, 0.02
unset title
unset xlabel
unset ylabel
unset label
unset grid
unset border
unset tics
set xrange [0:1]
set yrange [0:1]
set key at graph 0.02, graph 1.0 left top Left reverse samplen 1 spacing 1.1 font @smallf
if (nlayers <= 12) {
    plot for [l = 1:nlayers] NaN with points pt 7 ps psf * 1.3 lc palette cb (l - 1) \
             title sprintf("layer %d", l), \
         for [s = 1:nsteps] NaN with points pt pt_of(s, s == nsteps) ps ps_of(s == nsteps) \
             lc rgb "#444444" title step_label[s]
} else {
    set colorbox vertical user origin 1.0 - key_w + 0.02, 0.08 size 0.015, 0.35
    set cbtics ("layer 1" 0, sprintf("layer %d", nlayers) nlayers - 1)
    plot for [s = 1:nsteps] NaN with points pt pt_of(s, s == nsteps) ps ps_of(s == nsteps) \
             lc rgb "#444444" title step_label[s], \
         NaN with points pt 7 lc palette cb 0 notitle
}
unset multiplot
