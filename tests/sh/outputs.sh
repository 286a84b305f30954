#!/bin/bash
# outputs: what the tool writes, when things go wrong around it (issue #14, classes 5, 7, 8, 9).
#  - a full disk (a small tmpfs) while analyze, spectrum, merge and batch write: exit 1, the
#    file named, no crash, nothing left in the folder;
#  - an output that is an input (also through a symlink, or with --force), or an existing file
#    the tool did not write: refused before any work, exit 2, both paths named, inputs intact;
#    two outputs that are one file; manifests whose outputs are one file or another's journal;
#  - a symlink planted at the old predictable temporary name (OUT.tmp-PID): never followed;
#  - a --csv failure leaves no HDF5 file; FIFOs as manifest, journal, plot input or shard
#    journal: refused at once, no hang; SIGHUP and SIGQUIT remove the temporary; a temporary
#    left by kill -9 is removed by the next run, but nothing that is not certainly ours.
# Each check prints PASS/FAIL outputs/LABEL (SKIP for the tmpfs checks without mount rights).
set -u
SUITE=outputs
. "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

FULL=$TMP/full
cleanup() {
    mountpoint -q "$FULL" 2>/dev/null && umount "$FULL"
    [ -n "${bgpid:-}" ] && kill -9 "$bgpid" 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
bgpid=
case $BIN in *build-san*) SAN=1 ;; *) SAN=0 ;; esac
# ASan must come first among the libraries; the fsync shim below is preloaded beside it
export ASAN_OPTIONS=${ASAN_OPTIONS:-}${ASAN_OPTIONS:+:}verify_asan_link_order=0

cd "$TMP" || exit 1
"$PY" "$TP/gen_small_study.py" small >/dev/null || { fail gen "gen_small_study.py failed"; finish; }
"$PY" "$TP/gen_outputs.py" foreign >/dev/null || { fail gen "gen_outputs.py failed"; finish; }
sums() { find small -type f | sort | xargs sha256sum; }
sums >inputs.sum
cp -a small pristine
# true if no input changed; else false, and the inputs are restored for the next checks
inputs_intact() {
    sums | cmp -s - inputs.sum && return 0
    rm -rf small && cp -a pristine small
    return 1
}
# any temporary of ours or of the old naming in folder DIR
temps_in() { find "$1" -maxdepth 2 \( -name '*.tmp-*' -o -name '*dora-tmp*' \) 2>/dev/null | head -3 | tr '\n' ' '; }

# expect LABEL WANT-RC PATTERN [PATTERN2]: RC, stderr patterns, no crash, inputs intact
expect() {
    local label=$1 want=$2 p1=$3 p2=${4:-} intact=1
    inputs_intact || intact=0
    crashed "$label" && return 1
    if [ $intact -eq 0 ]; then
        fail "$label" "an input was modified (exit $RC)"
        return 1
    fi
    if [ "$RC" -ne "$want" ]; then
        fail "$label" "exit $RC, expected $want: $(peek "$LOG/$label.err")"
        return 1
    fi
    if ! grep -qF -- "$p1" "$LOG/$label.err" || { [ -n "$p2" ] && ! grep -qF -- "$p2" "$LOG/$label.err"; }; then
        fail "$label" "message does not name '$p1' ${p2:+and '$p2'}: $(peek "$LOG/$label.err")"
        return 1
    fi
    return 0
}

# a manifest of one study: NAME OUTPUT [RUN-PATH]
manifest() {
    cat <<EOF
{"studies": [{"name": "$1", "base": "small/base.safetensors",
  "runs": [{"name": "ft", "path": "${3:-small/ft}"}], "output": "$2"}]}
EOF
}

# ---- class 5: a full disk while the results are written --------------------------------
mkdir -p "$FULL" shards
manifest sh shards/s.h5 >sh.json
run shard1 "$BIN" batch -q sh.json --shard 1/2
run shard2 "$BIN" batch -q sh.json --shard 2/2
if ! mount -t tmpfs -o size=64k tmpfs "$FULL" 2>/dev/null; then
    echo "SKIP $SUITE/diskfull: cannot mount a tmpfs here (needs root)"
