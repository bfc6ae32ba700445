#!/usr/bin/env bash
# docs/CLI.md against every command's --help, and the relative links of
# README.md and docs/ against the repository (tests/cli/check_docs.py).
set -euo pipefail
exec python3 "$(dirname "$0")/check_docs.py" "$@"
