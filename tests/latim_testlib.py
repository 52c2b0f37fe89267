"""Shared by the Python checks: their command line, launching under mpiexec, and the
error measure the tests use (max |a - b| / max |b|, NaN patterns must match)."""
import argparse
import os
import shutil
import sys

import numpy as np


def parse_args(doc, add=None):
    """--latim, --data and --work, plus what `add(parser)` declares; creates the work folder."""
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--latim", required=True, help="the latim binary")
    ap.add_argument("--data", required=True, help="tests/data")
    ap.add_argument("--work", required=True, help="scratch folder")
    if add:
        add(ap)
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    return args


def mpiexec(n):
    """The launcher prefix for n ranks, with the flags CI needs (oversubscription, root)."""
    exe = shutil.which("mpiexec") or shutil.which("mpirun")
    if exe is None:
        sys.exit("mpiexec not found (install openmpi-bin)")
    flags = ["--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    return [exe, "-n", str(n)] + flags


def rel_error(got, want, floor=0.0):
    """max |got - want| / max(max |want|, floor) over the non-NaN entries; inf when the
    shapes or the NaN patterns differ; the plain difference when the scale is 0."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape or not np.array_equal(np.isnan(got), np.isnan(want)):
        return float("inf")
    m = ~np.isnan(want)
    diff = np.abs(got[m] - want[m]).max(initial=0.0)
    scale = max(np.abs(want[m]).max(initial=0.0), floor)
    return diff / scale if scale > 0 else diff