else
    umount "$FULL"
    # diskfull CMD SIZE LABEL ARGS...: the command on a tmpfs of SIZE must fail cleanly
    diskfull() {
        local size=$1 label=$2 file=$3
        shift 3
        mount -t tmpfs -o size="$size" tmpfs "$FULL"
        run "$label" "$@"
        local left
        left=$(ls -A "$FULL" | grep -v '\.journal$' | head -3 | tr '\n' ' ')
        if expect "$label" 1 "$file"; then
            if [ -n "$left" ]; then fail "$label" "left behind in the full folder: $left"
            else pass "$label"; fi
        fi
        umount "$FULL"
    }
    for sz in 16k 64k; do
        diskfull $sz diskfull-analyze-$sz "$FULL/a.h5" \
            "$BIN" analyze -q --per-row --base small/base.safetensors -o "$FULL/a.h5" ft=small/ft
        diskfull $sz diskfull-spectrum-$sz "$FULL/s.h5" \
            "$BIN" spectrum -q --base small/base.safetensors -o "$FULL/s.h5" ft=small/ft
    done
    for sz in 8k 16k; do
        diskfull $sz diskfull-merge-$sz "$FULL/m.h5" \
            "$BIN" merge -q "$FULL/m.h5" shards/s.shard-1-of-2.h5 shards/s.shard-2-of-2.h5
        manifest full "$FULL/b.h5" >full.json
        diskfull $sz diskfull-batch-$sz "$FULL/b.h5" "$BIN" batch -q full.json
    done
fi

# ---- class 7: outputs that would destroy inputs ----------------------------------------
mkdir -p o
ln -s ../small/base.safetensors o/link.h5
# refused LABEL OUT-PATH INPUT-PATH ARGS...: exit 2 naming both, nothing written
refused() {
    local label=$1 outp=$2 inp=$3
    shift 3
    run "$label" "$@"
    expect "$label" 2 "$outp" "$inp" && pass "$label"
}
A=("$BIN" analyze -q --base small/base.safetensors)
refused out-is-base small/base.safetensors small/base.safetensors \
    "${A[@]}" -o small/base.safetensors ft=small/ft
refused out-is-base-force small/base.safetensors small/base.safetensors \
    "${A[@]}" --force -o small/base.safetensors ft=small/ft
refused out-symlink-to-base o/link.h5 small/base.safetensors "${A[@]}" -o o/link.h5 ft=small/ft
refused out-is-checkpoint small/ft/checkpoint-200/model.safetensors small/ft \
    "${A[@]}" -o small/ft/checkpoint-200/model.safetensors ft=small/ft
refused csv-is-trainer-state small/ft/checkpoint-100/trainer_state.json small/ft \
    "${A[@]}" -o o/a.h5 --csv small/ft/checkpoint-100/trainer_state.json ft=small/ft
[ -e o/a.h5 ] && fail csv-is-trainer-state-no-h5 "o/a.h5 written" || pass csv-is-trainer-state-no-h5
refused spectrum-out-is-adapter small/lora/checkpoint-100/adapter_model.safetensors small/lora \
    "$BIN" spectrum -q -o small/lora/checkpoint-100/adapter_model.safetensors lora=small/lora
ln -s "$TMP/shards/s.shard-1-of-2.h5" o/shardlink.h5
refused merge-out-is-shard o/shardlink.h5 shards/s.shard-1-of-2.h5 \
    "$BIN" merge -q o/shardlink.h5 shards/s.shard-1-of-2.h5 shards/s.shard-2-of-2.h5

# existing files the tool did not write: refused; --force replaces them; ours are replaced
for f in foreign lookalike; do
    cp foreign/$f.h5 o/$f.h5
    sum=$(sha256sum <o/$f.h5)
    refused not-ours-$f o/$f.h5 "--force" "${A[@]}" -o o/$f.h5 ft=small/ft
    [ "$(sha256sum <o/$f.h5)" = "$sum" ] || fail not-ours-$f-kept "o/$f.h5 changed"
