#!/usr/bin/env python3
"""Interop between stowage's safetensors code and the official `safetensors`
package (PyPI), driven by mmap_store/python_interop_test.cc.

  safetensors_interop.py write DIR
      Writes DIR/official.safetensors with the official package: every dtype
      it supports (BF16/F8 through ml_dtypes), a 0-d and a zero-size tensor,
      and __metadata__; and DIR/manifest.json + DIR/<i>.bin (each tensor's
      expected little-endian bytes) for the C++ side to compare against.

  safetensors_interop.py check FILE DIR
      Loads FILE (written by stowage) with the official package and checks
      every tensor of DIR/manifest.json: dtype, shape and bytes; and metadata.
      Exit 0 when all match, 1 with the differences on stderr.

Needs: pip install safetensors numpy ml_dtypes (ml_dtypes for BF16/F8).
"""
import json
import os
import sys

import numpy as np
from safetensors import deserialize, safe_open
from safetensors.numpy import save_file

try:
    import ml_dtypes
except ImportError:  # BF16 / F8 cases are then left out (printed)
    ml_dtypes = None

NUMPY_DTYPES = {
    "BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "I16": np.int16, "U16": np.uint16,
    "F16": np.float16, "I32": np.int32, "U32": np.uint32, "F32": np.float32,
    "F64": np.float64, "I64": np.int64, "U64": np.uint64,
}
NATIVE = dict(NUMPY_DTYPES)  # loadable by safetensors.numpy without ml_dtypes
if ml_dtypes is not None:
    NUMPY_DTYPES.update({"BF16": ml_dtypes.bfloat16, "F8_E4M3": ml_dtypes.float8_e4m3fn,
                         "F8_E5M2": ml_dtypes.float8_e5m2})


def sample(dtype_name, shape, seed):
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape)) if shape else 1
    dt = np.dtype(NUMPY_DTYPES[dtype_name])
    raw = rng.integers(0, 256, size=n * dt.itemsize, dtype=np.uint8)
    if dtype_name == "BOOL":
        raw = raw & 1
    arr = raw.view(dt).reshape(shape)
    return arr


def write(folder):
    tensors, manifest = {}, []
    seed = 0
    for name in NUMPY_DTYPES:
        for suffix, shape in (("matrix", (3, 5)), ("scalar", ()), ("empty", (4, 0))):
            seed += 1
            key = f"{name.lower()}.{suffix}"
            arr = sample(name, shape, seed)
            tensors[key] = arr
            path = os.path.join(folder, f"{len(manifest)}.bin")
            with open(path, "wb") as f:
                f.write(arr.astype(arr.dtype.newbyteorder("<")).tobytes())
            manifest.append({"name": key, "dtype": name, "shape": list(shape),
                             "file": os.path.basename(path)})
    metadata = {"format": "np", "written_by": "safetensors " + _version()}
    save_file(tensors, os.path.join(folder, "official.safetensors"), metadata=metadata)
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump({"tensors": manifest, "metadata": metadata}, f)
    if ml_dtypes is None:
        print("note: ml_dtypes is not installed; BF16/F8 cases left out", file=sys.stderr)


def check(path, folder):
    """Reads FILE twice with the official package: its parser (deserialize:
    dtype name, shape and raw bytes, every dtype) and its numpy loader
    (safe_open.get_tensor, for the dtypes numpy itself has)."""
    with open(os.path.join(folder, "manifest.json")) as f:
        manifest = json.load(f)
    errors = []
    with open(path, "rb") as f:
        parsed = {name: info for name, info in deserialize(f.read())}
    with safe_open(path, framework="np") as f:
        metadata = f.metadata() or {}
        arrays = {t["name"]: f.get_tensor(t["name"]) for t in manifest["tensors"]
                  if t["dtype"] in NATIVE and t["name"] in f.keys()}
    if metadata != manifest.get("metadata", {}):
        errors.append(f"metadata: expected {manifest.get('metadata')}, found {metadata}")
    for t in manifest["tensors"]:
        name = t["name"]
        with open(os.path.join(folder, t["file"]), "rb") as f:
            expected = f.read()
        info = parsed.get(name)
        if info is None:
            errors.append(f"{name}: missing")
            continue
        if info["dtype"] != t["dtype"]:
            errors.append(f"{name}: dtype expected {t['dtype']}, found {info['dtype']}")
        if list(info["shape"]) != t["shape"]:
            errors.append(f"{name}: shape expected {t['shape']}, found {info['shape']}")
        if bytes(info["data"]) != expected:
            errors.append(f"{name}: bytes differ from the expected {len(expected)} bytes")
        if name in arrays:
            arr = arrays[name]
            if arr.dtype != np.dtype(NATIVE[t["dtype"]]) or list(arr.shape) != t["shape"] \
                    or arr.tobytes() != expected:
                errors.append(f"{name}: numpy load gives {arr.dtype} {list(arr.shape)} "
                              "with other bytes")
    if len(parsed) != len(manifest["tensors"]):
        errors.append(f"tensor count: expected {len(manifest['tensors'])}, found {len(parsed)}")
    for e in errors:
        print("mismatch: " + e, file=sys.stderr)
    print(f"checked {len(manifest['tensors'])} tensors ({len(arrays)} also through numpy) of "
          f"{path} with safetensors {_version()}")
    return 1 if errors else 0


def _version():
    import safetensors
    return getattr(safetensors, "__version__", "?")


def main(argv):
    if len(argv) == 3 and argv[1] == "write":
        write(argv[2])
        return 0
    if len(argv) == 4 and argv[1] == "check":
        return check(argv[2], argv[3])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
