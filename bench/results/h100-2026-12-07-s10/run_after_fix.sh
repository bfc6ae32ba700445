#!/usr/bin/env bash
set -u
RESULT=$OUT
W=/tmp/r2; mkdir -p $W
T0=$(date +%s)
tar -xJf gpu_run/pack.tar.xz
S=gpu_pack/bin/_stowage
python3 tools/make_synthetic_model.py --shape llama-3.1-8b --dtype bf16 /dev/shm/l8b > $W/mk.log 2>&1 &
MK=$!
STOWAGE_TEST_TIMEOUT=150 bash gpu_pack/run_tests.sh > $W/tests.log 2>&1; tail -2 $W/tests.log; grep "^FAIL" $W/tests.log
wait $MK; echo "8b written at $(( $(date +%s) - T0 )) s"
for mode in auto none; do
  if [ $mode = none ]; then hf=--no-host-compute; else hf="--host-compute auto"; fi
  timeout 120 $S generate --model /dev/shm/l8b --max-memory 0=6GiB --prompt-ids 1,2,3,4,5,6,7,8 --max-new-tokens 16 --ignore-eos $hf --json --trace $W/trace_$mode.json > $W/gen_$mode.json 2> $W/gen_$mode.err
  echo "exit $?"; tail -2 $W/gen_$mode.err
  python3 -c "
import json; o=json.load(open('$W/gen_$mode.json')); print({k:v for k,v in o.items() if not isinstance(v,(list,dict))})
h=o.get('host_compute',{}); print({k:v for k,v in h.items() if not isinstance(v,(list,dict))}); print(h.get('decode_host_modules'))"
done
echo "19 done at $(( $(date +%s) - T0 )) s"
rm -rf /dev/shm/l8b
export MODEL=/dev/shm/mixtral-nf4dq OUT=$W/moe NEW=32 TRACES=zipf:1.0
timeout 300 bash bench/moe_gpu.sh prepare > $W/moe_prepare.log 2>&1; tail -3 $W/moe_prepare.log
echo "moe written at $(( $(date +%s) - T0 )) s"
for l in s d; do
  [ $(( $(date +%s) - T0 )) -lt 500 ] && timeout 60 bash bench/moe_gpu.sh $l 2>&1 | tail -4
done
TRACES=zipf:1.0 bash bench/moe_gpu.sh summary 2>&1 | tail -8
cd $W && tar -cJf $RESULT/r2.tar.xz . 2>/dev/null; ls -la $RESULT
