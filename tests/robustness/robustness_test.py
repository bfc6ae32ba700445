#!/usr/bin/env python3
"""Hostile inputs against the built `stowage` command (issue #15, item 8).

A generator writes malformed safetensors files, hostile model folders, bad
flag values and outputs aimed at the inputs, then runs every subcommand on
them. Each case asserts:
  - the exit status (0, 1 or 2 as CLI.md says; never a signal, except the
    interrupt cases, which must end by the signal they were sent);
  - that stderr names the culprit (the file, tensor, key or flag) and holds
    no Boost source location and no raw control character;
  - that every input file is unchanged (SHA-256 before and after);
  - that no temporary file (".NAME.tmp-XXXXXX", "NAME.tmpPID") is left;
  - for runs at once sharing an offload folder: each computes what it
    computes alone (its logits bit for bit) and the folder ends empty.

usage: robustness_test.py STOWAGE MODELS_TESTDATA_MANIFEST
"""
import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

STOWAGE = os.path.abspath(sys.argv[1])
FIXTURES = os.path.dirname(os.path.abspath(sys.argv[2]))
ROOT = tempfile.mkdtemp(prefix="stowage_robust_", dir=os.environ.get("TEST_TMPDIR"))
TIMEOUT = 120


def path(*parts):
    return os.path.join(ROOT, *parts)


# ---- writers of hostile files ------------------------------------------------

def safetensors_bytes(header, data=b"", length=None, pad=True):
    """A safetensors file from a header (dict or raw text) and data bytes."""
    text = header if isinstance(header, (bytes, str)) else json.dumps(header)
    if isinstance(text, str):
        text = text.encode("utf-8", "surrogatepass")
    if pad:
        text += b" " * ((8 - len(text) % 8) % 8)
    n = len(text) if length is None else length
    return struct.pack("<Q", n) + text + data


def write(p, content):
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(content if isinstance(content, bytes) else content.encode())
    return p


