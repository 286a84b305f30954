#!/bin/bash
# layers: the architecture of docs/design.md, held against the code. The layers, from the
# ground up:
#
#   core  formats  checkpoints  analysis  results  plot  batch  cli
#
# A file of src/LAYER/ (and its public header include/dora/NAME.h, which belongs to the
# layer of src/*/NAME.c) may include headers of its own layer or of layers below it, never
# above. The libraries each made for one job stay in their layer: HDF5 in results/ (and
# what reads results files above it: plot, batch, cli), LAPACK and BLAS in analysis/,
# libzip in formats/, PCRE2 in checkpoints/. Prints PASS/FAIL per file; FAIL names the
# include that points the wrong way.
set -u
SUITE=layers
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
cd "$ROOT" || exit 1

LAYERS=(core formats checkpoints analysis results plot batch cli)
rank() { # LAYER -> its floor, or empty
    local i
    for i in "${!LAYERS[@]}"; do [ "${LAYERS[$i]}" = "$1" ] && { echo "$i"; return; }; done
}
# the layer of a public header: that of src/*/NAME.c; headers with no source of their own
# are listed here
header_layer() {
    local name=$1 c
    case $name in
    version | error) echo core; return ;;
    esac
    c=$(ls src/*/"$name".c 2>/dev/null | head -1)
    [ -n "$c" ] && basename "$(dirname "$c")"
}
# which layers may include a system library's header
lib_allowed() { # HEADER -> layers, or "any"
    case $1 in
    hdf5.h | H5*.h) echo "results plot batch cli" ;;
    lapacke.h | cblas.h) echo "analysis" ;;
    zip.h) echo "formats" ;;
    pcre2.h) echo "checkpoints" ;;
    *) echo any ;;
    esac
}

check_file() { # FILE LAYER
    local f=$1 layer=$2 me bad="" inc to tl
    me=$(rank "$layer")
    while read -r inc; do
        case $inc in
        \"dora/*)
            to=${inc#\"dora/}; to=${to%.h\"}
            tl=$(header_layer "$to")
            if [ -z "$tl" ]; then bad="$bad dora/$to.h (no layer: add src/LAYER/$to.c or list it)"; continue; fi
            ;;
        \"*/*)
            to=${inc#\"}; tl=${to%%/*}
            [ -n "$(rank "$tl")" ] || { bad="$bad ${inc//\"/} (not a layer folder)"; continue; }
            ;;
        \"*) bad="$bad ${inc//\"/} (include internal headers as \"LAYER/name.h\")"; continue ;;
        \<*)
            to=${inc#<}; to=${to%>}
            local ok
            ok=$(lib_allowed "$to")
            [ "$ok" = any ] || [[ " $ok " == *" $layer "* ]] || bad="$bad <$to> (only in: $ok)"
            continue
            ;;
        esac
        [ "$(rank "$tl")" -le "$me" ] || bad="$bad ${inc//\"/} ($tl is above $layer)"
    done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*\([<"][^>"]*[>"]\).*/\1/p' "$f")
    if [ -z "$bad" ]; then pass "$f"; else fail "$f" "includes upward or outside its layer:$bad"; fi
}

n=0
for f in src/*; do
    [ -d "$f" ] || { fail "$f" "a file directly in src/: every source belongs to a layer folder"; continue; }
    layer=$(basename "$f")
    [ -n "$(rank "$layer")" ] || { fail "$f" "not a layer (${LAYERS[*]})"; continue; }
    for g in "$f"/*.c "$f"/*.h; do
        [ -e "$g" ] || continue
        check_file "$g" "$layer"
        n=$((n + 1))
    done
done
for h in include/dora/*.h; do
    name=$(basename "$h" .h)
    layer=$(header_layer "$name")
    if [ -z "$layer" ]; then fail "$h" "no layer: no src/*/$name.c, and not listed"; continue; fi
    check_file "$h" "$layer"
    n=$((n + 1))
done
[ "$n" -gt 30 ] && pass "files-seen" || fail "files-seen" "only $n files checked"

# the check itself: an include that points up is caught
probe=$TMP/probe.c
printf '#include "dora/batch.h"\n' >"$probe"
out=$( (check_file "$probe" core) 2>&1)
case $out in FAIL*"batch is above core"*) pass self-test ;; *) fail self-test "an upward include was not caught: $out" ;; esac
finish
