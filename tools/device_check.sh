#!/usr/bin/env bash
# Checks the CUDA backend on a machine with an NVIDIA GPU and prints one table:
#   1. builds with -DLATIM_CUDA=ON (or uses LATIM_BUILD_DIR, a build made elsewhere that
#      holds latim, cuda_bench and tests/latim_tests),
#   2. runs the backend-parameterised and CUDA kernel tests,
#   3. cuda_bench parity: every stage against the CPU backend (fixtures and random
#      130m-shaped layers), tf32/bf16 tiles against fp64,
#   4. `latim run --backend cpu` against `--backend cuda` on every golden fixture, all
#      scores and the logits, comparing every dataset of the two HDF5 files,
#   5. every query plan on the GPU (tests/check_plans.py --extra "--backend cuda": the
#      tile reductions on the device, 1 and 2 ranks) against the full map's reductions,
#   6. on a host with two GPUs or more, the rank layouts against one process and a failing
#      rank in each layout (NCCL; set NCCL_NVLS_ENABLE=0 where NVLink multicast is unusable),
#   7. with LATIM_SANITIZE=1: compute-sanitizer memcheck (the wgmma kernel, then the others),
#      synccheck and racecheck (the wgmma kernel) on the wgmma tile kernel's test, in a build
#      configured with -DLATIM_WGMMA_SETMAXNREG=OFF
#      (instrumented code needs registers that the kernel's register hand-over does not
#      leave; LATIM_SANITIZE_BUILD_DIR names such a build made elsewhere;
#      LATIM_SANITIZE_TIMEOUT the seconds each tool may take, default 900).
# Usage: tools/device_check.sh [OUTDIR]   (needs python3 with h5py and numpy for step 4)
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-${LATIM_CHECK_OUT:-$root/device_check_out}}
mkdir -p "$out"
data=$root/tests/data
if [ -n "${LATIM_BUILD_DIR:-}" ]; then
  build=$LATIM_BUILD_DIR
else
  build=$root/build-cuda
  cmake -S "$root" -B "$build" -DLATIM_CUDA=ON -DCMAKE_BUILD_TYPE=Release >"$out/cmake.log" 2>&1 &&
    cmake --build "$build" -j "$(nproc)" >>"$out/cmake.log" 2>&1 || { tail -30 "$out/cmake.log"; exit 1; }
fi
export LATIM_TEST_DATA_DIR=$data OMP_NUM_THREADS=${OMP_NUM_THREADS:-8}
status=0
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "nvidia-smi not available"

echo "== tests (backend-parameterised, CUDA kernels)"
"$build/tests/latim_tests" --gtest_filter='Backends/*:Precisions/*:Cuda*' >"$out/gtest.log" 2>&1 || status=1
grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$out/gtest.log"
grep -E '^\[  FAILED  \]|Failure|error:' "$out/gtest.log" | head -40

echo "== parity (cuda_bench parity)"
"$build/cuda_bench" parity --data "$data" --json "$out/parity.json" >"$out/parity.log" 2>&1 || status=1

