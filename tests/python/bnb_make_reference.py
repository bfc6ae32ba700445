#!/usr/bin/env python3
"""Writes quant/testdata/bnb_reference.safetensors: layers quantized by
bitsandbytes' own nn modules (Linear4bit / Linear8bitLt, on CUDA as
transformers does), saved from their state_dict as transformers saves them,
with the unquantized source weights beside them ("source.<layer>.weight").
quant/bnb_reference_test.cc loads this file with our reader and checks that
our quantizer reproduces bitsandbytes' bytes.

Run where bitsandbytes and a GPU are present (it was generated on an H100 with
bitsandbytes 0.50.2, torch 2.11+cu130):
  python3 tests/python/bnb_make_reference.py OUT.safetensors
"""
import sys

import bitsandbytes as bnb
import torch
from safetensors.torch import save_file

LAYERS = [
    # name, (out, in), dtype, method, blocksize, double quant, quant_storage
    ("layers.0", (96, 50), torch.float16, "nf4", 64, True, torch.bfloat16),
    ("layers.1", (33, 77), torch.bfloat16, "nf4", 128, False, torch.uint8),
    ("layers.2", (64, 40), torch.float32, "fp4", 64, True, torch.uint8),
    ("layers.3", (40, 24), torch.float16, "fp4", 32, False, torch.float32),
    ("layers.4", (16, 64), torch.float16, "int8", 0, False, None),
]


def main():
    out = sys.argv[1]
    torch.manual_seed(1234)
    tensors = {}
    for name, (rows, cols), dtype, method, blocksize, dq, storage in LAYERS:
        w = torch.randn(rows, cols, dtype=torch.float32).to(dtype)
        bias = torch.randn(rows, dtype=torch.float32).to(dtype)
        tensors[f"source.{name}.weight"] = w.clone()
        if method == "int8":
            layer = bnb.nn.Linear8bitLt(cols, rows, bias=True, has_fp16_weights=False, threshold=6.0)
            layer.weight = bnb.nn.Int8Params(w.to(torch.float16), requires_grad=False, has_fp16_weights=False)
        else:
            layer = bnb.nn.Linear4bit(cols, rows, bias=True, compute_dtype=dtype, compress_statistics=dq,
                                      quant_type=method, quant_storage=storage)
            layer.weight = bnb.nn.Params4bit(w, requires_grad=False, quant_type=method, blocksize=blocksize,
                                             compress_statistics=dq, quant_storage=storage)
        layer.bias = torch.nn.Parameter(bias, requires_grad=False)
        layer = layer.cuda()
        for key, value in layer.state_dict().items():
            tensors[f"{name}.{key}"] = value.detach().cpu().contiguous()
    save_file(tensors, out, metadata={"format": "pt", "generator": f"bitsandbytes {bnb.__version__}"})
    for k, v in tensors.items():
        print(k, v.dtype, list(v.shape))


if __name__ == "__main__":
    main()