def mlp_file(p, layers=((8, 4), (3, 8)), dtype="F32"):
    """A valid MLP-family checkpoint: layers.i.weight [out, in] float32 (ones)."""
    header, data = {}, b""
    for i, (o, n) in enumerate(layers):
        raw = struct.pack("<%df" % (o * n), *([0.125] * (o * n)))
        header["layers.%d.weight" % i] = {"dtype": dtype, "shape": [o, n],
                                          "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    return write(p, safetensors_bytes(header, data))


def tensor_header(name="w", dtype="F32", shape=(2, 2), offsets=(0, 16)):
    return {name: {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}}


# (file name, content, the text its message must hold)
def hostile_safetensors():
    ok16 = b"\0" * 16
    deep = "[" * 100000
    yield "empty.safetensors", b"", "empty.safetensors"
    yield "seven_bytes.safetensors", b"\1\0\0\0\0\0\0", "seven_bytes.safetensors"
    yield "header_past_end.safetensors", safetensors_bytes(tensor_header(), ok16, length=4096), \
        "header_past_end.safetensors"
    yield "header_2e63.safetensors", safetensors_bytes(tensor_header(), ok16, length=1 << 63), \
        "header_2e63.safetensors"
    yield "header_max.safetensors", safetensors_bytes(tensor_header(), ok16, length=(1 << 64) - 1), \
        "header_max.safetensors"
    yield "not_json.safetensors", safetensors_bytes("{not json at all}", ok16), "not_json.safetensors"
    yield "json_array.safetensors", safetensors_bytes("[1, 2, 3]", ok16), "json_array.safetensors"
    yield "deep_nesting.safetensors", safetensors_bytes("{\"a\":" + deep, ok16), \
        "deep_nesting.safetensors"
    yield "truncated_data.safetensors", safetensors_bytes(tensor_header(), b"\0" * 9), \
        "truncated_data.safetensors"
    yield "offsets_past_end.safetensors", \
        safetensors_bytes(tensor_header(offsets=(0, 1 << 40)), ok16), "offsets_past_end.safetensors"
    yield "offsets_reversed.safetensors", safetensors_bytes(tensor_header(offsets=(16, 0)), ok16), \
        "offsets_reversed.safetensors"
    yield "offsets_overlap.safetensors", safetensors_bytes(
        {**tensor_header("a"), **tensor_header("b", offsets=(8, 24))}, b"\0" * 24), \
        "offsets_overlap.safetensors"
    yield "offsets_hole.safetensors", safetensors_bytes(tensor_header(offsets=(8, 24)), b"\0" * 24), \
        "offsets_hole.safetensors"
    yield "negative_shape.safetensors", safetensors_bytes(tensor_header(shape=(-2, -2)), ok16), \
        "negative_shape.safetensors"
    yield "shape_overflow.safetensors", safetensors_bytes(
        tensor_header(shape=(1 << 62, 1 << 62, 16), offsets=(0, 0)), b""), \
        "shape_overflow.safetensors"
    yield "shape_float.safetensors", safetensors_bytes(tensor_header(shape=(2.5, 2)), ok16), \
        "shape_float.safetensors"
    yield "bytes_mismatch.safetensors", safetensors_bytes(tensor_header(shape=(3, 3)), ok16), \
        "bytes_mismatch.safetensors"
    yield "unknown_dtype.safetensors", safetensors_bytes(tensor_header(dtype="F128"), ok16), \
        "unknown_dtype.safetensors"
    yield "dtype_number.safetensors", safetensors_bytes(
        {"w": {"dtype": 7, "shape": [2, 2], "data_offsets": [0, 16]}}, ok16), \
        "dtype_number.safetensors"
    yield "missing_offsets.safetensors", safetensors_bytes(
        {"w": {"dtype": "F32", "shape": [2, 2]}}, ok16), "missing_offsets.safetensors"
    yield "duplicate_name.safetensors", safetensors_bytes(
        '{"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}, '
        '"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}', ok16), \
        "duplicate_name.safetensors"
    yield "metadata_not_strings.safetensors", safetensors_bytes(
        {"__metadata__": {"a": [1, 2]}, **tensor_header()}, ok16), "metadata_not_strings.safetensors"
    yield "invalid_utf8.safetensors", safetensors_bytes(
        b'{"w\xff\xfe": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}', ok16), \
        "invalid_utf8.safetensors"
    yield "nul_in_header.safetensors", safetensors_bytes(
        b'{"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}\0\0', ok16, pad=False), \
        "nul_in_header.safetensors"
    yield "not_starting_brace.safetensors", safetensors_bytes(" " * 8 + json.dumps(tensor_header()),
                                                              ok16), \
        "not_starting_brace.safetensors"
    # A quantized weight whose state JSON is hostile (quant/bnb_format.h).
    qs = b'{"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [4611686018427387904, 8]}'
    header = {
        "l.weight": {"dtype": "U8", "shape": [16, 1], "data_offsets": [0, 16]},
        "l.weight.absmax": {"dtype": "F32", "shape": [1], "data_offsets": [16, 20]},
        "l.weight.quant_map": {"dtype": "F32", "shape": [16], "data_offsets": [20, 84]},
        "l.weight.quant_state.bitsandbytes__nf4": {"dtype": "U8", "shape": [len(qs)],
                                                   "data_offsets": [84, 84 + len(qs)]},
    }
    yield "quant_state_huge_shape.safetensors", safetensors_bytes(header, b"\0" * 84 + qs), \
        "l.weight"
    qs2 = b'{"quant_type": "nf4", "blocksize": "sixty-four"'
    header2 = dict(header)
    header2["l.weight.quant_state.bitsandbytes__nf4"] = {"dtype": "U8", "shape": [len(qs2)],
                                                         "data_offsets": [84, 84 + len(qs2)]}
    yield "quant_state_not_json.safetensors", safetensors_bytes(header2, b"\0" * 84 + qs2), \
        "l.weight"


def set_tensor_bytes(p, name, raw):
    """Overwrites the bytes of tensor `name` in safetensors file `p`."""
    with open(p, "r+b") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        begin, end = header[name]["data_offsets"]
        assert end - begin == len(raw)
        f.seek(8 + n + begin)
        f.write(raw)


def quant_state_contradictions():
    """MLP checkpoints whose quant state inspect rejects but whose shapes are
    fine: (file name, content, the text the message must hold)."""
    def int8(weight_format):
        header = {"layers.0.weight": {"dtype": "I8", "shape": [3, 4], "data_offsets": [0, 12]},
                  "layers.0.SCB": {"dtype": "F32", "shape": [3], "data_offsets": [12, 24]},
                  "layers.0.weight_format": {"dtype": "U8", "shape": [], "data_offsets": [24, 25]}}
        return safetensors_bytes(header, b"\1" * 12 + struct.pack("<3f", 1, 1, 1) + bytes([weight_format]))

    def nf4(state, key="nf4"):
        q = json.dumps(state).encode()
        header = {"layers.0.weight": {"dtype": "U8", "shape": [6, 1], "data_offsets": [0, 6]},
                  "layers.0.weight.absmax": {"dtype": "F32", "shape": [1], "data_offsets": [6, 10]},
                  "layers.0.weight.quant_map": {"dtype": "F32", "shape": [16], "data_offsets": [10, 74]},
                  "layers.0.weight.quant_state.bitsandbytes__" + key: {
                      "dtype": "U8", "shape": [len(q)], "data_offsets": [74, 74 + len(q)]}}
        return safetensors_bytes(header, b"\0" * 6 + struct.pack("<f", 1) + b"\0" * 64 + q)

    state = {"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [3, 4]}
    yield "int8_weight_format_tiled.safetensors", int8(1), "layers.0.weight_format"
    yield "nf4_blocksize_48.safetensors", nf4(dict(state, blocksize=48)), "blocksize"
    yield "nf4_key_says_fp4.safetensors", nf4(dict(state, quant_type="fp4")), "quant_type"


# ---- cases -------------------------------------------------------------------

class Case:
    """One run of the command, or with `concurrent` (a list of argvs) those
    runs at once, each of which must exit `rc`. Every (file, reference) of
    `same_files` must hold the same bytes, and every folder of `empty_dirs`
    nothing, afterwards."""
    def __init__(self, name, argv, rc, needles=(), stdout_to=None, interrupt=None, pipe_closed=False,
                 out_needles=(), concurrent=(), same_files=(), empty_dirs=()):
        self.name, self.argv, self.rc, self.needles = name, argv, rc, list(needles)
        self.out_needles = list(out_needles)
        self.stdout_to, self.interrupt, self.pipe_closed = stdout_to, interrupt, pipe_closed
        self.concurrent, self.same_files = list(concurrent), list(same_files)
        self.empty_dirs = list(empty_dirs)


def build_cases():
    cases = []
    add = lambda *a, **k: cases.append(Case(*a, **k))
    inp = path("in")
    out = path("out")
    os.makedirs(out)
    good = mlp_file(path("in", "good.safetensors"))
    x = write(path("in", "x.safetensors"), safetensors_bytes(
        {"x": {"dtype": "F32", "shape": [1, 4], "data_offsets": [0, 16]}}, b"\0" * 16))

    # 1. Hostile safetensors files through every command that reads one.
    for fname, content, needle in hostile_safetensors():
        f = write(path("in", fname), content)
        add("inspect " + fname, ["inspect", f], 1, [needle])
        add("inspect --json " + fname, ["inspect", "--json", f], 1, [needle])
        add("quantize " + fname, ["quantize", "--method", "nf4", "--device", "sim", f,
                                  path("out", "q.safetensors")], 1, [needle])
        add("plan " + fname, ["plan", "--model", f, "--max-memory", "0=1MiB", "--device", "sim"], 1,
            [needle])
        add("run " + fname, ["run", "--device", "sim", "--model", f, "--input", x, "--output",
                             path("out", "y.safetensors")], 1, [needle])

    # One validation path (item 1): what inspect rejects, run, bench and
    # generate reject before any work, by the same quant/ rules; a file whose
    # zero-byte layers declare a width of 2^62 (activations wrapped to 0
    # bytes) fails plan, run and bench alike.
    for fname, content, needle in quant_state_contradictions():
        f = write(path("in", fname), content)
        add("inspect " + fname, ["inspect", f], 1, [needle])
        add("plan " + fname, ["plan", "--model", f, "--max-memory", "0=1GiB", "--device", "sim"], 1,
            [fname, needle])
        add("run " + fname, ["run", "--device", "sim", "--model", f, "--input", x, "--output",
                             path("out", "y.safetensors")], 1, [fname, needle])
        add("bench " + fname, ["bench", "--device", "sim", "--model", f, "--iters", "1"], 1,
            [fname, needle])
    wrap = write(path("in", "zero_layers_wrap.safetensors"), safetensors_bytes(
        {"layers.0.weight": {"dtype": "F32", "shape": [1 << 62, 0], "data_offsets": [0, 0]},
         "layers.1.weight": {"dtype": "F32", "shape": [0, 1 << 62], "data_offsets": [0, 0]}}))
    x0 = write(path("in", "x0.safetensors"), safetensors_bytes(
        {"x": {"dtype": "F32", "shape": [1, 0], "data_offsets": [0, 0]}}))
    add("plan zero-byte layers whose activations wrap", ["plan", "--device", "sim", "--model", wrap,
                                                         "--max-memory", "0=1GiB"], 1,
        ["zero_layers_wrap.safetensors", "layers.0", "2^58 bytes"])
    add("run zero-byte layers whose activations wrap", ["run", "--device", "sim", "--model", wrap,
                                                        "--input", x0, "--output",
                                                        path("out", "y.safetensors")], 1,
        ["zero_layers_wrap.safetensors", "layers.0", "2^58 bytes"])
    add("bench zero-byte layers whose activations wrap", ["bench", "--device", "sim", "--model", wrap,
                                                          "--iters", "1"], 1,
        ["zero_layers_wrap.safetensors", "2^58 bytes"])
    tiled = path("models_quant", "int8_tiled")
    shutil.copytree(os.path.join(FIXTURES, "llama_bnb_int8_saved"), tiled)
    set_tensor_bytes(os.path.join(tiled, "model.safetensors"),
                     "model.layers.0.mlp.up_proj.weight_format", b"\x01")
    add("inspect a folder with a tiled int8 weight_format", ["inspect", tiled], 1,
        ["model.layers.0.mlp.up_proj.weight_format"])
    add("generate on a folder with a tiled int8 weight_format",
        ["generate", "--device", "sim", "--model", tiled, "--prompt-ids", "1,2", "--max-new-tokens", "1"],
        1, ["model.safetensors", "model.layers.0.mlp.up_proj.weight_format"])

    # Control characters in tensor names are escaped when printed.
    esc = write(path("in", "escape_names.safetensors"), safetensors_bytes(
        tensor_header("evil\x1b[31m\r\nname"), b"\0" * 16))
    add("inspect escapes names", ["inspect", esc], 0, [], out_needles=["evil\\x1b[31m\\x0d\\x0aname"])
    add("demo says when nothing is streamed", ["demo", "--device", "sim", "--layers", "2", "--hidden", "32",
                                               "--iters", "1", "--max-memory", "0=1GiB"], 0, [],
        out_needles=["nothing streamed"])
    add("plan escapes names", ["plan", "--device", "sim", "--model", esc, "--max-memory", "0=1GiB"], 0, [])
    add("quantize names a bad tensor escaped", ["quantize", "--method", "nf4", "--device", "sim",
                                                 write(path("in", "escape_nan.safetensors"),
                                                       safetensors_bytes(
                                                           tensor_header("bad\x07.weight",
                                                                         shape=(2, 2)),
                                                           struct.pack("<4f", 1, float("nan"), 0,
                                                                       0))),
                                                 path("out", "q.safetensors")], 1,
        ["bad\\x07.weight"])

    # 2. Bad flag values: exit 2 naming the flag, in every command.
    mm = lambda cmd: cmd + ["--max-memory"]
    plan = ["plan", "--model", good, "--device", "sim"]
    run = ["run", "--device", "sim", "--model", good, "--input", x, "--output", path("out", "y.safetensors")]
    gen = ["generate", "--device", "sim", "--model", os.path.join(FIXTURES, "llama_f32"),
           "--prompt-ids", "1,2", "--max-new-tokens", "1"]
    quant = ["quantize", "--device", "sim"]
    for value, needle in [("0=1GiB,0=2GiB", "given more than once"), ("cpu=1GiB,cpu=2GiB", "cpu"),
                          ("9999=1GiB", "accelerator 9999"), ("8=1GiB", "accelerator 8"),
                          ("0=abc", "--max-memory"), ("=1GiB", "--max-memory"), ("0=", "--max-memory"),
                          ("gpu=1GiB", "gpu"), ("0=-5GiB", "--max-memory"), ("0=1GiB,,", "--max-memory"),
                          ("0=99999999999999999999999GiB", "--max-memory")]:
        add("plan --max-memory " + value, mm(plan) + [value], 2, [needle])
        add("run --max-memory " + value, mm(run) + [value], 2, [needle])
        add("generate --max-memory " + value, mm(gen) + [value], 2, [needle])
    add("demo --max-memory 9999", ["demo", "--device", "sim", "--max-memory", "9999=1GiB"], 2,
        ["accelerator 9999"])
    add("bench --max-memory twice", ["bench", "--device", "sim", "--model", good, "--max-memory",
                                     "0=1GiB,0=1GiB"], 2, ["given more than once"])
    for cmd in (plan + ["--max-memory", "0=1GiB"], run, gen, ["demo"], ["bench", "--model", good],
                quant + ["--method", "nf4", good, path("out", "q.safetensors")]):
        add(cmd[0] + " --device tpu", cmd + ["--device", "tpu"] if "--device" not in cmd else
            [a if a != "sim" else "tpu" for a in cmd], 2, ["--device", "tpu"])
        add(cmd[0] + " unknown flag", cmd + ["--no-such-flag"], 2, ["--no-such-flag"])
    for args, needle in [(["--method", "int4"], "int4"), (["--method", "nf4", "--blocksize", "48"], "--blocksize"),
                         (["--method", "nf4", "--blocksize", "99999999999999999999"], "--blocksize"),
                         (["--method", "nf4", "--quant-storage", "int8"], "--quant-storage"),
                         (["--method", "int8", "--threshold", "nan"], "--threshold"),
                         (["--method", "int8", "--threshold", "-1"], "--threshold"),
                         (["--method", "nf4", "--skip", "("], "--skip"),
                         (["--method", "nf4", "--skip", "a{1000000}"], "--skip"),
                         (["--method", "nf4", "--skip", "(?<=x)y"], "--skip")]:
        add("quantize " + " ".join(args), quant + args + [good, path("out", "q.safetensors")], 2, [needle])
    for args, needle in [(["--no-split", "("], "--no-split"), (["--no-split", "[z-a]"], "--no-split"),
                         (["--prefetch", "-1"], "--prefetch"), (["--batch", "0"], "--batch"),
                         (["--prefetch", "1e3"], "--prefetch")]:
        add("plan " + " ".join(args), plan + ["--max-memory", "0=1GiB"] + args, 2, [needle])
    for args, needle in [(["--max-new-tokens", "-1"], "--max-new-tokens"),
                         (["--temperature", "-1"], "--temperature"), (["--temperature", "nan"], "--temperature"),
                         (["--top-p", "2"], "--top-p"), (["--top-k", "x"], "--top-k"),
                         (["--quant", "q3"], "--quant"), (["--seed", "-4"], "--seed")]:
        add("generate " + " ".join(args), gen + args, 2, [needle])
    bad_ids = ["generate", "--device", "sim", "--model", os.path.join(FIXTURES, "llama_f32"),
               "--max-new-tokens", "1", "--prompt-ids"]
    for ids in ["a,b", "1,,2", "-1", "99999999999"]:
        add("generate --prompt-ids " + ids, bad_ids + [ids], 2, ["--prompt-ids"])
    add("generate id outside vocabulary", bad_ids + ["100000"], 1, ["100000"])
    for args, needle in [(["--dtype", "float64"], "--dtype"), (["--quant", "q3"], "--quant"),
                         (["--layers", "0"], "--layers"), (["--hidden", "-1"], "--hidden")]:
        add("demo " + " ".join(args), ["demo", "--device", "sim"] + args, 2, [needle])
    add("bench --iters 0", ["bench", "--device", "sim", "--model", good, "--iters", "0"], 2, ["--iters"])
    add("unknown command", ["frobnicate\x1b[2J"], 2, ["frobnicate\\x1b[2J"])
    add("run --offload-dir is a file", run + ["--offload-dir", good], 1, ["--offload-dir", good])
    add("generate --offload-dir is a file", gen + ["--offload-dir", good], 1, ["--offload-dir"])
    add("bench --offload-dir is a file", ["bench", "--device", "sim", "--model", good,
                                          "--offload-dir", good], 1, ["--offload-dir"])

    # 3. Outputs never clobber inputs.
    link = path("in", "link_to_good.safetensors")
    os.symlink(good, link)
    hard = path("in", "hard_to_good.safetensors")
    os.link(good, hard)
    fifo = path("out", "fifo")
    os.mkfifo(fifo)
    qin = quant + ["--method", "nf4", good]
    add("quantize OUT is IN", qin + [good], 1, ["is the input file"])
    add("quantize OUT is a symlink to IN", qin + [link], 1, ["is the input file"])
    add("quantize OUT is a hard link to IN", qin + [hard], 1, ["is the input file"])
    add("quantize OUT is IN by another name", qin + [path("in", ".", "good.safetensors")], 1,
        ["is the input file"])
    add("quantize OUT is a folder", qin + [out], 1, ["found a directory"])
    add("quantize OUT is a FIFO", qin + [fifo], 1, ["found a FIFO"])
    add("quantize OUT is /dev/null", qin + ["/dev/null"], 1, ["found a character device"])
    add("quantize OUT in a missing folder", qin + [path("nowhere", "q.safetensors")], 1, ["nowhere"])
    run_base = ["run", "--device", "sim", "--model", good, "--input", x]
    add("run --output is the model", run_base + ["--output", good], 1, ["--output", "is the input file"])
    add("run --output is the input", run_base + ["--output", x], 1, ["--output", "is the input file"])
    add("run --output is a symlink to the model", run_base + ["--output", link], 1, ["is the input file"])
    add("run --output is a folder", run_base + ["--output", out], 1, ["found a directory"])
    add("run --trace is the model", run_base + ["--output", path("out", "y.safetensors"), "--trace", good],
        1, ["--trace", "is the input file"])
    add("run --trace is --output", run_base + ["--output", path("out", "y.safetensors"), "--trace",
                                               path("out", "y.safetensors")], 2, ["--trace"])
    add("run --offload-dir is the model's folder", run_base + ["--output", path("out", "y.safetensors"),
                                                               "--offload-dir", inp], 1,
        ["--offload-dir", "holds the input"])
    model = path("model_copy")
    shutil.copytree(os.path.join(FIXTURES, "llama_f32"), model)
    gen_copy = ["generate", "--device", "sim", "--model", model, "--prompt-ids", "1,2",
                "--max-new-tokens", "1"]
    for target in ["model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
                   "index.json", "reference.safetensors"]:
        add("generate --dump-logits " + target, gen_copy + ["--dump-logits", os.path.join(model, target)],
            1, ["--dump-logits", target])
    add("generate --dump-logits symlink into the model", gen_copy + ["--dump-logits", path("out", "l2")],
        1, ["--dump-logits", "is the input file"])
    os.symlink(os.path.join(model, "model.safetensors"), path("out", "l2"))
    add("generate --dump-logits folder", gen_copy + ["--dump-logits", out], 1, ["found a directory"])
    add("generate --offload-dir is the model folder", gen_copy + ["--offload-dir", model], 1,
        ["--offload-dir", "is the input"])
    add("bench --offload-dir is the model folder", ["bench", "--device", "sim", "--model", model,
                                                     "--offload-dir", model], 1,
        ["--offload-dir", "is the input"])
    add("generate --dump-logits works", gen_copy + ["--dump-logits", path("out", "logits.safetensors")], 0)

    # 4. Hostile model folders.
    base_config = json.load(open(os.path.join(FIXTURES, "llama_f32", "config.json")))

    def folder(name, config=None, raw_config=None, tokenizer=None, generation=None, weights=True):
        d = path("models", name)
        os.makedirs(d)
        if raw_config is not None:
            write(os.path.join(d, "config.json"), raw_config)
        else:
            write(os.path.join(d, "config.json"), json.dumps(config))
        if generation is not None:
            write(os.path.join(d, "generation_config.json"), generation)
        if tokenizer is not None:
            write(os.path.join(d, "tokenizer.json"), tokenizer)
        if weights:
            shutil.copy(os.path.join(FIXTURES, "llama_f32", "model.safetensors"), d)
        return d

    def with_key(**changes):
        c = dict(base_config)
        for k, v in changes.items():
            if v is None:
                c.pop(k, None)
            else:
                c[k] = v
        return c

    hostile_folders = [
        ("hidden_string", with_key(hidden_size="sixty-four"), "hidden_size"),
        ("hidden_float", with_key(hidden_size=64.5), "hidden_size"),
        ("hidden_negative", with_key(hidden_size=-64), "hidden_size"),
        ("hidden_huge", with_key(hidden_size=1 << 62), "q_proj.weight"),
        ("layers_missing", with_key(num_hidden_layers=None), "num_hidden_layers"),
        ("layers_huge", with_key(num_hidden_layers=10 ** 12), "num_hidden_layers"),
        ("layers_zero", with_key(num_hidden_layers=0), "num_hidden_layers"),
        ("vocab_huge", with_key(vocab_size=1 << 40), "model.embed_tokens.weight"),
        ("vocab_bool", with_key(vocab_size=True), "vocab_size"),
        ("heads_zero", with_key(num_attention_heads=0), "num_attention_heads"),
        ("kv_heads_not_dividing", with_key(num_key_value_heads=3), "num_key_value_heads"),
        ("head_dim_huge", with_key(head_dim=1 << 40), "head_dim"),
        ("intermediate_huge", with_key(intermediate_size=1 << 61), "gate_proj.weight"),
        ("architecture_unknown", with_key(architectures=["FrobnicatorForCausalLM"]), "Frobnicator"),
        ("architectures_not_list", with_key(architectures="LlamaForCausalLM"), "architectures"),
        ("rope_theta_string", with_key(rope_parameters={"rope_theta": "big", "rope_type": "default"}),
         "rope_theta"),
        ("rms_eps_negative", with_key(rms_norm_eps=-1), "rms_norm_eps"),
        ("wrong_shapes", with_key(hidden_size=32, head_dim=8), "model.safetensors"),
        ("more_layers_than_tensors", with_key(num_hidden_layers=5), "layers.2"),
    ]
    folders = []
    for name, config, needle in hostile_folders:
        folders.append((name, folder(name, config), needle))
    folders.append(("config_not_json", folder("config_not_json", raw_config="{\"hidden_size\": "), "config.json"))
    folders.append(("config_array", folder("config_array", raw_config="[]"), "config.json"))
    folders.append(("config_empty", folder("config_empty", raw_config=""), "config.json"))
    folders.append(("config_deep", folder("config_deep", raw_config="[" * 200000), "config.json"))
    folders.append(("generation_not_json", folder("generation_not_json", base_config,
                                                  generation="{eos"), "generation_config.json"))
    folders.append(("no_weights", folder("no_weights", base_config, weights=False), "no_weights"))
    for name, d, needle in folders:
        add("generate on " + name, ["generate", "--device", "sim", "--model", d, "--prompt-ids", "1,2",
                                   "--max-new-tokens", "1"], 1, [needle])
        add("inspect " + name, ["inspect", d], 1, [needle])
        add("plan " + name, ["plan", "--device", "sim", "--model", d, "--max-memory", "0=1MiB"], 1,
            [needle])
    for name, tok in [("tokenizer_not_json", "{\"model\": "), ("tokenizer_empty", ""),
                      ("tokenizer_array", "[]"), ("tokenizer_no_model", "{\"added_tokens\": []}"),
                      ("tokenizer_bad_vocab", json.dumps({"model": {"type": "BPE", "vocab": {"a": "x"},
                                                                    "merges": []}})),
                      ("tokenizer_deep", "{\"model\": " + "[" * 100000)]:
        d = folder(name, base_config, tokenizer=tok)
        add("generate --prompt with " + name, ["generate", "--device", "sim", "--model", d,
                                               "--prompt", "hello", "--max-new-tokens", "1"], 1,
            ["tokenizer.json"])
    # A sharded folder whose index is hostile.
    for name, index, needle in [
            ("index_missing_shard", {"weight_map": {"model.embed_tokens.weight": "nope.safetensors"}},
             "nope.safetensors"),
            ("index_traversal", {"weight_map": {"model.embed_tokens.weight": "../../../etc/passwd"}},
             "passwd"),
            ("index_value_number", {"weight_map": {"model.embed_tokens.weight": 7}}, "model.embed_tokens.weight"),
            ("index_no_weight_map", {"metadata": {}}, "weight_map")]:
        d = folder(name, base_config, weights=False)
        write(os.path.join(d, "model.safetensors.index.json"), json.dumps(index))
        add("inspect " + name, ["inspect", d], 1, [needle])
        add("generate on " + name, ["generate", "--device", "sim", "--model", d, "--prompt-ids", "1",
                                   "--max-new-tokens", "1"], 1, [needle])
    # Offload folders whose index.json is hostile.
    for name, index, needle in [
            ("offload_not_object", "[]", "index.json"),
            ("offload_traversal", json.dumps({"../x": {"dtype": "float32", "shape": [1]}}), "../x"),
            ("offload_missing_dat", json.dumps({"t": {"dtype": "float32", "shape": [4]}}), "t"),
            ("offload_huge_shape", json.dumps({"t": {"dtype": "float32", "shape": [1 << 62, 1 << 62]}}), "t"),
            ("offload_bad_dtype", json.dumps({"t": {"dtype": "complex512", "shape": [1]}}), "complex512")]:
        d = path("offload", name)
        write(os.path.join(d, "index.json"), index)
        add("inspect " + name, ["inspect", d], 1, [needle])

    # Plan and run agree on the cpu budget (item 4): disk reads are staged
    # through a pinned buffer of the largest tensor on disk (16 KiB here); a
    # cpu budget below it fails both, by the planner's one message (plan
    # passed and run failed at dispatch before).
    staged = mlp_file(path("in", "staged.safetensors"), layers=((64, 64),) * 4)
    x64 = write(path("in", "x64.safetensors"), safetensors_bytes(
        {"x": {"dtype": "F32", "shape": [1, 64], "data_offsets": [0, 256]}}, b"\0" * 256))
    staging = ["staged through: 16384 bytes", "layers.0.weight"]
    add("plan: cpu budget below the disk staging buffer",
        ["plan", "--device", "sim", "--model", staged, "--max-memory", "0=40KiB,cpu=8KiB,disk=1GiB"],
        1, staging)
    add("run: cpu budget below the disk staging buffer",
        ["run", "--device", "sim", "--model", staged, "--input", x64, "--output",
         path("out", "y.safetensors"), "--max-memory", "0=40KiB,cpu=8KiB", "--offload-dir",
         path("out", "staging_offload")], 1, staging)
    add("run: cpu budget that holds the disk staging buffer",
        ["run", "--device", "sim", "--model", staged, "--input", x64, "--output",
         path("out", "y.safetensors"), "--max-memory", "0=40KiB,cpu=16KiB", "--offload-dir",
         path("out", "staging_offload")], 0)

    # 5. Standard output that cannot be written: exit 1, no signal.
    add("inspect > /dev/full", ["inspect", good], 1, ["standard output"], stdout_to="/dev/full")
    add("plan --json > /dev/full", plan + ["--max-memory", "0=1GiB", "--json"], 1, ["standard output"],
        stdout_to="/dev/full")
    add("inspect into a closed pipe", ["inspect", good], 1, ["standard output"], pipe_closed=True)

    # 6. Interrupted while writing: the temporary file is removed and the
    # process ends by the signal it was sent.
    big = mlp_file(path("in", "big.safetensors"), layers=((2048, 2048),) * 6)
    for sig in (signal.SIGINT, signal.SIGTERM):
        add("quantize interrupted by " + sig.name, ["quantize", "--method", "nf4", "--device", "sim",
                                                    "--double-quant", big,
                                                    path("out", "big_%s.safetensors" % sig.name)],
            -sig, [], interrupt=sig)

    # 7. Concurrent runs sharing an offload folder: layers quantized while
    # loading and homed on disk are written there by every run at once
    # (4 runs of one model, then 2 + 2 of two models); each must compute
    # what it computes alone, bit for bit, and leave the folder empty.
    shared = path("out", "shared_offload")
    os.makedirs(shared)

    def on_disk(fixture, logits):
        return ["generate", "--device", "sim", "--model", os.path.join(FIXTURES, fixture), "--quant",
                "nf4", "--max-memory", "0=400KiB,cpu=140KiB", "--offload-dir", shared, "--prompt-ids",
                "1,2,3", "--max-new-tokens", "3", "--ignore-eos", "--dump-logits", logits]
    solo = {}
    for fixture in ("llama_f32", "mistral_sharded_f32"):
        solo[fixture] = path("out", "solo_%s.safetensors" % fixture)
        add("generate %s alone, layers on disk" % fixture, on_disk(fixture, solo[fixture]), 0,
            empty_dirs=[shared])
    runs = [("llama_f32", path("out", "c4_%d.safetensors" % i)) for i in range(4)]
    add("4 concurrent generate sharing an offload folder", None, 0,
        concurrent=[on_disk(f, logits) for f, logits in runs],
        same_files=[(logits, solo[f]) for f, logits in runs], empty_dirs=[shared])
    runs = [(f, path("out", "mix_%s_%d.safetensors" % (f, i)))
            for i in range(2) for f in ("llama_f32", "mistral_sharded_f32")]
    add("2 + 2 concurrent generate of two models sharing an offload folder", None, 0,
        concurrent=[on_disk(f, logits) for f, logits in runs],
        same_files=[(logits, solo[f]) for f, logits in runs], empty_dirs=[shared])
    return cases


# ---- checks ------------------------------------------------------------------

_digest_cache = {}


def digest(p):
    """SHA-256 of a file, recomputed whenever its inode, size, mtime or ctime
    changed (any write changes ctime), so unchanged large inputs are hashed once."""
    st = os.stat(p)
    key = (p, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _digest_cache:
        with open(p, "rb") as fh:
            _digest_cache[key] = hashlib.sha256(fh.read()).hexdigest()
    return _digest_cache[key]


def snapshot(top):
    """SHA-256 of every regular file under `top` except the outputs folder."""
    digests = {}
    for folder, dirs, files in os.walk(top):
        if os.path.abspath(folder).startswith(path("out")):
            continue
        for f in files:
            p = os.path.join(folder, f)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            digests[p] = digest(p)
    return digests


def temporaries(top):
    found = []
    for folder, _, files in os.walk(top):
        for f in files:
            if ".tmp" in f:
                found.append(os.path.join(folder, f))
    return found


def run_case(case):
    if case.concurrent:
        procs = [subprocess.Popen([STOWAGE] + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for argv in case.concurrent]
        outputs = [p.communicate(timeout=TIMEOUT) for p in procs]
        codes = [p.returncode for p in procs]
        rc = next((c for c in codes if c != case.rc), case.rc)
        return rc, b"".join(err for _, err in outputs), b"".join(out for out, _ in outputs)
    argv = [STOWAGE] + case.argv
    if case.interrupt is not None:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        out_dir = os.path.dirname(case.argv[-1])
        deadline = time.time() + TIMEOUT
        while time.time() < deadline and proc.poll() is None:
            if any(".tmp-" in f for f in os.listdir(out_dir)):
                break
            time.sleep(0.002)
        proc.send_signal(case.interrupt)
        _, err = proc.communicate(timeout=TIMEOUT)
        return proc.returncode, err, b""
    if case.pipe_closed:
        r, w = os.pipe()
        os.close(r)
        proc = subprocess.run(argv, stdout=w, stderr=subprocess.PIPE, timeout=TIMEOUT)
        os.close(w)
        return proc.returncode, proc.stderr, b""
    stdout = open(case.stdout_to, "wb") if case.stdout_to else subprocess.PIPE
    try:
        proc = subprocess.run(argv, stdout=stdout, stderr=subprocess.PIPE, timeout=TIMEOUT)
    finally:
        if case.stdout_to:
            stdout.close()
    return proc.returncode, proc.stderr, proc.stdout or b""


def write_junit(results):
    """One JUnit test case per robustness case, where Bazel asks for a log
    ($XML_OUTPUT_FILE), so CI's count (tools/count_tests.py) sees each."""
    out = os.environ.get("XML_OUTPUT_FILE")
    if not out:
        return
    import xml.etree.ElementTree as ET
    failed = sum(1 for _, _, problems in results if problems)
    suites = ET.Element("testsuites")
    suite = ET.SubElement(suites, "testsuite", name="robustness", tests=str(len(results)),
                          failures=str(failed), errors="0")
    for name, seconds, problems in results:
        case = ET.SubElement(suite, "testcase", classname="robustness",
                             name=name.encode("unicode_escape").decode(), time="%.3f" % seconds)
        if problems:
            ET.SubElement(case, "failure", message="; ".join(problems)[:2000])
    ET.ElementTree(suites).write(out, encoding="utf-8", xml_declaration=True)


def main():
    cases = build_cases()
    failures = []
    results = []
    start = time.time()
    for case in cases:
        before = snapshot(ROOT)
        problems = []
        case_start = time.time()
        try:
            rc, err, out = run_case(case)
        except subprocess.TimeoutExpired:
            rc, err, out, problems = None, b"", b"", ["timed out after %d s" % TIMEOUT]
        text = err.decode("utf-8", "replace")
        if rc is not None and rc != case.rc:
            problems.append("exit %s, expected %s" % (rc, case.rc))
        if rc is not None and rc < 0 and case.interrupt is None:
            problems.append("ended by signal %d" % -rc)
        for needle in case.needles:
            if needle not in text:
                problems.append("stderr lacks %r" % needle)
        for needle in case.out_needles:
            if needle.encode() not in out:
                problems.append("stdout lacks %r" % needle)
        if case.rc != 0 and case.interrupt is None and not text.strip():
            problems.append("no message")
        if "[boost." in text or "/usr/include" in text:
            problems.append("library source location in the message")
        if any(ord(c) < 32 and c not in "\n" for c in text):
            problems.append("raw control character in the message")
        if any(b < 32 and b not in b"\n\t" for b in out):
            problems.append("raw control character on standard output")
        after = snapshot(ROOT)
        changed = [p for p in before if before[p] != after.get(p)]
        if changed:
            problems.append("inputs changed: %s" % changed)
        left = temporaries(ROOT)
        if left:
            problems.append("temporary files left: %s" % left)
            for p in left:
                os.unlink(p)
        if case.interrupt is not None and os.path.exists(case.argv[-1]):
            problems.append("an interrupted run left its output")
        for f, reference in case.same_files:
            if not (os.path.isfile(f) and os.path.isfile(reference)):
                problems.append("expected %s and %s, found %s" % (
                    f, reference, [p for p in (f, reference) if os.path.isfile(p)]))
            elif digest(f) != digest(reference):
                problems.append("%s differs from %s (the run alone)" % (f, reference))
        for folder in case.empty_dirs:
            if os.listdir(folder):
                problems.append("files left in %s: %s" % (folder, sorted(os.listdir(folder))[:5]))
        status = "ok" if not problems else "FAIL"
        print("%-4s %-60s exit %-4s %.2f s" % (status, case.name.encode("unicode_escape").decode()[:60],
                                               rc, time.time() - case_start))
        if problems:
            failures.append((case, problems, text))
        results.append((case.name, time.time() - case_start, problems))
    print("\n%d cases, %d failed, %.1f s" % (len(cases), len(failures), time.time() - start))
    write_junit(results)
    for case, problems, text in failures:
        print("\nFAIL %s\n  argv: %r\n  %s\n  stderr: %s" % (
            case.name, case.argv or case.concurrent, "\n  ".join(problems), text.strip()[:600]))
    shutil.rmtree(ROOT, ignore_errors=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
