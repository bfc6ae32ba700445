#!/usr/bin/env bash
# `stowage generate`, `inspect` and `plan` on Hugging Face model folders (the
# transformers fixtures of models/testdata) on the simulated accelerator: the
# reference tokens resident and streamed, --dump-logits, --json, sampling with
# a seed, and the exit codes and messages of bad input.
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
json_field() {  # FILE FIELD -> the field of the last line's JSON object
  python3 -c "import json,sys; v=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])[sys.argv[2]]; print(','.join(map(str,v)) if isinstance(v,list) else v)" "$1" "$2"
}

# Budgets of the working memory, two fetch slots and about a quarter of the model.
for case_budget in llama_f32=640KiB qwen2_f16=300KiB llama3_tied_bf16=300KiB mistral_sharded_f32=640KiB; do
  case=${case_budget%=*}
  budget=${case_budget#*=}
  prompt=$(ref_ids $case prompt_ids)
  want=$(ref_ids $case output_ids)
  "$stowage" generate --device sim --model "$data/$case" --prompt-ids "$prompt" \
    --max-new-tokens 32 --ignore-eos --json >"$tmp/resident.json"
  [ "$(json_field "$tmp/resident.json" output_ids)" = "$want" ] || fail "$case resident tokens"
  [ "$(json_field "$tmp/resident.json" streamed_bytes_per_token)" = 0 ] || fail "$case resident streamed"
  "$stowage" generate --device sim --model "$data/$case" --prompt-ids "$prompt" \
    --max-new-tokens 32 --ignore-eos --json --max-memory "0=$budget" >"$tmp/streamed.json"
  [ "$(json_field "$tmp/streamed.json" output_ids)" = "$want" ] || fail "$case streamed tokens"
  [ "$(json_field "$tmp/streamed.json" streamed_bytes_per_token)" -gt 0 ] || fail "$case not streamed"
done

# Text output: the ids as generated (no tokenizer.json), then the rates line.
out=$("$stowage" generate --device sim --model "$data/llama_f32" --prompt-ids "$(ref_ids llama_f32 prompt_ids)" --max-new-tokens 4)
grep -q "^$(ref_ids llama_f32 output_ids | cut -d, -f1-4 | tr , ' ')$" <<<"$out" || fail "printed ids: $out"
grep -q "decode .* tokens/s" <<<"$out" || fail "no rates line: $out"

# --dump-logits: float32 [positions, vocab], within 1e-4 of transformers'.
"$stowage" generate --device sim --model "$data/llama_f32" --prompt-ids "$(ref_ids llama_f32 prompt_ids)" \
  --max-new-tokens 32 --ignore-eos --json --dump-logits "$tmp/logits.safetensors" >/dev/null
python3 - "$tmp/logits.safetensors" "$data/llama_f32/reference.safetensors" <<'PY'
import array, json, struct, sys
def read(path):
    f = open(path, "rb"); n = struct.unpack("<Q", f.read(8))[0]; h = json.loads(f.read(n)); d = f.read()
    a, b = h["logits"]["data_offsets"]; x = array.array("f"); x.frombytes(d[a:b])
    return h["logits"]["dtype"], h["logits"]["shape"], x
dt, shape, got = read(sys.argv[1]); _, want_shape, want = read(sys.argv[2])
assert dt == "F32" and shape == want_shape, (dt, shape, want_shape)
vocab = shape[1]
for r in range(shape[0]):
    row = want[r * vocab:(r + 1) * vocab]; scale = max(1.0, max(abs(v) for v in row))
    err = max(abs(got[r * vocab + i] - row[i]) for i in range(vocab))
    assert err / scale < 1e-4, (r, err)
PY

# Sampling is reproducible with a seed.
for i in 1 2; do
  "$stowage" generate --device sim --model "$data/qwen2_f16" --prompt-ids 1,2,3 --max-new-tokens 16 \
    --temperature 0.9 --top-k 50 --top-p 0.95 --seed 7 --ignore-eos --json >"$tmp/sample$i.json"
done
[ "$(json_field "$tmp/sample1.json" output_ids)" = "$(json_field "$tmp/sample2.json" output_ids)" ] || fail "seeded sampling differs"

# inspect and plan understand model folders.
"$stowage" inspect "$data/mistral_sharded_f32" | grep -q "MistralForCausalLM: 3 layers" || fail "inspect folder"
"$stowage" plan --device sim --model "$data/llama_f32" --max-memory 0=1MiB --prompt-tokens 7 \
  --max-new-tokens 32 --json >"$tmp/plan.json"
# KV cache: 2 layers x (keys + values) x 39 positions x 2 KV heads x 16 x 4 bytes.
[ "$(json_field "$tmp/plan.json" kv_cache_bytes)" = 19968 ] || fail "plan kv cache"

# Bad input: exit 1 naming the culprit; bad usage: exit 2.
expect() {  # CODE PATTERN ARGS...
  local code=$1 pattern=$2; shift 2
  set +e; "$stowage" "$@" >"$tmp/out" 2>"$tmp/err"; local rc=$?; set -e
  [ $rc -eq "$code" ] || fail "$* exited $rc, expected $code: $(cat "$tmp/err")"
  grep -q -- "$pattern" "$tmp/err" || fail "$*: message lacks '$pattern': $(cat "$tmp/err")"
}
expect 1 "prompt token 512 (position 1) is outside the vocabulary of 512 tokens" \
  generate --device sim --model "$data/llama_f32" --prompt-ids 1,512
expect 1 "needs the folder's tokenizer.json" generate --device sim --model "$data/llama_f32" --prompt hello
expect 2 "--model DIR is required" generate --prompt-ids 1
expect 2 "--prompt-ids: expected comma-separated token ids" generate --model "$data/llama_f32" --prompt-ids 1,x
expect 2 "--temperature" generate --model "$data/llama_f32" --prompt-ids 1 --temperature -1
cp -rL "$data/llama_f32" "$tmp/gpt2"
sed -i 's/LlamaForCausalLM/GPT2LMHeadModel/' "$tmp/gpt2/config.json"
expect 1 "'GPT2LMHeadModel' is not supported" generate --device sim --model "$tmp/gpt2" --prompt-ids 1
cp -rL "$data/llama_f32" "$tmp/wordpiece"
echo '{"version": "1.0", "model": {"type": "WordPiece", "vocab": {"a": 0}}}' >"$tmp/wordpiece/tokenizer.json"
expect 1 "WordPiece" generate --device sim --model "$tmp/wordpiece" --prompt hello
cp -rL "$data/llama_f32" "$tmp/missing"
python3 - "$tmp/missing/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); del c["num_attention_heads"]; json.dump(c, open(sys.argv[1], "w"))
PY
expect 1 "missing key 'num_attention_heads'" generate --device sim --model "$tmp/missing" --prompt-ids 1

# --run-on-host: the streamed layers matching the pattern compute on the host
# (fewer bytes cross the link), with the reference tokens; replayed from a
# graph too (on sim host work is captured). Patterns that cannot apply are
# usage errors.
prompt=$(ref_ids llama_f32 prompt_ids)
want=$(ref_ids llama_f32 output_ids)
"$stowage" generate --device sim --model "$data/llama_f32" --prompt-ids "$prompt" --max-new-tokens 32 \
  --ignore-eos --json --max-memory 0=640KiB >"$tmp/streamed.json"
for graphs in "" --cuda-graphs; do
  "$stowage" generate --device sim --model "$data/llama_f32" --prompt-ids "$prompt" --max-new-tokens 32 \
    --ignore-eos --json --max-memory 0=640KiB --run-on-host 'model\.layers\.[0-9]+' $graphs \
    >"$tmp/host.json"
  [ "$(json_field "$tmp/host.json" output_ids)" = "$want" ] || fail "host-computed tokens $graphs"
  [ "$(json_field "$tmp/host.json" host_layers)" -gt 0 ] || fail "no layer computed on the host"
  [ "$(json_field "$tmp/host.json" streamed_bytes_per_token)" -lt \
    "$(json_field "$tmp/streamed.json" streamed_bytes_per_token)" ] || fail "host layers still streamed"
done
[ "$(json_field "$tmp/host.json" graph_fallback)" = "" ] || fail "graph fell back on sim"
# --host-compute auto: the split from measured rates (any split gives the
# reference tokens); reported with both rates.
for graphs in "" --cuda-graphs; do
  "$stowage" generate --device sim --model "$data/llama_f32" --prompt-ids "$prompt" --max-new-tokens 32 \
    --ignore-eos --json --max-memory 0=640KiB --host-compute auto $graphs >"$tmp/auto.json"
  [ "$(json_field "$tmp/auto.json" output_ids)" = "$want" ] || fail "auto host compute tokens $graphs"
  python3 - "$tmp/auto.json" <<'PY' || fail "host_compute report"
import json, sys
o = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])["host_compute"]
assert o["link_bytes_per_s"] > 0 and o["host_bytes_per_s"] > 0, o
assert o["streamed_bytes"] + o["host_bytes"] > 0, o
assert o["estimated_step_seconds"] <= o["all_streamed_step_seconds"] + 1e-12, o
PY
done
expect 2 "--host-compute: expected off or auto" generate --device sim --model "$data/llama_f32" \
  --prompt-ids "$prompt" --host-compute sometimes
expect 2 "only decoder layers" generate --device sim --model "$data/llama_f32" --prompt-ids "$prompt" \
  --max-memory 0=640KiB --run-on-host 'lm_head'
expect 2 "matches no decoder layer off the accelerator" generate --device sim \
  --model "$data/llama_f32" --prompt-ids "$prompt" --run-on-host 'model\.layers\.0'
expect 2 "--run-on-host" generate --device sim --model "$data/llama_f32" --prompt-ids "$prompt" \
  --run-on-host '(unclosed'
echo "PASS"
