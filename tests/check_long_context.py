#!/usr/bin/env python3
"""Long contexts on the CPU: a tiny model at T = 200K with --rows, and --pool/--topk at
T = 8K, checking that peak host memory stays far below anything T^2-sized (a T x T
float32 map would be 160 GB at T = 200K) and that the outputs are complete."""
import os
import resource
import subprocess
import sys

import h5py
import numpy as np

from latim_testlib import parse_args


def run(cmd, env):
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run(cmd, check=True, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(before, after) / 2**20  # GiB (ru_maxrss is in KiB); children's maximum so far


def main():
    args = parse_args(__doc__)
    env = dict(os.environ)
    model = os.path.join(args.data, "mamba2_f32")
    rng = np.random.default_rng(0)
    failures = []

    T = 200_000
    tokens = os.path.join(args.work, "t200k.txt")
    with open(tokens, "w") as f:
        f.write(" ".join(map(str, rng.integers(0, 128, T))))
    out = os.path.join(args.work, "rows.h5")
    probe = 1000  # a row early in the sequence, plus the last 16
    positions = os.path.join(args.work, "rows.txt")
    with open(positions, "w") as f:
        f.write(" ".join(map(str, [probe] + list(range(T - 16, T)))))
    rss = run([args.latim, "run", "--model", model, "--tokens", tokens, "--out", out, "--rows", "@" + positions,
               "--layers", "0,2", "--quiet"], env)
    t2_gib = T * T * 4 / 2**30
    with h5py.File(out, "r") as f:
        m = f["layers/002/rows/l2"][()]
        ok = (f.attrs["complete"] == 1 and m.shape == (17, T) and np.isfinite(m[1:, : T - 16]).all()
              and np.isnan(m[1, T - 15:]).all() and np.isfinite(m[0, : probe + 1]).all()
              and np.isnan(m[0, probe + 1:]).all())
    print(f"T = {T} --rows {probe} + last:16: peak RSS {rss:.2f} GiB (a T x T map: {t2_gib:.0f} GiB), "
          f"output {'ok' if ok else 'BAD'}")
    if not ok:
        failures.append("rows output incomplete or malformed")
    if rss > 3.0:
        failures.append(f"rows: peak RSS {rss:.2f} GiB is not far below T^2")
    # Row `probe` depends only on tokens <= probe: a run on that prefix (short rows, written
    # through HDF5's own filters) must give the same values as the long run (rows longer
    # than 64K are encoded by latim itself).
    short_tokens = os.path.join(args.work, "t_prefix.txt")
    with open(tokens) as f:
        prefix = f.read().split()[: probe + 1]
    with open(short_tokens, "w") as f:
        f.write(" ".join(prefix))
    short = os.path.join(args.work, "rows_prefix.h5")
    subprocess.run([args.latim, "run", "--model", model, "--tokens", short_tokens, "--out", short, "--rows",
                    str(probe), "--layers", "0,2", "--quiet"], check=True, env=env)
    with h5py.File(short, "r") as f, h5py.File(out, "r") as g:
        worst = max(float(np.max(np.abs(f[f"layers/{l}/rows/l2"][0] - g[f"layers/{l}/rows/l2"][0, : probe + 1])
                                 / np.max(np.abs(f[f"layers/{l}/rows/l2"][0]))))
                    for l in ("000", "002"))
    print(f"row {probe} of the long run against a run on its prefix: max rel diff {worst:.2e}")
    if not worst <= 1e-5:
        failures.append(f"row {probe}: long-run values differ from the prefix run by {worst:.2e}")

    T = 8192
    tokens = os.path.join(args.work, "t8k.txt")
    with open(tokens, "w") as f:
        f.write(" ".join(map(str, rng.integers(0, 128, T))))
    out = os.path.join(args.work, "pool.h5")
    rss = run([args.latim, "run", "--model", model, "--tokens", tokens, "--out", out, "--pool", "256", "--topk", "8",
               "--layers", "1", "--quiet"], env)
    with h5py.File(out, "r") as f:
        s = f["layers/001/pool/l2_sum"][()]
        idx = f["layers/001/topk/l2_index"][()]
        ok = (f.attrs["complete"] == 1 and s.shape == (32, 32) and np.isfinite(np.tril(s)).all()
              and (idx[8:] >= 0).all() and "l2" not in f["layers/001"])
    print(f"T = {T} --pool 256 --topk 8: peak RSS so far {rss:.2f} GiB, output {'ok' if ok else 'BAD'}")
    if not ok:
        failures.append("pool/topk output incomplete or malformed (or a full map was written)")
    for f in failures:
        print("FAIL", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
