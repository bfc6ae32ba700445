#!/usr/bin/env bash
# Builds the stowage command and runs its main job, `stowage demo`, passing
# any arguments through (e.g. --quant nf4, --trace demo.json).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install_deps.sh
bazel build //:stowage
exec ./bazel-bin/stowage demo "$@"
