#!/bin/bash
# install: the tool as a C tool is installed. From a `make dist` tarball, built on its own
# (so nothing compiled in points at this checkout), `make install` into a temporary DESTDIR,
# the installed tree moved elsewhere and the unpacked sources deleted; then from another
# folder the installed binary runs `analyze` and `plot` on a small study. Also: each man page
# renders with `man -l` without a warning and names every option its command's --help
# lists; the bash completion offers them too; a tiny C program builds against the installed
# library through pkg-config; `make uninstall` removes what install put there.
set -u
SUITE=install
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

CMDS="analyze spectrum plot batch merge inspect report"
# the binary under test must come out of this suite untouched (a make in the unpacked
# sources once inherited BIN from the environment and rebuilt it there)
bin_sum=$(md5sum <"$BIN")
# the options a command's --help lists (its "  -x, --long ..." lines)
help_opts() {
    "$BIN" "$1" --help 2>&1 | grep -E '^  +-' | grep -oE -- '(^|[ ,])--?[a-zA-Z][a-zA-Z0-9-]*' |
        sed -E 's/^[ ,]//' | sort -u
}

# -- man pages: render without warnings, name every option of --help
for c in "" $CMDS; do
    page=$ROOT/docs/man/dora-analyze${c:+-$c}.1
    label=man-${c:-main}
    if [ ! -f "$page" ]; then fail "$label" "no page $page"; continue; fi
    warn=$(MANWIDTH=80 man --warnings -E UTF-8 -l "$page" 2>&1 >"$LOG/$label.txt")
    if [ -n "$warn" ]; then fail "$label" "man -l warns: $warn"; continue; fi
    [ -n "$c" ] || { pass "$label"; continue; }
    missing=""
    for o in $(help_opts "$c"); do
        # the rendered text keeps the option spelled as --help spells it
        grep -qF -- "$o" "$LOG/$label.txt" || missing="$missing $o"
    done
    [ -z "$missing" ] && pass "$label" || fail "$label" "options of --help not in the page:$missing"
done

