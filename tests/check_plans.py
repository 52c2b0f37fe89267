#!/usr/bin/env python3
"""Every query plan of `latim run` (--rows, --pool, --topk, --window) must equal the same
reduction applied to the full map, for each score and layer; plans computed on 2 ranks
must equal the single-process plans."""
import os
import subprocess
import sys

import h5py
import numpy as np

from latim_testlib import mpiexec, parse_args, rel_error

SCORES = "l2,alti,hidden-attn"
TOL = 1e-5


def close(a, b):
    return rel_error(a, b, floor=1e-30) <= TOL


def check_plan_file(full_path, plan_path, rows, pool, topk, window, label, scores=SCORES):
    problems = []
    with h5py.File(full_path, "r") as F, h5py.File(plan_path, "r") as P:
        if P.attrs["complete"] != 1:
            problems.append("not complete")
        for layer in F["layers"]:
            g, h = F["layers"][layer], P["layers"][layer]
            T = g["approx_error"].shape[0]
            if rows is not None:
                if not np.array_equal(P["rows"][()], rows):
                    problems.append("/rows positions differ")
                if not close(h["rows/approx_error"][()], g["approx_error"][()][rows]):
                    problems.append(f"{layer}: rows/approx_error")
            for s in scores.split(","):
                m = g[s][()]
                if rows is not None and not close(h[f"rows/{s}"][()], m[rows]):
                    problems.append(f"{layer}: rows/{s}")
                if pool:
                    nb = -(-T // pool)
                    want_sum = np.full((nb, nb), np.nan)
                    want_max = np.full((nb, nb), np.nan)
                    for b in range(nb):
                        for q in range(b + 1):
                            blk = m[b * pool:(b + 1) * pool, q * pool:(q + 1) * pool]
                            want_sum[b, q] = np.nansum(blk)
                            want_max[b, q] = np.nanmax(blk)
                    if not close(h[f"pool/{s}_sum"][()], want_sum):
                        problems.append(f"{layer}: pool/{s}_sum")
                    if not close(h[f"pool/{s}_max"][()], want_max):
                        problems.append(f"{layer}: pool/{s}_max")
                if topk:
                    idx, val = h[f"topk/{s}_index"][()], h[f"topk/{s}_value"][()]
                    for i in range(T):
                        k = min(topk, i + 1)
                        want = np.sort(m[i, :i + 1])[::-1][:k]
                        if not close(val[i, :k], want) or (idx[i, k:] != -1).any():
                            problems.append(f"{layer}: topk/{s} row {i}")
                            break
                        if not close(m[i, idx[i, :k]], val[i, :k]):
                            problems.append(f"{layer}: topk/{s}_index row {i} does not point at its values")
                            break
                if window:
                    want = np.full((T, window), np.nan)
                    for i in range(T):
                        for w in range(min(window, i + 1)):
                            want[i, w] = m[i, i - w]
                    if not close(h[f"window/{s}"][()], want):
                        problems.append(f"{layer}: window/{s}")
    print(("FAIL " if problems else "ok   ") + label + "".join("\n     " + p for p in problems))
    return problems


def main():
    args = parse_args(__doc__, lambda ap: ap.add_argument("--extra", default="", help="more latim run flags, e.g. "
                                                                "'--backend cuda'"))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    failures = []
    for fixture in ("mamba2_f32", "mamba1_bias_f16"):
        model = os.path.join(args.data, fixture)
        plain = [args.latim, "run", "--model", model, "--tokens", os.path.join(model, "tokens.txt"), "--tile", "32",
                 "--quiet"] + args.extra.split()
        base = plain + ["--scores", SCORES]
        w = lambda name: os.path.join(args.work, f"{fixture}.{name}.h5")
        subprocess.run(base + ["--out", w("full")], check=True, env=env)
        rows = np.array([5, 17] + list(range(100, 111)) + [299])
        combo = ["--rows", "5,17,100-110,299", "--pool", "16", "--topk", "5", "--window", "7"]
        subprocess.run(base + ["--out", w("combo")] + combo, check=True, env=env)
        failures += check_plan_file(w("full"), w("combo"), rows, 16, 5, 7, f"{fixture}: rows + pool + topk + window")
        subprocess.run(base + ["--out", w("last")] + ["--rows", "last:10"], check=True, env=env)
        failures += check_plan_file(w("full"), w("last"), np.arange(290, 300), 0, 0, 0, f"{fixture}: rows last:10 alone")
        subprocess.run(base + ["--out", w("band")] + ["--window", "9"], check=True, env=env)
        failures += check_plan_file(w("full"), w("band"), None, 0, 0, 9, f"{fixture}: window alone")
        subprocess.run(plain + ["--out", w("band_l2")] + ["--scores", "l2", "--window", "9"], check=True, env=env)
        failures += check_plan_file(w("full"), w("band_l2"), None, 0, 0, 9, f"{fixture}: window alone, l2 only",
                                    scores="l2")
        with h5py.File(w("full"), "r") as F, h5py.File(w("band_l2"), "r") as P:
            # Without ALTI a band alone skips the sources before it: where a panel's tiles do
            # not start at source 0, ε comes from the surrogate's whole-sequence scan (on the
            # host for host traces, on the device for the CUDA backend's device traces). It
            # must be known on every row and equal the full run's.
            for layer in F["layers"]:
                full_eps, band_eps = F["layers"][layer]["approx_error"][()], P["layers"][layer]["approx_error"][()]
                known = ~np.isnan(band_eps)
                if not known.all() or not close(band_eps[known], full_eps[known]):
                    failures.append(f"{fixture}: window alone, approx_error of layer {layer}")
                    print(f"FAIL {fixture}: window alone, approx_error of layer {layer}")
        subprocess.run(mpiexec(2) + base + ["--out", w("combo2")] + combo, check=True, env=env)
        failures += check_plan_file(w("full"), w("combo2"), rows, 16, 5, 7, f"{fixture}: the combined plan on 2 ranks")
        # Reductions only (no rows, no ALTI): tiles are reduced where they are computed, and
        # the panel merges the tiles' reductions.
        red = ["--scores", "l2,hidden-attn", "--pool", "16", "--topk", "5", "--window", "40"]
        subprocess.run(plain + ["--out", w("reduced")] + red, check=True, env=env)
        failures += check_plan_file(w("full"), w("reduced"), None, 16, 5, 40, f"{fixture}: pool + topk + window, reduced tiles",
                                    scores="l2,hidden-attn")
        subprocess.run(mpiexec(2) + plain + ["--out", w("reduced2")] + red, check=True, env=env)
        failures += check_plan_file(w("full"), w("reduced2"), None, 16, 5, 40, f"{fixture}: reduced tiles on 2 ranks",
                                    scores="l2,hidden-attn")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
