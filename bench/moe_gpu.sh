#!/usr/bin/env bash
# Issue 20's H100 acceptance runs (a)-(d): Mixtral-8x7B's shape in NF4 with double
# quantization, budget 0=10GiB, batch-1 decode, under uniform and Zipf(1.0) routing (random
# weights route uniformly, so the routing is replayed from a synthetic trace:
# --routing-trace). Each step is one device call (under 10 minutes); state under /tmp survives
# only while the machine stays warm, so run them back to back. Needs the stowage binary at
# $STOWAGE (default gpu_pack/bin/_stowage, from tools/pack_gpu.sh //models/... ). Every run's
# `stowage bench --json` lands in $OUT with the command that made it.
#
#   bash bench/moe_gpu.sh prepare     # ~3-5 min: writes the 24 GiB NF4-dq Mixtral folder
#   bash bench/moe_gpu.sh a           # (a) every routed expert streamed, no cache
#   bash bench/moe_gpu.sh b           # (b) expert cache (automatic size) + predicted prefetch
#   bash bench/moe_gpu.sh c           # (c) experts computed on the host where they are
#   bash bench/moe_gpu.sh d           # (d) automatic: cache, host or split, measured
#   bash bench/moe_gpu.sh s           # the split alone: the cache's experts on the accelerator,
#                                     #   each absent one copied or computed on the host
#   bash bench/moe_gpu.sh e-build     # ~4 min: llama.cpp built with CUDA (needs gpu_llamacpp/,
#                                     #   tools/pack_llamacpp.sh, carried), then the Q4_0 GGUF of
#                                     #   the same shape written directly (torch + transformers
#                                     #   for the converter's vocabulary run)
#   bash bench/moe_gpu.sh e           # (e) llama-bench, Q4_0, every layer on the GPU but the
#                                     #   experts (-ot exps=CPU); its own (random) router
#   bash bench/moe_gpu.sh summary     # tokens/s per run, hit rates, prediction accuracy,
#                                     #   (d) over the best of (a)-(c)
#
# In every run all 32 layers' experts are kept in pinned host RAM (--cpu-moe 32): the
# accelerator holds attention, routers, norms, head and embeddings, the KV cache, the fetch
# slots and (b, d) the expert cache in what is left of the 10 GiB. TRACES (default
# "uniform zipf:1.0"), BUDGET (10GiB), NEW (64 new tokens), PROMPT (16) override; MODEL
# (/tmp/mixtral-nf4dq). On a CPU host for a check: SHAPE=tiny-mixtral DEVICE=sim BUDGET=40MiB.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/moe_gpu_out}
mkdir -p "$OUT"
STOWAGE=${STOWAGE:-gpu_pack/bin/_stowage}
MODEL=${MODEL:-/tmp/mixtral-nf4dq}
SHAPE=${SHAPE:-mixtral-8x7b}
DEVICE=${DEVICE:-cuda}
BUDGET=${BUDGET:-10GiB}
NEW=${NEW:-64}
PROMPT=${PROMPT:-16}
WORK=${WORK:-/tmp/stowage-llamacpp}
GGUF=${GGUF:-/tmp/mixtral-q4_0.gguf}
PY=${PY:-python3}
TRACES=${TRACES:-uniform zipf:1.0}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader

# The flags of each configuration; the layer count of the shape for --cpu-moe.
layers=$(python3 -c "import sys; sys.path.insert(0, 'tools'); import make_synthetic_model as m; print(m.SHAPES['$SHAPE'][2])")
declare -A CONFIG=(
  [a]="--cpu-moe $layers"
  [b]="--cpu-moe $layers --expert-cache auto"
  [c]="--cpu-moe $layers --expert-compute host"
  [d]="--cpu-moe $layers --expert-cache auto --expert-compute auto"
  [s]="--cpu-moe $layers --expert-cache auto --expert-compute split"
)

