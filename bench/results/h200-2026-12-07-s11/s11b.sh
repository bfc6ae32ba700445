#!/usr/bin/env bash
# Session 11, call B (one call): llama.cpp and stowage side by side on the 8B bf16 shape, same GPU
# memory (0=6GiB; llama.cpp -ngl 12, whose buffers fit 6 GiB) and resident.
set -u
RESULT=$OUT; W=/tmp/s11b; mkdir -p $W; T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
pack() { (cd $W && tar -cJf $RESULT/s11b.tar.xz .); }
[ -x gpu_pack/bin/_stowage ] || tar -xJf gpu_run/pack.tar.xz
S=gpu_pack/bin/_stowage
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee $W/gpu.txt
timeout 330 python3 bench/compare_llamacpp.py prepare --model /dev/shm/l8b > $W/prepare.log 2>&1
echo "prepare exit $? at $(el) s"; grep -v Writing $W/prepare.log | tail -3; pack
G=$(ls /tmp/stowage-llamacpp/*-f16.gguf 2>/dev/null | head -1); LB=/tmp/stowage-llamacpp/build/bin/llama-bench
timeout 100 $S bench --model /dev/shm/l8b --max-memory 0=6GiB --no-resident --prompt-tokens 64 --new-tokens 24 --batches 1 --host-compute auto --json > $W/budget_auto.json 2> $W/budget_auto.err
echo "stowage budget exit $? at $(el) s"; pack
[ -n "$G" ] && timeout 80 $LB -m $G -ngl 12 -p 0 -n 24 -r 1 -t 16 -o json -v > $W/llama_ngl12.json 2> $W/llama_ngl12.err
echo "llama ngl12 exit $? at $(el) s"; grep -i "buffer size" $W/llama_ngl12.err | head -6; pack
timeout 50 $S bench --model /dev/shm/l8b --prompt-tokens 16 --new-tokens 64 --batches 1 --cuda-graphs --json > $W/resident.json 2> $W/resident.err
echo "stowage resident exit $? at $(el) s"; pack
[ -n "$G" ] && [ $(( $(date +%s) - T0 )) -lt 540 ] && timeout 50 $LB -m $G -ngl 99 -p 0 -n 64 -r 2 -t 16 -o json > $W/llama_resident.json 2> $W/llama_resident.err
echo "llama resident exit $? at $(el) s"
python3 -c "
import json
for f in ['budget_auto','resident']:
  try:
    o=json.load(open('$W/'+f+'.json'))
    for r in o['runs']: print(f, r['config'], r['phase'], r.get('graphs'), round(r['tokens_per_s'],2), r.get('read_limit_tokens_per_s'), r.get('link_limit_tokens_per_s'), r.get('peak_accelerator_bytes'))
  except Exception as e: print(f, e)
for f in ['llama_ngl12','llama_resident']:
  try:
    for t in json.load(open('$W/'+f+'.json')): print(f, t['n_prompt'], t['n_gen'], t['avg_ts'])
  except Exception as e: print(f, e)"
pack; ls -la $RESULT
