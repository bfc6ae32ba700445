#!/usr/bin/env python3
"""Cost of `stowage inspect`, `plan` and `run` against the number of tensors
(issue #15 item 6): each must be linear. Writes MLP checkpoints of N and
4N layers of one 4x4 float32 weight each, runs every command --repeats times
on each and prints the median seconds, the microseconds per tensor, the ratio
t(4N) / t(N) (about 4 when linear, 16 when quadratic; start-up costs pull it
below 4) and inspect's peak memory per added tensor.

usage: tensor_count_scaling.py STOWAGE [--tensors N] [--repeats R]
  bazel build //:stowage && python3 bench/tensor_count_scaling.py \\
      "$(bazel info bazel-bin)/stowage" --tensors 20000
"""
import argparse
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time


def write_mlp(path, layers):
    header, offset = {}, 0
    for i in range(layers):
        header["layers.%d.weight" % i] = {"dtype": "F32", "shape": [4, 4],
                                          "data_offsets": [offset, offset + 64]}
        offset += 64
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"\0" * offset)


def timed(argv):
    """(seconds, peak RSS in bytes) of one run of argv; exits on failure."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.monotonic() - start
    err = proc.stderr.read().decode()
    proc.stderr.close()
    if status != 0:
        sys.exit("failed (%d): %s\n%s" % (status, " ".join(argv), err))
    return seconds, usage.ru_maxrss * 1024


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("stowage")
    ap.add_argument("--tensors", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    folder = tempfile.mkdtemp(prefix="stowage_scaling_")
    try:
        x = os.path.join(folder, "x.safetensors")
        text = json.dumps({"x": {"dtype": "F32", "shape": [1, 4], "data_offsets": [0, 16]}}).encode()
        text += b" " * ((8 - len(text) % 8) % 8)
        with open(x, "wb") as f:
            f.write(struct.pack("<Q", len(text)) + text + b"\0" * 16)
        sizes = [args.tensors, 4 * args.tensors]
        for n in sizes:
            write_mlp(os.path.join(folder, "m%d.safetensors" % n), n)

        def commands(n):
            model = os.path.join(folder, "m%d.safetensors" % n)
            return {
                "inspect": [args.stowage, "inspect", model],
                "plan": [args.stowage, "plan", "--device", "sim", "--model", model,
                         "--max-memory", "0=8KiB"],
                "run": [args.stowage, "run", "--device", "sim", "--model", model, "--input", x,
                        "--output", os.path.join(folder, "y.safetensors"), "--max-memory",
                        "0=8KiB"],
            }

        print("command: %s" % " ".join([sys.argv[0]] + sys.argv[1:]))
        print("%-8s %9s %12s %12s %12s %12s %8s" % ("", "tensors", "median s", "us/tensor",
                                                  "tensors(4x)", "median s", "ratio"))
        rss = {}
        for name in ("inspect", "plan", "run"):
            medians = []
            for n in sizes:
                runs = [timed(commands(n)[name]) for _ in range(args.repeats)]
                medians.append(statistics.median(s for s, _ in runs))
                rss[(name, n)] = max(r for _, r in runs)
            print("%-8s %9d %12.3f %12.2f %12d %12.3f %8.2f" % (
                name, sizes[0], medians[0], 1e6 * medians[0] / sizes[0], sizes[1], medians[1],
                medians[1] / medians[0]))
        for name in ("inspect", "plan", "run"):
            added = rss[(name, sizes[1])] - rss[(name, sizes[0])]
            print("%-8s peak memory per added tensor: %.0f bytes" % (name, added / (sizes[1] - sizes[0])))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
