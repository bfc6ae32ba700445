#!/usr/bin/env bash
# The whole test suite, as CI runs it:
#   1. bazel test //...            (CUDA targets built where the toolkit exists;
#                                   GPU tests skip without a GPU)
#   2. bazel test --config=asan //...      (the build without CUDA, every test
#                                           under ASan + UBSan: the asan config
#                                           is the no-CUDA configuration)
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

echo "== bazel test --config=asan //... (ASan + UBSan, no CUDA) =="
bazel test "${common[@]}" --config=asan //... || status=1
cp -rL "$(bazel info --config=asan bazel-testlogs)" "$logs/asan" 2>/dev/null || true

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