echo "== latim run: --backend cpu vs --backend cuda"
scores=l2,l1,alti,alti-rollout,hidden-attn
: >"$out/run.log"
for dir in "$data"/*/; do
  fx=$(basename "$dir")
  [ -f "$dir/tokens.txt" ] || continue
  "$build/latim" run --model "$dir" --tokens "$dir/tokens.txt" --out "$out/$fx.cpu.h5" --backend cpu \
    --scores $scores --save-logits -q >>"$out/run.log" 2>&1 || { echo "$fx: cpu run failed"; status=1; continue; }
  for prec in fp32 bf16; do
    "$build/latim" run --model "$dir" --tokens "$dir/tokens.txt" --out "$out/$fx.cuda.$prec.h5" --backend cuda \
      --precision $prec --scores $scores --save-logits -q >>"$out/run.log" 2>&1 ||
      { echo "$fx: cuda $prec run failed"; tail -3 "$out/run.log"; status=1; }
  done
done
python3 - "$out" <<'PY' || status=1
import glob, os, sys
import h5py, numpy as np
out = sys.argv[1]
bad = 0
print(f"{'fixture':24s} {'precision':9s} {'dataset':16s} {'max|a-b|/max|b|':>16s} {'bound':>8s}   (approx_error: max|a-b|)")
for cpu in sorted(glob.glob(os.path.join(out, "*.cpu.h5"))):
    fx = os.path.basename(cpu)[:-len(".cpu.h5")]
    for prec, bound in (("fp32", 1e-5), ("bf16", None)):
        path = os.path.join(out, f"{fx}.cuda.{prec}.h5")
        if not os.path.exists(path):
            continue
        worst = {}
        with h5py.File(path) as a, h5py.File(cpu) as b:
            def visit(name, obj):
                if not isinstance(obj, h5py.Dataset) or obj.dtype.kind != "f":
                    return
                x = obj[...].astype(np.float64); y = b[name][...].astype(np.float64)
                kind = name.split("/")[-1]
                if not np.array_equal(np.isnan(x), np.isnan(y)):
                    e = float("inf")
                else:
                    m = ~np.isnan(y)
                    diff = float(np.abs(x[m] - y[m]).max()) if m.any() else 0.0
                    # approx_error is itself a relative error (~1e-7 for identity models): compare absolutely
                    e = diff if kind == "approx_error" else diff / max(float(np.abs(y[m]).max()) if m.any() else 0.0, 1e-300)
                worst[kind] = max(worst.get(kind, 0.0), e)
            a.visititems(visit)
        for kind, e in sorted(worst.items()):
            # approx_error subtracts two fp32 sums of a whole row: 1.0014e-5 on mamba2_f32 since the
            # CPU side runs OpenBLAS's AVX-512 kernels (tests/test_cuda_backend.cpp, CudaStage)
            b = bound if bound is None or kind != "approx_error" else 2 * bound
            flag = "" if b is None else ("ok" if e <= b else "FAIL")
            bad += flag == "FAIL"
            print(f"{fx:24s} {prec:9s} {kind:16s} {e:16.2e} {('-' if b is None else f'{b:.0e}'):>8s} {flag}")
sys.exit(1 if bad else 0)
PY

echo "== query plans on the GPU (tests/check_plans.py)"
python3 "$root/tests/check_plans.py" --latim "$build/latim" --data "$data" --work "$out/plans" \
  --extra "--backend cuda" >"$out/plans.log" 2>&1 || status=1
grep -c '^ok' "$out/plans.log" | sed 's/$/ plans match the full map/'
grep -A3 '^FAIL' "$out/plans.log" | head -20

# Two GPUs or more: the multi-rank layouts on the devices (NCCL sharded forward, the device
# grid's layer stages and chunks) against one process, and a failing rank in each layout.
ngpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | wc -l)
if [ "$ngpu" -ge 2 ]; then
  echo "== rank layouts on $ngpu GPUs (tests/check_rank_equality.py, tests/check_faults.py)"
  python3 "$root/tests/check_rank_equality.py" --latim "$build/latim" --data "$data" --work "$out/ranks" \
    >"$out/ranks.log" 2>&1 || status=1
  echo "$(grep -c '^ok' "$out/ranks.log") layouts equal the single-process run"
  grep -A3 '^FAIL' "$out/ranks.log" | head -20
  python3 "$root/tests/check_faults.py" --latim "$build/latim" --data "$data" --work "$out/faults" \
    --extra "--backend cuda" >"$out/faults.log" 2>&1 || status=1
  echo "$(grep -c '^ok' "$out/faults.log") layouts end cleanly when a rank fails"
  grep -A3 '^FAIL' "$out/faults.log" | head -20
fi

if [ "${LATIM_SANITIZE:-0}" = 1 ]; then
  echo "== compute-sanitizer on the wgmma tile kernel (build without setmaxnreg)"
  sbuild=${LATIM_SANITIZE_BUILD_DIR:-$root/build-cuda-sanitize}
  if [ -z "${LATIM_SANITIZE_BUILD_DIR:-}" ]; then
    cmake -S "$root" -B "$sbuild" -DLATIM_CUDA=ON -DCMAKE_BUILD_TYPE=Release -DLATIM_WGMMA_SETMAXNREG=OFF \
      >"$out/sanitize-cmake.log" 2>&1 &&
      cmake --build "$sbuild" -j "$(nproc)" --target latim_tests >>"$out/sanitize-cmake.log" 2>&1 ||
      { tail -30 "$out/sanitize-cmake.log"; status=1; }
  fi
  cs=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  test=Precisions/CudaTilePrecision.WgmmaKernelMatchesMmaKernelAndFp64/bf16
  # One tool and one kernel set per run: memcheck over every kernel of the test at once did
  # not finish in 170 s on an H100, each half alone takes seconds; racecheck on the other
  # kernels (the mma tile kernel) takes minutes, so it covers the wgmma kernel.
  n=0
  for run in "memcheck kns=wgmma" "memcheck -kns=wgmma" "synccheck all" "racecheck kns=wgmma"; do
    set -- $run
    n=$((n + 1))
    case $2 in all) filter=() ;; -*) filter=(--kernel-name-exclude "${2#-}") ;; *) filter=(--kernel-name "$2") ;; esac
    log="$out/sanitize-$n-$1.log"
    timeout "${LATIM_SANITIZE_TIMEOUT:-900}" "$cs" --tool "$1" "${filter[@]}" --print-limit 20 --error-exitcode 3 \
      "$sbuild/tests/latim_tests" --gtest_filter=$test >"$log" 2>&1
    rc=$?
    [ $rc -eq 0 ] || status=1
    echo "$1 ($2): exit $rc, $(grep -hE 'ERROR SUMMARY|RACECHECK SUMMARY' "$log" | tr '\n' ' ')"
  done
fi

echo "== parity table"
grep -vE '^check ' "$out/parity.log" | tail -n 80
echo "device_check: $([ $status -eq 0 ] && echo PASSED || echo FAILED); logs in $out"
exit $status
