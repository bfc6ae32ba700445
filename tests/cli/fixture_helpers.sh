# Helpers of the shell tests that run the transformers fixtures
# (models/testdata): sourced after setting $data to that folder.

fail() { echo "FAIL: $*" >&2; exit 1; }

ref_ids() {  # CASE TENSOR -> comma-separated ids of the fixture's reference
  python3 - "$data/$1/reference.safetensors" "$2" <<'PY'
import array, json, struct, sys
f = open(sys.argv[1], "rb"); n = struct.unpack("<Q", f.read(8))[0]; h = json.loads(f.read(n)); d = f.read()
a, b = h[sys.argv[2]]["data_offsets"]; x = array.array("i"); x.frombytes(d[a:b])
print(",".join(map(str, x)))
PY
}

json_query() {  # FILE EXPR -> EXPR on the last line's JSON object (as o); lists comma-joined
  python3 -c "import json,sys; o=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); v=eval(sys.argv[2]); print(','.join(map(str,v)) if isinstance(v,list) else v)" "$1" "$2"
}
