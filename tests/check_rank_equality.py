#!/usr/bin/env python3
"""Runs `latim run` under mpiexec with several rank layouts (sequence shards, layer stages,
pipeline chunks, a replicated forward with shared map panels) and checks that every dataset equals the single-process run to 1e-5
(max |a - b| / max |b|), with identical NaN patterns and integer datasets. `--forward sharded`
at 2 ranks takes the NCCL device path where the backend is CUDA (one GPU per rank)."""
import os
import subprocess
import sys

import h5py
import numpy as np

from latim_testlib import mpiexec, parse_args, rel_error

TOL = 1e-5
# (fixture, scores, [(ranks, extra flags), ...])
CASES = [
    ("mamba2_f32", "l2,l1,alti,alti-rollout,hidden-attn",
     [(1, ["--chunk-tokens", "64"]), (2, []), (3, []), (3, ["--seq-shards", "3", "--chunk-tokens", "100"]),
      (2, ["--forward", "replicated"]), (2, ["--forward", "sharded"])]),
    ("mamba1_bias_f16", "l2,alti,hidden-attn",
     [(2, ["--layer-shards", "2"]), (2, ["--layer-shards", "2", "--chunk-tokens", "40"]), (3, []),
      (3, ["--forward", "replicated"]), (2, ["--forward", "sharded"])]),
    ("mamba2_g2_f32", "l2,alti",
     [(2, []), (2, ["--layer-shards", "2", "--chunk-tokens", "50"]), (2, ["--forward", "sharded"])]),
]


def compare(a, b):
    problems = []

    def visit(name, obj):
        if not isinstance(obj, h5py.Dataset):
            return
        if name not in b:
            problems.append(f"{name} missing")
            return
        x, y = a[name][()], b[name][()]
        if x.shape != y.shape:
            problems.append(f"{name}: shape {y.shape} != {x.shape}")
        elif x.dtype.kind != "f":
            if not np.array_equal(x, y):
                problems.append(f"{name}: differs")
        else:
            err = rel_error(y, x)
            if err == float("inf"):
                problems.append(f"{name}: NaN pattern differs")
            elif not err <= TOL:
                problems.append(f"{name}: relative error {err:.3g}")

    a.visititems(visit)
    if b.attrs["complete"] != 1:
        problems.append("not marked complete")
    return problems


def main():
    args = parse_args(__doc__)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    failures = 0
    for fixture, scores, layouts in CASES:
        model = os.path.join(args.data, fixture)
        base = [args.latim, "run", "--model", model, "--tokens", os.path.join(model, "tokens.txt"),
                "--scores", scores, "--save-logits", "--tile", "32", "--quiet"]
        ref = os.path.join(args.work, f"{fixture}.single.h5")
        subprocess.run(base + ["--out", ref], check=True, env=env)
        for i, (n, extra) in enumerate(layouts):
            # LATIM_EQ_EXCLUDE=word skips the layouts whose flags mention it (e.g. "sharded"
            # on a host with one GPU, where two ranks cannot share an NCCL communicator).
            if os.environ.get("LATIM_EQ_EXCLUDE") and os.environ["LATIM_EQ_EXCLUDE"] in " ".join(extra):
                continue
            out = os.path.join(args.work, f"{fixture}.{n}ranks.{i}.h5")
            subprocess.run(mpiexec(n) + base + ["--out", out] + extra, check=True, env=env)
            with h5py.File(ref, "r") as a, h5py.File(out, "r") as b:
                problems = compare(a, b)
            label = f"{fixture}: {n} rank(s) {' '.join(extra) or '(default layout)'}"
            print(("FAIL " if problems else "ok   ") + label + ("".join("\n     " + p for p in problems)))
            failures += bool(problems)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
