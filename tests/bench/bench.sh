#!/bin/sh
# make bench: see tests/bench/bench.py.
set -eu
cd "$(dirname "$0")/../.."
exec "${PYTHON:-/usr/bin/python3}" tests/bench/bench.py --bin "${BIN:-bin/dora-analyze}" \
    --probe "${PROBE:-build/bench_probe}" --python "${PYTHON:-/usr/bin/python3}" ${BENCH_ARGS:-}
