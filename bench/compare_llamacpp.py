#!/usr/bin/env python3
"""Side by side on one GPU host, same weights, same GPU memory: llama.cpp (built from source with
CUDA) against `stowage bench --model DIR` (issue 18, item 5).

Steps (each skips what is already done under --work, so calls on a machine that stays warm can
be chained; /tmp does not outlive the machine):
  build    llama.cpp from the tarball of tools/pack_llamacpp.sh (gpu_llamacpp/, carried):
           llama-bench, llama-quantize, llama-completion; CUDA for sm_90 where nvcc exists.
  prepare  build (in the background) while it writes the synthetic model folder when DIR has no
           config.json (tools/make_synthetic_model.py), converts it to GGUF f16 with llama.cpp's
           convert_hf_to_gguf.py (through a folder of links to DIR plus a tokenizer, so DIR
           itself is left as stowage reads it), then quantizes to Q4_0 (--q4_0).
  measure  the host's memory read rate (bench/host_read_rate.c, the threads llama.cpp uses);
           llama-bench -p P -n N at the -ngl whose GPU buffers (weights + KV + compute, from
           its own log) come closest to --budget without exceeding it, and at -ngl 99
           (resident), for f16 and Q4_0 where present; `stowage bench --model DIR --max-memory
           0=BUDGET --prompt-tokens P --new-tokens N --batches 1 --json` (resident and
           budgeted); the GPU memory each used (nvidia-smi, sampled every 100 ms, less the
           idle reading); one JSON with every figure and the ratios, to --out and stdout.
  all      prepare, then measure.

On the GPU host, from the repository root (gpu_llamacpp and gpu_pack carried):
  python3 bench/compare_llamacpp.py prepare --model /tmp/l8b --q4_0
  python3 bench/compare_llamacpp.py measure --model /tmp/l8b --stowage gpu_pack/bin/_stowage \\
      --budget 6GiB --out $OUT/compare_llamacpp.json
"""
import argparse
import concurrent.futures
import hashlib
import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
TARGETS = ["llama-bench", "llama-quantize", "llama-completion"]


