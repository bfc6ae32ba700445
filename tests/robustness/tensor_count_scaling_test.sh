#!/usr/bin/env bash
# Issue #15 item 6 as a test: `stowage inspect`, `quantize`, `plan` and `run`
# on MLP checkpoints, and `inspect`, `plan` and `generate` on Llama model folders,
# are linear in the number of tensors (bench/tensor_count_scaling.py --check:
# N and 4N tensors, the 4N/N time ratio at most 8 where a quadratic command
# gives 16, and inspect under 2 KiB of peak memory per tensor). Before
# 191f675, `run` went from 0.47 s at 5000 tensors to 7.49 s at 20000.
# Usage: tensor_count_scaling_test.sh SCALING_PY STOWAGE
set -euo pipefail
script=$1
stowage=$2
memory=()
# ASan's allocator (redzones, quarantine) inflates peak memory: time only.
[ -n "${ASAN_OPTIONS:-}" ] && memory=(--no-memory-check)
python3 "$script" "$stowage" --tensors 20000 --repeats 2 --check "${memory[@]}"
python3 "$script" "$stowage" --tensors 10000 --repeats 2 --check "${memory[@]}" \
  --model-folder --commands inspect,plan,generate
