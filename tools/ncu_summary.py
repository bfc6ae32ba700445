#!/usr/bin/env python3
"""Per-kernel totals of an `ncu --csv --page raw` file: for each kernel name (templates cut) and
grid, the launches, the summed duration, the DRAM bytes read, and the rate those bytes moved at
over the kernel's duration; then the totals. With --per N, sums are divided by N (the
decode steps the profiled launches span), so they read as a step's figures.

  python3 tools/ncu_summary.py ncu.csv [--per STEPS] [--top 30]
"""
import argparse
import collections
import csv
import re
import sys


def number(text):
    try:
        return float(text.replace(",", ""))
    except (ValueError, AttributeError):
        return None


def short_name(name):
    name = name.replace("(anonymous namespace)::", "").replace("unnamed>::", "")
    name = re.sub(r"\(.*", "", name)  # arguments
    depth, out = 0, []
    for ch in name:  # template arguments
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out).replace("void ", "").strip()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv")
    parser.add_argument("--per", type=float, default=1.0)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    with open(args.csv, newline="") as f:
        lines = [line for line in f if line.startswith('"')]  # ncu's own messages dropped
    rows = list(csv.DictReader(lines))
    if not rows:
        sys.exit(f"{args.csv}: no ncu rows")
    units = rows[0]
    rows = [r for r in rows[1:] if r.get("Kernel Name")]
    scale = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "nsecond": 1e-9, "usecond": 1e-6, "msecond": 1e-3, "second": 1.0,
             "byte": 1.0, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9}

    def value(row, metric):
        v = number(row.get(metric, ""))
        return None if v is None else v * scale.get(units.get(metric, ""), 1.0)

    totals = collections.OrderedDict()
    for r in rows:
        # One line per kernel and grid: the same GEMV kernel at each projection's size.
        name = f'{short_name(r["Kernel Name"])} {r.get("launch__grid_size", "")}'
        t = totals.setdefault(name, {"n": 0, "s": 0.0, "read": 0.0, "write": 0.0})
        t["n"] += 1
        t["s"] += value(r, "gpu__time_duration.sum") or 0.0
        t["read"] += value(r, "dram__bytes_read.sum") or 0.0
        t["write"] += value(r, "dram__bytes_write.sum") or 0.0
    all_s = sum(t["s"] for t in totals.values())
    all_read = sum(t["read"] for t in totals.values())
    print(f"{len(rows)} launches, per {args.per:g}: {all_s / args.per * 1e6:.1f} us, "
          f"{all_read / args.per / 1e9:.3f} GB read, {all_read / all_s / 1e9:.0f} GB/s over the "
          "kernels' time")
    print(f"{'kernel and grid':56} {'launches':>8} {'us':>9} {'us/launch':>9} {'GB read':>8} {'GB/s':>7}")
    ordered = sorted(totals.items(), key=lambda kv: -kv[1]["s"])[: args.top]
    for name, t in ordered:
        rate = t["read"] / t["s"] / 1e9 if t["s"] > 0 else 0.0
        print(f"{name[-56:]:56} {t['n'] / args.per:8.1f} {t['s'] / args.per * 1e6:9.1f} "
              f"{t['s'] / t['n'] * 1e6:9.2f} {t['read'] / args.per / 1e9:8.3f} {rate:7.0f}")


if __name__ == "__main__":
    main()
