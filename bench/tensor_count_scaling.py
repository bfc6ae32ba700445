#!/usr/bin/env python3
"""Cost of `stowage inspect`, `quantize` (nf4), `plan` and `run` against the
number of tensors (issue #15 item 6): each must be linear. Writes MLP checkpoints of N and
4N layers of one 4x4 float32 weight each, runs every command --repeats times
on each and prints the median seconds, the microseconds per tensor, the ratio
t(4N) / t(N) (about 4 when linear, 16 when quadratic; start-up costs pull it
below 4) and each command's peak memory per added tensor.

With --model-folder, the same for Hugging Face model folders: Llama folders
of about N and 4N tensors (9 per decoder layer of hidden size 8, plus the
embedding, final norm and head) through `inspect DIR`, `plan --model DIR`,
`generate` (2 prompt ids, 2 new tokens) and `bench --model DIR` (batch 1,
2 prompt tokens, 2 decode steps; plan sized for the same), on the simulated
accelerator with a budget of its working reserve and a quarter of the
weights, so most layers stream.

With --check it is a test (//tests/robustness:tensor_count_scaling_test):
each command's time is the least of its runs, and it exits 1 when a ratio
exceeds --max-ratio (8: a linear command gives about 4 or less, a quadratic
one 16) or a command's peak memory per added tensor exceeds 2 KiB (inspect)
or 8 KiB (the others). --commands picks a subset.

usage: tensor_count_scaling.py STOWAGE [--tensors N] [--repeats R] [--model-folder]
                               [--commands A,B] [--check] [--max-ratio X]
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


# A Llama decoder of hidden size 8 (2 heads of 4, 1 key/value head),
# intermediate size 16 and 32 tokens: a few KiB per layer, 9 tensors each.
TINY_LLAMA = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8,
              "intermediate_size": 16, "num_attention_heads": 2, "num_key_value_heads": 1,
              "head_dim": 4, "vocab_size": 32, "max_position_embeddings": 64,
              "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
              "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
              "torch_dtype": "float32"}


def write_llama_folder(folder, layers):
    """A Llama model folder of `layers` decoder layers (9 * layers + 3 tensors,
    zero weights); returns its weights' bytes."""
    os.makedirs(folder)
    c = dict(TINY_LLAMA, num_hidden_layers=layers)
    h, f, kv = c["hidden_size"], c["intermediate_size"], c["num_key_value_heads"] * c["head_dim"]
    shapes = {"model.embed_tokens.weight": [c["vocab_size"], h], "model.norm.weight": [h],
              "lm_head.weight": [c["vocab_size"], h]}
    for i in range(layers):
        p = "model.layers.%d." % i
        shapes.update({p + "input_layernorm.weight": [h], p + "post_attention_layernorm.weight": [h],
                       p + "self_attn.q_proj.weight": [h, h], p + "self_attn.k_proj.weight": [kv, h],
                       p + "self_attn.v_proj.weight": [kv, h], p + "self_attn.o_proj.weight": [h, h],
                       p + "mlp.gate_proj.weight": [f, h], p + "mlp.up_proj.weight": [f, h],
                       p + "mlp.down_proj.weight": [h, f]})
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = 4 * shape[0] * (shape[1] if len(shape) > 1 else 1)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(os.path.join(folder, "model.safetensors"), "wb") as out:
        out.write(struct.pack("<Q", len(text)) + text + b"\0" * offset)
    with open(os.path.join(folder, "config.json"), "w") as out:
        json.dump(c, out)
    return offset


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
    ap.add_argument("--model-folder", action="store_true",
                    help="Hugging Face model folders instead of MLP checkpoints")
    ap.add_argument("--commands", help="comma-separated subset of the commands to time")
    ap.add_argument("--check", action="store_true",
                    help="exit 1 unless every command is linear (see the top)")
    ap.add_argument("--max-ratio", type=float, default=8.0)
    ap.add_argument("--no-memory-check", action="store_true",
                    help="with --check, time only (a sanitizer's allocator inflates memory)")
    args = ap.parse_args()
    folder = tempfile.mkdtemp(prefix="stowage_scaling_")
    try:
        x = os.path.join(folder, "x.safetensors")
        text = json.dumps({"x": {"dtype": "F32", "shape": [1, 4], "data_offsets": [0, 16]}}).encode()
        text += b" " * ((8 - len(text) % 8) % 8)
        with open(x, "wb") as f:
            f.write(struct.pack("<Q", len(text)) + text + b"\0" * 16)
        sizes = [args.tensors, 4 * args.tensors]
        budget, count = {}, {}
        for n in sizes:
            if args.model_folder:
                layers = max(1, (n - 3) // 9)
                model = os.path.join(folder, "d%d" % n)
                weights = write_llama_folder(model, layers)
                # The accelerator keeps its working reserve (which grows with
                # the layers: KV cache) and a quarter of the weights.
                plan = subprocess.run(
                    [args.stowage, "plan", "--device", "sim", "--model", model, "--max-memory",
                     "0=1TiB", "--prompt-tokens", "2", "--max-new-tokens", "2", "--json"],
                    check=True, capture_output=True, text=True)
                reserve = json.loads(plan.stdout)["working_reserve_per_accelerator"]["sim:0"]
                budget[n], count[n] = "0=%d" % (reserve + weights // 4), 9 * layers + 3
            else:
                write_mlp(os.path.join(folder, "m%d.safetensors" % n), n)
                budget[n], count[n] = "0=8KiB", n

        def commands(n):
            if args.model_folder:
                model = os.path.join(folder, "d%d" % n)
                sim = ["--device", "sim", "--model", model, "--max-memory", budget[n]]
                return {
                    "inspect": [args.stowage, "inspect", model],
                    "plan": [args.stowage, "plan"] + sim + [
                        "--prompt-tokens", "2", "--max-new-tokens", "2"],
                    "generate": [args.stowage, "generate"] + sim + [
                        "--prompt-ids", "1,2", "--max-new-tokens", "2", "--ignore-eos"],
                    "bench": [args.stowage, "bench"] + sim + [
                        "--batches", "1", "--prompt-tokens", "2", "--new-tokens", "2",
                        "--no-resident"],
                }
            model = os.path.join(folder, "m%d.safetensors" % n)
            return {
                "inspect": [args.stowage, "inspect", model],
                "quantize": [args.stowage, "quantize", "--method", "nf4", "--device", "sim", model,
                             os.path.join(folder, "q.safetensors")],
                "plan": [args.stowage, "plan", "--device", "sim", "--model", model,
                         "--max-memory", budget[n]],
                "run": [args.stowage, "run", "--device", "sim", "--model", model, "--input", x,
                        "--output", os.path.join(folder, "y.safetensors"), "--max-memory",
                        budget[n]],
            }

        print("command: %s" % " ".join([sys.argv[0]] + sys.argv[1:]))
        label = "least s" if args.check else "median s"
        print("%-8s %9s %12s %12s %12s %12s %8s" % ("", "tensors", label, "us/tensor",
                                                  "tensors(4x)", label, "ratio"))
        rss = {}
        names = list(commands(sizes[0]))
        if args.commands:
            unknown = set(args.commands.split(",")) - set(names)
            if unknown:
                sys.exit("unknown commands %s; expected some of %s" % (sorted(unknown), names))
            names = args.commands.split(",")
        # The least of the runs under --check (a loaded host only adds time),
        # the median otherwise.
        pick = min if args.check else statistics.median
        failures = []
        for name in names:
            medians = []
            for n in sizes:
                runs = [timed(commands(n)[name]) for _ in range(args.repeats)]
                medians.append(pick(s for s, _ in runs))
                rss[(name, n)] = max(r for _, r in runs)
            ratio = medians[1] / medians[0]
            print("%-8s %9d %12.3f %12.2f %12d %12.3f %8.2f" % (
                name, count[sizes[0]], medians[0], 1e6 * medians[0] / count[sizes[0]],
                count[sizes[1]], medians[1], ratio))
            if ratio > args.max_ratio:
                failures.append("%s: %d -> %d tensors took %.3f -> %.3f s, %.2fx; expected at most "
                                "%.1fx (linear)" % (name, count[sizes[0]], count[sizes[1]],
                                                    medians[0], medians[1], ratio, args.max_ratio))
        for name in names:
            added = rss[(name, sizes[1])] - rss[(name, sizes[0])]
            per_tensor = added / (count[sizes[1]] - count[sizes[0]])
            print("%-8s peak memory per added tensor: %.0f bytes" % (name, per_tensor))
            bound = 2048 if name == "inspect" else 8192
            if per_tensor > bound and not args.no_memory_check:
                failures.append("%s: %.0f bytes of peak memory per added tensor; expected at most "
                                "%d" % (name, per_tensor, bound))
        if args.check:
            for failure in failures:
                print("FAILED " + failure)
            print("%d of %d commands linear in time and memory" % (
                len(names) - len({f.split(":")[0] for f in failures}), len(names)))
            if failures:
                sys.exit(1)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
