#!/usr/bin/python3
"""Run a command; print its peak RssAnon in KiB (tests/bench/bench.py's poll_peak: sampled
from /proc/PID/status every 2 ms) as stdout's last line; exit with its exit code. The
command's own stdout and stderr go to the files named by --out and --err.

    peak_rss.py --out OUT --err ERR CMD...
"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
from bench import poll_peak  # noqa: E402


def main():
    args = sys.argv[1:]
    if len(args) < 5 or args[0] != "--out" or args[2] != "--err":
        sys.exit(__doc__)
    with open(args[1], "wb") as out, open(args[3], "wb") as err:
        p = subprocess.Popen(args[4:], stdout=out, stderr=err)
        peak = poll_peak(p)
    print(peak)
    sys.exit(p.returncode)


if __name__ == "__main__":
    main()
