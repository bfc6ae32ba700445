#!/usr/bin/env python3
"""Side by side on one GPU host, same model folder, same GPU memory: transformers + accelerate
(device_map="auto" with max_memory) against `stowage bench --model DIR`.

For a GPU host with PyTorch, transformers and accelerate. In one run:
  1. transformers + accelerate: the folder loaded with device_map="auto",
     max_memory={0: BUDGET, "cpu": --cpu-memory} (what does not fit stays in CPU RAM and is
     copied in by accelerate's hooks at every forward); one warm-up forward of 16 tokens, then
     the prefill of --prompt-tokens random tokens and a greedy decode of --new-tokens tokens
     at batch 1 (a handful: about 0.6 tokens/s for the Llama-3.1-8B shape under 6 GiB), timed
     apart; the model is freed before step 2;
  2. `stowage bench --model DIR --max-memory 0=BUDGET --no-resident --batches 1` on the same
     folder with the same prompt length (its JSON);
and prints one JSON object with both, the tokens/s of each and the ratios stowage/accelerate.
Reproduce (about 2 minutes for the 8B shape, most of it accelerate's load):
  python3 bench/compare_llm.py --stowage gpu_pack/bin/_stowage --model /tmp/l8b \\
      --budget 6GiB --prompt-tokens 512 --new-tokens 4
Without a GPU, accelerate's side runs on the CPU (a check of this script, not a figure).
"""
import argparse
import gc
import json
import subprocess
import sys
import time


def accelerate_run(model_dir, budget, cpu_memory, prompt_tokens, new_tokens):
    import torch
    import transformers

    cuda = torch.cuda.is_available()
    device = "cuda:0" if cuda else "cpu"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    start = time.perf_counter()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.bfloat16, device_map="auto",
        max_memory={0: budget, "cpu": cpu_memory} if cuda else None)
    load_s = time.perf_counter() - start
    model.eval()
    placement = {}
    for name, where in getattr(model, "hf_device_map", {}).items():
        placement.setdefault(str(where), []).append(name)
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(11)
    ids = torch.randint(0, vocab, (1, prompt_tokens), generator=gen).to(device)
    with torch.no_grad():
        # First-call costs (cuBLAS handles, kernel loading) out of the timings, as stowage
        # bench warms up too: one forward of 16 tokens.
        model(ids[:, :16], use_cache=False)
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats(0)
        t0 = time.perf_counter()
        out = model(ids, use_cache=True)
        sync()
        prefill_s = time.perf_counter() - t0
        past = out.past_key_values
        token = out.logits[:, -1:].argmax(-1)
        t0 = time.perf_counter()
        for _ in range(new_tokens):
            out = model(token, past_key_values=past, use_cache=True)
            past = out.past_key_values
            token = out.logits[:, -1:].argmax(-1)
        sync()
        decode_s = time.perf_counter() - t0
    result = {"device": device, "load_s": load_s, "prefill_s": prefill_s,
              "prefill_tokens_per_s": prompt_tokens / prefill_s, "decode_s": decode_s,
              "decode_tokens": new_tokens, "decode_tokens_per_s": new_tokens / decode_s,
              "modules_per_device": {k: len(v) for k, v in placement.items()},
              "torch": torch.__version__, "transformers": transformers.__version__}
    if cuda:
        result["peak_cuda_allocated_bytes"] = torch.cuda.max_memory_allocated(0)
        result["peak_cuda_reserved_bytes"] = torch.cuda.max_memory_reserved(0)
        result["gpu"] = torch.cuda.get_device_name(0)
    # Free the GPU memory and the host copies before stowage runs in another process.
    del model, out, past
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return result


def stowage_run(args):
    cmd = [args.stowage, "bench", "--model", args.model, "--max-memory", f"0={args.budget}",
           "--no-resident", "--batches", "1", "--prompt-tokens", str(args.prompt_tokens),
           "--new-tokens", str(args.stowage_new_tokens), "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": out.stderr[-2000:], "command": " ".join(cmd)}
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["command"] = " ".join(cmd)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stowage", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--budget", default="6GiB")
    parser.add_argument("--cpu-memory", default="120GiB", help="accelerate's max_memory['cpu']")
    parser.add_argument("--prompt-tokens", type=int, default=512)
    parser.add_argument("--new-tokens", type=int, default=4, help="accelerate's decode steps")
    parser.add_argument("--stowage-new-tokens", type=int, default=32)
    parser.add_argument("--skip-accelerate", action="store_true")
    args = parser.parse_args()

    result = {"model": args.model, "budget": args.budget, "prompt_tokens": args.prompt_tokens,
              "command": " ".join(sys.argv)}
    if not args.skip_accelerate:
        try:
            import accelerate
            result["accelerate_version"] = accelerate.__version__
            result["accelerate"] = accelerate_run(args.model, args.budget, args.cpu_memory,
                                                  args.prompt_tokens, args.new_tokens)
        except Exception as e:  # reported, not hidden: the stowage run still happens
            result["accelerate_error"] = f"{type(e).__name__}: {e}"
        print(f"accelerate: {json.dumps(result.get('accelerate') or result['accelerate_error'])}",
              file=sys.stderr, flush=True)
    result["stowage"] = stowage_run(args)
    by_phase = {r["phase"]: r for r in result["stowage"].get("runs", []) if r["batch"] == 1}
    acc = result.get("accelerate")
    if acc and by_phase:
        result["stowage_decode_tokens_per_s"] = by_phase["decode"]["tokens_per_s"]
        result["stowage_prefill_tokens_per_s"] = by_phase["prefill"]["tokens_per_s"]
        result["accelerate_decode_tokens_per_s"] = acc["decode_tokens_per_s"]
        result["accelerate_prefill_tokens_per_s"] = acc["prefill_tokens_per_s"]
        result["decode_stowage_over_accelerate"] = (by_phase["decode"]["tokens_per_s"] /
                                                    acc["decode_tokens_per_s"])
        result["prefill_stowage_over_accelerate"] = (by_phase["prefill"]["tokens_per_s"] /
                                                     acc["prefill_tokens_per_s"])
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
