#!/usr/bin/env python3
"""Summarizes a `stowage ... --trace` file (Chrome trace-event JSON).

For each track (accelerator x stream): busy time, span count, and the idle
gaps longer than --gap-ms, each with the spans on either side, so a reader
can see where a copy engine sat idle and what the compute was doing then.

  tools/trace_summary.py TRACE.json[.gz] [--from-ms A] [--to-ms B] [--gap-ms 0.5]
"""
import argparse
import gzip
import json
import sys
from collections import defaultdict


def load(path):
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'rt') as f:
        return json.load(f)['traceEvents']


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('trace')
    p.add_argument('--from-ms', type=float, default=None, help='first time shown (ms from the base)')
    p.add_argument('--to-ms', type=float, default=None, help='last time shown (ms from the base)')
    p.add_argument('--gap-ms', type=float, default=0.5, help='idle gaps shorter than this are not listed')
    p.add_argument('--max-gaps', type=int, default=40)
    a = p.parse_args()
    events = load(a.trace)
    names = {}
    spans = defaultdict(list)
    for e in events:
        if e.get('ph') == 'M' and e.get('name') == 'thread_name':
            names[(e['pid'], e['tid'])] = e['args']['name']
        elif e.get('ph') == 'X':
            start, end = e['ts'] / 1000.0, (e['ts'] + e['dur']) / 1000.0
            if a.from_ms is not None and end < a.from_ms:
                continue
            if a.to_ms is not None and start > a.to_ms:
                continue
            spans[(e['pid'], e['tid'])].append((start, end, e['name'], e.get('cat', '')))
    if not spans:
        sys.exit(f'{a.trace}: no spans in the window')
    first = min(s[0] for v in spans.values() for s in v)
    last = max(s[1] for v in spans.values() for s in v)
    print(f'window {first:.3f} .. {last:.3f} ms ({last - first:.3f} ms)')
    for key in sorted(spans):
        v = sorted(spans[key])
        track = names.get(key, f'tid {key[1]}')
        by_cat = defaultdict(float)
        for s in v:
            by_cat[s[3]] += s[1] - s[0]
        # Busy time is the union of the spans (stall spans overlap compute ones).
        busy, cur_s, cur_e = 0.0, None, None
        for s in v:
            if cur_e is None or s[0] > cur_e:
                if cur_e is not None:
                    busy += cur_e - cur_s
                cur_s, cur_e = s[0], s[1]
            else:
                cur_e = max(cur_e, s[1])
        busy += cur_e - cur_s
        cats = ', '.join(f'{c} {t:.3f} ms' for c, t in sorted(by_cat.items()))
        print(f'\n[{key[0]}:{track}] {len(v)} spans, busy {busy:.3f} ms of {last - first:.3f} '
              f'({busy / (last - first):.3f}); {cats}')
        gaps = []
        end, prev = None, None
        for s in v:
            if s[3] == 'stall':
                continue
            if end is not None and s[0] - end > a.gap_ms:
                gaps.append((end, s[0], prev, s[2]))
            if end is None or s[1] > end:
                end, prev = s[1], s[2]
        gaps_total = sum(g[1] - g[0] for g in gaps)
        print(f'  {len(gaps)} gaps > {a.gap_ms} ms, {gaps_total:.3f} ms in all')
        for g in gaps[:a.max_gaps]:
            print(f'  idle {g[0]:10.3f} .. {g[1]:10.3f} ({g[1] - g[0]:7.3f} ms) after "{g[2]}" before "{g[3]}"')
        stalls = [s for s in v if s[3] == 'stall']
        if stalls:
            print(f'  {len(stalls)} stalls, {sum(s[1] - s[0] for s in stalls):.3f} ms; longest:')
            for s in sorted(stalls, key=lambda s: s[0] - s[1])[:8]:
                print(f'    {s[0]:10.3f} {s[1] - s[0]:7.3f} ms {s[2]}')


if __name__ == '__main__':
    main()
