#!/usr/bin/env bash
# tools/make_synthetic_model.py writes model folders stowage reads (bf16, and NF4 with double
# quantization written directly, sharded), and `stowage bench --model DIR` measures them:
# prefill and decode at several batches, resident and under a budget, with the link rate.
set -euo pipefail
stowage=$1
tool=$2
tmp=${TEST_TMPDIR:-$(mktemp -d)}
fail() { echo "FAIL: $*" >&2; exit 1; }

python3 "$tool" --shape tiny --dtype bf16 "$tmp/bf16"
python3 "$tool" --shape tiny --dtype nf4-dq --shard-gib 0.0001 "$tmp/nf4"
[ -f "$tmp/nf4/model.safetensors.index.json" ] || fail "no sharded index"
# Refuses to write into a non-empty folder.
if python3 "$tool" --shape tiny "$tmp/bf16" 2>/dev/null; then fail "overwrote a folder"; fi

"$stowage" inspect "$tmp/bf16" | grep -q "LlamaForCausalLM: 2 layers" || fail "inspect bf16"
"$stowage" inspect "$tmp/nf4" --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
q = [t["quant"] for t in d["tensors"] if t["quant"]]
assert len(q) == 14, len(q)
assert all(x["method"] == "nf4" and x["double_quant"] and x["blocksize"] == 64 for x in q), q[0]
' || fail "inspect nf4: quantized weights not recognized"

for m in bf16 nf4; do
  "$stowage" generate --device sim --model "$tmp/$m" --prompt-ids 1,2,3 --max-new-tokens 4 \
    --ignore-eos --json >"$tmp/gen.json"
  python3 -c 'import json,sys; d=json.loads(open(sys.argv[1]).read().splitlines()[-1]); assert len(d["output_ids"]) == 4, d' "$tmp/gen.json" || fail "generate $m"
done

"$stowage" bench --device sim --model "$tmp/nf4" --max-memory 0=280KiB --prefetch 1 --prompt-tokens 8 \
  --new-tokens 4 --batches 1,2 --json >"$tmp/bench.json"
python3 - "$tmp/bench.json" <<'PY'
import json, sys
d = json.loads(open(sys.argv[1]).read().splitlines()[-1])
assert d["link_bytes_per_s"] > 0, d
runs = d["runs"]
configs = {r["config"] for r in runs}
assert configs == {"resident", "0=280KiB"}, configs
for config in configs:
    phases = [(r["phase"], r["batch"]) for r in runs if r["config"] == config]
    assert phases == [("prefill", 1), ("decode", 1), ("decode", 2)], phases
# At batch 2 the working memory leaves the weights too little room: layers stream. (At batch 1
# the 280 KiB hold every weight but the embedding, which is read in place.)
budgeted = [r for r in runs if r["config"] == "0=280KiB" and r["batch"] == 2]
assert all(r["streamed_bytes_per_step"] > 0 and r["link_limit_tokens_per_s"] > 0 for r in budgeted), budgeted
resident = [r for r in runs if r["config"] == "resident"]
assert all(r["streamed_bytes_per_step"] == 0 for r in resident), resident
assert all(r["tokens_per_s"] > 0 for r in runs), runs
PY
# Batch 1 under 250 KiB: the decode streams.
"$stowage" bench --device sim --model "$tmp/nf4" --max-memory 0=250KiB --prompt-tokens 16 \
  --new-tokens 4 --batches 1 --json >"$tmp/bench1.json"
python3 - "$tmp/bench1.json" <<'PY'
import json, sys
runs = json.loads(open(sys.argv[1]).read().splitlines()[-1])["runs"]
decode = [r for r in runs if r["phase"] == "decode" and r["config"] == "0=250KiB"]
assert decode and all(r["streamed_bytes_per_step"] > 0 for r in decode), runs
# The budgeted prefill streams too, and is measured against P / max(resident prefill, link): the
# lower of the resident prefill's tokens/s and its own link limit.
prefill = {r["config"]: r for r in runs if r["phase"] == "prefill"}
b, res = prefill["0=250KiB"], prefill["resident"]
assert b["link_limit_tokens_per_s"] > 0, b
bound = min(res["tokens_per_s"], b["link_limit_tokens_per_s"])
assert abs(b["prefill_bound_tokens_per_s"] - bound) <= 1e-9 * bound, (b, bound)
assert abs(b["share_of_prefill_bound"] - b["tokens_per_s"] / bound) <= 1e-9, b
assert "prefill_bound_tokens_per_s" not in res, res
PY
"$stowage" bench --device sim --model "$tmp/bf16" --prompt-tokens 4 --new-tokens 2 --batches 1 | grep -q "link limit" || fail "bench text"

# A dense model's resident layers are spread evenly among the streamed ones (planner step 8),
# in `plan` and in what `generate` places alike (SmolLM2-135M's shape: 30 layers).
python3 "$tool" --shape smollm2-135m --dtype bf16 "$tmp/smol" >/dev/null
"$stowage" plan --device sim --model "$tmp/smol" --max-memory 0=200MiB --prompt-tokens 4 \
  --max-new-tokens 4 --json >"$tmp/smol_plan.json"
"$stowage" generate --device sim --model "$tmp/smol" --max-memory 0=200MiB --prompt-ids 1,2,3,4 \
  --max-new-tokens 4 --ignore-eos --json >"$tmp/smol_gen.json"
python3 - "$tmp/smol_plan.json" "$tmp/smol_gen.json" <<'PY' || fail "resident layers spread"
import json, sys
def pattern(report):
    return "".join("r" if l["decode"] == "resident" else "s" for l in report["host_compute"]["layers"])
plan = pattern(json.loads(open(sys.argv[1]).read()))
gen = pattern(json.loads(open(sys.argv[2]).read().strip().splitlines()[-1]))
assert plan == gen, (plan, gen)
n, r = len(plan), plan.count("r")
assert n == 30 and 2 <= r <= n - 2, plan
assert plan != "r" * r + "s" * (n - r), plan
# Evenly: every run of streamed layers between resident ones within one of n / r.
runs = [len(x) for x in plan.split("r")]
assert max(runs) <= -(-(n - r) // r) + 1, plan
PY
echo PASS
