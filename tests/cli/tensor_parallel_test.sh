#!/usr/bin/env bash
# --tensor-parallel N (issue #22) on simulated accelerators: `stowage
# generate` split over 2 and 4 ranks gives transformers' greedy tokens on the
# dense fixtures, resident and streamed under each rank's own budget, with a
# report per rank; `stowage plan` shows each rank's share and plan; `stowage
# bench --model` measures N = 1 and 2 in one run with each accelerator's link;
# usage errors exit 2 with their messages.
set -euo pipefail
stowage=$1
data=$(dirname "$2")  # models/testdata/manifest.json -> models/testdata
tmp=${TEST_TMPDIR:-$(mktemp -d)}
# shellcheck source=tests/cli/fixture_helpers.sh
source "$(dirname "$0")/fixture_helpers.sh"

# The greedy tokens of transformers, resident and split over 2 and 4 ranks.
for case in llama_f32 qwen2_f16 mistral_sharded_f32 llama3_tied_bf16; do
  prompt=$(ref_ids $case prompt_ids)
  want=$(ref_ids $case output_ids)
  for n in 2 4; do
    "$stowage" generate --device sim --model "$data/$case" --prompt-ids "$prompt" \
      --max-new-tokens 32 --ignore-eos --json --tensor-parallel $n >"$tmp/tp.json"
    [ "$(json_query "$tmp/tp.json" 'o["output_ids"]')" = "$want" ] || fail "$case tp=$n tokens"
    [ "$(json_query "$tmp/tp.json" 'o["tensor_parallel"]["ranks"]')" = $n ] || fail "$case tp=$n ranks"
    [ "$(json_query "$tmp/tp.json" '[r["accelerator"] for r in o["tensor_parallel"]["per_rank"]][-1]')" = "sim:$((n - 1))" ] ||
      fail "$case tp=$n accelerators"
  done
done

# Streamed: each rank under its own budget streams its part over its own link.
prompt=$(ref_ids llama_f32 prompt_ids)
"$stowage" generate --device sim --model "$data/llama_f32" --prompt-ids "$prompt" \
  --max-new-tokens 32 --ignore-eos --json --tensor-parallel 2 \
  --max-memory 0=320KiB,1=320KiB >"$tmp/streamed.json"
[ "$(json_query "$tmp/streamed.json" 'o["output_ids"]')" = "$(ref_ids llama_f32 output_ids)" ] ||
  fail "streamed tp=2 tokens"
[ "$(json_query "$tmp/streamed.json" 'min(r["streamed_bytes_per_token"] for r in o["tensor_parallel"]["per_rank"]) > 0')" = True ] ||
  fail "a rank did not stream: $(cat "$tmp/streamed.json")"
[ "$(json_query "$tmp/streamed.json" 'max(r["peak_accelerator_bytes"] for r in o["tensor_parallel"]["per_rank"]) <= 320 * 1024')" = True ] ||
  fail "a rank exceeded its budget"

# Text: a line per rank with its share.
out=$("$stowage" generate --device sim --model "$data/llama_f32" --prompt-ids "$prompt" \
  --max-new-tokens 4 --tensor-parallel 2)
grep -q "^tensor-parallel rank 0 (sim:0): heads 0-1 of 4, kv heads 0 of 2, intermediate 0-79 of 160" <<<"$out" ||
  fail "rank 0 line: $out"
grep -q "^tensor-parallel rank 1 (sim:1): heads 2-3 of 4, kv heads 1 of 2, intermediate 80-159 of 160" <<<"$out" ||
  fail "rank 1 line: $out"

# plan: each rank's share and plan under its own budget.
out=$("$stowage" plan --device sim --model "$data/llama_f32" --max-memory 0=320KiB,1=320KiB \
  --prompt-tokens 8 --max-new-tokens 32 --tensor-parallel 2)
for r in 0 1; do
  grep -q "^tensor-parallel rank $r of 2 (sim:$r): heads" <<<"$out" || fail "plan rank $r: $out"
done
"$stowage" plan --device sim --model "$data/llama_f32" --max-memory 0=320KiB,1=320KiB \
  --prompt-tokens 8 --max-new-tokens 32 --tensor-parallel 4 --json >"$tmp/plan.json"
[ "$(json_query "$tmp/plan.json" '[r["accelerator"] for r in o["tensor_parallel"]]')" = "sim:0,sim:1,sim:2,sim:3" ] ||
  fail "plan accelerators"
[ "$(json_query "$tmp/plan.json" 'o["tensor_parallel"][3]["share"]')" = "heads 3 of 4, kv heads 1 of 2, intermediate 120-159 of 160" ] ||
  fail "plan share: $(cat "$tmp/plan.json")"
# Budgets 0 and 1 only: ranks 2 and 3 are unbudgeted, every module resident.
[ "$(json_query "$tmp/plan.json" 'all(m["tier"] == "sim:3" for m in o["tensor_parallel"][3]["modules"] if m["module"] != "model.embed_tokens")')" = True ] ||
  fail "unbudgeted rank 3 streams"

# bench: N = 1 and 2 in one run, each accelerator's link reported.
"$stowage" bench --device sim --model "$data/llama_f32" --max-memory 0=320KiB,1=320KiB \
  --no-resident --prompt-tokens 8 --new-tokens 4 --batches 1 --tensor-parallel 1,2 --json \
  >"$tmp/bench.json"
[ "$(json_query "$tmp/bench.json" '[r["tensor_parallel"] for r in o["runs"] if r["phase"] == "decode"]')" = "1,2" ] ||
  fail "bench runs: $(cat "$tmp/bench.json")"
[ "$(json_query "$tmp/bench.json" 'len(o["link_bytes_per_s_per_accelerator"])')" = 2 ] || fail "bench links"
[ "$(json_query "$tmp/bench.json" 'len([r for r in o["runs"] if r["tensor_parallel"] == 2][-1]["ranks"])')" = 2 ] ||
  fail "bench ranks"

# Usage errors exit 2, a split the model cannot take 1: each with the reason.
expect_exit() {  # CODE PATTERN ARGS...
  local code=$1 pattern=$2; shift 2
  set +e; err=$("$stowage" "$@" 2>&1 >/dev/null); rc=$?; set -e
  [ $rc = "$code" ] || fail "exit $rc for $*: $err"
  grep -q -- "$pattern" <<<"$err" || fail "message for $*: $err"
}
gen=(generate --device sim --prompt-ids 1)
expect_exit 2 "expected comma-separated numbers in 1..64, found '0'" \
  "${gen[@]}" --model "$data/llama_f32" --tensor-parallel 0
expect_exit 2 "expected one number of accelerators" \
  "${gen[@]}" --model "$data/llama_f32" --tensor-parallel 1,2
expect_exit 2 "does not take --run-on-host yet" \
  "${gen[@]}" --model "$data/llama_f32" --tensor-parallel 2 --run-on-host 'model.layers.0'
expect_exit 2 "does not take --cuda-graphs yet" \
  bench --device sim --model "$data/llama_f32" --tensor-parallel 1,2 --cuda-graphs
expect_exit 1 "3 ranks must divide the 4 attention heads" \
  "${gen[@]}" --model "$data/llama_f32" --tensor-parallel 3
expect_exit 1 "mixture-of-experts" "${gen[@]}" --model "$data/mixtral_f32" --tensor-parallel 2
echo PASS
