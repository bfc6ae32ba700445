#!/usr/bin/env bash
# Runs a check script that may not apply on this host (bitsandbytes, torch or
# a GPU absent) as a Bazel test. The script says so with a line
# "NAME: skipped: REASON" and exit 0; this wrapper then writes Bazel's JUnit
# log ($XML_OUTPUT_FILE) with one skipped case carrying REASON, so CI counts it
# as skipped, with why (tools/count_tests.py), not as passed.
# usage: skippable_test.sh NAME COMMAND [ARGS...]
set -uo pipefail
name="$1"
shift
out=$("$@" 2>&1)
rc=$?
printf '%s\n' "$out"
reason=$(printf '%s\n' "$out" | sed -n "s/^${name}: skipped: //p" | head -n 1)
if [ "$rc" -eq 0 ] && [ -n "$reason" ] && [ -n "${XML_OUTPUT_FILE:-}" ]; then
  reason=$(printf '%s' "$reason" | sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g' -e 's/"/\&quot;/g')
  cat >"$XML_OUTPUT_FILE" <<XML
<?xml version="1.0" encoding="UTF-8"?>
<testsuites><testsuite name="$name" tests="1" failures="0" errors="0" skipped="1">
<testcase name="$name" classname="$name"><skipped message="$reason"/></testcase>
</testsuite></testsuites>
XML
fi
exit "$rc"
