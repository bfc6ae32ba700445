#!/usr/bin/env python3
"""Cross-check `stowage quantize` against bitsandbytes itself.

Quantizes random weights with `stowage quantize` (the CPU reference, or
kernels/ on CUDA) and with bitsandbytes (`bitsandbytes.functional`, on the CPU
through PyTorch, or on CUDA where torch sees a GPU), then compares the packed
4-bit codes, absmax, quant_map, nested state and the quant-state JSON byte for
byte, and int8 CB/SCB; it also loads our tensors back through bitsandbytes'
QuantState.from_dict and dequantizes them with bitsandbytes.

Known, documented differences (reported, each difference classified; any
other difference is a failure):
  * bitsandbytes' CUDA library is built with --use_fast_math, so its
    `1.0f / absmax` (4-bit) and `__fdividef(127, SCB)` (int8) use the
    approximate reciprocal MUFU.RCP; we (CPU and our CUDA kernels alike, so the
    two stay bit-identical) use the IEEE reciprocal. When the scaled value
    lands within an ulp of a decision threshold the code may differ by one
    step. Seen on an H100 (bitsandbytes 0.50.2): NF4 never; FP4 up to 38 of
    256,000 codes for bf16 inputs (their coarse ratios hit FP4's n/24
    thresholds exactly); int8 up to 26 of 256,000 codes by one.
  * bitsandbytes' CPU path (torch `bucketize` on float32 midpoints) and its
    CUDA kernel (the dQuantizeFP4 tree) disagree for FP4 in two corners; we
    follow the CUDA kernel (quant/quant_rules.h). A scaled value with
    |x| <= 0.0026 gets code 0 or 8 (+0.0 / -0.0) by the sign of x on CUDA and
    by the opposite rule on the CPU path (zero either way); scaled values
    within ~1e-6 of an FP4 threshold may land one code apart (the CUDA tree's
    literals are not the float32 midpoints).
  * bitsandbytes' CPU path divides the last partial block by its absmax where
    its CUDA kernel multiplies by the reciprocal; a code may differ there.
  * bitsandbytes' CPU quantize_blockwise (the nested absmax codes) picks codes
    through a lookup table, an approximation of the CUDA binary search we
    follow: a nested code may be one apart on the CPU.
  * nested_offset: torch's float32 mean versus our fixed-order double mean may
    differ in the last bit, which can move an absmax code by one.
  * int8 on the CPU: bitsandbytes computes round(A * (127 / SCB)), its CUDA
    kernel and FORMATS.md round(A * (127 * (1 / SCB))): codes may differ by
    one in rare elements.
Anything else is a failure. Prints one line per case and ends with
"N passed, N failed[, N skipped]"; exits 1 on a failure. Exits 0 with everything
skipped when torch or bitsandbytes cannot be imported (CI does not install
them).

Usage: python3 tests/python/bnb_crosscheck.py [--stowage bazel-bin/stowage] [--device auto|cuda|sim]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
    import bitsandbytes as bnb
    import bitsandbytes.functional as F
    from safetensors.torch import load_file, save_file
except Exception as exc:  # noqa: BLE001 - any import failure means "not available"
    print(f"bnb_crosscheck: skipped: cannot import torch/bitsandbytes/safetensors ({exc})")
    print("0 passed, 0 failed, 1 skipped")
    sys.exit(0)

SHAPES = [(96, 50), (33, 77), (64, 128), (7, 9), (256, 1000)]
DTYPES = [torch.float16, torch.bfloat16, torch.float32]
DTYPE_NAMES = {torch.float16: "f16", torch.bfloat16: "bf16", torch.float32: "f32"}
STORAGE = {"uint8": torch.uint8, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "float32": torch.float32}


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.notes = []

    def check(self, ok, label, detail=""):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        print(f"{'PASS' if ok else 'FAIL'} {label}{': ' + detail if detail else ''}")


def run_stowage(stowage, device, args):
    cmd = [stowage, "quantize", "--device", device] + args
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def u8(t):
    return t.contiguous().view(torch.uint8).reshape(-1)


def codes(packed_u8, n):
    hi = (packed_u8 >> 4).to(torch.int64)
    lo = (packed_u8 & 15).to(torch.int64)
    return torch.stack([hi, lo], dim=1).reshape(-1)[:n]


# FP4 decision thresholds of bitsandbytes' CUDA dQuantizeFP4 (which we follow)
# and the float32 midpoints its CPU path bucketizes on.
FP4_TREE = [0.00260417, 0.0859375, 0.20833333, 0.29166667, 0.4166667, 0.583333, 0.8333333]
NF4_TREE = [-0.8480964004993439, -0.6106329262256622, -0.4599952697753906, -0.33967943489551544,
            -0.23460740596055984, -0.13791173323988914, -0.045525018125772476, 0.03979014977812767,
            0.1202552504837513, 0.2035212516784668, 0.2920137718319893, 0.3893125355243683,
            0.5016634166240692, 0.6427869200706482, 0.8614784181118011]


def scaled_values(w, blocksize):
    """x * (1 / absmax) per element, float32, as the CUDA kernel computes it."""
    flat = w.reshape(-1).float()
    n = flat.numel()
    blocks = -(-n // blocksize)
    pad = torch.zeros(blocks * blocksize)
    pad[:n] = flat
    absmax = pad.reshape(blocks, blocksize).abs().max(dim=1).values
    scale = (1.0 / absmax).repeat_interleave(blocksize)[:n]
    return flat * scale


def in_corner(x, quant_type, cuda):
    """True where bitsandbytes' rules may pick another code than ours.

    cuda: bitsandbytes ran its CUDA kernel (built with --use_fast_math, so its
    1.0f / absmax is the approximate MUFU.RCP and x * scale may be an ulp off
    ours near a threshold). Else its CPU path (float32 midpoints, +-0 order).
    """
    if quant_type == "nf4":
        thresholds = torch.tensor(NF4_TREE)
        return ((x.unsqueeze(1) - thresholds).abs() <= 2.5e-7).any(dim=1)
    thresholds = torch.tensor(FP4_TREE)
    if not cuda:
        code = F.get_4bit_type("fp4", device="cpu")
        sorted_code = code.sort().values
        mids = ((sorted_code[:-1] + sorted_code[1:]) / 2).abs()
        thresholds = torch.cat([thresholds, mids])
    near = ((x.abs().unsqueeze(1) - thresholds).abs() <= 2.5e-7).any(dim=1)
    if cuda:
        return near
    # |x| <= 0.0026: CUDA sets the sign bit from x < 0 (code 8 is -0.0); the CPU
    # path's argsort puts its two zero codes the other way round (x in (0, 0.0026]
    # gets code 8). Both decode to zero.
    return near | (x.abs() <= 0.0026042)

def check_four_bit(res, stowage, device, weights, bnb_device, quant_type, blocksize, dq, storage,
                   tmp):
    inp = os.path.join(tmp, "in.safetensors")
    out = os.path.join(tmp, "out.safetensors")
    save_file(weights, inp)
    args = ["--method", quant_type, "--blocksize", str(blocksize), "--quant-storage", storage]
    if dq:
        args.append("--double-quant")
    run_stowage(stowage, device, args + [inp, out])
    ours = load_file(out)
    code_table = F.get_4bit_type(quant_type, device="cpu")
    for name, w in weights.items():
        p = name[: -len(".weight")]
        label = (f"{quant_type} bs={blocksize} dq={int(dq)} storage={storage} "
                 f"{DTYPE_NAMES[w.dtype]} {list(w.shape)}")
        packed, state = F.quantize_4bit(w.to(bnb_device), blocksize=blocksize,
                                        compress_statistics=dq, quant_type=quant_type,
                                        quant_storage=STORAGE[storage])
        theirs = {f"{p}.weight": packed.cpu()}
        for k, v in state.as_dict(packed=True).items():
            theirs[f"{p}.weight.{k}"] = v.cpu()
        our_keys = sorted(k for k in ours if k == f"{p}.weight" or k.startswith(f"{p}.weight."))
        res.check(our_keys == sorted(theirs), f"{label} keys", f"ours {our_keys} bnb {sorted(theirs)}")
        if our_keys != sorted(theirs):
            continue
        ow, tw = ours[f"{p}.weight"], theirs[f"{p}.weight"]
        res.check(ow.dtype == tw.dtype and list(ow.shape) == list(tw.shape),
                  f"{label} weight dtype/shape", f"ours {ow.dtype} {list(ow.shape)} bnb {tw.dtype} {list(tw.shape)}")
        n = w.numel()
        oc, tc = codes(u8(ow), n), codes(u8(tw), n)
        diff = (oc != tc).nonzero().flatten()
        # Every difference must sit in a documented corner: on CUDA, a scaled
        # value within a few ulp of a decision threshold (bitsandbytes' fast-math
        # reciprocal); on the CPU, also the FP4 +-0 and midpoint corners.
        scaled_all = scaled_values(w, blocksize)
        unexplained = diff[~in_corner(scaled_all[diff], quant_type, bnb_device == "cuda")]
        if len(unexplained):
            detail = (f"{len(unexplained)} unexplained differences at {unexplained[:4].tolist()} "
                      f"(scaled, IEEE {[f'{v:.9g}' for v in scaled_all[unexplained[:4]].tolist()]}, "
                      f"ours {oc[unexplained[:4]].tolist()} bnb {tc[unexplained[:4]].tolist()})")
        elif len(diff):
            detail = (f"{len(diff)} of {n} differ, each within a few ulp of a threshold"
                      f"{'' if bnb_device == 'cuda' else ' or an FP4 +-0 corner'} (e.g. scaled "
                      f"{[f'{v:.9g}' for v in scaled_all[diff[:3]].tolist()]} ours {oc[diff[:3]].tolist()} "
                      f"bnb {tc[diff[:3]].tolist()})")
        else:
            detail = "all equal"
        res.check(len(unexplained) == 0, f"{label} codes vs bitsandbytes {bnb_device.upper()}", detail)
        real = diff
        if not dq:
            oa, ta = ours[f"{p}.weight.absmax"], theirs[f"{p}.weight.absmax"]
            res.check(torch.equal(oa, ta), f"{label} absmax",
                      f"max |diff| {(oa - ta).abs().max().item() if oa.shape == ta.shape else 'shape'}")
        else:
            oj = json.loads(bytes(u8(ours[f"{p}.weight.quant_state.bitsandbytes__{quant_type}"]).tolist()))
            tj = json.loads(bytes(u8(theirs[f"{p}.weight.quant_state.bitsandbytes__{quant_type}"]).tolist()))
            off_o = np.float32(oj["nested_offset"])
            off_t = np.float32(tj["nested_offset"])
            ulps = abs(int(off_o.view(np.int32)) - int(off_t.view(np.int32)))
            res.check(ulps <= 1, f"{label} nested_offset", f"ours {off_o!r} bnb {off_t!r} ({ulps} ulp)")
            oa, ta = ours[f"{p}.weight.absmax"], theirs[f"{p}.weight.absmax"]
            na, nt = ours[f"{p}.weight.nested_absmax"], theirs[f"{p}.weight.nested_absmax"]
            ad = int((oa.to(torch.int32) - ta.to(torch.int32)).abs().max().item())
            if ulps == 0 and bnb_device == "cuda":
                res.check(torch.equal(oa, ta) and torch.equal(na, nt), f"{label} absmax codes + nested_absmax",
                          f"max code diff {ad}")
            elif ulps == 0:
                # bitsandbytes' CPU quantize_blockwise picks 8-bit codes through a
                # lookup table (csrc/cpu_ops.cpp), an approximation of the CUDA
                # binary search we follow: at most one code apart.
                nd = int((oa != ta).sum())
                res.check(ad <= 1 and torch.equal(na, nt), f"{label} absmax codes + nested_absmax",
                          f"{nd} of {oa.numel()} codes one apart (bitsandbytes CPU lookup table)" if nd else "equal")
            else:
                tol = 2 * float(np.spacing(np.abs(off_o)))  # the offset's last bit moves max |absmax - offset|
                res.check(ad <= 1 and bool(((na - nt).abs() <= tol).all()), f"{label} absmax codes + nested_absmax",
                          f"offset differs by {ulps} ulp; max code diff {ad}")
            res.check(torch.equal(ours[f"{p}.weight.nested_quant_map"], theirs[f"{p}.weight.nested_quant_map"]),
                      f"{label} nested_quant_map")
        res.check(torch.equal(u8(ours[f"{p}.weight.quant_map"]), u8(theirs[f"{p}.weight.quant_map"])),
                  f"{label} quant_map bytes")
        ojs = bytes(u8(ours[f"{p}.weight.quant_state.bitsandbytes__{quant_type}"]).tolist()).decode()
        tjs = bytes(u8(theirs[f"{p}.weight.quant_state.bitsandbytes__{quant_type}"]).tolist()).decode()
        if dq:
            # Same text apart from the offset digits.
            strip = lambda s: s[: s.index('"nested_offset"')]
            res.check(strip(ojs) == strip(tjs), f"{label} quant_state JSON", f"ours {ojs} bnb {tjs}")
        else:
            res.check(ojs == tjs, f"{label} quant_state JSON", f"ours {ojs} bnb {tjs}")
        # What we write, bitsandbytes loads and dequantizes.
        qs = F.QuantState.from_dict({k[len(p) + 8:]: v.to(bnb_device) for k, v in ours.items()
                                     if k.startswith(f"{p}.weight.")}, device=torch.device(bnb_device))
        ours_dq = F.dequantize_4bit(ours[f"{p}.weight"].to(bnb_device), qs).cpu()
        theirs_dq = F.dequantize_4bit(packed, state).cpu()
        err = (ours_dq.float() - w.float()).abs().mean().item()
        res.check(ours_dq.shape == w.shape and ours_dq.dtype == w.dtype,
                  f"{label} loads in bitsandbytes", f"mean |error| {err:.4f}")
        if not len(real) and not dq:
            res.check(torch.equal(ours_dq, theirs_dq), f"{label} bnb dequantizes ours == its own")


def check_int8(res, stowage, device, weights, bnb_device, tmp):
    inp = os.path.join(tmp, "in.safetensors")
    out = os.path.join(tmp, "out.safetensors")
    save_file(weights, inp)
    run_stowage(stowage, device, ["--method", "int8", inp, out])
    ours = load_file(out)
    for name, w in weights.items():
        p = name[: -len(".weight")]
        label = f"int8 {DTYPE_NAMES[w.dtype]} {list(w.shape)}"
        cb, scb, _ = F.int8_vectorwise_quant(w.to(bnb_device, torch.float16))
        cb, scb = cb.cpu(), scb.cpu()
        res.check(torch.equal(ours[f"{p}.SCB"], scb), f"{label} SCB")
        d = (ours[f"{p}.weight"].to(torch.int32) - cb.to(torch.int32)).abs()
        res.check(ours[f"{p}.weight"].dtype == torch.int8 and int(d.max()) <= 1,
                  f"{label} CB", f"{int((d > 0).sum())} of {d.numel()} differ by 1 "
                  f"({'CPU round(A * (127 / SCB)) vs reciprocal first' if bnb_device == 'cpu' else 'CUDA'})")
        wf = ours[f"{p}.weight_format"]
        res.check(wf.dtype == torch.uint8 and wf.dim() == 0 and int(wf) == 0, f"{label} weight_format")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stowage", default=os.environ.get("STOWAGE_BIN", "bazel-bin/stowage"))
    ap.add_argument("--device", default="sim", help="stowage's --device (sim = CPU reference)")
    ap.add_argument("--quick", action="store_true", help="fewer configurations")
    ap.add_argument("--only", choices=["nf4", "fp4", "int8"], help="one method only")
    a = ap.parse_args()
    if not os.path.exists(a.stowage):
        print(f"bnb_crosscheck: {a.stowage} not found (bazel build //:stowage)")
        print("0 passed, 1 failed")
        return 1
    bnb_device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"bitsandbytes {bnb.__version__}, torch {torch.__version__}, bitsandbytes on {bnb_device}, "
          f"stowage --device {a.device}")
    torch.manual_seed(0)
    res = Results()
    configs = [(qt, bs, dq, st) for qt in ("nf4", "fp4") for bs in (64, 128, 32, 4096)
               for dq in (False, True) for st in ("uint8", "bfloat16")]
    if a.quick:
        configs = [c for c in configs if c[1] in (64,)]
    if a.only:
        configs = [c for c in configs if c[0] == a.only]
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in DTYPES:
            weights = {f"layers.{i}.weight": torch.randn(*s, dtype=dtype) for i, s in enumerate(SHAPES)}
            # bitsandbytes' quant_storage view needs whole storage elements.
            for qt, bs, dq, st in configs:
                usable = {k: v for k, v in weights.items()
                          if ((v.numel() + 1) // 2) % STORAGE[st].itemsize == 0}
                check_four_bit(res, a.stowage, a.device, usable, bnb_device, qt, bs, dq, st, tmp)
            if a.only in (None, "int8"):
                check_int8(res, a.stowage, a.device, weights, bnb_device, tmp)
    print(f"{res.passed} passed, {res.failed} failed")
    return 1 if res.failed else 0


if __name__ == "__main__":
    sys.exit(main())
