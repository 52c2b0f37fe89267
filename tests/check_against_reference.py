#!/usr/bin/env python3
"""Runs `latim run` and the numpy reference (tools/reference/latim_ref.py) on every fixture
and checks that logits, every score map and the approximation error agree to 1e-5
(max |a - b| / max |b| per dataset), with NaN exactly where the reference has NaN."""
import os
import subprocess
import sys

import h5py
import numpy as np

from latim_testlib import parse_args, rel_error

SCORES = "l2,l1,alti,alti-rollout,hidden-attn"
FIXTURES = ["mamba1_f32", "mamba1_bias_f16", "mamba1_ssm_padded", "mamba1_identity_f32",
            "mamba2_f32", "mamba2_bf16_sharded", "mamba2_g2_f32", "mamba2_identity_f32"]
TOL = 1e-5


def compare(name, got, want):
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape:
        return f"{name}: shape {got.shape} != reference {want.shape}"
    # approx_error is a ratio already, near 0 for identity models: compare it absolutely.
    err = rel_error(got, want, floor=1.0 if name.endswith("approx_error") else 0.0)
    if err == float("inf"):
        return f"{name}: NaN pattern differs from the reference"
    if not err <= TOL:
        return f"{name}: relative error {err:.3g} > {TOL}"
    return None


def main():
    args = parse_args(__doc__, lambda ap: ap.add_argument(
        "--tokens", type=int, default=37, help="prompt length (T <= 40 keeps the reference fast)"))
    ref = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools", "reference", "latim_ref.py")
    failures = []
    for fx in FIXTURES:
        model = os.path.join(args.data, fx)
        ids = open(os.path.join(model, "tokens.txt")).read().split()[: args.tokens]
        tok = os.path.join(args.work, fx + ".tokens")
        with open(tok, "w") as f:
            f.write(" ".join(ids) + "\n")
        ours, theirs = os.path.join(args.work, fx + ".latim.h5"), os.path.join(args.work, fx + ".ref.h5")
        # A small tile makes the check cover tile and panel boundaries, not only one tile.
        subprocess.run([args.latim, "run", "--model", model, "--tokens", tok, "--out", ours, "--scores", SCORES,
                        "--save-logits", "--tile", "16", "--quiet"], check=True)
        subprocess.run([sys.executable, ref, "--model", model, "--tokens", tok, "--out", theirs, "--scores", SCORES],
                       check=True)
        with h5py.File(ours, "r") as a, h5py.File(theirs, "r") as b:
            if a.attrs["complete"] != 1:
                failures.append(f"{fx}: output not marked complete")
            checks = [("logits", a["logits"][()], b["logits"][()])]
            if not np.array_equal(a["tokens"][()], b["tokens"][()]):
                failures.append(f"{fx}: /tokens differ")
            for layer in b["layers"]:
                for ds in SCORES.split(",") + ["approx_error"]:
                    if ds not in b["layers"][layer]:
                        failures.append(f"{fx}: reference lacks layers/{layer}/{ds}")
                        continue
                    if ds not in a["layers"][layer]:
                        failures.append(f"{fx}: latim output lacks layers/{layer}/{ds}")
                        continue
                    checks.append((f"layers/{layer}/{ds}", a["layers"][layer][ds][()], b["layers"][layer][ds][()]))
            for name, got, want in checks:
                msg = compare(name, got, want)
                if msg:
                    failures.append(f"{fx}: {msg}")
        print(f"{fx}: {len(checks)} datasets compared", flush=True)
    for f in failures:
        print("FAIL", f)
    print("all maps agree with the numpy reference" if not failures else f"{len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
