#!/usr/bin/env bash
# Session 12, call E (fresh machine, ~6 minutes of device time left): the 8B bf16 folder written,
# then 0=6GiB batch-1 decode with --host-compute auto, one run each in this call: stowage at
# 9dea86d (host waits sleep), stowage at a6244cd (waits spin); the CUDA stream test of the
# sleeping waits; generate with a trace if time is left.
set -u
RESULT=$OUT; W=/tmp/s12e; mkdir -p $W; T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
before() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
pack() { (cd $W && tar -cJf $RESULT/s12e.tar.xz .); }
[ -x gpu_pack/bin/_stowage ] || tar -xJf gpu_run/pack.tar.xz
mkdir -p /tmp/old && [ -x /tmp/old/gpu_pack/bin/_stowage ] || tar -xJf gpu_run/pack_a6244cd.tar.xz -C /tmp/old
S=gpu_pack/bin/_stowage; OLD=/tmp/old/gpu_pack/bin/_stowage
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $W/gpu.txt; cat $W/gpu.txt
tar -xJf gpu_run/extra.tar.xz && timeout 30 gpu_extra/core_stream_test > $W/stream_test.log 2>&1; echo "stream_test exit $?"; grep -E "PASSED|FAILED|Sleeping" $W/stream_test.log | head -6; pack
timeout 150 python3 tools/make_synthetic_model.py --shape llama-3.1-8b --dtype bf16 /dev/shm/l8b > $W/mk.log 2>&1
echo "model exit $? at $(el) s"
B="bench --model /dev/shm/l8b --max-memory 0=6GiB --no-resident --prompt-tokens 64 --new-tokens 32 --batches 1 --host-compute auto --json"
timeout 90 $S $B > $W/new_auto.json 2> $W/new_auto.err; echo "new auto exit $? at $(el) s"; pack
timeout 90 $OLD $B > $W/old_auto.json 2> $W/old_auto.err; echo "old auto exit $? at $(el) s"; pack
python3 -c "
import json
for f in ['new_auto','old_auto']:
  try:
    o=json.load(open('$W/'+f+'.json'))
    for r in o['runs']:
      h=r.get('host_compute',{})
      if r['phase']=='decode': print(f, round(r['tokens_per_s'],2), 'peak', r.get('peak_accelerator_bytes'), 'est', h.get('estimated_step_seconds'), 'sb', h.get('streamed_bytes'), 'hb', h.get('host_bytes'), 'link', h.get('link_bytes_per_s'), h.get('link_bytes_per_s_shared'), 'host', h.get('host_bytes_per_s'), h.get('host_bytes_per_s_shared'), h.get('host_rate'), h.get('calibration_rounds'), len(h.get('decode_host_modules',[])))
  except Exception as e: print(f, e)"
before 300 && timeout 35 $S generate --model /dev/shm/l8b --max-memory 0=6GiB --prompt-ids 1,2,3,4,5,6,7,8 --max-new-tokens 24 --ignore-eos --host-compute auto --json --trace $W/trace_auto.json > $W/gen_auto.json 2> $W/gen_auto.err
echo "gen exit $? at $(el) s"
pack; ls -la $RESULT
