#!/usr/bin/env bash
# Builds every test and benchmark binary (with CUDA) and packs them, with a
# runner, into gpu_pack/ (ignored by git): a plain folder that runs on a GPU
# host with no Bazel. On the GPU host, from the repository root:
#   bash gpu_pack/run_tests.sh            # every test binary, then a count
#   bash gpu_pack/run_bench.sh [NAME...]  # the benchmarks (all by default)
# tools/pack_gpu.sh //core/... //kernels/...  packs only those targets.
set -euo pipefail
cd "$(dirname "$0")/.."
out=gpu_pack
rm -rf "$out"
mkdir -p "$out/bin"

# Optional arguments: target patterns to pack instead of everything.
scope=${*:-//...}
scope_expr=$(echo "$scope" | sed 's/ / + /g')
tests=$(bazel query "kind(cc_test, $scope_expr)" 2>/dev/null)
benches=$(bazel query "kind(cc_binary, ($scope_expr) intersect (//bench/... + //examples/...))" 2>/dev/null || true)
bazel build --jobs="${STOWAGE_JOBS:-$(nproc)}" //:stowage $tests $benches

pack() {  # label -> gpu_pack/bin/pkg__name (stripped)
  local label=$1 path name
  path=${label#//}
  path=${path/://}
  name=$(echo "${label#//}" | tr '/:' '__')
  strip --strip-unneeded -o "$out/bin/$name" "bazel-bin/$path"
  echo "$name"
}
pack //:stowage >/dev/null
: >"$out/tests.txt"
for t in $tests; do pack "$t" >>"$out/tests.txt"; done
: >"$out/benches.txt"
for b in $benches; do pack "$b" >>"$out/benches.txt"; done

cat >"$out/env.sh" <<'INNER'
# Recreates the runfiles layout tests expect: $TEST_SRCDIR/stowage/<path>.
pack_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_dir=$(cd "$pack_dir/.." && pwd)
export TEST_SRCDIR="$pack_dir/runfiles"
mkdir -p "$TEST_SRCDIR/stowage"
for entry in "$repo_dir"/*; do
  [ -e "$TEST_SRCDIR/stowage/$(basename "$entry")" ] || ln -s "$entry" "$TEST_SRCDIR/stowage/$(basename "$entry")"
done
cp -f "$pack_dir/bin/__stowage" "$TEST_SRCDIR/stowage/stowage" 2>/dev/null || cp -f "$pack_dir/bin/_stowage" "$TEST_SRCDIR/stowage/stowage"
export TEST_WORKSPACE=stowage
export PATH="$pack_dir/bin:$PATH"
INNER

cat >"$out/run_tests.sh" <<'INNER'
#!/usr/bin/env bash
# Runs every packed test binary; prints each result and a count.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
results=$(mktemp -d)
pass=0; fail=0
while read -r name; do
  [ -n "$name" ] || continue
  export TEST_TMPDIR=$(mktemp -d)
  if timeout "${STOWAGE_TEST_TIMEOUT:-600}" "$pack_dir/bin/$name" --gtest_output="xml:$results/$name.xml" >"$results/$name.log" 2>&1; then
    echo "PASS $name"; pass=$((pass + 1))
  else
    echo "FAIL $name"; tail -40 "$results/$name.log"; fail=$((fail + 1))
  fi
  rm -rf "$TEST_TMPDIR"
done <"$pack_dir/tests.txt"

mkdir -p "$results/x" && for f in "$results"/*.xml; do d="$results/x/$(basename "$f" .xml)"; mkdir -p "$d"; cp "$f" "$d/test.xml"; done
echo "binaries: $pass passed, $fail failed"
python3 "$repo_dir/tools/count_tests.py" "$results/x"
INNER

cat >"$out/run_bench.sh" <<'INNER'
#!/usr/bin/env bash
# Runs the packed benchmarks (all, or those named).
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
names=("$@")
[ "${#names[@]}" -gt 0 ] || mapfile -t names <"$pack_dir/benches.txt"
for name in "${names[@]}"; do
  echo "== $name =="
  "$pack_dir/bin/$name"
done
INNER
chmod +x "$out"/*.sh
du -sh "$out" "$out/bin"
