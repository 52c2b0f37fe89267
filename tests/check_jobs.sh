#!/usr/bin/env bash
# Checks the SLURM scripts without a cluster: syntax, the srun command each would run
# (dry-run mode), and a real sweep task run through mpiexec in place of srun, including
# the requeue path when latim stops for the time limit (scontrol is a recording stub).
set -euo pipefail
LATIM="$1"
DATA="$2"
WORK="$3"
PYTHON="${4:-python3}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
rm -rf "$WORK" && mkdir -p "$WORK/bin"
fail() { echo "FAIL: $*" >&2; exit 1; }

for s in "$ROOT"/jobs/*.sbatch "$ROOT"/jobs/common.sh; do bash -n "$s" || fail "syntax of $s"; done

export LATIM_DRY_RUN=1 SLURM_JOB_ID=42 SLURM_NTASKS=4 SLURM_JOB_NUM_NODES=2 SLURM_NTASKS_PER_NODE=4
out=$(MODEL=m TOKENS=t.txt OUT="$WORK/a.h5" bash "$ROOT/jobs/one_node_multi_gpu.sbatch")
[[ "$out" == "srun --mpi=pmix --kill-on-bad-exit=1 latim run --out $WORK/a.h5 --model m --tokens t.txt --backend auto --seq-shards 4 --scores l2 --tile 1024" ]] \
  || fail "one_node: $out"
out=$(ARGS="--precision bf16 --pool 256 --topk 32" MODEL=m TOKENS=t.txt OUT="$WORK/a2.h5" bash "$ROOT/jobs/one_node_multi_gpu.sbatch")
[[ "$out" == *"--tile 1024 --precision bf16 --pool 256 --topk 32" ]] || fail "one_node with ARGS: $out"
out=$(ARGS="--rows last:64" MODEL=m TOKENS=t.txt OUT="$WORK/b2.h5" bash "$ROOT/jobs/multi_node.sbatch")
[[ "$out" == *"--tile 1024 --rows last:64" ]] || fail "multi_node with ARGS: $out"
out=$(MODEL=m TOKENS=t.txt OUT="$WORK/b.h5" bash "$ROOT/jobs/multi_node.sbatch")
[[ "$out" == *"--backend auto --forward replicated --scores l2"* ]] || fail "multi_node: $out"
out=$(LAYOUT=sharded MODEL=m TOKENS=t.txt OUT="$WORK/b.h5" bash "$ROOT/jobs/multi_node.sbatch")
[[ "$out" == *"--backend auto --forward sharded --scores l2"* ]] || fail "multi_node sharded: $out"
out=$(LAYOUT=pipeline MODEL=m TOKENS=t.txt OUT="$WORK/b.h5" bash "$ROOT/jobs/multi_node.sbatch")
[[ "$out" == *"--layer-shards 2 --seq-shards 4"* ]] || fail "multi_node pipeline: $out"
if LAYOUT=bogus MODEL=m TOKENS=t.txt OUT="$WORK/b.h5" bash "$ROOT/jobs/multi_node.sbatch" 2>/dev/null; then
  fail "multi_node: an unknown LAYOUT must fail"
fi
touch "$WORK/c.h5"
out=$(MODEL=m TOKENS=t.txt OUT="$WORK/c.h5" bash "$ROOT/jobs/one_node_multi_gpu.sbatch")
[[ "$out" == *"--out $WORK/c.h5 --resume "* ]] || fail "an existing output file must be resumed: $out"
printf -- '--model m1 --scores l2\n--model m2 --layers 0-1\n' > "$WORK/sweep.txt"
out=$(SWEEP="$WORK/sweep.txt" SLURM_ARRAY_TASK_ID=1 OUTDIR="$WORK/sw" bash "$ROOT/jobs/sweep_array.sbatch")
[[ "$out" == *"--out $WORK/sw/task-1.h5 --model m2 --layers 0-1" ]] || fail "sweep: $out"
if SWEEP="$WORK/sweep.txt" SLURM_ARRAY_TASK_ID=5 OUTDIR="$WORK/sw" bash "$ROOT/jobs/sweep_array.sbatch" 2>/dev/null; then
  fail "sweep: a missing line must fail"
fi
echo "ok   dry runs"

# A real run: mpiexec instead of srun, a stub scontrol that records requeues.
unset LATIM_DRY_RUN SLURM_NTASKS SLURM_JOB_NUM_NODES SLURM_NTASKS_PER_NODE
cat > "$WORK/bin/scontrol" <<STUB
#!/bin/sh
echo "\$@" >> "$WORK/scontrol.log"
STUB
chmod +x "$WORK/bin/scontrol"
export PATH="$WORK/bin:$PATH" LATIM="$LATIM"
root_flag=""; [ "$(id -u)" = 0 ] && root_flag="--allow-run-as-root"
export LATIM_LAUNCHER="mpiexec -n 2 --oversubscribe $root_flag"
M="$DATA/mamba2_f32"
echo "--model $M --tokens $M/tokens.txt --scores l2 --tile 32 --quiet" > "$WORK/sweep2.txt"
rc=0
LATIM_TEST_STOP_AFTER=3 SWEEP="$WORK/sweep2.txt" SLURM_ARRAY_TASK_ID=0 OUTDIR="$WORK/run" \
  bash "$ROOT/jobs/sweep_array.sbatch" 2>"$WORK/first.log" || rc=$?
[ "$rc" = 75 ] || fail "interrupted step should exit 75, got $rc: $(tail -3 "$WORK/first.log")"
grep -q "requeue 42" "$WORK/scontrol.log" || fail "no requeue after the interrupted step"
SWEEP="$WORK/sweep2.txt" SLURM_ARRAY_TASK_ID=0 OUTDIR="$WORK/run" bash "$ROOT/jobs/sweep_array.sbatch" 2>"$WORK/second.log" \
  || fail "requeued step failed: $(tail -3 "$WORK/second.log")"
grep -q -- "--resume" "$WORK/second.log" || fail "the requeued step did not resume"
"$PYTHON" - "$WORK/run/task-0.h5" <<'PY'
import sys, h5py
with h5py.File(sys.argv[1], "r") as f:
    assert f.attrs["complete"] == 1, "not complete after the requeued step"
    assert int(f["layers/000/panels_done"][()].sum()) == f["layers/000/panels_done"].shape[0]
PY
echo "ok   interrupted sweep task requeued and resumed to a complete file"