def log(msg):
    print(f"[compare_llamacpp {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    log("+ " + " ".join(str(c) for c in cmd))
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


def parse_bytes(text):
    """A size as stowage's --max-memory reads it (core/memory_resource.cc parse_byte_size)."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", text)
    units = {"": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
             "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12, "k": 1 << 10, "m": 1 << 20,
             "g": 1 << 30, "t": 1 << 40}
    if not m or m.group(2).lower() not in units:
        raise SystemExit(f"--budget: expected a size such as 6GiB, found '{text}'")
    return int(float(m.group(1)) * units[m.group(2).lower()])


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# build


def cuda_compiler():
    found = shutil.which("nvcc")
    if found:
        return found
    for candidate in ["/usr/local/cuda/bin/nvcc"]:
        if os.path.exists(candidate):
            return candidate
    return None


def build_paths(work):
    return work / "src" / "llama.cpp", work / "build"


def build_stamp(args):
    tarball = pathlib.Path(args.llamacpp_tarball)
    if not tarball.exists():
        raise SystemExit(f"{tarball}: not found; run tools/pack_llamacpp.sh here and carry "
                         "gpu_llamacpp")
    nvcc = None if args.cpu_only else cuda_compiler()
    return {"tarball_sha256": sha256_file(tarball), "cuda": nvcc, "arch": args.cuda_arch}


def extract(args):
    """Unpacks the tarball unless this tarball's source is there already; True when a build is
    still needed. A build cut short (a call's time limit) resumes: ninja keeps what it made."""
    src, out = build_paths(pathlib.Path(args.work))
    want = build_stamp(args)
    done = out / "stowage-stamp.json"
    if done.exists() and json.loads(done.read_text()) == want and all(
            (out / "bin" / t).exists() for t in TARGETS):
        log(f"llama.cpp already built in {out}")
        return False
    unpacked = src.parent / "stowage-source.json"
    if not (unpacked.exists() and json.loads(unpacked.read_text()) == want):
        shutil.rmtree(src.parent, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        src.parent.mkdir(parents=True)
        run(["tar", "-xzf", args.llamacpp_tarball, "-C", src.parent])
        unpacked.write_text(json.dumps(want))
    return True


def compile_llamacpp(args):
    """CMake and the three targets (about 3 minutes on the GPU host's 16 cores)."""
    src, out = build_paths(pathlib.Path(args.work))
    want = build_stamp(args)
    cmake = ["cmake", "-S", src, "-B", out, "-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON",
             "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF",
             "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_OPENSSL=OFF", "-DBUILD_SHARED_LIBS=OFF"]
    if shutil.which("ninja"):
        cmake += ["-G", "Ninja"]
    if want["cuda"]:
        # NCCL off: one GPU, and no libnccl to find at run time.
        cmake += ["-DGGML_CUDA=ON", "-DGGML_CUDA_NCCL=OFF",
                  f"-DCMAKE_CUDA_COMPILER={want['cuda']}",
                  f"-DCMAKE_CUDA_ARCHITECTURES={args.cuda_arch}"]
    start = time.time()
    with open(pathlib.Path(args.work) / "build.log", "w") as build_log:
        run(cmake, stdout=build_log, stderr=subprocess.STDOUT)
        run(["cmake", "--build", out, "--target", *TARGETS, "-j", str(os.cpu_count())],
            stdout=build_log, stderr=subprocess.STDOUT)
    (out / "stowage-stamp.json").write_text(json.dumps(want))
    log(f"llama.cpp built in {time.time() - start:.0f} s (CUDA: {want['cuda']}); "
        f"log in {args.work}/build.log")


def build(args):
    pathlib.Path(args.work).mkdir(parents=True, exist_ok=True)
    if extract(args):
        compile_llamacpp(args)


# ---------------------------------------------------------------------------------------------
# prepare


def gguf_path(work, model, kind):
    """The GGUF of a model folder, named after its path: one work folder serves several."""
    resolved = pathlib.Path(model).resolve()
    tag = hashlib.sha256(str(resolved).encode()).hexdigest()[:8]
    return pathlib.Path(work) / f"{resolved.name}-{tag}-{kind}.gguf"


def converter_folder(work, model, tokenizer_dir):
    """A folder of links to the model's files plus a tokenizer (synthetic folders have none)."""
    folder = pathlib.Path(work) / "hf-for-converter"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for f in pathlib.Path(model).iterdir():
        (folder / f.name).symlink_to(f.resolve())
    for name in ["tokenizer.json", "tokenizer_config.json"]:
        if not (folder / name).exists():
            shutil.copy(tokenizer_dir / name, folder / name)
    return folder


def prepare(args):
    work = pathlib.Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model = pathlib.Path(args.model)
    timings = {}
    src, _ = build_paths(work)
    needs_build = extract(args)  # the converter is in the tarball too
    if args.synthetic_gguf:
        # Written directly (a 70B f16 GGUF would not fit the disk on the way to Q4_0).
        target = gguf_path(work, model, args.synthetic_gguf)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            built = pool.submit(compile_llamacpp, args) if needs_build else None
            try:
                if not target.exists():
                    start = time.time()
                    run([args.python, REPO / "tools" / "make_synthetic_gguf.py", "--shape",
                         args.shape, "--type", args.synthetic_gguf, "--llamacpp", src,
                         "--python", args.python, target])
                    timings[f"synthetic_gguf_{args.synthetic_gguf}_s"] = time.time() - start
            finally:
                if built:
                    built.result()
        (work / "prepare.json").write_text(json.dumps({"gguf": str(target), **timings}))
        log(f"prepared: {timings}")
        return
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        # The build uses every core, the folder writing and the conversion mostly the disk:
        # they overlap.
        built = pool.submit(compile_llamacpp, args) if needs_build else None
        try:
            if not (model / "config.json").exists():
                if model.exists() and all(re.fullmatch(r"model[-0-9of]*\.safetensors(\.tmp)?",
                                                       f.name) for f in model.iterdir()):
                    # A folder whose writing was cut short (config.json comes last).
                    shutil.rmtree(model)
                start = time.time()
                run([sys.executable, REPO / "tools" / "make_synthetic_model.py", "--shape",
                     args.shape, "--dtype", args.dtype, model])
                timings["synthetic_folder_s"] = time.time() - start
            f16 = gguf_path(work, model, "f16")
            if not f16.exists():
                folder = converter_folder(work, model, src / "stowage-tokenizer")
                start = time.time()
                tmp = f16.with_suffix(".tmp")
                run([args.python, src / "convert_hf_to_gguf.py", folder, "--outtype", "f16",
                     "--outfile", tmp])
                tmp.rename(f16)
                timings["convert_f16_s"] = time.time() - start
        finally:
            if built:
                built.result()
    if args.q4_0 and not gguf_path(work, model, "q4_0").exists():
        _, out = build_paths(work)
        start = time.time()
        tmp = gguf_path(work, model, "q4_0").with_suffix(".tmp")
        cmd = [out / "bin" / "llama-quantize"]
        if args.q4_head == "f16":
            # As the NF4 folders keep them in bf16.
            cmd += ["--output-tensor-type", "f16", "--token-embedding-type", "f16"]
        with open(work / "quantize.log", "w") as quantize_log:
            run(cmd + [gguf_path(work, model, "f16"), tmp, "Q4_0", str(os.cpu_count())],
                stdout=quantize_log, stderr=subprocess.STDOUT)
        tmp.rename(gguf_path(work, model, "q4_0"))
        timings["quantize_q4_0_s"] = time.time() - start
    (work / "prepare.json").write_text(json.dumps({"model": str(model), **timings}))
    log(f"prepared: {timings}")


# ---------------------------------------------------------------------------------------------
# measure

BUFFER_LINE = re.compile(r"(\S+)\s+(model|KV|compute|output|RS)\s+buffer size =\s+([0-9.]+) MiB")


def parse_buffers(text):
    """{'CUDA0 model': bytes, ...} from llama.cpp's log, the largest of each (a test each)."""
    out = {}
    for device, kind, mib in BUFFER_LINE.findall(text):
        key = f"{device} {kind}"
        out[key] = max(out.get(key, 0), int(float(mib) * (1 << 20)))
    return out


def gpu_buffer_bytes(buffers):
    """The accelerator's share: CUDA0 and the like, not the pinned host buffers (CUDA_Host)."""
    return sum(v for k, v in buffers.items()
               if re.match(r"(CUDA|ROCm|Vulkan|Metal)\d*\s", k) and "_Host" not in k)


class GpuMemorySampler:
    """Peak GPU memory in use (nvidia-smi, every 100 ms) less the reading before the run."""

    def __init__(self, gpu=0):
        self.gpu = gpu
        self.idle = self.peak = None

    def read(self):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used",
                                  "--format=csv,noheader,nounits", "-i", str(self.gpu)],
                                 capture_output=True, text=True, timeout=20)
            return int(out.stdout.split()[0]) << 20
        except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
            return None

    def __enter__(self):
        self.idle = self.read()
        if self.idle is None:
            return self
        self.proc = subprocess.Popen(["nvidia-smi", "--query-gpu=memory.used",
                                      "--format=csv,noheader,nounits", "-i", str(self.gpu),
                                      "-lms", "100"], stdout=subprocess.PIPE, text=True)
        self.peak = self.idle

        def pump():
            for line in self.proc.stdout:
                try:
                    self.peak = max(self.peak, int(line.strip()) << 20)
                except ValueError:
                    pass

        self.thread = threading.Thread(target=pump, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.idle is not None:
            self.proc.terminate()
            self.proc.wait()
            self.thread.join(5)

    def result(self):
        if self.idle is None:
            return {}
        return {"nvidia_smi_idle_bytes": self.idle, "nvidia_smi_peak_bytes": self.peak,
                "nvidia_smi_delta_bytes": self.peak - self.idle}


def llama_bench(args, gguf, ngl, prompt_tokens, new_tokens, repetitions, warmup=True, extra=()):
    _, out = build_paths(pathlib.Path(args.work))
    cmd = [out / "bin" / "llama-bench", "-m", gguf, "-p", prompt_tokens, "-n", new_tokens,
           "-ngl", ngl, "-t", args.threads, "-r", repetitions, "-o", "json", "-v"]
    if not warmup:
        cmd.append("--no-warmup")
    cmd = [str(c) for c in cmd + list(extra)]
    log("+ " + " ".join(cmd))
    with GpuMemorySampler() as sampler:
        start = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.time() - start
    if proc.returncode < 0 and "--repack" not in cmd:
        # Seen on a CPU with AMX (Q4_0 weights repacked for it crashed on a VM that lists AMX):
        # the run again without repacking the CPU-resident weights, said in the result.
        log(f"llama-bench died of signal {-proc.returncode}; again with --repack 0")
        result = llama_bench(args, gguf, ngl, prompt_tokens, new_tokens, repetitions, warmup,
                             extra=["--repack", "0"])
        result["repack_fallback"] = f"signal {-proc.returncode} with repacking on"
        return result
    if proc.returncode != 0:
        raise RuntimeError(f"llama-bench failed ({proc.returncode}): {proc.stderr[-3000:]}")
    tests = json.loads(proc.stdout)
    buffers = parse_buffers(proc.stderr)
    result = {"ngl": ngl, "command": " ".join(cmd), "wall_s": wall, "buffers": buffers,
              "gpu_buffer_bytes": gpu_buffer_bytes(buffers), **sampler.result(),
              "buffer_log": sorted({line.strip() for line in proc.stderr.splitlines()
                                    if "buffer size" in line})}
    offloaded = re.search(r"offloaded (\d+)/(\d+) layers to GPU", proc.stderr)
    if offloaded:
        result["offloaded_layers"] = f"{offloaded.group(1)}/{offloaded.group(2)}"
    for t in tests:
        phase = "prefill" if t["n_prompt"] > 0 else "decode"
        result[f"{phase}_tokens_per_s"] = t["avg_ts"]
        result[f"{phase}_tokens_per_s_stddev"] = t["stddev_ts"]
        result[f"{phase}_samples_tokens_per_s"] = t["samples_ts"]
        for key in ["build_commit", "build_number", "cpu_info", "gpu_info", "backends",
                    "model_type", "model_size", "n_threads", "n_batch", "n_ubatch",
                    "flash_attn", "type_k", "type_v"]:
            result.setdefault(key, t.get(key))
    return result


def gguf_reader(work, gguf):
    """gguf-py's reader of the carried llama.cpp copy (the converter's own)."""
    src, _ = build_paths(pathlib.Path(work))
    if str(src / "gguf-py") not in sys.path:
        sys.path.insert(0, str(src / "gguf-py"))
    import gguf as gguf_py  # noqa: E402

    return gguf_py.GGUFReader(str(gguf))


def gguf_tensor_bytes(work, gguf):
    """{'blk.N': bytes, 'output': bytes, 'token_embd': bytes, ...} from the GGUF's tensor table."""
    reader = gguf_reader(work, gguf)
    groups = {}
    for t in reader.tensors:
        m = re.match(r"(blk\.\d+)\.", t.name)
        key = m.group(1) if m else t.name.split(".")[0]
        groups[key] = groups.get(key, 0) + int(t.n_bytes)
    return groups


def gpu_layers(n_layers, ngl):
    """The blocks and whether the output layer llama.cpp puts on the GPU for -ngl: the output
    layer counts as one of the -ngl layers and goes first (llama-model.cpp: i_gpu_start =
    n_layer + 1 - ngl), then the last ngl - 1 blocks."""
    first = max(0, n_layers + 1 - ngl)
    return list(range(first, n_layers)), ngl >= 1


def gpu_weight_bytes(tensors, n_layers, ngl):
    blocks, output = gpu_layers(n_layers, ngl)
    total = sum(tensors[f"blk.{i}"] for i in blocks)
    if output:
        total += tensors.get("output", 0) + tensors.get("output_norm", 0)
    return total


def at_budget(args, gguf, tensors, n_layers, budget):
    """llama-bench at the largest -ngl whose GPU buffers (llama.cpp's own log) fit the budget.

    The weights per -ngl come from the GGUF's tensor table; a probe (one prefill, no warm-up)
    gives the KV bytes per block and the compute buffer. The chosen -ngl is then run in full
    and stepped down while its logged buffers exceed the budget.
    """
    probe_ngl = 2
    while (probe_ngl < n_layers + 1 and
           gpu_weight_bytes(tensors, n_layers, probe_ngl + 1) < 0.6 * budget):
        probe_ngl += 1
    probe = llama_bench(args, gguf, probe_ngl, args.prompt_tokens, 0, 1, warmup=False)
    if probe["gpu_buffer_bytes"] == 0 and not args.cpu_only:
        # Without them the -ngl chosen would be every layer: a resident run taken for a
        # budgeted one.
        raise RuntimeError("no GPU buffer found in llama.cpp's log at -ngl "
                           f"{probe_ngl}: {probe['buffer_log']}")
    blocks, _ = gpu_layers(n_layers, probe_ngl)
    kv_per_block = probe["buffers"].get("CUDA0 KV", 0) / max(1, len(blocks))
    model = probe["buffers"].get("CUDA0 model", 0)
    compute = probe["gpu_buffer_bytes"] - model - kv_per_block * len(blocks)

    def predicted(ngl):
        return (gpu_weight_bytes(tensors, n_layers, ngl) +
                kv_per_block * len(gpu_layers(n_layers, ngl)[0]) + compute)

    ngl = 0
    while ngl < n_layers + 1 and predicted(ngl + 1) <= budget:
        ngl += 1
    log(f"probe at -ngl {probe_ngl}: model {model / 2**20:.1f} MiB (GGUF table: "
        f"{gpu_weight_bytes(tensors, n_layers, probe_ngl) / 2**20:.1f}), KV "
        f"{kv_per_block / 2**20:.2f} MiB per block, compute {compute / 2**20:.1f} MiB; -ngl {ngl} "
        f"predicted {predicted(ngl) / 2**30:.3f} GiB for {budget / 2**30:.2f} GiB")
    while True:
        result = llama_bench(args, gguf, ngl, args.prompt_tokens, args.new_tokens,
                             args.repetitions)
        if result["gpu_buffer_bytes"] <= budget or ngl == 0:
            break
        ngl -= 1
    result["probe"] = {k: probe[k] for k in ["ngl", "buffers", "gpu_buffer_bytes"]}
    result["predicted_gpu_buffer_bytes"] = predicted(ngl)
    result["predicted_gpu_buffer_bytes_next_ngl"] = predicted(ngl + 1)
    result["budget_bytes"] = budget
    result["share_of_budget"] = result["gpu_buffer_bytes"] / budget
    return result


def cpu_side(result, tensors, n_layers, host_rate):
    """What llama.cpp's CPU reads per decoded token at this -ngl, and the rate that bounds."""
    blocks, output = gpu_layers(n_layers, result["ngl"])
    cpu_bytes = sum(tensors[f"blk.{i}"] for i in range(n_layers) if i not in blocks)
    if not output:
        cpu_bytes += tensors.get("output", 0) + tensors.get("output_norm", 0)
    result["gpu_blocks"] = f"{len(blocks)} of {n_layers} blocks" + (
        " and the output layer" if output else "")
    result["cpu_weight_bytes_per_token"] = cpu_bytes
    result["gpu_weight_bytes"] = gpu_weight_bytes(tensors, n_layers, result["ngl"])
    if host_rate and cpu_bytes:
        result["host_read_limit_tokens_per_s"] = host_rate / cpu_bytes


def host_read_rate(args):
    binary = pathlib.Path(args.work) / "host_read_rate"
    compiler = shutil.which("cc") or shutil.which("gcc")
    try:
        run([compiler, "-O3", "-march=native", "-fopenmp", "-o", binary,
             REPO / "bench" / "host_read_rate.c"])
        out = run([binary, args.host_read_gib, args.threads, 5], capture_output=True, text=True)
        return {**json.loads(out.stdout), "method": "bench/host_read_rate.c"}
    except (subprocess.CalledProcessError, OSError) as e:
        # No C compiler or OpenMP: torch's multithreaded sum over the same bytes instead.
        log(f"host_read_rate.c could not run ({e}); torch.sum instead")
        import torch

        torch.set_num_threads(args.threads)
        data = torch.ones(int(args.host_read_gib * (1 << 30)) // 8, dtype=torch.int64)
        best = 0.0
        for _ in range(5):
            start = time.perf_counter()
            data.sum()
            best = max(best, data.numel() * 8 / (time.perf_counter() - start))
        return {"host_read_bytes_per_s": best, "threads": args.threads,
                "buffer_bytes": data.numel() * 8, "method": "torch.sum (int64)"}


def stowage_bench(args):
    cmd = [args.stowage, "bench", "--model", args.model, "--max-memory", f"0={args.budget}",
           "--prompt-tokens", args.prompt_tokens, "--new-tokens", args.new_tokens, "--batches",
           "1", "--json", "--cuda-graphs"] + (["--no-resident"] if args.stowage_no_resident else [])
    cmd += shlex.split(args.stowage_args)
    cmd = [str(c) for c in cmd]
    log("+ " + " ".join(cmd))
    with GpuMemorySampler() as sampler:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr[-3000:], "command": " ".join(cmd)}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["command"] = " ".join(cmd)
    out.update(sampler.result())
    out["by_config"] = {}
    for r in out["runs"]:
        if r["batch"] == 1:
            key = "resident" if r["config"] == "resident" else "budget"
            phase = r["phase"] + ("+graph" if r.get("graphs") else "")
            out["by_config"].setdefault(key, {})[phase] = r
    return out


def host_info():
    info = {"cores": os.cpu_count()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        m = re.search(r"Model name:\s*(.+)", lscpu)
        info["cpu"] = m.group(1).strip() if m else None
    except OSError:
        pass
    try:
        info["gpu"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True).stdout.strip()
    except OSError:
        info["gpu"] = None
    return info


def ratio(a, b):
    return a / b if a and b else None


def block_count(work, gguf):
    reader = gguf_reader(work, gguf)
    arch = reader.fields["general.architecture"].contents()
    return int(reader.fields[f"{arch}.block_count"].contents())


def measure_llamacpp(args, work, budget, host_rate):
    out = {}
    for kind in args.formats.split(","):
        gguf = gguf_path(work, args.model, kind)
        if not kind or not gguf.exists():
            continue
        tensors = gguf_tensor_bytes(work, gguf)
        n_layers = block_count(work, gguf)
        entry = {"gguf": str(gguf), "gguf_bytes": gguf.stat().st_size, "blocks": n_layers}
        try:
            entry["budget"] = at_budget(args, gguf, tensors, n_layers, budget)
            cpu_side(entry["budget"], tensors, n_layers, host_rate)
        except (RuntimeError, json.JSONDecodeError) as e:
            entry["budget_error"] = str(e)
        if not args.no_resident:
            try:
                entry["resident"] = llama_bench(args, gguf, 99, args.prompt_tokens,
                                                args.new_tokens, args.repetitions)
            except (RuntimeError, json.JSONDecodeError) as e:
                entry["resident_error"] = str(e)
        out[kind] = entry
    return out


def measure(args):
    work = pathlib.Path(args.work)
    budget = parse_bytes(args.budget)
    result = {"model": args.model, "budget": args.budget, "budget_bytes": budget,
              "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens,
              "host": host_info(), "command": " ".join(sys.argv)}
    prepared = work / "prepare.json"
    if prepared.exists():
        result["prepare"] = json.loads(prepared.read_text())
    if args.llamacpp_from:
        # llama.cpp measured by an earlier call (the 70B shape: its GGUF and its NF4 folder do
        # not fit the disk together).
        earlier = json.loads(pathlib.Path(args.llamacpp_from).read_text())
        result["llamacpp"] = earlier["llamacpp"]
        result["host_read"] = earlier["host_read"]
        result["llamacpp_from"] = args.llamacpp_from
    else:
        result["host_read"] = host_read_rate(args)
        result["llamacpp"] = measure_llamacpp(args, work, budget,
                                              result["host_read"]["host_read_bytes_per_s"])
    if args.stowage and (pathlib.Path(args.model) / "config.json").exists():
        result["stowage"] = stowage_bench(args)
    elif args.stowage:
        result["stowage"] = {"skipped": f"{args.model} has no config.json"}

    # Ratios the issue asks for: stowage / llama.cpp at the same GPU memory (the f16 GGUF is
    # the bf16 folder's own weights; Q4_0 is compared with an NF4 folder) and resident against
    # resident.
    s = result.get("stowage", {}).get("by_config", {})
    ratios = {}
    for kind, entry in result["llamacpp"].items():
        for config in ["budget", "resident"]:
            for phase in ["prefill", "decode", "decode+graph"]:
                ours = s.get(config, {}).get(phase, {}).get("tokens_per_s")
                theirs = entry.get(config, {}).get(f"{phase.split('+')[0]}_tokens_per_s")
                name = phase.replace("+graph", "_graphs")
                ratios[f"{config}_{name}_stowage_over_llamacpp_{kind}"] = ratio(ours, theirs)
    result["ratios"] = ratios
    text = json.dumps(result, indent=1)
    if args.out:
        pathlib.Path(args.out).write_text(text + "\n")
    print(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["build", "prepare", "measure", "all"])
    parser.add_argument("--model", help="the Hugging Face folder (written if it lacks "
                        "config.json, by tools/make_synthetic_model.py)")
    parser.add_argument("--shape", default="llama-3.1-8b")
    parser.add_argument("--dtype", default="bf16")
    parser.add_argument("--work", default="/tmp/stowage-llamacpp",
                        help="build folder, GGUF files and state (kept between calls)")
    parser.add_argument("--llamacpp-tarball", default=str(REPO / "gpu_llamacpp" /
                                                          "llamacpp-src.tar.gz"))
    parser.add_argument("--python", default=sys.executable,
                        help="runs convert_hf_to_gguf.py (needs torch, transformers, numpy)")
    parser.add_argument("--cuda-arch", default="90")
    parser.add_argument("--cpu-only", action="store_true", help="build without CUDA")
    parser.add_argument("--q4_0", action="store_true", help="prepare: also a Q4_0 GGUF")
    parser.add_argument("--q4-head", choices=["f16", "default"], default="f16",
                        help="Q4_0's output and embedding tensors: f16 (as our NF4 folders) "
                        "or llama-quantize's default")
    parser.add_argument("--stowage", help="the stowage binary (e.g. gpu_pack/bin/_stowage); "
                        "measure skips stowage without it")
    parser.add_argument("--budget", default="6GiB")
    parser.add_argument("--prompt-tokens", type=int, default=2048)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--formats", default="f16,q4_0",
                        help="GGUF files to measure (comma-separated; empty: none)")
    parser.add_argument("--llamacpp-from", help="measure: llama.cpp's figures from this earlier "
                        "JSON instead of running it")
    parser.add_argument("--stowage-args", default="",
                        help="more flags for stowage bench (e.g. '--host-compute auto')")
    parser.add_argument("--stowage-no-resident", action="store_true",
                        help="stowage bench --no-resident")
    parser.add_argument("--synthetic-gguf", choices=["q4_0", "f16"],
                        help="prepare: write the GGUF of --shape directly with random weights "
                        "(tools/make_synthetic_gguf.py), no model folder and no conversion")
    parser.add_argument("--no-resident", action="store_true", help="skip llama.cpp -ngl 99")
    parser.add_argument("--host-read-gib", type=float, default=4.0)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    if args.step != "build" and not args.model:
        parser.error("--model is needed")
    if args.step == "build":
        build(args)
    if args.step in ("prepare", "all"):
        prepare(args)
    if args.step in ("measure", "all"):
        measure(args)


if __name__ == "__main__":
    main()
