#!/usr/bin/env python3
"""Counts test cases in Bazel's JUnit XML logs. Prints two lines:
  'N skipped: REASON (M), ...'  (why: GTEST_SKIP's message, e.g. the CUDA cases
                                 on a machine with no GPU; 'N skipped' when none)
  'N passed, N failed, N skipped'

Usage: count_tests.py TESTLOGS_DIR [TESTLOGS_DIR ...]
A test target whose log has no test cases (it crashed before writing any, or is
not a GoogleTest binary) counts as one case, passed or failed by its status.
"""
import collections
import pathlib
import sys
import xml.etree.ElementTree as ET


def skip_reason(case):
    node = case.find("skipped")
    text = ""
    if node is not None:
        text = node.get("message") or (node.text or "")
    # GoogleTest writes "file:line\nmessage"; the message is the reason.
    text = text.strip().splitlines()[-1].strip() if text.strip() else ""
    return text or "no reason given"


def count(root: pathlib.Path, reasons: collections.Counter):
    passed = failed = skipped = 0
    for xml_path in sorted(root.rglob("test.xml")):
        try:
            tree = ET.parse(xml_path)
        except ET.ParseError:
            failed += 1
            print(f"unreadable test log: {xml_path}", file=sys.stderr)
            continue
        cases = tree.getroot().iter("testcase")
        any_case = False
        for case in cases:
            any_case = True
            if case.find("failure") is not None or case.find("error") is not None:
                failed += 1
                print(f"FAILED: {case.get('classname')}.{case.get('name')} ({xml_path.parent.name})",
                      file=sys.stderr)
            elif case.find("skipped") is not None or case.get("result") == "skipped" or \
                    case.get("status") == "notrun":
                skipped += 1
                reasons[skip_reason(case)] += 1
            else:
                passed += 1
        if not any_case:
            suite = tree.getroot()
            bad = int(suite.get("failures", "0") or 0) + int(suite.get("errors", "0") or 0)
            if bad:
                failed += 1
            else:
                passed += 1
    return passed, failed, skipped


def main():
    totals = [0, 0, 0]
    reasons = collections.Counter()
    for arg in sys.argv[1:]:
        p, f, s = count(pathlib.Path(arg), reasons)
        totals[0] += p
        totals[1] += f
        totals[2] += s
    why = ", ".join(f"{reason} ({n})" for reason, n in reasons.most_common())
    print(f"{totals[2]} skipped" + (f": {why}" if why else ""))
    print(f"{totals[0]} passed, {totals[1]} failed, {totals[2]} skipped")


if __name__ == "__main__":
    main()
