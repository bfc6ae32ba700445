#!/usr/bin/env bash
# Issue #21's H100 acceptance: two processes on one GPU stream their
# host-tier weights from one shared, pinned segment (--host-cache), together
# at >= 0.9x the pinned host-to-device link rate measured in the same run,
# with one host copy.
#
#   bash bench/host_cache_two_process.sh STOWAGE MODEL_DIR [MAX_MEMORY] [NEW_TOKENS]
#     STOWAGE     the packed binary (tools/pack_gpu.sh: gpu_pack/bin/stowage)
#     MODEL_DIR   a model folder (e.g. tools/make_synthetic_model.py --shape llama-3.1-8b)
#     MAX_MEMORY  each process's budget (default 0=6GiB: most layers stream)
#     NEW_TOKENS  decode steps timed per process (default 64)
#   STOWAGE_DEVICE=sim runs it on the simulated accelerator (a smoke test).
#
# 1. A solo `stowage bench --host-cache=keep` builds the segment; its
#    link_bytes_per_s (measured alone, before the decode) is the reference.
# 2. Two `stowage bench --host-cache` start at once and attach to it; while
#    both are attached, `stowage cache list --json` must show one segment
#    with both pids, and their Pss (/proc/PID/smaps_rollup) is sampled.
# 3. Combined rate = the sum of the two decode runs' streamed_bytes_per_s;
#    ratio = combined / the solo link rate (>= 0.9 passes).
# Prints one JSON object (the last line) and exits 0 when it passes, 1 when
# not. The segment is dropped at the end.
set -euo pipefail
stowage=${1:?usage: $0 STOWAGE MODEL_DIR [MAX_MEMORY] [NEW_TOKENS]}
model=${2:?usage: $0 STOWAGE MODEL_DIR [MAX_MEMORY] [NEW_TOKENS]}
max_memory=${3:-0=6GiB}
new_tokens=${4:-64}
export STOWAGE_HOST_CACHE_PREFIX=stowage-hc2p-$$
tmp=$(mktemp -d)
cleanup() {
  "$stowage" cache drop --all >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

common=(bench --model "$model" --device "${STOWAGE_DEVICE:-cuda}" --no-resident --max-memory "$max_memory"
        --batches 1 --prompt-tokens 16 --new-tokens "$new_tokens" --json)
echo "solo build: $stowage ${common[*]} --host-cache=keep" >&2
"$stowage" "${common[@]}" --host-cache=keep >"$tmp/solo.json"

echo "two at once: $stowage ${common[*]} --host-cache (x2)" >&2
"$stowage" "${common[@]}" --host-cache >"$tmp/a.json" &
pid_a=$!
"$stowage" "${common[@]}" --host-cache >"$tmp/b.json" &
pid_b=$!
# While both are attached: the listing and the processes' Pss.
: >"$tmp/samples.txt"
for _ in $(seq 1 600); do
  list=$("$stowage" cache list --json || true)
  if python3 -c 'import json,sys; s=json.loads(sys.argv[1])["segments"]; sys.exit(0 if len(s)==1 and len(s[0]["attached"])==2 else 1)' "$list" 2>/dev/null; then
    sleep 2
    list=$("$stowage" cache list --json)
    pss_a=$(awk '/^Pss:/{print $2*1024}' /proc/$pid_a/smaps_rollup 2>/dev/null || echo 0)
    pss_b=$(awk '/^Pss:/{print $2*1024}' /proc/$pid_b/smaps_rollup 2>/dev/null || echo 0)
    shm_a=$(awk '/^Pss_Shmem:/{print $2*1024}' /proc/$pid_a/smaps_rollup 2>/dev/null || echo 0)
    shm_b=$(awk '/^Pss_Shmem:/{print $2*1024}' /proc/$pid_b/smaps_rollup 2>/dev/null || echo 0)
    echo "$list" >"$tmp/list.json"
    echo "$pss_a $pss_b $shm_a $shm_b" >"$tmp/samples.txt"
    break
  fi
  kill -0 $pid_a 2>/dev/null || kill -0 $pid_b 2>/dev/null || break
  sleep 0.1
done
wait $pid_a
wait $pid_b

python3 - "$tmp" "$stowage" "$model" "$max_memory" "$new_tokens" <<'PY'
import json, sys
tmp, stowage, model, max_memory, new_tokens = sys.argv[1:]
solo = json.load(open(f"{tmp}/solo.json"))
a = json.load(open(f"{tmp}/a.json"))
b = json.load(open(f"{tmp}/b.json"))
def decode(r):
    return [x for x in r["runs"] if x["phase"] == "decode"][0]
link = solo["link_bytes_per_s"]
combined = decode(a)["streamed_bytes_per_s"] + decode(b)["streamed_bytes_per_s"]
samples = open(f"{tmp}/samples.txt").read().split()
try:
    listing = json.load(open(f"{tmp}/list.json"))["segments"]
except (OSError, ValueError):
    listing = []
segment = listing[0] if len(listing) == 1 else None
out = {
    "model": model,
    "max_memory": max_memory,
    "new_tokens": int(new_tokens),
    "link_bytes_per_s": link,
    "solo_decode_streamed_bytes_per_s": decode(solo)["streamed_bytes_per_s"],
    "a_decode_streamed_bytes_per_s": decode(a)["streamed_bytes_per_s"],
    "b_decode_streamed_bytes_per_s": decode(b)["streamed_bytes_per_s"],
    "combined_streamed_bytes_per_s": combined,
    "ratio_to_link": combined / link if link else 0.0,
    "host_cache": [solo.get("host_cache"), a.get("host_cache"), b.get("host_cache")],
    "segment_bytes": segment["bytes"] if segment else None,
    "segments_listed": len(listing),
    "attached_while_both_ran": segment["attached"] if segment else [],
    "pss_bytes": [int(float(v)) for v in samples[:2]] if samples else [],
    "pss_shmem_bytes": [int(float(v)) for v in samples[2:4]] if samples else [],
    "reproduce": f"bash bench/host_cache_two_process.sh {stowage} {model} {max_memory} {new_tokens}",
}
one_copy = (segment is not None and len(segment["attached"]) == 2 and
            all(h and h["action"] == "attached" for h in out["host_cache"][1:]))
out["one_host_copy"] = one_copy
out["pass"] = one_copy and out["ratio_to_link"] >= 0.9
print(json.dumps(out))
sys.exit(0 if out["pass"] else 1)
PY
