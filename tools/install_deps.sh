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

# NCCL (tensor parallelism's collectives between GPUs, parallel/), where a
# CUDA toolkit is installed: NVIDIA's nvidia-nccl-cu<major> wheel (for the
# toolkit's major version) carries libnccl.so.2 and nccl.h; they are unpacked
# into /opt/nccl, where third_party/nccl/nccl_configure.bzl looks (or set
# NCCL_PATH). Without CUDA nothing is needed: the build leaves NCCL out.
NVCC=${CUDA_PATH:-/usr/local/cuda}/bin/nvcc
if [ -x "$NVCC" ] && [ ! -e /opt/nccl/include/nccl.h ]; then
  cuda_major=$("$NVCC" --version | sed -n 's/.*release \([0-9]*\)\..*/\1/p')
  wheel_dir=$(mktemp -d)
  echo "installing NCCL for CUDA $cuda_major (nvidia-nccl-cu$cuda_major) into /opt/nccl" >&2
  "$PY" -m pip download -q --no-deps -d "$wheel_dir" "nvidia-nccl-cu$cuda_major"
  "$PY" - "$wheel_dir" <<'PY'
import glob, os, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith("nvidia/nccl/include/") or name.startswith("nvidia/nccl/lib/"):
            target = os.path.join("/opt/nccl", name[len("nvidia/nccl/"):])
            if name.endswith("/"):
                continue
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with z.open(name) as src, open(target, "wb") as dst:
                dst.write(src.read())
PY
  ln -sf libnccl.so.2 /opt/nccl/lib/libnccl.so
  rm -rf "$wheel_dir"
fi
