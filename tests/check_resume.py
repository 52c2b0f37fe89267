#!/usr/bin/env python3
"""Interrupts `latim run` midway and resumes it with --resume: the finished file must be
identical (bit for bit) to an uninterrupted run. Covers a simulated signal at a fixed
point (LATIM_TEST_STOP_AFTER), on 1 and 2 ranks, and a real SIGTERM sent to a running job."""
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np

from latim_testlib import mpiexec, parse_args


def mpi(n):
    return [] if n == 1 else mpiexec(n)


def identical(a_path, b_path):
    problems = []
    with h5py.File(a_path, "r") as a, h5py.File(b_path, "r") as b:
        if b.attrs["complete"] != 1:
            problems.append("resumed file not marked complete")

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                x, y = a[name][()], b[name][()]
                if not np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
                    problems.append(f"{name} differs")
        a.visititems(visit)
    return problems


def main():
    args = parse_args(__doc__)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    failures = []
    model = os.path.join(args.data, "mamba2_f32")
    base = [args.latim, "run", "--model", model, "--tokens", os.path.join(model, "tokens.txt"), "--save-logits",
            "--scores", "l2,alti,hidden-attn", "--tile", "16", "--quiet"]
    fulls = {}
    for ranks in (1, 2):  # bitwise equality holds for one layout; layouts differ by rounding
        fulls[ranks] = os.path.join(args.work, f"full_{ranks}.h5")
        subprocess.run(mpi(ranks) + base + ["--out", fulls[ranks]], check=True, env=env)
    full = fulls[1]

    for ranks, stop_after in [(1, 7), (1, 30), (2, 12)]:
        part = os.path.join(args.work, f"part_{ranks}_{stop_after}.h5")
        r = subprocess.run(mpi(ranks) + base + ["--out", part], env=dict(env, LATIM_TEST_STOP_AFTER=str(stop_after)),
                           capture_output=True, text=True)
        if r.returncode != 75:
            failures.append(f"{ranks} rank(s): interrupted run exited {r.returncode}, expected 75: {r.stderr[-300:]}")
            continue
        with h5py.File(part, "r") as f:
            if f.attrs["complete"] != 0:
                failures.append(f"{ranks} rank(s): interrupted file claims to be complete")
            done = sum(int(f[f"layers/{l}/panels_done"][()].sum()) for l in f["layers"])
        subprocess.run(mpi(ranks) + base + ["--out", part, "--resume"], check=True, env=env)
        problems = identical(fulls[ranks], part)
        failures += [f"{ranks} rank(s), stopped after {done} panels: {p}" for p in problems]
        print(f"{'FAIL' if problems else 'ok  '} {ranks} rank(s): stopped with {done} panels done, resumed")

    # A real SIGTERM to a longer run (the handler path SLURM uses).
    long_tokens = os.path.join(args.work, "long.txt")
    rng = np.random.default_rng(3)
    with open(long_tokens, "w") as f:
        f.write(" ".join(str(t) for t in rng.integers(0, 128, 1500)))
    long_base = [args.latim, "run", "--model", model, "--tokens", long_tokens, "--scores", "l2,l1", "--tile", "32",
                 "--quiet", "--threads", "1"]
    long_full, long_part = os.path.join(args.work, "long_full.h5"), os.path.join(args.work, "long_part.h5")
    t0 = time.time()
    subprocess.run(long_base + ["--out", long_full], check=True, env=env)
    took = time.time() - t0
    p = subprocess.Popen(long_base + ["--out", long_part], env=env, stderr=subprocess.DEVNULL)
    time.sleep(max(0.2, took / 3))
    p.send_signal(signal.SIGTERM)
    rc = p.wait()
    if rc == 0:
        failures.append(f"SIGTERM: the run ({took:.1f} s) finished before the signal arrived")
    elif rc != 75:
        failures.append(f"SIGTERM: exit code {rc}, expected 75")
    else:
        subprocess.run(long_base + ["--out", long_part, "--resume"], check=True, env=env)
        problems = identical(long_full, long_part)
        failures += [f"SIGTERM: {x}" for x in problems]
        print(f"{'FAIL' if problems else 'ok  '} SIGTERM after {took / 3:.1f} s of a {took:.1f} s run, resumed")

    # Resuming a complete file is a no-op; resuming with other options is refused.
    r = subprocess.run(base + ["--out", full, "--resume"], capture_output=True, text=True, env=env)
    if r.returncode != 0 or "already complete" not in r.stderr:
        failures.append(f"resume of a complete file: rc {r.returncode}, {r.stderr.strip()}")
    part = os.path.join(args.work, "part_mismatch.h5")
    subprocess.run(base + ["--out", part], env=dict(env, LATIM_TEST_STOP_AFTER="5"), capture_output=True)
    r = subprocess.run([x if x != "l2,alti,hidden-attn" else "l2" for x in base] + ["--out", part, "--resume"],
                       capture_output=True, text=True, env=env)
    if r.returncode == 0 or "--scores" not in r.stderr or not os.path.exists(part):
        failures.append(f"resume with other scores: rc {r.returncode}, {r.stderr.strip()}")

    for f in failures:
        print("FAIL", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
