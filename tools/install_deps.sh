#!/usr/bin/env bash
# Installs what building and testing Stowage needs on a fresh Debian 12
# machine (run as root). Skips what is already there.
set -euo pipefail

need_apt=()
for pkg in g++ bazel-bootstrap libboost1.81-dev libboost-json1.81-dev libfmt-dev libgtest-dev libgmock-dev \
           libopenblas-serial-dev libre2-dev cmake pkg-config \
           clang python3 python3-pip python3-venv; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "installing: ${need_apt[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# Python packages for the interop tests (the official safetensors writer).
PY=$(command -v python3)
if ! "$PY" -c "import safetensors, numpy, ml_dtypes" >/dev/null 2>&1; then
  "$PY" -m pip install -q safetensors numpy ml_dtypes 2>/dev/null ||
    "$PY" -m pip install -q --break-system-packages safetensors numpy ml_dtypes
fi
