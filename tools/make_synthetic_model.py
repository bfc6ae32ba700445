#!/usr/bin/env python3
"""Writes a Hugging Face model folder of a real model's shape with random weights.

For benchmarks on hosts with no network: `stowage bench --model DIR` and `stowage generate`
read it as they read a downloaded Llama folder. Needs numpy only.

  python3 tools/make_synthetic_model.py --shape llama-3.1-8b --dtype bf16 OUT
  python3 tools/make_synthetic_model.py --shape llama-3.1-70b --dtype nf4-dq OUT
  python3 tools/make_synthetic_model.py --shape mixtral-8x7b --dtype nf4-dq OUT

A mixture-of-experts shape (mixtral-8x7b, tiny-mixtral) is written as MixtralForCausalLM: each
layer's router (block_sparse_moe.gate, kept in bf16, as bitsandbytes' integration leaves it)
and experts block_sparse_moe.experts.{e}.w1/w3/w2 (quantized with the projections under
nf4-dq). Random routers route almost uniformly: benchmarks replay a skewed routing with
`stowage bench --routing-trace zipf:S`.

--dtype bf16 (or f16, f32) writes every tensor in that dtype. --dtype nf4-dq writes the decoder
layers' projections directly in bitsandbytes' NF4 layout with double quantization (blocksize 64,
nested blocks of 256), as transformers saves a `load_in_4bit` model: packed codes (random),
absmax codes (random), nested absmax, the NF4 and dynamic maps (read from quant/quant_rules.h,
the rules' one owner) and the quant-state JSON; embeddings, norms and the head stay bf16. A 70B
model never exists in bf16 on the way (it would not fit the GPU host's disk).

Weights are N(0, 0.02)-like values tiled from a pool with random offsets (fast: a 16 GB model is
written at disk speed); the norms are 1. Tensors are written one at a time, each file under a
temporary name renamed into place when complete; shards of at most --shard-gib GiB with
model.safetensors.index.json.
"""

import argparse
import json
import os
import pathlib
import re
import sys

import numpy as np

SHAPES = {
    # name: hidden, intermediate, layers, heads, kv_heads, vocab, rope_theta, llama3 scaling
    "llama-3.1-8b": (4096, 14336, 32, 32, 8, 128256, 500000.0, True),
    "llama-3.1-70b": (8192, 28672, 80, 64, 8, 128256, 500000.0, True),
    "smollm2-135m": (576, 1536, 30, 9, 3, 49152, 100000.0, False),
    "tiny": (64, 160, 2, 4, 2, 512, 10000.0, False),
    # Mixtral's vocabulary is 32000; 49152 here so that llama.cpp's converter accepts the
    # tokenizer tools/pack_llamacpp.sh packs (SmolLM2's, 49152 tokens) for the GGUF of the
    # same shape (bench/moe_gpu.sh e): 0.25 GB more bf16 embeddings and head.
    "mixtral-8x7b": (4096, 14336, 32, 32, 8, 49152, 1000000.0, False),
    "tiny-mixtral": (64, 96, 2, 4, 2, 512, 1000000.0, False),
}

# Mixture-of-experts shapes: experts per layer, experts per token.
MOE = {
    "mixtral-8x7b": (8, 2),
    "tiny-mixtral": (4, 2),
}

DTYPES = {"bf16": ("BF16", 2), "f16": ("F16", 2), "f32": ("F32", 4)}


def rules_tables(repo: pathlib.Path) -> tuple:
    """The NF4 code values and bitsandbytes' signed dynamic map, from quant/quant_rules.h."""
    text = (repo / "quant" / "quant_rules.h").read_text()
    nf4_body = text[text.index("float nf4_code_value"):text.index("float fp4_code_value")]
    nf4 = [float(v) for v in re.findall(r"return (-?[0-9.]+)f;", nf4_body)]
    if len(nf4) != 16:
        raise SystemExit(f"quant_rules.h: expected 16 NF4 values, found {len(nf4)}")
    dyn_body = text[text.index("float dynamic_map_value"):]
    dyn_body = dyn_body[dyn_body.index("{", dyn_body.index("kPositive")):dyn_body.index("};")]
    positive = [float.fromhex(v) for v in re.findall(r"(0x[0-9a-fA-Fp.+-]+)f", dyn_body)]
    if len(positive) != 128:
        raise SystemExit(f"quant_rules.h: expected 128 dynamic-map values, found {len(positive)}")
    dynamic = [-positive[127 - i] for i in range(127)] + positive + [1.0]
    return np.array(nf4, dtype=np.float32), np.array(dynamic, dtype=np.float32)


