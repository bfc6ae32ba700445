#!/usr/bin/env bash
# The mixture-of-experts flags of `stowage generate` and `stowage bench` on the
# MoE fixtures of models/testdata (sim): transformers' 32 greedy tokens
# resident, with every expert in host RAM (--cpu-moe) fetched per use, through
# the expert cache (fixed and automatic size, LFU and LRU, with and without
# prediction), computed on the host, split and by the measured choice; the 'moe'
# report; bench with a Zipf routing trace; usage errors exit 2.
set -euo pipefail
stowage=$1
data=$(dirname "$2")  # models/testdata/manifest.json -> models/testdata
tmp=${TEST_TMPDIR:-$(mktemp -d)}
fail() { echo "FAIL: $*" >&2; exit 1; }

ref_ids() {  # CASE TENSOR -> comma-separated ids
  python3 - "$data/$1/reference.safetensors" "$2" <<'PY'
import array, json, struct, sys
f = open(sys.argv[1], "rb"); n = struct.unpack("<Q", f.read(8))[0]; h = json.loads(f.read(n)); d = f.read()
a, b = h[sys.argv[2]]["data_offsets"]; x = array.array("i"); x.frombytes(d[a:b])
print(",".join(map(str, x)))
PY
}
field() {  # FILE PYTHON-EXPRESSION over o (the last line's JSON object)
  python3 -c "import json,sys; o=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); v=eval(sys.argv[2]); print(','.join(map(str,v)) if isinstance(v,list) else v)" "$1" "$2"
}

for case in mixtral_f32 qwen2_moe_f32 qwen3_moe_f32; do
  prompt=$(ref_ids $case prompt_ids)
  want=$(ref_ids $case output_ids)
  gen=(generate --device sim --model "$data/$case" --prompt-ids "$prompt" --max-new-tokens 32
       --ignore-eos --json)
  i=0
  for flags in "" "--cpu-moe 3" "--cpu-moe 3 --expert-cache 4" \
      "--cpu-moe 3 --expert-cache 4 --expert-cache-policy lru --no-expert-predict" \
      "--cpu-moe 3 --max-memory 0=24MiB --expert-cache auto" "--cpu-moe 3 --expert-compute host" \
      "--cpu-moe 3 --expert-cache 4 --expert-compute auto" \
      "--cpu-moe 3 --expert-cache 4 --expert-compute split"; do
    i=$((i + 1))
    # shellcheck disable=SC2086
    "$stowage" "${gen[@]}" $flags >"$tmp/$case.$i.json" || fail "$case '$flags' exit $?"
    [ "$(field "$tmp/$case.$i.json" 'o["output_ids"]')" = "$want" ] || fail "$case '$flags' tokens"
  done
  # The cache's report: slots, hits, a hit rate per layer, predictions.
  [ "$(field "$tmp/$case.3.json" 'o["moe"]["expert_cache_slots"]')" = 4 ] || fail "$case slots"
  [ "$(field "$tmp/$case.3.json" 'o["moe"]["hits"] > 0 and len(o["moe"]["layers"]) > 0')" = True ] \
    || fail "$case hits: $(cat "$tmp/$case.3.json")"
  [ "$(field "$tmp/$case.3.json" 'o["moe"]["predicted_routings"] > 0')" = True ] || fail "$case predictions"
  [ "$(field "$tmp/$case.4.json" 'o["moe"]["expert_cache_policy"]')" = lru ] || fail "$case policy"
  [ "$(field "$tmp/$case.4.json" 'o["moe"]["prefetched"]')" = 0 ] || fail "$case prefetched"
  [ "$(field "$tmp/$case.5.json" 'o["moe"]["expert_cache_slots"] > 0')" = True ] || fail "$case auto"
  [ "$(field "$tmp/$case.6.json" 'o["moe"]["expert_compute"]')" = host ] || fail "$case host"
  [ "$(field "$tmp/$case.7.json" 'o["moe"]["host_step_seconds"] > 0 and o["moe"]["split_step_seconds"] > 0')" = True ] \
    || fail "$case auto choice: $(cat "$tmp/$case.7.json")"
  [ "$(field "$tmp/$case.8.json" 'o["moe"]["expert_compute"] == "split" and o["moe"]["split_host_bytes_per_s"] > 0')" = True ] \
    || fail "$case split: $(cat "$tmp/$case.8.json")"
done

# bench replays a Zipf(1.0) routing and reports hit rate and prediction accuracy.
"$stowage" bench --device sim --model "$data/mixtral_f32" --max-memory 0=2MiB --no-resident \
  --batches 1 --prompt-tokens 4 --new-tokens 16 --cpu-moe 2 --expert-cache 6 \
  --routing-trace zipf:1.0 --json >"$tmp/bench.json"
[ "$(field "$tmp/bench.json" '[r["moe"]["routing"] for r in o["runs"]][-1]')" = zipf:1.0 ] \
  || fail "bench routing"
[ "$(field "$tmp/bench.json" 'all("hit_rate" in r["moe"] and "prediction_accuracy" in r["moe"] for r in o["runs"])')" = True ] \
  || fail "bench moe report: $(cat "$tmp/bench.json")"
# bench --expert-compute split: its prefill run (no decode step to split) runs as it is, and
# the decode run splits.
"$stowage" bench --device sim --model "$data/mixtral_f32" --max-memory 0=2MiB --no-resident \
  --batches 1 --prompt-tokens 4 --new-tokens 8 --cpu-moe 2 --expert-cache 6 \
  --expert-compute split --json >"$tmp/bench_split.json" \
  || fail "bench --expert-compute split exited $?"
[ "$(field "$tmp/bench_split.json" '[r["moe"]["expert_compute"] for r in o["runs"] if r["phase"] == "decode"][0]')" = split ] \
  || fail "bench split: $(cat "$tmp/bench_split.json")"

expect() {  # CODE MESSAGE ARGS...
  local code=$1 message=$2; shift 2
  set +e; "$stowage" "$@" >"$tmp/out" 2>"$tmp/err"; local got=$?; set -e
  [ "$got" = "$code" ] || fail "exit $got, expected $code: $*"
  grep -q -- "$message" "$tmp/err" || fail "message '$message' not in: $(cat "$tmp/err")"
}
m=(--device sim --model "$data/mixtral_f32")
expect 2 "need --expert-cache" generate "${m[@]}" --prompt-ids 1 --expert-cache-policy lru
expect 2 "expected lfu or lru" generate "${m[@]}" --prompt-ids 1 --expert-cache 2 --expert-cache-policy arc
expect 2 "expected uniform or zipf:S" bench "${m[@]}" --max-memory 0=2MiB --routing-trace zipf:x
expect 2 "expected accelerator, host, split or auto" generate "${m[@]}" --prompt-ids 1 --expert-compute gpu
expect 2 "need --max-memory" bench "${m[@]}" --cpu-moe 2
expect 2 "split: needs --expert-cache" generate "${m[@]}" --prompt-ids 1 --expert-compute split
echo "PASS"
