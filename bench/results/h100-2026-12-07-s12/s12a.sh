#!/usr/bin/env bash
# Session 12, call A: llama.cpp built and the 8B bf16 folder + f16 GGUF written (prepare) while the
# CUDA tests run; then, with nothing else running, stowage --host-compute auto (calibrated split)
# bench and generate at 0=6GiB beside llama.cpp -ngl 12 in the same call.
set -u
RESULT=$OUT; W=/tmp/s12a; mkdir -p $W; T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
before() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
pack() { (cd $W && tar -cJf $RESULT/s12a.tar.xz .); }
[ -x gpu_pack/bin/_stowage ] || tar -xJf gpu_run/pack.tar.xz
S=gpu_pack/bin/_stowage
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $W/gpu.txt; lscpu > $W/lscpu.txt
cat $W/gpu.txt; grep -E "^CPU\(s\)|Thread|Model name|L3" $W/lscpu.txt
timeout 330 python3 bench/compare_llamacpp.py prepare --model /dev/shm/l8b > $W/prepare.log 2>&1 &
P=$!
printf "kernels_transformer_ops_test\nmodels_transformer_test\nmodels_moe_test\nkernels_backend_test\n" > gpu_pack/tests.txt
STOWAGE_TEST_TIMEOUT=200 bash gpu_pack/run_tests.sh > $W/tests.log 2>&1; tail -1 $W/tests.log; grep "^FAIL" $W/tests.log
echo "tests at $(el) s"; pack
wait $P; echo "prepare exit $? at $(el) s"; grep -v Writing $W/prepare.log | tail -3; pack
G=$(ls /tmp/stowage-llamacpp/*-f16.gguf 2>/dev/null | head -1); LB=/tmp/stowage-llamacpp/build/bin/llama-bench
timeout 110 $S bench --model /dev/shm/l8b --max-memory 0=6GiB --no-resident --prompt-tokens 64 --new-tokens 32 --batches 1 --host-compute auto --json > $W/budget_auto.json 2> $W/budget_auto.err
echo "stowage bench auto exit $? at $(el) s"; pack
[ -n "$G" ] && timeout 80 $LB -m $G -ngl 12 -p 0 -n 24 -r 1 -t 16 -o json > $W/llama_ngl12.json 2> $W/llama_ngl12.err
echo "llama ngl12 exit $? at $(el) s"; pack
before 500 && timeout 80 $S generate --model /dev/shm/l8b --max-memory 0=6GiB --prompt-ids 1,2,3,4,5,6,7,8 --max-new-tokens 32 --ignore-eos --host-compute auto --json --trace $W/trace_auto.json > $W/gen_auto.json 2> $W/gen_auto.err
echo "gen exit $? at $(el) s"
python3 -c "
import json
for f in ['budget_auto']:
  try:
    o=json.load(open('$W/'+f+'.json'))
    for r in o['runs']:
      h=r.get('host_compute',{})
      print(f, r['config'], r['phase'], round(r['tokens_per_s'],2), 'link', r.get('link_limit_tokens_per_s'), 'peak', r.get('peak_accelerator_bytes'), 'est', h.get('estimated_step_seconds'), 'sb', h.get('streamed_bytes'), 'hb', h.get('host_bytes'), 'lr', h.get('link_bytes_per_s'), h.get('link_bytes_per_s_shared'), 'hr', h.get('host_bytes_per_s'), h.get('host_bytes_per_s_shared'), h.get('host_rate'), h.get('calibration_rounds'), len(h.get('decode_host_modules',[])))
  except Exception as e: print(f, e)
try:
  o=json.loads(open('$W/gen_auto.json').read().strip().splitlines()[-1]); h=o['host_compute']
  print('gen', o.get('decode_tokens_per_s'), 'est', h.get('estimated_step_seconds'), 'hr', h.get('host_bytes_per_s_shared'), h.get('calibration_rounds'), len(h.get('decode_host_modules',[])), 'peak', o.get('peak_accelerator_bytes'))
except Exception as e: print('gen', e)
try:
  for t in json.load(open('$W/llama_ngl12.json')): print('llama ngl12', t['n_prompt'], t['n_gen'], t['avg_ts'])
except Exception as e: print('llama', e)"
pack; ls -la $RESULT
