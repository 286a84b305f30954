#!/bin/sh
# Install the Debian packages that the build and the tests need, when missing.
# Used by `make deps`, `make demo` and CI. Needs root (or sudo) only if
# something is missing. chromium is for the tests only (tests/sh/report.sh opens the
# HTML report in it, headless).
set -eu

PKGS="gcc make pkg-config libc6-dev
libhdf5-dev hdf5-tools
libjansson-dev libpcre2-dev libzip-dev
libopenblas-dev libopenblas-openmp-dev liblapacke-dev gfortran
gnuplot-nox chromium
libopenmpi-dev openmpi-bin
python3 python3-numpy python3-h5py python3-pandas python3-torch python3-scipy
man-db groff-base bash-completion"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
if [ -z "$missing" ]; then
    echo "deps: all present"
    exit 0
fi
echo "deps: installing:$missing"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
        echo "deps: need root (or sudo) to install:$missing" >&2
        exit 1
    fi
fi
$SUDO apt-get update -q
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
