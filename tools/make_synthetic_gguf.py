#!/usr/bin/env python3
"""Writes a llama.cpp GGUF file of a real model's shape with random weights, directly in Q4_0 or
f16: for shapes whose f16 GGUF would not fit the GPU host's disk on the way to llama-quantize
(Llama-3.1-70B: 141 GB in f16; 64 GiB of disk there).

  python3 tools/make_synthetic_gguf.py --shape llama-3.1-70b --type q4_0 \\
      --llamacpp /tmp/stowage-llamacpp/src/llama.cpp OUT.gguf

The metadata (architecture, hyperparameters, tokenizer) is what llama.cpp's own
convert_hf_to_gguf.py writes with --vocab-only for config.json of the shape
(tools/make_synthetic_model.py's hf_config, the shapes' one owner) and the tokenizer packed by
tools/pack_llamacpp.sh (in the llama.cpp folder, stowage-tokenizer/), so the file loads as a
converted one does. Tensors as llama.cpp's converter names and lays them out; the decoder layers'
projections in --type, the norms f32, the embeddings and output in --head-type (f16 by default,
as the NF4 folders keep them in bf16). Q4_0 blocks: a scale of 0.0043 (weights of standard
deviation about 0.02) and random 4-bit codes; f16: N(0, 0.02). Values are tiled from a pool with
a random offset per tensor (fast: written at disk speed); the file is renamed into place when
complete. Needs numpy, and torch and transformers for the vocabulary's converter run.
A mixture-of-experts shape (mixtral-8x7b) is written as the converter writes Mixtral: each
layer's router ffn_gate_inp in f32 (N(0, 0.02)) and its experts stacked in
ffn_{gate,up,down}_exps ([experts, rows, cols]) in --type; llama.cpp reads it as a llama
model with expert_count and expert_used_count.
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import make_synthetic_model  # noqa: E402 (the shapes and config.json)

Q4_0_BLOCK = 32  # weights per block; 18 bytes: an f16 scale and 16 bytes of 4-bit codes


def vocab_only_gguf(llamacpp, python, shape, out):
    """llama.cpp's converter run with --vocab-only on config.json of the shape + a tokenizer."""
    with tempfile.TemporaryDirectory() as folder:
        folder = pathlib.Path(folder)
        config = make_synthetic_model.hf_config(shape, "bf16")
        (folder / "config.json").write_text(json.dumps(config, indent=1))
        for name in ["tokenizer.json", "tokenizer_config.json"]:
            (folder / name).write_bytes((llamacpp / "stowage-tokenizer" / name).read_bytes())
        subprocess.run([python, str(llamacpp / "convert_hf_to_gguf.py"), str(folder),
                        "--vocab-only", "--outfile", str(out)], check=True,
                       stdout=subprocess.DEVNULL)


def tensor_list(shape):
    """(name, numpy-order shape, kind) as convert_hf_to_gguf.py writes a Llama model (a Mixtral
    shape: the router ffn_gate_inp in f32 and the experts stacked, ffn_{gate,up,down}_exps)."""
    hidden, inter, layers, heads, kv_heads, vocab, _, _ = make_synthetic_model.SHAPES[shape]
    experts, _ = make_synthetic_model.MOE.get(shape, (0, 0))
    head_dim = hidden // heads
    out = [("token_embd.weight", [vocab, hidden], "head")]
    for i in range(layers):
        b = f"blk.{i}."
        out += [(b + "attn_norm.weight", [hidden], "norm"),
                (b + "attn_q.weight", [heads * head_dim, hidden], "proj"),
                (b + "attn_k.weight", [kv_heads * head_dim, hidden], "proj"),
                (b + "attn_v.weight", [kv_heads * head_dim, hidden], "proj"),
                (b + "attn_output.weight", [hidden, heads * head_dim], "proj"),
                (b + "ffn_norm.weight", [hidden], "norm")]
        if experts:
            out += [(b + "ffn_gate_inp.weight", [experts, hidden], "router"),
                    (b + "ffn_gate_exps.weight", [experts, inter, hidden], "proj"),
                    (b + "ffn_down_exps.weight", [experts, hidden, inter], "proj"),
                    (b + "ffn_up_exps.weight", [experts, inter, hidden], "proj")]
        else:
            out += [(b + "ffn_gate.weight", [inter, hidden], "proj"),
                    (b + "ffn_up.weight", [inter, hidden], "proj"),
                    (b + "ffn_down.weight", [hidden, inter], "proj")]
    out += [("output_norm.weight", [hidden], "norm"), ("output.weight", [vocab, hidden], "head")]
    return out


