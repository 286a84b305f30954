#!/usr/bin/env python3
"""Files for tests/sh/outputs.sh that the tool did not write but that look close:
  foreign.h5      an HDF5 file written by h5py (signature right, no dora-analyze attributes)
  lookalike.h5    an HDF5 file with tool_version and layout_version but another command_line
  notes.csv       a CSV file whose header is not the table's
Usage: gen_outputs.py OUTDIR"""
import os
import sys

import h5py
import numpy as np

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
with h5py.File(os.path.join(out, "foreign.h5"), "w") as f:
    f["data"] = np.arange(10.0)
    f.attrs["owner"] = "someone else"
with h5py.File(os.path.join(out, "lookalike.h5"), "w") as f:
    f.attrs["tool_version"] = "0.1"
    f.attrs["layout_version"] = np.int32(1)
    f.attrs["command_line"] = "other-tool run"
with open(os.path.join(out, "notes.csv"), "w") as f:
    f.write("name,value\nlr,1e-4\n")
