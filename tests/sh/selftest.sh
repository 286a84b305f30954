#!/bin/bash
# Tests of the Python test tools themselves (stio.py, check_h5.py, gen_hostile.py):
# BF16 rounding, writer/reader round trip, the strict reader against the hostile
# corpus and the real files, the float64 reference against np.longdouble, and
# check_h5.py failing on deliberately wrong results. Needs no dora-analyze.
#   tests/sh/selftest.sh   (env: PY or PYTHON, REALDATA)
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PY=${PY:-${PYTHON:-/usr/bin/python3}}
REALDATA=${REALDATA:-$ROOT/../shared/realdata}
exec "$PY" "$ROOT/tests/py/selftest.py" "$REALDATA"
