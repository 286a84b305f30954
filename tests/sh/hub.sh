#!/bin/bash
# --base ORG/NAME[@REVISION] from the Hugging Face hub cache (issue #16), never the network:
# a cache laid out as huggingface_hub leaves it (models--ORG--NAME/refs/REV holding a commit
# hash, snapshots/HASH/ of symlinks into blobs/) is found through HF_HUB_CACHE and through
# HF_HOME; the numbers must equal those of the same base given as a path (the TSV, bit for
# bit), a revision (a ref or a hash) picks its snapshot, figure titles name the repository
# (not a snapshot's hash), and an id or revision not in the cache is exit 1 naming the cache
# folder.
set -u
SUITE=hub
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
D=$TMP/data

. "$ROOT/tests/suite_gen.sh"
gen_data gen_layouts.py

# the cache: main -> the base, v1 -> the weights of plain/checkpoint-1
C=$TMP/home/hub
R=$C/models--test-org--tiny
H1=0123456789abcdef0123456789abcdef01234567
H2=89abcdef0123456789abcdef0123456789abcdef
mkdir -p "$R/blobs" "$R/refs" "$R/snapshots/$H1" "$R/snapshots/$H2"
cp "$D/base.safetensors" "$R/blobs/aaaa"
cp "$D/plain/checkpoint-1/model.safetensors" "$R/blobs/bbbb"
ln -s ../../blobs/aaaa "$R/snapshots/$H1/model.safetensors"
ln -s ../../blobs/bbbb "$R/snapshots/$H2/model.safetensors"
printf '%s' "$H1" >"$R/refs/main"
printf '%s\n' "$H2" >"$R/refs/v1"

run path "$BIN" analyze --base "$D/base.safetensors" -o "$TMP/path.h5" ft="$D/plain"
[ $RC -eq 0 ] || fail path "exit $RC: $(peek "$LOG/path.err")"

# same LABEL ENV... : the TSV equals the one of the base given as a path
same() {
    local label=$1
    shift
    run "$label" env "$@" "$BIN" analyze --base test-org/tiny -o "$TMP/$label.h5" ft="$D/plain"
    crashed "$label" && return
    if [ $RC -ne 0 ]; then
        fail "$label" "exit $RC: $(peek "$LOG/$label.err")"
    elif ! cmp -s "$LOG/path.out" "$LOG/$label.out"; then
        fail "$label" "the table differs from --base PATH's"
    else
        pass "$label"
    fi
}
same hf-hub-cache HF_HUB_CACHE="$C" HF_HOME=/nonexistent
same hf-home -u HF_HUB_CACHE HF_HOME="$TMP/home"

# a revision: step 1 against its own weights is exactly 0
for rev in v1 "$H2"; do
    label=rev-${rev:0:8}
    run "$label" env HF_HUB_CACHE="$C" "$BIN" analyze --base "test-org/tiny@$rev" \
        -o "$TMP/$label.h5" ft="$D/plain"
    if [ $RC -eq 0 ] && awk -F'\t' '$3 == 1 && ($6 != 0 || $7 != 0) { bad = 1 } $3 == 1 { n++ }
            END { exit bad || n == 0 }' "$LOG/$label.out"; then
        pass "$label"
    else
        fail "$label" "exit $RC, or step 1 is not 0: $(peek "$LOG/$label.out") $(peek "$LOG/$label.err")"
    fi
done

# figure titles name the repository, not a snapshot's hash: --base ORG/NAME, and a path to a
# snapshot in the cache (plot --format svg: the title is text in the file)
run snap-path "$BIN" analyze --base "$R/snapshots/$H1" -o "$TMP/snap.h5" ft="$D/plain"
for h5 in hf-hub-cache snap; do
    run "title-$h5" "$BIN" plot "$TMP/$h5.h5" -o "$TMP/figs-$h5" --format svg
    crashed "title-$h5" && continue
    svg=$(ls "$TMP/figs-$h5"/fig2_*.svg 2>/dev/null | head -1)
    if [ $RC -ne 0 ] || [ -z "$svg" ]; then
        fail "title-$h5" "exit $RC, no figure: $(peek "$LOG/title-$h5.err")"
    elif grep -q "model test-org/tiny" "$svg" && ! grep -q "$H1" "$svg"; then
        pass "title-$h5"
    else
        fail "title-$h5" "$(basename "$svg"): $(grep -o "model [^<]*" "$svg" | head -1)"
    fi
done

# refused LABEL REGEX SPEC
refused() {
    run "$1" env HF_HUB_CACHE="$C" "$BIN" analyze --base "$3" -o "$TMP/bad.h5" ft="$D/plain"
    crashed "$1" && return
    if [ $RC -ne 1 ]; then
        fail "$1" "exit $RC, expected 1: $(peek "$LOG/$1.err")"
    elif ! grep -qE -- "$2" "$LOG/$1.err"; then
        fail "$1" "message does not match /$2/: $(peek "$LOG/$1.err")"
    elif [ -e "$TMP/bad.h5" ]; then
        fail "$1" "an output was left behind"
    else
        pass "$1"
    fi
}
refused not-cached "'test-org/other' is no local path.*$C.*models--test-org--other.*download" \
    test-org/other
refused no-revision "no revision 'v9'" test-org/tiny@v9
refused not-an-id "'test-org/\.\./tiny': No such file" test-org/../tiny
finish