class Pool:
    """Random values to tile tensors from (a fresh random offset per tensor)."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        values = self.rng.normal(0.0, 0.02, size=1 << 22).astype(np.float32)
        bits = values.view(np.uint32)
        # bfloat16 by round-to-nearest-even of the high half.
        rounded = bits + (np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))
        self.bytes = {
            "BF16": (rounded >> np.uint32(16)).astype(np.uint16).tobytes(),
            "F16": values.astype(np.float16).tobytes(),
            "F32": values.tobytes(),
        }
        self.random_u8 = self.rng.integers(0, 256, size=1 << 24, dtype=np.uint8).tobytes()

    def fill(self, source: bytes, nbytes: int, out) -> None:
        start = int(self.rng.integers(0, len(source) // 2)) & ~7
        written = 0
        while written < nbytes:
            chunk = source[start:start + min(len(source) - start, nbytes - written)]
            out.write(chunk)
            written += len(chunk)
            start = 0


class Tensor:
    def __init__(self, name, dtype, shape, writer):
        self.name, self.dtype, self.shape, self.writer = name, dtype, list(shape), writer
        itemsize = {"BF16": 2, "F16": 2, "F32": 4, "U8": 1}[dtype]
        self.nbytes = itemsize * int(np.prod(self.shape, dtype=np.int64)) if self.shape else itemsize


def model_tensors(shape_name: str, dtype: str, nf4: bool):
    """(name, dtype, shape, kind) in file order; kind says how the bytes are made."""
    hidden, inter, layers, heads, kv_heads, vocab, _, _ = SHAPES[shape_name]
    head_dim = hidden // heads
    float_dtype = DTYPES[dtype][0] if not nf4 else "BF16"
    out = [("model.embed_tokens.weight", float_dtype, [vocab, hidden], "weight")]
    experts, _ = MOE.get(shape_name, (0, 0))
    for i in range(layers):
        p = f"model.layers.{i}."
        projections = [
            ("self_attn.q_proj", heads * head_dim, hidden),
            ("self_attn.k_proj", kv_heads * head_dim, hidden),
            ("self_attn.v_proj", kv_heads * head_dim, hidden),
            ("self_attn.o_proj", hidden, heads * head_dim),
        ]
        if experts:
            for e in range(experts):
                x = f"block_sparse_moe.experts.{e}."
                projections += [(x + "w1", inter, hidden), (x + "w3", inter, hidden),
                                (x + "w2", hidden, inter)]
        else:
            projections += [
                ("mlp.gate_proj", inter, hidden),
                ("mlp.up_proj", inter, hidden),
                ("mlp.down_proj", hidden, inter),
            ]
        out.append((p + "input_layernorm.weight", float_dtype, [hidden], "ones"))
        out.append((p + "post_attention_layernorm.weight", float_dtype, [hidden], "ones"))
        if experts:
            out.append((p + "block_sparse_moe.gate.weight", float_dtype, [experts, hidden],
                        "weight"))
        for proj, rows, cols in projections:
            name = p + proj + ".weight"
            if not nf4:
                out.append((name, float_dtype, [rows, cols], "weight"))
                continue
            n = rows * cols
            blocks = -(-n // 64)
            nested = -(-blocks // 256)
            out.append((name, "U8", [-(-n // 2), 1], "random_u8"))
            out.append((name + ".absmax", "U8", [blocks], "random_u8"))
            out.append((name + ".quant_map", "F32", [16], "nf4_map"))
            out.append((name + ".nested_absmax", "F32", [nested], "nested_absmax"))
            out.append((name + ".nested_quant_map", "F32", [256], "dynamic_map"))
            state = json.dumps({"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16",
                                "shape": [rows, cols], "nested_blocksize": 256,
                                "nested_dtype": "float32", "nested_offset": 0.015})
            out.append((name + ".quant_state.bitsandbytes__nf4", "U8", [len(state)],
                        "json:" + state))
    out.append(("model.norm.weight", float_dtype, [hidden], "ones"))
    out.append(("lm_head.weight", float_dtype, [vocab, hidden], "weight"))
    return out


def write_bytes(kind: str, dtype: str, nbytes: int, numel: int, pool: Pool, tables, out) -> None:
    nf4_map, dynamic_map = tables
    if kind == "weight":
        pool.fill(pool.bytes[dtype], nbytes, out)
    elif kind == "random_u8":
        pool.fill(pool.random_u8, nbytes, out)
    elif kind == "ones":
        one = {"BF16": np.array([0x3F80], np.uint16), "F16": np.array([1.0], np.float16),
               "F32": np.array([1.0], np.float32)}[dtype]
        out.write(np.repeat(one, numel).tobytes())
    elif kind == "nf4_map":
        out.write(nf4_map.tobytes())
    elif kind == "dynamic_map":
        out.write(dynamic_map.tobytes())
    elif kind == "nested_absmax":
        # absmax = dynamic_map[code] * nested + offset: a nested scale of 0.02 gives absmax
        # values around the N(0, 0.02) weights' block maxima.
        out.write(np.full(numel, 0.02, np.float32).tobytes())
    elif kind.startswith("json:"):
        out.write(kind[5:].encode())
    else:
        raise AssertionError(kind)


def write_shard(path: pathlib.Path, tensors, pool, tables) -> None:
    header = {"__metadata__": {"format": "pt", "generator": "tools/make_synthetic_model.py"}}
    offset = 0
    for t in tensors:
        header[t[0]] = {"dtype": t[1], "shape": t[2], "data_offsets": [offset, offset + t[4]]}
        offset += t[4]
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as out:
        out.write(len(blob).to_bytes(8, "little"))
        out.write(blob)
        for name, dtype, shape, kind, nbytes in tensors:
            numel = int(np.prod(shape, dtype=np.int64)) if shape else 1
            write_bytes(kind, dtype, nbytes, numel, pool, tables, out)
    os.replace(tmp, path)


def hf_config(shape_name: str, dtype: str) -> dict:
    """config.json of a folder of this shape and dtype (bf16, f16, f32 or nf4-dq)."""
    hidden, inter, layers, heads, kv_heads, vocab, theta, llama3 = SHAPES[shape_name]
    nf4 = dtype == "nf4-dq"
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "vocab_size": vocab,
        "head_dim": hidden // heads, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5,
        "rope_theta": theta, "hidden_act": "silu", "tie_word_embeddings": False,
        "bos_token_id": 1, "eos_token_id": 2,
        "torch_dtype": {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}.get(
            dtype, "bfloat16"),
    }
    if shape_name in MOE:
        experts, per_token = MOE[shape_name]
        config.update({"architectures": ["MixtralForCausalLM"], "model_type": "mixtral",
                       "num_local_experts": experts, "num_experts_per_tok": per_token,
                       "sliding_window": None})
    if llama3:
        config["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                  "high_freq_factor": 4.0,
                                  "original_max_position_embeddings": 8192}
    if nf4:
        config["quantization_config"] = {
            "quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
            "bnb_4bit_use_double_quant": True, "bnb_4bit_compute_dtype": "bfloat16"}
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="llama-3.1-8b")
    parser.add_argument("--dtype", choices=sorted(DTYPES) + ["nf4-dq"], default="bf16")
    parser.add_argument("--shard-gib", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    repo = pathlib.Path(__file__).resolve().parent.parent
    nf4 = args.dtype == "nf4-dq"
    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"{args.out}: exists and is not empty; choose a new folder")
    args.out.mkdir(parents=True, exist_ok=True)

    entries = []
    for name, dtype, shape, kind in model_tensors(args.shape, args.dtype, nf4):
        itemsize = {"BF16": 2, "F16": 2, "F32": 4, "U8": 1}[dtype]
        entries.append((name, dtype, shape, kind, itemsize * int(np.prod(shape, dtype=np.int64))))
    limit = int(args.shard_gib * (1 << 30))
    shards, current, size = [], [], 0
    for e in entries:
        if current and size + e[4] > limit:
            shards.append(current)
            current, size = [], 0
        current.append(e)
        size += e[4]
    shards.append(current)

    pool = Pool(args.seed)
    tables = rules_tables(repo)
    weight_map = {}
    for i, shard in enumerate(shards):
        file = ("model.safetensors" if len(shards) == 1
                else f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors")
        write_shard(args.out / file, shard, pool, tables)
        weight_map.update({e[0]: file for e in shard})
        print(f"{file}: {len(shard)} tensors, {sum(e[4] for e in shard) / (1 << 30):.2f} GiB",
              file=sys.stderr)
    total = sum(e[4] for e in entries)
    if len(shards) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (args.out / "model.safetensors.index.json").write_text(json.dumps(index, indent=1))

    config = hf_config(args.shape, args.dtype)
    (args.out / "config.json").write_text(json.dumps(config, indent=1))
    (args.out / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 1, "eos_token_id": 2}, indent=1))
    print(f"{args.out}: {args.shape} {args.dtype}, {total / (1 << 30):.2f} GiB in "
          f"{len(shards)} file(s)", file=sys.stderr)


if __name__ == "__main__":
    main()