done
echo "my notes" >o/notes.txt
refused not-ours-text o/notes.txt "--force" "${A[@]}" -o o/notes.txt ft=small/ft
cp foreign/notes.csv o/notes.csv
refused not-ours-csv o/notes.csv "--force" "${A[@]}" -o o/t.h5 --csv o/notes.csv ft=small/ft
[ -e o/t.h5 ] && fail not-ours-csv-no-h5 "o/t.h5 written" || pass not-ours-csv-no-h5
run force-replaces "${A[@]}" --force -o o/notes.txt ft=small/ft
crashed force-replaces || { [ $RC -eq 0 ] && head -c 4 o/notes.txt | grep -q HDF &&
    pass force-replaces || fail force-replaces "exit $RC: $(peek "$LOG/force-replaces.err")"; }
run ours-replaced "${A[@]}" -o o/notes.txt --csv o/t.csv ft=small/ft
run ours-replaced2 "${A[@]}" -o o/notes.txt --csv o/t.csv ft=small/ft
crashed ours-replaced2 || { [ $RC -eq 0 ] && pass ours-replaced ||
    fail ours-replaced "exit $RC: $(peek "$LOG/ours-replaced2.err")"; }

# batch: a study writing over its base, a checkpoint; reports over inputs
manifest self small/base.safetensors >m-base.json
run batch-out-is-base "$BIN" batch -q m-base.json
expect batch-out-is-base 2 small/base.safetensors && pass batch-out-is-base
manifest ck small/ft/checkpoint-300/model.safetensors >m-ck.json
run batch-out-is-checkpoint "$BIN" batch -q m-ck.json
expect batch-out-is-checkpoint 2 small/ft/checkpoint-300/model.safetensors && pass batch-out-is-checkpoint
manifest ok o/b.h5 >m-ok.json
run batch-report-is-base "$BIN" batch -q m-ok.json --report-json small/base.safetensors
expect batch-report-is-base 2 small/base.safetensors && pass batch-report-is-base
[ -e o/b.h5 ] || [ -e o/b.h5.journal ] && fail batch-report-is-base-no-work "o/b.h5 written" ||
    pass batch-report-is-base-no-work
# two studies whose outputs are one file through a symlinked folder; an output that is
# another study's journal
mkdir -p real && ln -s real alias
cat >m-two.json <<'EOF'
{"studies": [
 {"name": "a", "base": "small/base.safetensors", "runs": [{"name": "ft", "path": "small/ft"}], "output": "real/x.h5"},
 {"name": "b", "base": "small/base.safetensors", "runs": [{"name": "ft", "path": "small/ft"}], "output": "alias/x.h5"}]}
EOF
run manifest-symlinked-outputs "$BIN" batch -q m-two.json
expect manifest-symlinked-outputs 2 real/x.h5 alias/x.h5 && pass manifest-symlinked-outputs
sed 's#"alias/x.h5"#"real/x.h5.journal"#' m-two.json >m-journal.json
run manifest-output-is-journal "$BIN" batch -q m-journal.json
expect manifest-output-is-journal 2 "real/x.h5.journal" && pass manifest-output-is-journal
[ -z "$(ls -A real)" ] && pass manifest-errors-wrote-nothing || fail manifest-errors-wrote-nothing "$(ls -A real)"

# ---- class 8: a symlink planted at the old predictable temporary name ------------------
echo "precious" >victim
vsum=$(sha256sum <victim)
planted() { # LABEL LINK-NAME COMMAND...: the command plants LINK-NAME with its own PID, then execs
    local label=$1 link=$2
    shift 2
    run "$label" sh -c 'ln -s "$0" "$(printf "$1" $$)"; shift; exec "$@"' "$TMP/victim" "$link" "$@"
    crashed "$label" && return
    if [ "$(sha256sum <victim)" != "$vsum" ]; then
        fail "$label" "the planted symlink was followed: victim overwritten (exit $RC)"
        echo "precious" >victim
    elif [ $RC -ne 0 ]; then
        fail "$label" "exit $RC: $(peek "$LOG/$label.err")"
    else
        pass "$label"
    fi
    find . -maxdepth 3 -name '*.tmp-*' -type l -delete
}
planted plant-h5 o/p.h5.tmp-%s "${A[@]}" -o o/p.h5 ft=small/ft
planted plant-csv o/p.csv.tmp-%s "${A[@]}" -o o/p2.h5 --csv o/p.csv ft=small/ft
planted plant-spectrum o/s.h5.tmp-%s "$BIN" spectrum -q -o o/s.h5 lora=small/lora
manifest pj o/pj.h5 >m-pj.json
planted plant-journal o/pj.h5.journal.tmp-%s "$BIN" batch -q m-pj.json
planted plant-report o/r.json.tmp-%s "$BIN" batch -q m-pj.json --report-json o/r.json
planted plant-merge o/mm.h5.tmp-%s "$BIN" merge -q o/mm.h5 shards/s.shard-1-of-2.h5 shards/s.shard-2-of-2.h5
if command -v gnuplot >/dev/null; then
    mkdir -p o/figs
    run plot-input "${A[@]}" -o o/plot.h5 ft=small/ft
    planted plant-figure o/figs/.fig2_q_proj.png.tmp-%s "$BIN" plot o/plot.h5 -o o/figs --format png --modules q_proj
