#!/usr/bin/env bash
# The GPU acceptance run, on a GPU host, from the repository root, after
# tools/pack_gpu.sh packed gpu_pack/. Runs in priority order, each step under
# a time limit and all within STOWAGE_GPU_SECONDS (default 420); logs go to
# ${OUT:-/tmp/stowage_gpu}:
#   accelerate  bench/compare_accelerate.py: accelerate cpu_offload vs stowage,
#               fp16, 24 x 8192x8192, batch 8, all layers streamed from pinned RAM
#   nf4         the same model NF4 (double quantization), all layers streamed
#   demo        stowage demo (defaults), with a trace
#   tests       every packed test binary (the CUDA specifications included)
#   disk        disk-homed weights, cold page cache, vs the disk's sequential read
#   kernels     kernel benchmarks (NF4 GEMV, int8 GEMM, quantize throughput)
# Accelerator budgets hold the weights' share, the fetch slots and the working
# memory the plan keeps (stowage plan --batch 8 prints it): the 32 MiB cuBLASLt
# workspace and activations (~33 MiB for fp16); NF4 at batch 8 also dequantizes
# a weight to float32 for its GEMM (256 MiB at 8192x8192).
# Usage: bash tools/gpu_acceptance.sh [STEP...]   (default: all, in that order)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/stowage_gpu}
mkdir -p "$out"
work=${STOWAGE_GPU_WORK:-/tmp/stowage_work}
mkdir -p "$work"
source gpu_pack/env.sh
stowage="$PWD/gpu_pack/bin/_stowage"
steps=("$@")
[ "${#steps[@]}" -gt 0 ] || steps=(accelerate nf4 demo tests disk kernels)
model="$work/mlp_24x8192.safetensors"
deadline=$((SECONDS + ${STOWAGE_GPU_SECONDS:-420}))
limit() {  # seconds for a step: its own cap, or what is left
  local left=$((deadline - SECONDS))
  [ "$left" -gt 5 ] || left=5
  [ "$1" -lt "$left" ] && echo "$1" || echo "$left"
}

for step in "${steps[@]}"; do
  echo "===== $step (t=${SECONDS}s) ====="
  [ "$SECONDS" -lt "$deadline" ] || { echo "skipped: out of time"; continue; }
  case "$step" in
    accelerate)
      PYTHONUNBUFFERED=1 timeout "$(limit 150)" python3 bench/compare_accelerate.py --stowage "$stowage" \
        --dir "$work" --layers 24 --hidden 8192 --batch 8 --iters 10 --max-memory 0=440MiB 2>&1 |
        tee "$out/accelerate.log" | tail -12 ;;
    nf4)
      timeout "$(limit 60)" "$stowage" quantize --method nf4 --double-quant --device cuda "$model" \
        "$work/mlp_nf4.safetensors" 2>&1 | tail -3
      timeout "$(limit 60)" "$stowage" bench --device cuda --model "$work/mlp_nf4.safetensors" --batch 8 \
        --iters 10 --max-memory 0=420MiB 2>&1 | tee "$out/nf4.log"
      timeout "$(limit 60)" "$stowage" bench --device cuda --model "$model" --batch 8 --iters 10 --no-resident \
        --max-memory 0=440MiB 2>&1 | tee "$out/fp16.log" ;;
    demo)
      timeout "$(limit 90)" "$stowage" demo --trace "$out/demo_trace.json" 2>&1 | tee "$out/demo.log" ;;
    tests)
      STOWAGE_TEST_TIMEOUT=150 timeout "$(limit 240)" bash gpu_pack/run_tests.sh 2>&1 | tee "$out/tests.log" |
        grep -vE '^PASS ' | tail -40 ;;
    disk)
      rm -rf "$work/offload"
      timeout "$(limit 90)" "$stowage" bench --device cuda --model "$model" --batch 8 --iters 5 --warmup 1 --cold \
        --no-resident --max-memory 0=440MiB,cpu=64MiB,disk=64GiB --offload-dir "$work/offload" 2>&1 |
        tee "$out/disk.log" ;;
    kernels)
      for b in $(grep -E '^bench_kernels' gpu_pack/benches.txt); do
        timeout "$(limit 180)" "gpu_pack/bin/$b" 2>&1 | tee "$out/$b.log" | tail -40
      done ;;
    *) echo "unknown step $step" ;;
  esac
done
echo "done at t=${SECONDS}s"
