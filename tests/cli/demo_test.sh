#!/usr/bin/env bash
# `stowage demo` and `stowage bench` at small size on the simulated
# accelerator: exit codes, the agreement check, the trace, bench's JSON.
set -euo pipefail
stowage=$1
tmp=${TEST_TMPDIR:-$(mktemp -d)}
fail() { echo "FAIL: $*" >&2; exit 1; }

# Streamed (a budget of 2 slots and no room for a resident layer), traced.
out=$("$stowage" demo --device sim --layers 4 --hidden 256 --batch 3 --iters 2 --prefetch 1 \
        --max-memory 0=300KiB --trace "$tmp/trace.json")
echo "$out"
grep -q "identical to resident, bit for bit" <<<"$out" || fail "demo did not report agreement"
grep -Eq "streamed per forward +[0-9.]+ B +514.00 KiB" <<<"$out" || fail "demo did not stream the whole model"
python3 - "$tmp/trace.json" <<'PY'
import json, sys
events = json.load(open(sys.argv[1]))["traceEvents"]
cats = {e.get("cat") for e in events if e.get("ph") == "X"}
assert {"copy", "compute"} <= cats, cats
PY

# bfloat16 and float32 weights agree too.
for dtype in bfloat16 float32; do
  "$stowage" demo --device sim --layers 3 --hidden 128 --dtype $dtype --iters 1 --max-memory 0=300KiB \
    | grep -q "bit for bit" || fail "demo --dtype $dtype"
done

# Bad usage exits 2; a budget that cannot hold the streaming slots exits 1 with a message.
set +e
"$stowage" demo --device sim --layers 0 >/dev/null 2>&1; [ $? -eq 2 ] || fail "--layers 0 should be a usage error"
"$stowage" demo --device sim --quant int4 >/dev/null 2>&1; [ $? -eq 2 ] || fail "--quant int4 should be a usage error"
err=$("$stowage" demo --device sim --layers 2 --hidden 256 --max-memory 0=10KiB 2>&1 >/dev/null); code=$?
set -e
[ $code -eq 1 ] || fail "tiny budget: expected exit 1, got $code"
grep -qi "budget\|fit" <<<"$err" || fail "tiny budget: message does not say what did not fit: $err"

# bench on a checkpoint of our own: JSON with the fields compare_accelerate.py reads.
python3 - "$tmp/m.safetensors" <<'PY'
import json, struct, sys
import numpy as np
rng = np.random.default_rng(0)
tensors = {f"layers.{i}.weight": rng.standard_normal((64, 64), dtype=np.float32).astype(np.float16) for i in range(3)}
header, offset, blobs = {}, 0, []
for name, t in tensors.items():
    b = t.tobytes(); header[name] = {"dtype": "F16", "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
    offset += len(b); blobs.append(b)
h = json.dumps(header).encode(); h += b" " * (-len(h) % 8)
open(sys.argv[1], "wb").write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
PY
json=$("$stowage" bench --device sim --model "$tmp/m.safetensors" --batch 2 --iters 3 --max-memory 0=20KiB \
         --prefetch 1 --json)
python3 - "$json" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
for key in ("offloaded_forward_s", "resident_forward_s", "pinned_h2d_gib_s", "peak_accelerator_bytes",
            "stall_ms_per_forward", "streamed_bytes", "effective_gib_s"):
    assert key in r, key
assert r["outputs_identical"] is True
assert r["streamed_bytes"] == 3 * 64 * 64 * 2, r["streamed_bytes"]
assert r["peak_accelerator_bytes"] <= 20 * 1024, r["peak_accelerator_bytes"]
PY
# With --no-resident nothing is compared, and bench says so (no claim of bit-identity).
json=$("$stowage" bench --device sim --model "$tmp/m.safetensors" --batch 2 --iters 2 --max-memory 0=20KiB \
         --prefetch 1 --no-resident --json)
python3 -c 'import json, sys; r = json.loads(sys.argv[1]); assert r["outputs_identical"] == "not compared", r; assert "resident_forward_s" not in r' "$json"
"$stowage" bench --device sim --model "$tmp/m.safetensors" --iters 1 --max-memory 0=20KiB --prefetch 1 \
  --no-resident | grep -q "outputs  *not compared" || fail "bench --no-resident text claims a comparison"
echo PASS