fi

# ---- class 9: commit together, two outputs as one, FIFOs ---------------------------------
run csv-fails-no-h5 "${A[@]}" -o o/c.h5 --csv o/nodir/c.csv ft=small/ft
expect csv-fails-no-h5 1 o/nodir/c.csv && { [ -e o/c.h5 ] && fail csv-fails-no-h5 "o/c.h5 left behind" ||
    pass csv-fails-no-h5; }
run same-two-outputs "${A[@]}" -o o/same.h5 --csv o/./same.h5 ft=small/ft
expect same-two-outputs 2 o/same.h5 && pass same-two-outputs
mkfifo fifo.json
# hangs are caught by a 10 s guard (the fixed run takes well under a second)
fifo() { # LABEL WANT PATTERN ARGS...
    local label=$1 want=$2 pat=$3
    shift 3
    timeout -k 2 10 "$@" >"$LOG/$label.out" 2>"$LOG/$label.err"
    RC=$?
    expect "$label" "$want" "$pat" && pass "$label"
}
fifo fifo-manifest 2 fifo.json "$BIN" batch -q fifo.json
manifest fj o/fj.h5 >m-fj.json
mkfifo o/fj.h5.journal
fifo fifo-journal 2 o/fj.h5.journal "$BIN" batch -q m-fj.json
mkfifo fifo.h5
fifo fifo-plot-input 1 fifo.h5 "$BIN" plot --stats --no-figures fifo.h5
mkfifo shards/f.journal
fifo fifo-shard-journal 1 shards/f.journal "$BIN" merge -q o/f.h5 shards/f.journal
# model files: a FIFO named like a model is refused, not waited on
mkfifo fifo.safetensors fifo.bin
fifo fifo-base 1 fifo.safetensors "$BIN" analyze -q --base fifo.safetensors -o o/ff.h5 ft=small/ft
fifo fifo-run-bin 1 fifo.bin "${A[@]}" -o o/ff.h5 ft=fifo.bin
fifo fifo-inspect 1 fifo.safetensors "$BIN" inspect fifo.safetensors

# ---- signals and kill -9: a shim holds fsync of our temporaries so the signal lands ----
cat >shim.c <<'EOF'
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
/* fsync of a temporary output (old or new naming): write the marker, then wait */
int fsync(int fd)
{
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    const char *mark = getenv("SHIM_MARK");
    if (n > 0 && mark) {
        path[n] = '\0';
        if (strstr(path, ".tmp-") || strstr(path, "dora-tmp")) {
            FILE *f = fopen(mark, "w");
            if (f) {
                fputs(path, f);
                fclose(f);
            }
            sleep(60);
        }
    }
    return (int)syscall(SYS_fsync, fd);
}
EOF
if ! cc -shared -fPIC -o shim.so shim.c 2>"$LOG/shim.err"; then
    fail shim "cannot build the fsync shim: $(peek "$LOG/shim.err")"
