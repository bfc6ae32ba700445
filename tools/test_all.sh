#!/usr/bin/env bash
# The whole test suite, as CI runs it:
#   1. bazel test //...            (CUDA targets built where the toolkit exists;
#                                   GPU tests skip without a GPU)
#   2. bazel test --config=asan TARGETS   (the build without CUDA under ASan +
#                                           UBSan: every cc_test, where the host
#                                           logic is, and the robustness suite's
#                                           hostile inputs through the command)
# The other shell tests are not run again under ASan: they re-run the same
# `stowage` binary over paths the cc_tests and the robustness suite cover
# (minutes of runs under ASan), or test no host code of ours (the CMake
# consumer, count_tests.py); and the targets no test needs (bench/, the
# install package, examples/) are not built under ASan.
# Last line: "N passed, N failed" over every test case of both steps; the line
# before it: "N skipped: REASON (M), ..." (GTEST_SKIP's messages).
set -uo pipefail
cd "$(dirname "$0")/.."

bash tools/install_deps.sh || { echo "dependency install failed"; echo "0 passed, 1 failed"; exit 1; }

jobs=${STOWAGE_TEST_JOBS:-$(nproc)}
common=(--jobs="$jobs" --local_test_jobs="$jobs")
status=0
logs=$(mktemp -d)

echo "== bazel test //... =="
bazel test "${common[@]}" //... || status=1
cp -rL bazel-testlogs "$logs/main" 2>/dev/null || true

echo "== bazel test --config=asan (ASan + UBSan, no CUDA): every cc_test and the robustness suite =="
asan_targets=$(bazel query "kind(cc_test, tests(//...)) + //tests/robustness:robustness_test \
  except attr(tags, manual, //...)" 2>/dev/null)
if [ -z "$asan_targets" ]; then
  status=1
else
  # shellcheck disable=SC2086
  bazel test "${common[@]}" --config=asan $asan_targets || status=1
  # The logs of these targets only: earlier runs may have left others there.
  asan_logs=$(bazel info --config=asan bazel-testlogs)
  for target in $asan_targets; do
    dir=${target#//}
    dir=${dir/://}
    mkdir -p "$logs/asan/$(dirname "$dir")"
    cp -rL "$asan_logs/$dir" "$logs/asan/$dir" 2>/dev/null || true
  done
fi

counts=$(python3 tools/count_tests.py "$logs/main" "$logs/asan")
rm -rf "$logs"
skipped_line=$(echo "$counts" | head -n 1)
counts=$(echo "$counts" | tail -n 1)
failed=$(echo "$counts" | sed -E 's/.* ([0-9]+) failed.*/\1/')
if [ "$status" -ne 0 ] && [ "$failed" = "0" ]; then
  # A build failure leaves no test logs to count: count it as a failure.
  counts=$(echo "$counts" | sed -E 's/ 0 failed/ 1 failed/')
  failed=1
fi
[ "$failed" = "0" ] || status=1
# The line before the last: how many were skipped and why (the CUDA cases on
# a machine with no GPU); the last line stays "N passed, N failed".
echo "$skipped_line"
echo "$counts" | sed -E 's/, [0-9]+ skipped//'
exit "$status"
