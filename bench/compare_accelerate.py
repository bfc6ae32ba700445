#!/usr/bin/env python3
"""Side-by-side: accelerate's cpu_offload vs `stowage bench` on the same weights.

For a GPU host with PyTorch, accelerate and safetensors installed. Writes an
MLP-family checkpoint (CLI.md: layers.{i}.weight [hidden, hidden], ReLU between
layers) as safetensors, then in one run:
  1. times accelerate's cpu_offload (weights in CPU RAM, streamed per forward);
  2. times the same model all-resident in PyTorch (reference point);
  3. runs `stowage bench` on the same file with an accelerator budget below the
     model size (weights streamed from pinned RAM);
and prints the medians and the ratio. Reproduce:
  python3 bench/compare_accelerate.py --stowage gpu_pack/bin/_stowage \
      --layers 24 --hidden 8192 --batch 8 --iters 10
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def time_forwards(model, x, iters, torch):
    times = []
    with torch.no_grad():
        for _ in range(2):  # warm-up
            model(x)
        torch.cuda.synchronize()
        for _ in range(iters):
            start = time.perf_counter()
            model(x)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return statistics.median(times), times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stowage", required=True, help="path to the stowage binary")
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--hidden", type=int, default=8192)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--dir", default=None, help="where to write the checkpoint (default: a temp dir)")
    parser.add_argument("--max-memory", default=None,
                        help="stowage accelerator budget (default: 0=<a quarter of the model>)")
    parser.add_argument("--quant", default="none", choices=["none", "nf4", "int8", "fp4"])
    parser.add_argument("--skip-accelerate", action="store_true")
    args = parser.parse_args()

    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    workdir = args.dir or tempfile.mkdtemp(prefix="stowage_cmp_")
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, f"mlp_{args.layers}x{args.hidden}.safetensors")
    layers = []
    for _ in range(args.layers):
        # Initialised on the GPU (fast), then kept in CPU RAM as accelerate's
        # cpu_offload expects its weights.
        lin = torch.nn.Linear(args.hidden, args.hidden, bias=False, dtype=torch.float16, device="cuda")
        with torch.no_grad():
            lin.weight.normal_(0.0, 1.0 / args.hidden ** 0.5)
        layers.append(lin.cpu())
    if not os.path.exists(path):
        save_file({f"layers.{i}.weight": l.weight.detach().contiguous() for i, l in enumerate(layers)}, path)
    weight_bytes = sum(l.weight.numel() * 2 for l in layers)

    modules = []
    for i, lin in enumerate(layers):
        modules.append(lin)
        if i + 1 < len(layers):
            modules.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*modules)
    x = torch.randn(args.batch, args.hidden, dtype=torch.float16, device="cuda")

    results = {"weight_bytes": weight_bytes, "layers": args.layers, "hidden": args.hidden, "batch": args.batch}
    # All-resident PyTorch first (cpu_offload leaves the modules' parameters
    # on the meta device), then back to CPU RAM for accelerate.
    model.cuda()
    results["torch_resident_s"], _ = time_forwards(model, x, args.iters, torch)
    model.cpu()
    torch.cuda.empty_cache()
    print(f"torch all-resident: {results['torch_resident_s']:.4f} s/forward", flush=True)
    if not args.skip_accelerate:
        from accelerate import cpu_offload
        import accelerate
        offloaded = cpu_offload(model, execution_device=torch.device("cuda"))
        median, _ = time_forwards(offloaded, x, args.iters, torch)
        results["accelerate_cpu_offload_s"] = median
        results["accelerate_version"] = accelerate.__version__
        print(f"accelerate cpu_offload: {median:.4f} s/forward", flush=True)
        del offloaded
    del model, layers, modules
    torch.cuda.empty_cache()

    budget = args.max_memory or f"0={max(weight_bytes // 4, 1)}"
    cmd = [args.stowage, "bench", "--model", path, "--batch", str(args.batch), "--iters", str(args.iters),
           "--max-memory", budget, "--device", "cuda", "--json"]
    if args.quant != "none":
        cmd += ["--quant", args.quant]
    print("running:", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        print(proc.stdout)
        sys.exit(f"stowage bench failed with exit {proc.returncode}")
    stowage = json.loads(proc.stdout.strip().splitlines()[-1])
    results["stowage"] = stowage

    print(json.dumps(results, indent=2))
    print()
    print(f"weights: {weight_bytes / 2**30:.2f} GiB fp16, {args.layers} x [{args.hidden}, {args.hidden}], "
          f"batch {args.batch}, medians of {args.iters}")
    if "accelerate_cpu_offload_s" in results:
        a = results["accelerate_cpu_offload_s"]
        print(f"accelerate cpu_offload : {a:.4f} s/forward ({weight_bytes / a / 2**30:.1f} GiB/s)")
    print(f"torch all-resident     : {results['torch_resident_s']:.4f} s/forward")
    s = stowage["offloaded_forward_s"]
    print(f"stowage streamed       : {s:.4f} s/forward ({weight_bytes / s / 2**30:.1f} GiB/s), "
          f"pinned H2D link {stowage.get('pinned_h2d_gib_s', float('nan')):.1f} GiB/s")
    if "accelerate_cpu_offload_s" in results:
        print(f"speedup over accelerate: {results['accelerate_cpu_offload_s'] / s:.2f}x")


if __name__ == "__main__":
    main()