run() {  # config letter
  local letter=$1 trace name cmd
  [ -x "$STOWAGE" ] || { echo "no stowage binary at $STOWAGE"; exit 2; }
  [ -f "$MODEL/config.json" ] || { echo "no model at $MODEL: run 'prepare' first"; exit 2; }
  for trace in $TRACES; do
    name="$OUT/${letter}_${trace/:/}"
    cmd="$STOWAGE bench --model $MODEL --device $DEVICE --max-memory 0=$BUDGET --no-resident \
--batches 1 --prompt-tokens $PROMPT --new-tokens $NEW --routing-trace $trace ${CONFIG[$letter]} --json"
    echo "$cmd" | tee "$name.cmd"
    /usr/bin/time -v $cmd > "$name.json" 2> "$name.err"
    echo "exit $?"; grep -E "Maximum resident|Elapsed" "$name.err"
    python3 - "$name.json" <<'PY'
import json, sys
o = json.load(open(sys.argv[1]))
for r in o["runs"]:
    m = r.get("moe", {})
    print(f'{r["phase"]:8s} {r["tokens_per_s"]:9.2f} tok/s  peak {r["peak_accelerator_bytes"] / 2**30:.2f} GiB  '
          f'compute {m.get("expert_compute")}  slots {m.get("expert_cache_slots")}  '
          f'hit {m.get("hit_rate")}  predicted {m.get("prediction_accuracy")}')
PY
  done
}

case "${1:-}" in
  prepare)
    rm -rf "$MODEL"
    time python3 tools/make_synthetic_model.py --shape "$SHAPE" --dtype nf4-dq "$MODEL"
    du -sh "$MODEL"; df -h /tmp | tail -1
    ;;
  a|b|c|d|s) run "$1" ;;
  e-build)
    time "$PY" bench/compare_llamacpp.py build --work "$WORK" 2>&1 | tail -5
    rm -f "$GGUF"
    time "$PY" tools/make_synthetic_gguf.py --shape "$SHAPE" --type q4_0 \
      --llamacpp "$WORK/src/llama.cpp" --python "$PY" "$GGUF" 2>&1 | tail -3
    ls -la "$GGUF"; df -h /tmp | tail -1
    ;;
  e)
    cmd="$WORK/build/bin/llama-bench -m $GGUF -ngl 99 -ot exps=CPU -p $PROMPT -n $NEW -r 3 \
-t $(nproc) -o json"
    echo "$cmd" | tee "$OUT/e.cmd"
    $cmd > "$OUT/e.json" 2> "$OUT/e.err"
    echo "exit $?"; tail -3 "$OUT/e.err"
    python3 -c "import json,sys; [print(t['n_prompt'], t['n_gen'], t['avg_ts']) for t in json.load(open(sys.argv[1]))]" "$OUT/e.json"
    ;;
  summary)
    python3 - "$OUT" $TRACES <<'PY'
import json, pathlib, sys
out, traces = pathlib.Path(sys.argv[1]), sys.argv[2:]
for trace in traces:
    best, rates = {}, {}
    for letter in "abcds":
        path = out / f"{letter}_{trace.replace(':', '')}.json"
        if not path.exists():
            continue
        runs = [r for r in json.load(open(path))["runs"] if r["phase"] == "decode"]
        if runs:
            best[letter] = runs[0]["tokens_per_s"]
            rates[letter] = runs[0].get("moe", {})
    print(f"routing {trace}: " + ", ".join(f"({k}) {v:.2f} tok/s" for k, v in best.items()))
    for k, m in rates.items():
        print(f"  ({k}) compute {m.get('expert_compute')} slots {m.get('expert_cache_slots')} "
              f"hit rate {m.get('hit_rate')} prediction accuracy {m.get('prediction_accuracy')} "
              f"measured accelerator/host s per step {m.get('accelerator_step_seconds')}/"
              f"{m.get('host_step_seconds')}")
    others = [best[k] for k in "abc" if k in best]
    if "d" in best and others:
        print(f"  (d) / best of (a)-(c): {best['d'] / max(others):.3f} (target >= 0.95)")
    e = out / "e.json"
    if "d" in best and e.exists():
        gen = [t["avg_ts"] for t in json.load(open(e)) if t["n_gen"] > 0]
        if gen:
            print(f"  (e) llama.cpp {gen[0]:.2f} tok/s; (d) / (e): {best['d'] / gen[0]:.3f} "
                  "(target >= 1.5)")
PY
    ;;
  *) sed -n 2,25p "$0"; exit 2 ;;
esac
