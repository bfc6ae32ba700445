#!/usr/bin/env bash
# Issue 22's acceptance on a host with 2 GPUs (H100 or H200): Llama-3.1-8B's
# shape in bf16 under a budget of 3 GiB per GPU, batch-1 decode on one GPU
# (N = 1, accelerator 0 with 3 GiB) and split over two (N = 2, each GPU its
# own 3 GiB and its own link) measured in the same `stowage bench` run, each
# GPU's pinned host-to-device link rate reported beside what each rank
# streamed. Target: N = 2 decode >= 1.8x N = 1's tokens/s. Needs the stowage
# binary at $STOWAGE (default gpu_pack/bin/_stowage, from tools/pack_gpu.sh),
# built where NCCL was found (third_party/nccl); on the GPU host libnccl.so.2
# is taken from PyTorch's nvidia-nccl wheel (python3's nvidia.nccl) unless
# LD_LIBRARY_PATH already finds one. NVLink multicast stays off
# (NCCL_NVLS_ENABLE=0: the host's rule, KINDS.md). Output and the command
# that made it land in $OUT.
#
#   bash bench/tensor_parallel_gpu.sh prepare   # ~2-4 min: the 16 GB bf16 folder in $MODEL
#   bash bench/tensor_parallel_gpu.sh test      # the NCCL collective's tests on the 2 GPUs
#   bash bench/tensor_parallel_gpu.sh run       # N = 1 and N = 2 in one bench run
#   bash bench/tensor_parallel_gpu.sh summary   # tokens/s, ratio, each GPU's link and stream
#
# BUDGET (3GiB), NEW (32 new tokens), PROMPT (16), RANKS ("1,2"), MODEL
# (/tmp/llama-8b-bf16), SHAPE (llama-3.1-8b) override. On a CPU host for a
# check: SHAPE=tiny DEVICE=sim BUDGET=2MiB.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/tensor_parallel_gpu_out}
mkdir -p "$OUT"
STOWAGE=${STOWAGE:-gpu_pack/bin/_stowage}
MODEL=${MODEL:-/tmp/llama-8b-bf16}
SHAPE=${SHAPE:-llama-3.1-8b}
DEVICE=${DEVICE:-cuda}
BUDGET=${BUDGET:-3GiB}
NEW=${NEW:-32}
PROMPT=${PROMPT:-16}
RANKS=${RANKS:-1,2}
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
if [ "$DEVICE" = cuda ]; then
  nccl_lib=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))' 2>/dev/null)
  [ -n "$nccl_lib" ] && export LD_LIBRARY_PATH="$nccl_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  nvidia-smi --query-gpu=index,name,memory.total,pcie.link.gen.current,pcie.link.width.current \
    --format=csv,noheader
  nvidia-smi topo -m 2>/dev/null | head -5
fi

case "${1:-}" in
  prepare)
    rm -rf "$MODEL"
    time python3 tools/make_synthetic_model.py --shape "$SHAPE" --dtype bf16 "$MODEL"
    du -sh "$MODEL"; df -h "$(dirname "$MODEL")" | tail -1
    ;;
  test)
    for t in gpu_pack/bin/parallel__nccl_collective_test gpu_pack/bin/parallel__tensor_parallel_test; do
      [ -x "$t" ] && "$t" 2>&1 | tail -5
    done
    ;;
  run)
    [ -x "$STOWAGE" ] || { echo "no stowage binary at $STOWAGE"; exit 2; }
    [ -f "$MODEL/config.json" ] || { echo "no model at $MODEL: run 'prepare' first"; exit 2; }
    cmd="$STOWAGE bench --model $MODEL --device $DEVICE --max-memory 0=$BUDGET,1=$BUDGET \
--no-resident --batches 1 --prompt-tokens $PROMPT --new-tokens $NEW --tensor-parallel $RANKS --json"
    echo "$cmd" | tee "$OUT/run.cmd"
    /usr/bin/time -v $cmd > "$OUT/run.json" 2> "$OUT/run.err"
    echo "exit $?"; grep -E "Maximum resident|Elapsed" "$OUT/run.err"; tail -3 "$OUT/run.err"
    ;;
  summary)
    python3 - "$OUT/run.json" <<'PY'
import json, sys
o = json.load(open(sys.argv[1]))
gib = 2**30
links = o.get("link_bytes_per_s_per_accelerator", [o["link_bytes_per_s"]])
print("links alone: " + ", ".join(f"accelerator {i} {l / gib:.2f} GiB/s" for i, l in enumerate(links)))
decode = {}
for r in o["runs"]:
    print(f'{r["config"]:24s} {r["phase"]:8s} {r["tokens_per_s"]:9.2f} tok/s  streamed/step '
          f'{r["streamed_bytes_per_step"] / gib:.2f} GiB at {r["streamed_bytes_per_s"] / gib:.2f} GiB/s  '
          f'link limit {r["link_limit_tokens_per_s"]:.2f} tok/s  peak {r["peak_accelerator_bytes"] / gib:.2f} GiB')
    for i, rank in enumerate(r.get("ranks", [])):
        print(f'    rank {i} ({rank["accelerator"]}): {rank["share"]}; streamed '
              f'{rank["streamed_bytes_per_token"] / gib:.2f} GiB a token at '
              f'{rank["streamed_bytes_per_s"] / gib:.2f} GiB/s of its {rank["link_bytes_per_s"] / gib:.2f} GiB/s link; '
              f'peak {rank["peak_accelerator_bytes"] / gib:.2f} GiB')
    if r["phase"] == "decode":
        decode[r["tensor_parallel"]] = r["tokens_per_s"]
if 1 in decode and 2 in decode:
    print(f"decode N=2 / N=1: {decode[2] / decode[1]:.2f}x (target >= 1.8x)")
PY
    ;;
  *) sed -n 2,24p "$0"; exit 2 ;;
esac
