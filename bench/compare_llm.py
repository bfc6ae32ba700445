#!/usr/bin/env python3
"""Side by side on one GPU host, same model folder, same GPU memory: transformers + accelerate
(device_map="auto" with max_memory) against `stowage bench --model DIR`.

For a GPU host with PyTorch, transformers and accelerate. In one run:
  1. transformers + accelerate: the folder loaded with device_map="auto",
     max_memory={0: BUDGET, "cpu": ...} (what does not fit is offloaded to CPU RAM and
     streamed by accelerate's hooks); prefill of --prompt-tokens tokens, then greedy
     decode of --new-tokens tokens at batch 1; tokens/s of each;
  2. `stowage bench --model DIR --max-memory 0=BUDGET --no-resident --batches 1` on the same
     folder (its JSON);
and prints one JSON object with both and the ratios. Reproduce:
  python3 bench/compare_llm.py --stowage gpu_pack/bin/_stowage --model /tmp/l8b \\
      --budget 6GiB --prompt-tokens 512 --new-tokens 8
"""
import argparse
import json
import subprocess
import sys
import time


def accelerate_run(model_dir, budget, prompt_tokens, new_tokens):
    import torch
    import transformers

    start = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.bfloat16, device_map="auto",
        max_memory={0: budget, "cpu": "120GiB"})
    load_s = time.perf_counter() - start
    model.eval()
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(11)
    ids = torch.randint(0, vocab, (1, prompt_tokens), generator=gen).to("cuda:0")
    with torch.no_grad():
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = model(ids, use_cache=True)
        torch.cuda.synchronize()
        prefill_s = time.perf_counter() - t0
        past = out.past_key_values
        token = out.logits[:, -1:].argmax(-1)
        t0 = time.perf_counter()
        for _ in range(new_tokens):
            out = model(token, past_key_values=past, use_cache=True)
            past = out.past_key_values
            token = out.logits[:, -1:].argmax(-1)
        torch.cuda.synchronize()
        decode_s = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(0)
    devices = sorted({str(v) for v in getattr(model, "hf_device_map", {}).values()})
    return {"load_s": load_s, "prefill_tokens_per_s": prompt_tokens / prefill_s,
            "decode_tokens_per_s": new_tokens / decode_s, "peak_cuda_bytes": peak,
            "devices": devices, "torch": torch.__version__,
            "transformers": transformers.__version__}


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stowage", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--budget", default="6GiB")
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=8)
    args = parser.parse_args()

    result = {"model": args.model, "budget": args.budget, "prompt_tokens": args.prompt_tokens}
    try:
        import accelerate
        result["accelerate_version"] = accelerate.__version__
        result["accelerate"] = accelerate_run(args.model, args.budget, args.prompt_tokens,
                                              args.new_tokens)
    except Exception as e:  # reported, not hidden: the stowage run still happens
        result["accelerate_error"] = f"{type(e).__name__}: {e}"
    cmd = [args.stowage, "bench", "--model", args.model, "--max-memory", f"0={args.budget}",
           "--no-resident", "--batches", "1", "--prompt-tokens", str(args.prompt_tokens),
           "--new-tokens", "32", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        result["stowage_error"] = out.stderr[-2000:]
    else:
        runs = json.loads(out.stdout.strip().splitlines()[-1])
        result["stowage"] = runs
        by_phase = {r["phase"]: r for r in runs["runs"]}
        if "accelerate" in result:
            acc = result["accelerate"]
            result["decode_ratio"] = by_phase["decode"]["tokens_per_s"] / acc["decode_tokens_per_s"]
            result["prefill_ratio"] = (by_phase["prefill"]["tokens_per_s"] /
                                       acc["prefill_tokens_per_s"])
    result["command"] = " ".join(sys.argv)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