# -- bash completion: every --help option is offered after 'dora-analyze CMD -'
if [ -f /usr/share/bash-completion/bash_completion ]; then
    for c in $CMDS; do
        got=$(bash -c '. /usr/share/bash-completion/bash_completion
              . "$1"
              COMP_WORDS=(dora-analyze "$2" -); COMP_CWORD=2; COMP_LINE="dora-analyze $2 -"
              COMP_POINT=${#COMP_LINE}; _dora_analyze; printf "%s\n" "${COMPREPLY[@]}"' \
              _ "$ROOT/tools/completion/dora-analyze.bash" "$c" 2>&1)
        missing=""
        for o in $(help_opts "$c"); do
            printf '%s\n' "$got" | grep -qE -- "^$o(=.*)?$" || missing="$missing $o"
        done
        [ -z "$missing" ] && pass "completion-$c" || fail "completion-$c" "not offered:$missing"
    done
    got=$(bash -c '. /usr/share/bash-completion/bash_completion; . "$1"
          COMP_WORDS=(dora-analyze an); COMP_CWORD=1; COMP_LINE="dora-analyze an"
          COMP_POINT=${#COMP_LINE}; _dora_analyze; printf "%s\n" "${COMPREPLY[@]}"' \
          _ "$ROOT/tools/completion/dora-analyze.bash")
    [ "$got" = analyze ] && pass completion-command || fail completion-command "got '$got'"
else
    fail completion "bash-completion is not installed (tools/deps.sh installs it)"
fi

# -- make dist, build the tarball on its own, install, move, delete the sources
if ! git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
    echo "SKIP install/dist: not a git checkout (make dist archives the committed tree)"
    finish
fi
# the tarball of the committed tree; built with the default flags, not make sanitize's
run dist env -u CFLAGS -u LDFLAGS -u MAKEFLAGS -u MFLAGS -u BIN -u BUILD make -s -C "$ROOT" dist BUILD="$TMP/distbuild"
tarball=$(tail -n 1 "$LOG/dist.out")
if [ $RC -ne 0 ] || [ ! -f "$tarball" ]; then
    fail dist "make dist: exit $RC: $(peek "$LOG/dist.err")"
    finish
fi
pass dist
mkdir -p "$TMP/src"
tar -xzf "$tarball" -C "$TMP/src"
src=$(echo "$TMP"/src/dora-analyze-*)
stage=$TMP/stage
timeout -k 5 600 env -u CFLAGS -u LDFLAGS -u MAKEFLAGS -u MFLAGS -u BIN -u BUILD \
    make -s -C "$src" -j2 install BIN=bin/dora-analyze BUILD=build PREFIX=/opt/dora DESTDIR="$stage" >"$LOG/install.out" 2>"$LOG/install.err"
RC=$?
if [ $RC -ne 0 ] || [ ! -x "$stage/opt/dora/bin/dora-analyze" ]; then
    fail install "make install from the tarball: exit $RC: $(tail -c 400 "$LOG/install.err")"
    finish
fi
pass install
for f in bin/dora-analyze lib/libdora.a lib/pkgconfig/dora.pc include/dora/analyze.h \
         share/dora-analyze/plots/fig2.gp share/man/man1/dora-analyze-analyze.1 \
         share/bash-completion/completions/dora-analyze; do
    [ -e "$stage/opt/dora/$f" ] || fail "installed-$f" "missing"
done
# -- uninstall removes what install put there (same sources, its own DESTDIR)
st2=$TMP/stage2
env -u CFLAGS -u LDFLAGS -u MAKEFLAGS -u MFLAGS -u BIN -u BUILD make -s -C "$src" install BIN=bin/dora-analyze BUILD=build PREFIX=/usr/local DESTDIR="$st2" \
    >"$LOG/install2.out" 2>&1 &&
    env -u CFLAGS -u LDFLAGS -u MAKEFLAGS -u MFLAGS -u BIN -u BUILD make -s -C "$src" uninstall BIN=bin/dora-analyze BUILD=build PREFIX=/usr/local DESTDIR="$st2" \
        >"$LOG/uninstall.out" 2>&1
left=$(find "$st2" -type f 2>/dev/null | head -3)
[ -z "$left" ] && pass uninstall || fail uninstall "left: $left"

# move the installed tree and delete the sources it was built from
mv "$stage/opt/dora" "$TMP/moved"
rm -rf "$src"
inst=$TMP/moved
elsewhere=$TMP/elsewhere
mkdir -p "$elsewhere"
if ! "$PY" "$TP/gen_small_study.py" "$elsewhere/study" >/dev/null; then
    fail study "gen_small_study.py failed"
    finish
fi
cd "$elsewhere" || exit 1
run inst-version env -u DORA_PLOTS_DIR "$inst/bin/dora-analyze" --version
grep -q "dora-analyze" "$LOG/inst-version.out" && pass installed-version ||
    fail installed-version "$(peek "$LOG/inst-version.out")"
run inst-analyze env -u DORA_PLOTS_DIR "$inst/bin/dora-analyze" analyze -q --base study/base.safetensors \
    -o "$elsewhere/study.h5" ft=study/ft lora=study/lora
crashed inst-analyze installed-analyze ||
    { [ $RC -eq 0 ] && [ -s study.h5 ] && pass installed-analyze ||
        fail installed-analyze "exit $RC: $(peek "$LOG/inst-analyze.err")"; }
if command -v gnuplot >/dev/null; then
    run inst-plot env -u DORA_PLOTS_DIR "$inst/bin/dora-analyze" plot study.h5 -o figs --format png
    crashed inst-plot installed-plot ||
        { [ $RC -eq 0 ] && [ -s figs/fig2_q_proj.png ] && pass installed-plot ||
            fail installed-plot "exit $RC: $(peek "$LOG/inst-plot.err")"; }
else
    fail installed-plot "gnuplot is not installed (tools/deps.sh installs it)"
fi

# -- pkg-config: a tiny program against the installed library
cat >"$TMP/tiny.c" <<'C'
#include <dora/tensor.h>
#include <dora/version.h>
#include <stdio.h>
#include <string.h>
int main(void)
{
    printf("%s %s %zu\n", DORA_VERSION, dora_dtype_name(DORA_DT_BF16), dora_dtype_size(DORA_DT_BF16));
    return strcmp(dora_dtype_name(dora_dtype_parse("F32")), "F32") != 0;
}
C
pc="pkg-config --define-variable=prefix=$inst"
export PKG_CONFIG_PATH=$inst/lib/pkgconfig
if flags=$($pc --cflags --libs dora 2>"$LOG/pc.err"); then
    # shellcheck disable=SC2086
    if cc -std=c11 -o "$TMP/tiny" "$TMP/tiny.c" $flags 2>"$LOG/tiny.err" && out=$("$TMP/tiny"); then
        [ "$out" = "$("$inst/bin/dora-analyze" --version | awk '{print $2}') BF16 2" ] &&
            pass pkg-config || fail pkg-config "tiny program printed '$out'"
    else
        fail pkg-config "cc: $(peek "$LOG/tiny.err")"
    fi
else
    fail pkg-config "pkg-config: $(peek "$LOG/pc.err")"
fi

[ "$(md5sum <"$BIN")" = "$bin_sum" ] && pass binary-untouched || fail binary-untouched "$BIN was rebuilt by the suite"
finish
