#!/usr/bin/env bash
# --host-cache across processes (tests/cli/host_cache_test.py).
set -euo pipefail
exec python3 "$(dirname "$0")/host_cache_test.py" "$@"
