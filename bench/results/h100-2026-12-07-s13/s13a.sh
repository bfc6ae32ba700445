#!/usr/bin/env bash
# Session 13, call A (fresh machine): CUDA tests (incl. the sleeping-wait stream test) beside the
# llama.cpp build + 8B bf16 folder + f16 GGUF; then, alone on the machine, at 0=6GiB:
# stowage bench --batches 1,32 --prompt-tokens 512 with --host-compute auto and off, llama-bench
# -ngl 12 (-p 512 -n 32), generate with a trace.
set -u
RESULT=$OUT; W=/tmp/s13a; mkdir -p $W; T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
before() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
pack() { (cd $W && tar -cJf $RESULT/s13a.tar.xz .); }
[ -x gpu_pack/bin/_stowage ] || tar -xJf gpu_run/pack.tar.xz
S=gpu_pack/bin/_stowage
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $W/gpu.txt; lscpu > $W/lscpu.txt
cat $W/gpu.txt; grep -E "^CPU\(s\)|Thread|Model name|L3" $W/lscpu.txt
setsid nohup timeout 480 python3 bench/compare_llamacpp.py prepare --model /dev/shm/l8b > $W/prepare.log 2>&1 &
P=$!
STOWAGE_TEST_TIMEOUT=200 bash gpu_pack/run_tests.sh > $W/tests.log 2>&1; tail -1 $W/tests.log; grep -E "^FAIL|FAILED" $W/tests.log | head
echo "tests at $(el) s"; pack
wait $P; echo "prepare exit $? at $(el) s"; grep -v Writing $W/prepare.log | tail -3; pack
pgrep -fa "cmake|ninja|convert_hf" | head -3
G=$(ls /tmp/stowage-llamacpp/*-f16.gguf 2>/dev/null | head -1); LB=/tmp/stowage-llamacpp/build/bin/llama-bench
for mode in auto off; do
  timeout 200 $S bench --model /dev/shm/l8b --max-memory 0=6GiB --no-resident --prompt-tokens 512 --new-tokens 32 --batches 1,32 --host-compute $mode --json > $W/b_$mode.json 2> $W/b_$mode.err
  echo "stowage bench $mode exit $? at $(el) s"; pack
done
[ -n "$G" ] && timeout 100 $LB -m $G -ngl 12 -p 512 -n 32 -r 1 -t 16 -o json > $W/llama_ngl12.json 2> $W/llama_ngl12.err
echo "llama ngl12 exit $? at $(el) s"; pack
before 520 && timeout 50 $S generate --model /dev/shm/l8b --max-memory 0=6GiB --prompt-ids 1,2,3,4,5,6,7,8 --max-new-tokens 24 --ignore-eos --host-compute auto --json --trace $W/trace_auto.json > $W/gen_auto.json 2> $W/gen_auto.err
echo "gen exit $? at $(el) s"
python3 tools/bench_summary.py $W
pack; ls -la $RESULT
