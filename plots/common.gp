# common.gp - what every figure shares, loaded by fig2.gp, fig8.gp and trajectory.gp
# after they have chosen their canvas of W x H pixels (a grid of panels that grows
# with their number, and a key column).
#
# Sets the terminal of term_kind ("png" | "pdf" | "svg") on outfile: PNG and SVG at
# W x H pixels, PDF with the same layout at 144 pixels an inch (lines and markers
# halved), so that every format shows the same figure. Defines fs (the
# font size), psf (point-size factor), the font macros bigf and smallf, the palette
# of layers, the colours of runs, and the helpers below.

set encoding utf8
if (term_kind eq "png") {
    fs = 12
    psf = 1.0
    set terminal pngcairo size W, H font "DejaVu Sans,12" linewidth 1.5
} else {
    if (term_kind eq "pdf") {
        # cairo's PNG text is drawn at 96 dpi: 12 pt there is 16 pixels, 8 pt here
        fs = 8
        psf = 0.5
        set terminal pdfcairo size W / 144.0, H / 144.0 font "DejaVu Sans,8" linewidth 0.75
    } else {
        # a browser draws SVG text smaller than cairo draws the same size
        fs = 14
        psf = 0.7
        set terminal svg size W, H font "DejaVu Sans,14" linewidth 1.5 background "white"
    }
}
set output outfile
# font sizes relative to the terminal's, as macros (some commands take only a literal)
bigf = sprintf("\",%d\"", fs + 2)
smallf = sprintf("\",%d\"", fs - 1)

# pixels of the canvas, from the left and from the top, as screen coordinates
sx(p) = p / (1.0 * W)
sy(p) = 1.0 - p / (1.0 * H)

# layers: viridis, stopped before its pale yellow end so every point shows on white
set palette defined (0 '#440154', 1 '#414487', 2 '#2a788e', 3 '#22a884', 4 '#7ad151', 5 '#bddf26')
lay_lo = layer_num[1]
lay_hi = (layer_num[nlayers] > layer_num[1]) ? layer_num[nlayers] : layer_num[1] + 1
set cbrange [lay_lo:lay_hi]
unset colorbox

# runs: Okabe-Ito colours (colour-blind safe), a marker each as a second cue
array run_lc[8] = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#999999"]
array run_pt[8] = [7, 5, 9, 13, 11, 15, 3, 1]
lc_of(i) = run_lc[(i - 1) % 8 + 1]
rpt_of(i) = run_pt[(i - 1) % 8 + 1]

# a tick step of 1, 2 or 5 x 10^k giving three to five ticks over a range r
tick_e(r) = 10**floor(log10(r / 3.0))
tick_f(r) = r / 3.0 / tick_e(r)
nice(r) = (tick_f(r) < 1.5 ? 1 : tick_f(r) < 3.5 ? 2 : tick_f(r) < 7.5 ? 5 : 10) * tick_e(r)
# an axis of one value (a single point, or every value 0) gets a range around it
pad(v) = (v != 0) ? abs(v) * 0.1 : 1
# the same for integers (layers, steps): never below 1
inice(r) = (r < 6) ? 1 : nice(r)

# panel P (1-based) of a grid of NCOLS columns, each PW x PH pixels below a title
# band of TH pixels: its margins, leaving LM, RM, TM, BM pixels for labels
panel_col(p) = (p - 1) % ncols
panel_row(p) = int((p - 1) / ncols)
panel_left(p) = panel_col(p) * PW
panel_top(p) = TH + panel_row(p) * PH

# the key column on the right, after the panels (eval start_keys): the panels' axes
# cleared, KL its left edge and ky its top, in pixels
start_keys = "KL = W - KW + 16; unset label; unset grid; unset border; unset tics; " . \
    "unset xlabel; unset ylabel; unset offsets; set xrange [0:1]; set yrange [0:1]; " . \
    "set lmargin at screen sx(KL); set rmargin at screen sx(W - 4); ky = TH + 10"

set border 3 lw 1
set tics nomirror out scale 0.6
set grid lc rgb "#dddddd" lw 0.8
set key off
