#!/bin/sh
# make bench: tests/bench/bench.py (analyze; BENCH_ARGS), then tests/bench/bench_spectrum.py
# (spectrum against NumPy; BENCH_SPECTRUM_ARGS, e.g. --llm7b-layer; "skip" skips it).
set -eu
cd "$(dirname "$0")/../.."
PY=${PYTHON:-/usr/bin/python3}
"$PY" tests/bench/bench.py --bin "${BIN:-bin/dora-analyze}" \
    --probe "${PROBE:-build/bench_probe}" --python "$PY" ${BENCH_ARGS:-}
[ "${BENCH_SPECTRUM_ARGS:-}" = skip ] && exit 0
echo
exec "$PY" tests/bench/bench_spectrum.py --bin "${BIN:-bin/dora-analyze}" --python "$PY" \
    ${BENCH_SPECTRUM_ARGS:-}
