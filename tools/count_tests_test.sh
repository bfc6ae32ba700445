#!/usr/bin/env bash
# tools/count_tests.py as CI's last two lines use it (issue #15 item 9): the
# line before the last says how many cases were skipped and why (GTEST_SKIP's
# message), the last counts passed, failed and skipped.
set -euo pipefail
script="$1"
logs="${TEST_TMPDIR:-$(mktemp -d)}/logs"
mkdir -p "$logs/a" "$logs/b"
cat >"$logs/a/test.xml" <<'XML'
<testsuites><testsuite name="T" tests="4">
  <testcase name="ok" classname="T"/>
  <testcase name="gpu1" classname="T"><skipped message="k.cc:3&#10;no CUDA device visible"/></testcase>
  <testcase name="gpu2" classname="T"><skipped message="k.cc:9&#10;no CUDA device visible"/></testcase>
  <testcase name="bad" classname="T"><failure message="boom"/></testcase>
</testsuite></testsuites>
XML
cat >"$logs/b/test.xml" <<'XML'
<testsuites><testsuite name="U" tests="1">
  <testcase name="net" classname="U"><skipped message="checkpoint absent"/></testcase>
</testsuite></testsuites>
XML
out=$(python3 "$script" "$logs" 2>/dev/null)
expected='3 skipped: no CUDA device visible (2), checkpoint absent (1)
1 passed, 1 failed, 3 skipped'
if [ "$out" != "$expected" ]; then
  printf 'expected:\n%s\nfound:\n%s\n' "$expected" "$out"
  exit 1
fi
echo "ok"
