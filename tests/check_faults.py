#!/usr/bin/env python3
"""A rank that fails ends the whole job: under mpiexec, rank 1 fails at its first mapped
layer (LATIM_TEST_FAIL_RANK=1) while rank 0 goes on into the next exchange. The job must
end within the time limit (no rank left waiting), exit non-zero, print one error line
naming the failing rank and the cause, and leave no file that looks complete. The
layouts: sequence shards, layer stages, sequence chunks, and (when the backend is CUDA on a
host with two GPUs) the NCCL sharded forward and the device grid; `--extra` adds flags to
every run."""
import os
import subprocess
import sys

import h5py

from latim_testlib import mpiexec, parse_args

LAYOUTS = [[], ["--layer-shards", "2"], ["--seq-shards", "2", "--chunk-tokens", "64"], ["--forward", "sharded"],
           ["--forward", "replicated"]]


def main():
    args = parse_args(__doc__, lambda ap: ap.add_argument("--extra", default="", help="flags for every run"))
    env = dict(os.environ, OMP_NUM_THREADS="1", LATIM_TEST_FAIL_RANK="1")
    model = os.path.join(args.data, "mamba2_f32")
    failures = 0
    for i, layout in enumerate(LAYOUTS):
        out = os.path.join(args.work, f"fault{i}.h5")
        if os.path.exists(out):
            os.remove(out)
        cmd = mpiexec(2) + [args.latim, "run", "--model", model, "--tokens", os.path.join(model, "tokens.txt"),
                            "--out", out, "--tile", "32", "--scores", "l2"] + layout + args.extra.split()
        label = " ".join(layout) or "(default layout)"
        try:
            p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            print(f"FAIL {label}: the job did not end within 120 s (a rank hangs)")
            failures += 1
            continue
        problems = []
        if p.returncode == 0:
            problems.append("exit code 0")
        lines = [l for l in p.stderr.splitlines() if "injected failure" in l]
        if not any("rank 1 of 2" in l for l in lines):
            problems.append("no error line naming rank 1 and the cause: " + p.stderr.strip()[-300:])
        if os.path.exists(out):
            try:
                with h5py.File(out, "r") as f:
                    if f.attrs.get("complete", 0) == 1:
                        problems.append("the output file is marked complete")
            except OSError:
                pass  # not a readable HDF5 file: it cannot pass for a complete one
        print(("FAIL " if problems else "ok   ") + label + "".join("\n     " + x for x in problems))
        failures += bool(problems)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
