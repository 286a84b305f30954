#!/usr/bin/python3
"""Run a command; print its peak RssAnon in KiB (sampled from /proc/PID/status every
2 ms, as tests/bench/bench.py does) on stdout's last line; exit with its exit code.
The command's own stdout and stderr go to the files named by --out and --err.

    peak_rss.py --out OUT --err ERR CMD...
"""
import subprocess
import sys
import time


def main():
    args = sys.argv[1:]
    if len(args) < 5 or args[0] != "--out" or args[2] != "--err":
        sys.exit(__doc__)
    with open(args[1], "wb") as out, open(args[3], "wb") as err:
        p = subprocess.Popen(args[4:], stdout=out, stderr=err)
        peak = 0
        while p.poll() is None:
            try:
                with open(f"/proc/{p.pid}/status") as f:
                    for line in f:
                        if line.startswith("RssAnon:"):
                            peak = max(peak, int(line.split()[1]))
            except OSError:
                pass
            time.sleep(0.002)
    print(peak)
    sys.exit(p.returncode)


if __name__ == "__main__":
    main()
