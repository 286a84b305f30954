# fig8.gp - dM and dD by layer, runs overlaid (the DoRA paper's Fig. 8).
#
# Loaded by `dora-analyze plot` after a parameter script that sets:
#   term_kind, outfile, datafile, main_title, nruns, arrays (1..nruns) run_title,
#   nlayers, and axis multipliers mscale, dscale with labels mlab, dlab.
# Data: one block per run, rows "layer dM dD" at the run's final step.

set encoding utf8
if (term_kind eq "png") {
    fs = 13
    psf = 1.0
    set terminal pngcairo size 1300,520 font "DejaVu Sans,13" linewidth 1.5
} else {
    if (term_kind eq "pdf") {
        fs = 8
        psf = 0.45
        set terminal pdfcairo size 7in,2.8in font "DejaVu Sans,8" linewidth 1
    } else {
        fs = 12
        psf = 0.8
        set terminal svg size 1100,440 font "DejaVu Sans,12" linewidth 1.2 background "white"
    }
}
set output outfile
# font sizes relative to the terminal's, as macros (some commands take only a literal)
bigf = sprintf("\",%d\"", fs + 2)
smallf = sprintf("\",%d\"", fs - 1)

# Okabe-Ito colours (colour-blind safe), a marker each as a second cue
array run_lc[8] = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
array run_pt[8] = [7, 5, 9, 13, 11, 15, 3, 1]

set multiplot layout 1, 2 title main_title noenhanced font @bigf
set border 3 lw 1
set tics nomirror out scale 0.6
set grid lc rgb "#dddddd" lw 0.8
set xlabel "layer"
set xtics 1
set xrange [0.5:nlayers + 0.5]
set format y "%.3g"
set offsets 0, 0, graph 0.08, graph 0.05
set key outside top center horizontal Left reverse samplen 2 font @smallf

set title "magnitude change"
set ylabel mlab
plot for [i = 1:nruns] datafile index (i - 1) using ($1 + 1):($2 * mscale) \
     with linespoints lw 1.5 pt run_pt[(i - 1) % 8 + 1] ps psf * 1.2 lc rgb run_lc[(i - 1) % 8 + 1] \
     title run_title[i] noenhanced

set title "direction change"
set ylabel dlab
unset key  # one legend, over the left panel, serves both
plot for [i = 1:nruns] datafile index (i - 1) using ($1 + 1):($3 * dscale) \
     with linespoints lw 1.5 pt run_pt[(i - 1) % 8 + 1] ps psf * 1.2 lc rgb run_lc[(i - 1) % 8 + 1] \
     title run_title[i] noenhanced
unset multiplot
