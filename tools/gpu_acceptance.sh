#!/usr/bin/env bash
# The GPU acceptance run, on a GPU host, from the repository root, after
# tools/pack_gpu.sh packed gpu_pack/. Runs in priority order, each step under
# a time limit, logs under ${OUT:-/tmp/stowage_gpu}:
#   1. every packed test binary (CUDA specifications included);
#   2. kernel benchmarks (NF4 GEMV, int8 GEMM, quantize throughput);
#   3. bench/compare_accelerate.py: accelerate cpu_offload vs stowage, fp16,
#      24 x 8192x8192, batch 8, all layers streamed from pinned RAM;
#   4. the same model NF4 (double quantization) streamed;
#   5. disk-homed weights with a cold page cache vs the disk's sequential read;
#   6. stowage demo (defaults).
# Usage: bash tools/gpu_acceptance.sh [STEP...]   (default: all steps)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/stowage_gpu}
mkdir -p "$out"
work=${STOWAGE_GPU_WORK:-/tmp/stowage_work}
mkdir -p "$work"
source gpu_pack/env.sh
stowage="$PWD/gpu_pack/bin/_stowage"
steps=("$@")
[ "${#steps[@]}" -gt 0 ] || steps=(tests kernels accelerate nf4 disk demo)
model="$work/mlp_24x8192.safetensors"

for step in "${steps[@]}"; do
  echo "===== $step ====="
  case "$step" in
    tests)
      STOWAGE_TEST_TIMEOUT=${STOWAGE_TEST_TIMEOUT:-90} timeout 240 bash gpu_pack/run_tests.sh 2>&1 | tee "$out/tests.log" | tail -25 ;;
    kernels)
      for b in $(grep -E '^bench_kernels' gpu_pack/benches.txt); do
        timeout 90 "gpu_pack/bin/$b" 2>&1 | tee "$out/$b.log" | tail -30
      done ;;
    accelerate)
      # fp16, all 24 layers streamed: the budget holds the 3 slots and activations only.
      PYTHONUNBUFFERED=1 timeout 200 python3 bench/compare_accelerate.py --stowage "$stowage" --dir "$work" \
        --layers 24 --hidden 8192 --batch 8 --iters 10 --max-memory 0=400MiB 2>&1 | tee "$out/accelerate.log" | tail -22 ;;
    nf4)
      timeout 120 "$stowage" quantize --method nf4 --double-quant --device cuda "$model" "$work/mlp_nf4.safetensors" &&
      timeout 120 "$stowage" bench --device cuda --model "$work/mlp_nf4.safetensors" --batch 8 --iters 10 \
        --max-memory 0=120MiB 2>&1 | tee "$out/nf4.log"
      timeout 120 "$stowage" bench --device cuda --model "$model" --batch 8 --iters 10 --no-resident \
        --max-memory 0=400MiB 2>&1 | tee "$out/fp16_again.log" ;;
    disk)
      rm -rf "$work/offload"
      timeout 150 "$stowage" bench --device cuda --model "$model" --batch 8 --iters 5 --warmup 1 --cold --no-resident \
        --max-memory 0=400MiB,cpu=64MiB,disk=64GiB --offload-dir "$work/offload" 2>&1 | tee "$out/disk.log" ;;
    demo)
      timeout 150 "$stowage" demo --trace "$out/demo_trace.json" 2>&1 | tee "$out/demo.log" ;;
    *) echo "unknown step $step" ;;
  esac
done