class Pool:
    def __init__(self, seed):
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.f16 = rng.normal(0.0, 0.02, size=1 << 24).astype(np.float16).view(np.uint8)
        blocks = np.empty((1 << 20, 2 + Q4_0_BLOCK // 2), np.uint8)
        blocks[:, :2] = np.frombuffer(np.float16(0.0043).tobytes(), np.uint8)
        blocks[:, 2:] = rng.integers(0, 256, size=(blocks.shape[0], Q4_0_BLOCK // 2),
                                     dtype=np.uint8)
        self.q4_0 = blocks.reshape(-1)

    def bytes(self, kind, nbytes, unit):
        source = {"f16": self.f16, "q4_0": self.q4_0}[kind]
        start = int(self.rng.integers(0, len(source) // unit)) * unit
        return np.resize(np.roll(source, -start), nbytes)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--shape", choices=sorted(make_synthetic_model.SHAPES),
                        default="llama-3.1-70b")
    parser.add_argument("--type", choices=["q4_0", "f16"], default="q4_0")
    parser.add_argument("--head-type", choices=["f16", "same"], default="f16",
                        help="token_embd and output: f16, or --type")
    parser.add_argument("--llamacpp", type=pathlib.Path, required=True,
                        help="the llama.cpp folder unpacked from tools/pack_llamacpp.sh's tarball")
    parser.add_argument("--python", default=sys.executable, help="runs the converter")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sys.path.insert(0, str(args.llamacpp / "gguf-py"))
    import gguf  # noqa: E402 (the packed copy, as the converter uses)

    if args.out.exists():
        raise SystemExit(f"{args.out}: exists; choose a new file")
    vocab_file = args.out.with_name(args.out.name + ".vocab")
    vocab_only_gguf(args.llamacpp, args.python, args.shape, vocab_file)
    reader = gguf.GGUFReader(str(vocab_file))
    tmp = args.out.with_name(args.out.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), reader.fields["general.architecture"].contents())
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "general.file_type",
                                                "general.name"):
            continue
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), vtype, sub_type)
    ftype = {"q4_0": gguf.LlamaFileType.MOSTLY_Q4_0, "f16": gguf.LlamaFileType.MOSTLY_F16}
    writer.add_key_value("general.file_type", int(ftype[args.type]), gguf.GGUFValueType.UINT32)
    writer.add_key_value("general.name", f"synthetic {args.shape} {args.type}",
                         gguf.GGUFValueType.STRING)

    plan = []
    for name, shape, kind in tensor_list(args.shape):
        numel = int(np.prod(shape))
        fmt = "f32" if kind in ("norm", "router") else (
            "f16" if kind == "head" and args.head_type == "f16" else args.type)
        if fmt == "q4_0":
            row_bytes = shape[-1] // Q4_0_BLOCK * (2 + Q4_0_BLOCK // 2)
            writer.add_tensor_info(name, [*shape[:-1], row_bytes], np.dtype(np.uint8),
                                   numel // Q4_0_BLOCK * 18, gguf.GGMLQuantizationType.Q4_0)
        else:
            dtype = np.dtype(np.float32 if fmt == "f32" else np.float16)
            writer.add_tensor_info(name, shape, dtype, numel * dtype.itemsize)
        plan.append((name, shape, fmt, numel))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    pool = Pool(args.seed)
    total = 0
    for name, shape, fmt, numel in plan:
        if fmt == "f32" and name.endswith("ffn_gate_inp.weight"):
            data = pool.rng.normal(0.0, 0.02, size=numel).astype(np.float32)
        elif fmt == "f32":
            data = np.ones(numel, np.float32)
        elif fmt == "f16":
            data = pool.bytes("f16", numel * 2, 2).view(np.float16)
        else:
            data = pool.bytes("q4_0", numel // Q4_0_BLOCK * 18, 18)
        writer.write_tensor_data(data)
        total += data.nbytes
    writer.close()
    os.replace(tmp, args.out)
    vocab_file.unlink()
    print(f"{args.out}: {args.shape} {args.type} (head {args.head_type}), "
          f"{total / (1 << 30):.2f} GiB of tensors", file=sys.stderr)


if __name__ == "__main__":
    main()
