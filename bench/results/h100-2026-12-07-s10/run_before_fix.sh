#!/usr/bin/env bash
set -u
lscpu | grep -E "Model name|^CPU\(s\)|Flags" | cut -c1-400 > $OUT/lscpu.txt
tar -xJf gpu_run/pack.tar.xz
S=gpu_pack/bin/_stowage
python3 tools/make_synthetic_model.py --shape llama-3.1-8b --dtype bf16 /dev/shm/l8b > $OUT/mk.log 2>&1 &
MK=$!
STOWAGE_TEST_TIMEOUT=240 bash gpu_pack/run_tests.sh > $OUT/tests.log 2>&1
tail -3 $OUT/tests.log
wait $MK; tail -2 $OUT/mk.log
for mode in auto none; do
  if [ $mode = none ]; then hf=--no-host-compute; else hf="--host-compute auto"; fi
  timeout 200 $S generate --model /dev/shm/l8b --max-memory 0=6GiB --prompt-ids 1,2,3,4,5,6,7,8 --max-new-tokens 16 --ignore-eos $hf --json --trace $OUT/trace_$mode.json > $OUT/gen_$mode.json 2> $OUT/gen_$mode.err
  echo "exit $?"; tail -3 $OUT/gen_$mode.err
  python3 -c "import json,sys; o=json.load(open('$OUT/gen_$mode.json')); print({k:v for k,v in o.items() if not isinstance(v,(list,dict))})"
done
cd $OUT && xz -T8 trace_*.json; ls -la
