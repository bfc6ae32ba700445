#!/usr/bin/env bash
# Runs an example program on the simulated accelerator; it checks itself.
set -euo pipefail
"$1" --device sim
