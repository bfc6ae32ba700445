#!/usr/bin/env python3
"""Prints the figures of a GPU call's folder: stowage bench/generate JSONs and llama-bench JSONs.

  tools/bench_summary.py FOLDER
"""
import glob, json, os, sys
w = sys.argv[1]
def g(d, *ks):
    return [d.get(k) for k in ks]
for f in sorted(glob.glob(os.path.join(w, '*.json'))):
    name = os.path.basename(f)[:-5]
    try:
        text = open(f).read().strip()
        if name.startswith('llama'):
            for t in json.loads(text):
                print(name, 'p', t['n_prompt'], 'n', t['n_gen'], 'tok/s', round(t['avg_ts'], 2))
            continue
        if name.startswith('trace'):
            continue
        if name.startswith('gen'):
            o = json.loads(text.splitlines()[-1]); h = o.get('host_compute', {})
            print(name, 'decode tok/s', o.get('decode_tokens_per_s'), 'busy', o.get('link_busy_share'),
                  'est', h.get('estimated_step_seconds'), 'hr', h.get('host_bytes_per_s_shared'),
                  'rounds', h.get('calibration_rounds'), 'host layers', len(h.get('decode_host_modules', [])),
                  'peak', o.get('peak_accelerator_bytes'))
            continue
        o = json.loads(text)
        print(name, 'link', o.get('link_bytes_per_s'))
        for r in o['runs']:
            h = r.get('host_compute', {}) if isinstance(r.get('host_compute'), dict) else {}
            print(' ', r['config'], r['phase'], r['batch'], 'tok/s', round(r['tokens_per_s'], 2),
                  'limit', r.get('link_limit_tokens_per_s') and round(r['link_limit_tokens_per_s'], 2),
                  'busy', r.get('link_busy_share') and round(r['link_busy_share'], 3),
                  'bound', r.get('prefill_bound_tokens_per_s') and round(r['prefill_bound_tokens_per_s'], 1),
                  'of bound', r.get('share_of_prefill_bound') and round(r['share_of_prefill_bound'], 3),
                  'peak', r.get('peak_accelerator_bytes'), 'stall_ms', round(r.get('stall_ms', 0)),
                  'host layers', len(h.get('decode_host_modules', [])),
                  'est', h.get('estimated_step_seconds'), 'sb', h.get('streamed_bytes'), 'hb', h.get('host_bytes'),
                  'link', h.get('link_bytes_per_s'), h.get('link_bytes_per_s_shared'),
                  'host', h.get('host_bytes_per_s'), h.get('host_bytes_per_s_shared'), h.get('host_rate'),
                  'rounds', h.get('calibration_rounds'))
            m = r.get('moe')
            if m:
                print('    moe', {k: m.get(k) for k in ('expert_compute', 'expert_cache_slots', 'hit_rate',
                      'prediction_accuracy', 'host_computed', 'host_computed_beside', 'split_by_rows', 'accelerator_step_seconds', 'host_step_seconds', 'split_step_seconds', 'split_host_bytes_per_s')})
    except Exception as e:
        print(name, 'unreadable:', e)
