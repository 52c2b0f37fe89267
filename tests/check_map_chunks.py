#!/usr/bin/env python3
"""The [T, T] maps' HDF5 chunk edge (--map-chunk) is independent of the tile: with --tile
1024 the maps are stored in 512 x 512 chunks by default, the values are bit-identical to
chunks of the whole tile, an interrupted run resumes to the identical file, and --resume
refuses a file whose chunk edge differs, naming the option that fits it."""
import os
import subprocess

import h5py
import numpy as np

from latim_testlib import parse_args


def main():
    args = parse_args(__doc__)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    model = os.path.join(args.data, "mamba2_f32")
    tokens = os.path.join(args.work, "tokens.txt")
    with open(tokens, "w") as f:
        f.write(" ".join(str(t) for t in np.random.default_rng(7).integers(0, 128, 1100)))
    base = [args.latim, "run", "--model", model, "--tokens", tokens, "--scores", "l2,l1", "--layers", "0,2",
            "--tile", "1024", "--quiet"]
    failures = []

    auto, whole = os.path.join(args.work, "auto.h5"), os.path.join(args.work, "whole.h5")
    subprocess.run(base + ["--out", auto], check=True, env=env)
    subprocess.run(base + ["--out", whole, "--map-chunk", "1024"], check=True, env=env)
    with h5py.File(auto, "r") as a, h5py.File(whole, "r") as w:
        if a.attrs["map_chunk"] != 512 or w.attrs["map_chunk"] != 1024:
            failures.append(f"map_chunk attributes {a.attrs['map_chunk']} and {w.attrs['map_chunk']}, expected 512, 1024")
        for layer in ("000", "002"):
            for score in ("l2", "l1"):
                da, dw = a[f"layers/{layer}/{score}"], w[f"layers/{layer}/{score}"]
                if da.chunks != (512, 512) or dw.chunks != (1024, 1024):
                    failures.append(f"layer {layer} {score}: chunks {da.chunks} and {dw.chunks}")
                x, y = da[()], dw[()]
                if not np.array_equal(x, y, equal_nan=True):
                    failures.append(f"layer {layer} {score}: values differ between chunk edges 512 and 1024")
                if np.isnan(x[1099, :1100]).any() or not np.isnan(x[5, 6:]).all():
                    failures.append(f"layer {layer} {score}: lower triangle not filled or upper triangle not NaN")

    # Interrupted with 512-chunks, resumed: identical to the uninterrupted file.
    part = os.path.join(args.work, "part.h5")
    small = [a if a != "1024" else "512" for a in base]  # --tile 512: two panels, so a stop falls between
    subprocess.run(small + ["--out", auto], check=True, env=env)
    r = subprocess.run(small + ["--out", part, "--map-chunk", "256"], env=dict(env, LATIM_TEST_STOP_AFTER="2"),
                       capture_output=True, text=True)
    if r.returncode != 75:
        failures.append(f"interrupted run exited {r.returncode}, expected 75: {r.stderr[-300:]}")
    else:
        r = subprocess.run(small + ["--out", part, "--resume"], capture_output=True, text=True, env=env)
        if r.returncode == 0 or "--map-chunk 256" not in r.stderr or r.stderr.strip().count("\n"):
            failures.append(f"resume with another chunk edge: exit {r.returncode}, message {r.stderr.strip()!r}")
        subprocess.run(small + ["--out", part, "--resume", "--map-chunk", "256"], check=True, env=env)
        with h5py.File(auto, "r") as a, h5py.File(part, "r") as p:
            if p.attrs["complete"] != 1 or p["layers/000/l2"].chunks != (256, 256):
                failures.append("resumed file not complete, or not in 256-chunks")
            for layer in ("000", "002"):
                for score in ("l2", "l1"):
                    if not np.array_equal(a[f"layers/{layer}/{score}"][()], p[f"layers/{layer}/{score}"][()],
                                          equal_nan=True):
                        failures.append(f"resumed layer {layer} {score} differs from the uninterrupted run")

    for f in failures:
        print("FAIL", f)
    print("map chunks:", "ok" if not failures else f"{len(failures)} failures")
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
