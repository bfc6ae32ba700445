#!/usr/bin/env bash
# Issue 18 item 5 on the GPU host, one step per device call (each under 10 minutes; state under
# /tmp survives only while the machine stays warm, so the steps run back to back). Needs, carried:
# gpu_llamacpp/ (tools/pack_llamacpp.sh) and the stowage binary at $STOWAGE (default
# gpu_pack/bin/_stowage). Every figure lands in $OUT as JSON, with the commands that made it.
#   bash bench/side_by_side_gpu.sh prepare8b     # ~5 min: llama.cpp built with CUDA while the
#                                                #   8B bf16 folder is written and converted to
#                                                #   GGUF f16; then Q4_0
#   bash bench/side_by_side_gpu.sh measure8b     # ~6 min: llama.cpp (f16 and Q4_0, -ngl at the
#                                                #   6 GiB budget and resident) vs stowage bench,
#                                                #   then transformers + accelerate vs stowage
#   bash bench/side_by_side_gpu.sh llamacpp70b   # ~6 min: the 8B files deleted, a 70B Q4_0 GGUF
#                                                #   written directly, llama.cpp at 20 GiB
#   bash bench/side_by_side_gpu.sh stowage70b    # ~5 min: the GGUF deleted, the 70B NF4 folder
#                                                #   written, stowage at 20 GiB; ratios
# BUDGET8B (6GiB), BUDGET70B (20GiB), PROMPT (2048), PROMPT70B (512) override; for a check on a
# CPU host: SHAPE8B=smollm2-135m SHAPE70B=smollm2-135m WORK=... CMP_ARGS="--cpu-only".
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/side_by_side_out}
mkdir -p "$OUT"
STOWAGE=${STOWAGE:-gpu_pack/bin/_stowage}
WORK=${WORK:-/tmp/stowage-llamacpp}
L8B=${L8B:-/tmp/l8b}
L70=${L70:-/tmp/l70}
SHAPE8B=${SHAPE8B:-llama-3.1-8b}
SHAPE70B=${SHAPE70B:-llama-3.1-70b}
PY=${PY:-python3}
cmp=("$PY" bench/compare_llamacpp.py --work "$WORK" --python "$PY" ${CMP_ARGS:-})
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
df -h /tmp | tail -1

case "${1:-}" in
  prepare8b)
    time "${cmp[@]}" prepare --model "$L8B" --shape "$SHAPE8B" --dtype bf16 --q4_0 \
      2>&1 | grep -v "Writing:" | tail -40
    cp "$WORK/prepare.json" "$OUT/prepare8b.json" 2>/dev/null
    tail -3 "$WORK/build.log" 2>/dev/null
    ls -la "$L8B" "$WORK"
    ;;
  measure8b)
    [ -x "$STOWAGE" ] || { echo "no stowage binary at $STOWAGE"; exit 2; }
    time "${cmp[@]}" measure --model "$L8B" --stowage "$STOWAGE" --budget "${BUDGET8B:-6GiB}" \
      --prompt-tokens "${PROMPT:-2048}" --new-tokens 32 --out "$OUT/compare_llamacpp_8b.json" \
      2> "$OUT/compare_llamacpp_8b.err" > /dev/null
    echo "compare_llamacpp exit $?"; grep "compare_llamacpp" "$OUT/compare_llamacpp_8b.err" | tail -20
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps(d['ratios'], indent=1))" \
      "$OUT/compare_llamacpp_8b.json"
    time timeout 280 "$PY" bench/compare_llm.py --stowage "$STOWAGE" --model "$L8B" \
      --budget "${BUDGET8B:-6GiB}" --prompt-tokens 512 --new-tokens 4 \
      > "$OUT/compare_accelerate_8b.json" 2> "$OUT/compare_accelerate_8b.err"
    echo "compare_llm exit $?"; tail -3 "$OUT/compare_accelerate_8b.err"
    grep -E '"(decode|prefill)_stowage_over_accelerate"|_tokens_per_s"' "$OUT/compare_accelerate_8b.json" | head -8
    ;;
  llamacpp70b)
    rm -rf "$L8B" "$WORK"/*.gguf "$WORK/hf-for-converter" "$L70"
    time "${cmp[@]}" prepare --model "$L70" --shape "$SHAPE70B" --synthetic-gguf q4_0 2>&1 | tail -5
    time "${cmp[@]}" measure --model "$L70" --formats q4_0 --budget "${BUDGET70B:-20GiB}" \
      --prompt-tokens "${PROMPT70B:-512}" --new-tokens 16 --out "$OUT/compare_llamacpp_70b_llamacpp.json" \
      2> "$OUT/compare_llamacpp_70b_llamacpp.err" > /dev/null
    echo "measure exit $?"; grep "compare_llamacpp" "$OUT/compare_llamacpp_70b_llamacpp.err" | tail -8
    cp "$OUT/compare_llamacpp_70b_llamacpp.json" "$WORK/l70-llamacpp.json"
    ;;
  stowage70b)
    [ -x "$STOWAGE" ] || { echo "no stowage binary at $STOWAGE"; exit 2; }
    rm -f "$WORK"/*.gguf
    [ -f "$L70"/config.json ] || { rm -rf "$L70"; time python3 tools/make_synthetic_model.py \
      --shape "$SHAPE70B" --dtype nf4-dq "$L70" 2>&1 | tail -1; }
    time "${cmp[@]}" measure --model "$L70" --llamacpp-from "$WORK/l70-llamacpp.json" \
      --stowage "$STOWAGE" --stowage-no-resident --budget "${BUDGET70B:-20GiB}" \
      --prompt-tokens "${PROMPT70B:-512}" --new-tokens 16 --out "$OUT/compare_llamacpp_70b.json" \
      2> "$OUT/compare_llamacpp_70b.err" > /dev/null
    echo "measure exit $?"; grep "compare_llamacpp" "$OUT/compare_llamacpp_70b.err" | tail -4
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(json.dumps(d['ratios'], indent=1))" \
      "$OUT/compare_llamacpp_70b.json"
    ;;
  *)
    sed -n 2,20p "$0"
    exit 2
    ;;
esac
