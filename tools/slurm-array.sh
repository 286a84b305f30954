#!/bin/bash
# Run a dora-analyze batch manifest on a Slurm cluster as a job array.
#
#   tools/slurm-array.sh MANIFEST N [sbatch options...]
#
# submits two jobs:
#   1. an array of N tasks; task K runs `dora-analyze batch MANIFEST --shard K/N`: the units
#      (run, checkpoint) with index K-1, K-1+N, ... of the manifest, into shard files
#      OUT.shard-K-of-N.h5 beside each study's output, each with its journal (.journal);
#   2. after every task has ended (successfully or not), one task that runs
#      `dora-analyze batch MANIFEST` without --shard. It takes every unit the shard journals
#      hold (same inputs: same base, filters, checkpoint size and mtime), redoes any that a
#      failed or killed task left out, writes each study's OUT.h5, draws the figures, checks
#      the expectations and writes the reports (its exit status is the CI verdict).
#
# Shard files can also be joined by hand: dora-analyze merge OUT.h5 OUT.shard-*-of-N.h5
#
# The shards are deterministic (unit i goes to shard i mod N + 1), and each unit's numbers do
# not depend on where it ran, so the final files are the same, bit for bit, as one
# `dora-analyze batch MANIFEST` on one machine. A task killed at its time limit loses only
# the unit it was analysing: resubmit it (or let step 2 redo it).
#
# Environment: DORA (the program, default: dora-analyze on PATH), REPORTS (folder for
# batch-report.json and batch-junit.xml, default: the current folder). Each array task gets
# --cpus-per-task threads (default 8: pass --cpus-per-task=M to change).
#
# Alternatively, with a build of `make MPI=1` and an MPI-aware Slurm (srun --mpi=pmix):
#   srun -n 16 --cpus-per-task=8 dora-analyze batch MANIFEST -j 8
# rank 0 hands out the units and writes the results; the other ranks analyse.
set -eu

if [ $# -lt 2 ] || ! [ "$2" -ge 1 ] 2>/dev/null; then
    echo "usage: $0 MANIFEST N [sbatch options...]" >&2
    exit 2
fi
manifest=$(realpath "$1")
n=$2
shift 2
dora=${DORA:-$(command -v dora-analyze || true)}
if [ -z "$dora" ] || [ ! -x "$dora" ]; then
    echo "$0: dora-analyze not found: put it on PATH or set DORA=/path/to/dora-analyze" >&2
    exit 2
fi
dora=$(realpath "$dora")
reports=$(realpath "${REPORTS:-.}")

# check the manifest and its inputs before anything is queued
"$dora" batch --dry-run "$manifest" >/dev/null

array_id=$(sbatch --parsable --job-name=dora-batch --array="1-$n" --cpus-per-task=8 "$@" \
    --output="dora-batch-%A_%a.log" \
    --wrap "exec '$dora' batch '$manifest' --shard \"\$SLURM_ARRAY_TASK_ID/$n\" \
            -j \"\${SLURM_CPUS_PER_TASK:-1}\" --progress=never")
final_id=$(sbatch --parsable --job-name=dora-batch-final --dependency="afterany:$array_id" \
    --cpus-per-task=8 "$@" --output="dora-batch-%j-final.log" \
    --wrap "exec '$dora' batch '$manifest' -j \"\${SLURM_CPUS_PER_TASK:-1}\" --progress=never \
            --report-json '$reports/batch-report.json' --junit '$reports/batch-junit.xml'")
echo "submitted: array job $array_id ($n tasks), then job $final_id (join, figures, expectations)"
