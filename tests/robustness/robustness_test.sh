#!/usr/bin/env bash
# Runs the hostile-input suite (robustness_test.py) against the built command.
set -euo pipefail
exec python3 "$(dirname "$0")/robustness_test.py" "$@"
