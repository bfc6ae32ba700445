#!/usr/bin/env bash
# GPU check (H100): quantizes one checkpoint with `stowage quantize --device cuda`
# (kernels/) and --device sim (the CPU reference) for several configurations
# and compares the output files byte for byte. Needs python3 with torch and
# safetensors. Usage: bash tests/python/bnb_layout_cpu_vs_cuda.sh [path/to/stowage]
set -u
S=${STOWAGE_BIN:-${1:-bazel-bin/stowage}}
if ! python3 -c "import numpy, torch, safetensors" >/dev/null 2>&1; then
  echo "bnb_layout_cpu_vs_cuda: skipped: python3 cannot import numpy, torch and safetensors"
  exit 0
fi
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "bnb_layout_cpu_vs_cuda: skipped: no CUDA GPU visible"
  exit 0
fi
D=$(mktemp -d)
python3 - "$D/in.safetensors" <<'PY'
import sys, numpy as np, torch
from safetensors.torch import save_file
g = torch.Generator().manual_seed(1)
t = {}
for i, (shape, dt) in enumerate([((4096, 4096), torch.float16), ((1000, 333), torch.bfloat16),
                                 ((7, 9), torch.float32), ((11008, 1024), torch.bfloat16),
                                 ((257, 129), torch.float16)]):
    t[f"layers.{i}.weight"] = (torch.randn(*shape, generator=g) * (i + 1)).to(dt)
    t[f"layers.{i}.bias"] = torch.randn(shape[0], generator=g).to(dt)
t["layers.1.weight"][3, :64] = 0  # an all-zero block
save_file(t, sys.argv[1])
PY
fail=0; n=0
for cfg in "int8" "nf4" "fp4" "nf4 --double-quant" "fp4 --double-quant --quant-storage bfloat16" \
           "nf4 --blocksize 32 --quant-storage float32" "fp4 --blocksize 4096 --double-quant" \
           "nf4 --blocksize 128 --double-quant --quant-storage float16"; do
  n=$((n+1))
  $S quantize --device cuda --method $cfg "$D/in.safetensors" "$D/cuda.safetensors" > "$D/cuda.txt" 2>&1 || { echo "FAIL cuda $cfg: $(cat $D/cuda.txt)"; fail=$((fail+1)); continue; }
  $S quantize --device sim --method $cfg "$D/in.safetensors" "$D/cpu.safetensors" > "$D/cpu.txt" 2>&1 || { echo "FAIL cpu $cfg: $(cat $D/cpu.txt)"; fail=$((fail+1)); continue; }
  if cmp -s "$D/cuda.safetensors" "$D/cpu.safetensors"; then echo "PASS identical bytes: --method $cfg ($(cat $D/cuda.txt | head -c 160))"; else echo "FAIL bytes differ: --method $cfg: $(cmp $D/cuda.safetensors $D/cpu.safetensors | head -1)"; fail=$((fail+1)); fi
done
echo "$((n-fail)) passed, $fail failed"
rm -rf "$D"
[ "$fail" -eq 0 ]
