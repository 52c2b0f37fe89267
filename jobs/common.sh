# Shared by the latim SLURM scripts: runs one latim step under srun, resumes an
# interrupted output file, and requeues the job when latim stopped for the time limit.
#
#   latim_step OUT [latim run options...]
#
# Environment:
#   LATIM        the latim binary (default: latim on PATH)
#   LATIM_LAUNCHER  launcher command (default: srun --mpi=$SRUN_MPI --kill-on-bad-exit=1,
#                   SRUN_MPI defaulting to pmix)
#   LATIM_DRY_RUN=1  print what would run, run nothing (used by the tests)

latim_step() {
  local out="$1"
  shift
  local latim="${LATIM:-latim}"
  local launcher
  read -r -a launcher <<< "${LATIM_LAUNCHER:-srun --mpi=${SRUN_MPI:-pmix} --kill-on-bad-exit=1}"
  local resume=()
  # A file left by an interrupted run (complete = 0) is continued, not restarted.
  if [ -f "$out" ]; then resume=(--resume); fi
  local cmd=("${launcher[@]}" "$latim" run --out "$out" "${resume[@]}" "$@")
  echo "latim job ${SLURM_JOB_ID:-?} step: ${cmd[*]}" >&2
  if [ "${LATIM_DRY_RUN:-0}" = "1" ]; then
    echo "${cmd[*]}"
    return 0
  fi
  # NCCL: never use NVLink multicast (NVLS) on shared nodes.
  export NCCL_NVLS_ENABLE=0
  export OMP_NUM_THREADS="${SLURM_CPUS_PER_TASK:-${OMP_NUM_THREADS:-1}}"
  "${cmd[@]}"
  local rc=$?
  if [ "$rc" -eq 75 ]; then
    # latim received the time-limit signal, finished its panels and left the file
    # resumable: put the job back in the queue; the next start passes --resume.
    echo "latim: interrupted near the time limit; requeueing job ${SLURM_JOB_ID}" >&2
    scontrol requeue "${SLURM_JOB_ID}"
  fi
  return "$rc"
}
