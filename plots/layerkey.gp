# layerkey.gp - the key of layer colours, loaded by a figure's last panel: at KL pixels
# from the left and ky from the top of the canvas (common.gp's helpers), "layer N"
# entries for up to 8 layers (a line each when layer_lines is defined, else a point), a
# colour bar with the layer numbers beyond.

set label 1 "layer" at screen sx(KL), screen sy(ky + 8) left font @smallf
if (nlayers <= 8) {
    set tmargin at screen sy(ky + 20)
    set bmargin at screen sy(ky + 20 + RH * nlayers)
    set key at screen sx(KL), screen sy(ky + 18) left top Left reverse samplen (exists("layer_lines") ? 2 : 1) spacing 1.15 font @smallf
    if (exists("layer_lines")) {
        plot for [l = 1:nlayers] NaN with lines lw 2 lc palette cb layer_num[l] \
            title sprintf("layer %d", layer_num[l])
    } else {
        plot for [l = 1:nlayers] NaN with points pt 7 ps psf * 1.2 lc palette cb layer_num[l] \
            title sprintf("layer %d", layer_num[l])
    }
} else {
    set key off
    set colorbox vertical user origin screen sx(KL + 4), screen sy(ky + 220) size screen sx(16), screen (200.0 / H)
    set cbtics inice(lay_hi - lay_lo) out nomirror scale 0.6 font @smallf
    plot NaN with points pt 7 lc palette cb lay_lo notitle
}
unset label
