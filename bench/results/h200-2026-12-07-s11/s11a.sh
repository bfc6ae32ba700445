#!/usr/bin/env bash
# Session 11, call A: CUDA tests, 8B bf16 at 0=6GiB (host compute auto, streaming alone), resident
# graphs with and without PDL, host GEMV rates, MoE (d) (s) (c) under uniform and Zipf(1.0).
set -u
RESULT=$OUT; W=/tmp/s11a; mkdir -p $W; T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
before() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }  # true while fewer than $1 seconds have passed
pack() { (cd $W && tar -cJf $RESULT/s11a.tar.xz .); }
[ -x gpu_pack/bin/_stowage ] || tar -xJf gpu_run/pack.tar.xz
S=gpu_pack/bin/_stowage
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $W/gpu.txt; lscpu > $W/lscpu.txt
cat $W/gpu.txt; grep -E "^CPU\(s\)|Thread|Core|Model name|L3" $W/lscpu.txt
python3 tools/make_synthetic_model.py --shape llama-3.1-8b --dtype bf16 /dev/shm/l8b > $W/mk.log 2>&1 &
P=$!
printf "kernels_transformer_ops_test\nmodels_transformer_test\n" > gpu_pack/tests.txt
STOWAGE_TEST_TIMEOUT=100 bash gpu_pack/run_tests.sh > $W/tests.log 2>&1; tail -1 $W/tests.log; grep "^FAIL" $W/tests.log
echo "tests at $(el) s"; pack
wait $P; echo "8b at $(el) s"
timeout 100 $S bench --model /dev/shm/l8b --max-memory 0=6GiB --no-resident --prompt-tokens 64 --new-tokens 32 --batches 1 --host-compute auto --json > $W/budget_auto.json 2> $W/budget_auto.err
echo "budget auto exit $? at $(el) s"; pack
timeout 60 $S bench --model /dev/shm/l8b --prompt-tokens 16 --new-tokens 64 --batches 1 --cuda-graphs --json > $W/resident.json 2> $W/resident.err
echo "resident exit $? at $(el) s"
before 380 && STOWAGE_PDL=0 timeout 45 $S bench --model /dev/shm/l8b --prompt-tokens 16 --new-tokens 64 --batches 1 --cuda-graphs --json > $W/resident_nopdl.json 2> $W/resident_nopdl.err
echo "nopdl exit $? at $(el) s"; pack
python3 -c "
import json
for f in ['budget_auto','budget_stream','resident','resident_nopdl']:
  try:
    o=json.load(open('$W/'+f+'.json'))
    for r in o['runs']:
      h=r.get('host_compute',{})
      print(f, r['config'], r['phase'], r.get('graphs'), round(r['tokens_per_s'],2), 'read', r.get('read_limit_tokens_per_s'), 'link', r.get('link_limit_tokens_per_s'), 'peak', r.get('peak_accelerator_bytes'), 'est', h.get('estimated_step_seconds'), 'sb', h.get('streamed_bytes'), 'hb', h.get('host_bytes'), 'lr', h.get('link_bytes_per_s'), h.get('link_bytes_per_s_shared'), 'hr', h.get('host_bytes_per_s'), h.get('host_bytes_per_s_shared'))
  except Exception as e: print(f, e)
"
before 330 && timeout 40 gpu_pack/bin/bench_host_gemv_bench --first-threads 15 --threads 15 --samples 3 --gib 2 > $W/host_gemv_15.txt 2>&1
grep -E "nf4|bf16|int8" $W/host_gemv_15.txt | head -12; echo "gemv at $(el) s"; pack
before 360 && timeout 60 $S bench --model /dev/shm/l8b --max-memory 0=6GiB --no-resident --prompt-tokens 16 --new-tokens 24 --batches 1 --no-host-compute --json > $W/budget_stream.json 2> $W/budget_stream.err
echo "budget stream exit $? at $(el) s"; pack
pack; ls -la $RESULT