else
    # held LABEL SIGNAL OUTDIR COMMAND...: start it held in fsync, send SIGNAL, wait. A
    # non-interactive shell starts background jobs with SIGINT and SIGQUIT ignored (and
    # nohup ignores SIGHUP), which the tool rightly keeps: env restores the defaults.
    held() {
        local label=$1 sig=$2 dir=$3
        shift 3
        rm -f mark
        (ulimit -c 0; SHIM_MARK=$TMP/mark LD_PRELOAD=$TMP/shim.so exec env --default-signal=INT,QUIT,HUP,TERM "$@") \
            >"$LOG/$label.out" 2>"$LOG/$label.err" &
        bgpid=$!
        for _ in $(seq 300); do [ -s mark ] && break; sleep 0.1; done
        if [ ! -s mark ]; then
            kill -9 $bgpid 2>/dev/null
            wait $bgpid 2>/dev/null
            bgpid=
            fail "$label" "no temporary output was fsync'ed within 30 s"
            return 1
        fi
        kill -"$sig" $bgpid
        wait $bgpid
        RC=$?
        bgpid=
        return 0
    }
    for sig in HUP QUIT INT TERM; do
        mkdir -p sig-$sig
        manifest s sig-$sig/s.h5 >m-sig-$sig.json
        if held signal-$sig $sig sig-$sig "$BIN" batch -q m-sig-$sig.json; then
            num=$(kill -l $sig)
            left=$(temps_in sig-$sig)
            if [ $RC -ne $((128 + num)) ]; then
                fail signal-$sig "exit $RC, expected death by SIG$sig ($((128 + num))): $(peek "$LOG/signal-$sig.err")"
            elif [ -n "$left" ]; then
                fail signal-$sig "temporary left behind: $left"
            else
                pass signal-$sig
            fi
        fi
    done
    mkdir -p sig-an
    if held signal-analyze-QUIT QUIT sig-an "${A[@]}" -o sig-an/a.h5 --csv sig-an/a.csv ft=small/ft; then
        left=$(temps_in sig-an)
        [ $RC -eq 131 ] && [ -z "$left" ] && [ ! -e sig-an/a.h5 ] && pass signal-analyze-QUIT ||
            fail signal-analyze-QUIT "exit $RC; left: $left $(ls sig-an)"
    fi

    # kill -9: the temporary stays; the next run for the same output removes it, and only it
    mkdir -p k9
    manifest k k9/k.h5 >m-k9.json
    if held kill9-left KILL k9 "$BIN" batch -q m-k9.json; then
        left=$(temps_in k9)
        [ -n "$left" ] && pass kill9-left || fail kill9-left "nothing left by kill -9 (the test is void)"
        host=$(hostname | tr -c 'A-Za-z0-9.\n' '_')
        # decoys: a live PID's folder, a dead PID's folder holding something else, a symlink
        mkdir -p "k9/.k.h5.journal.dora-tmp-$host-$$-abcdef" "k9/.k.h5.journal.dora-tmp-$host-999999-ghijkl" elsewhere
        echo mine >"k9/.k.h5.journal.dora-tmp-$host-$$-abcdef/out"
        echo mine >"k9/.k.h5.journal.dora-tmp-$host-999999-ghijkl/notes"
        echo mine >elsewhere/out
        ln -s "$TMP/elsewhere" "k9/.k.h5.journal.dora-tmp-$host-999998-mnopqr"
        run kill9-rerun "$BIN" batch -q m-k9.json
        crashed kill9-rerun || {
            left=$(find k9 -maxdepth 1 \( -name '*.tmp-*' -o -name '*dora-tmp*' \) | sort | tr '\n' ' ')
            want="k9/.k.h5.journal.dora-tmp-$host-$$-abcdef k9/.k.h5.journal.dora-tmp-$host-999998-mnopqr k9/.k.h5.journal.dora-tmp-$host-999999-ghijkl "
            if [ $RC -ne 0 ]; then fail kill9-cleaned "exit $RC: $(peek "$LOG/kill9-rerun.err")"
            elif [ "$left" != "$want" ]; then fail kill9-cleaned "left: '$left', expected only the decoys"
            elif [ ! -s elsewhere/out ] || [ ! -s "k9/.k.h5.journal.dora-tmp-$host-$$-abcdef/out" ] ||
                 [ ! -s "k9/.k.h5.journal.dora-tmp-$host-999999-ghijkl/notes" ]; then
                fail kill9-cleaned "a decoy's file was removed"
            else pass kill9-cleaned; fi
        }
    fi
fi
finish
