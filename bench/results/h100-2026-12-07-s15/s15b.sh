#!/usr/bin/env bash
# Session 15, call B (the machine of call A, warm): 8B bf16 at 0=6GiB, 2048-token prompt,
# batches 1 and 32: --host-compute auto with the default 3 fetch slots (--prefetch 2), then
# llama-bench -ngl 12, then auto and off with 2 slots (--prefetch 1: one layer more resident).
set -u
RESULT=$OUT; W=/tmp/s15b; mkdir -p $W; T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
before() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
pack() { (cd $W && tar -cJf $RESULT/s15b.tar.xz .); }
[ -x gpu_pack/bin/_stowage ] || tar -xJf gpu_run/pack.tar.xz
S=gpu_pack/bin/_stowage; R=bench/results/h100-2026-12-07-s15
G=$(ls /tmp/stowage-llamacpp/*-f16.gguf 2>/dev/null | head -1); LB=/tmp/stowage-llamacpp/build/bin/llama-bench
B="--model /dev/shm/l8b --max-memory 0=6GiB --no-resident --prompt-tokens 2048 --new-tokens 32 --batches 1,32 --json"
timeout 110 $S bench $B --host-compute auto > $W/b_auto_p2.json 2> $W/b_auto_p2.err
echo "8b auto p2 exit $? at $(el) s"; pack
[ -n "$G" ] && timeout 50 $LB -m $G -ngl 12 -p 2048 -n 32 -r 1 -t 16 -o json > $W/llama_ngl12.json 2> $W/llama_ngl12.err
echo "llama ngl12 exit $? at $(el) s"; pack
before 330 && timeout 110 $S bench $B --host-compute auto --prefetch 1 > $W/b_auto_p1.json 2> $W/b_auto_p1.err
echo "8b auto p1 exit $? at $(el) s"; pack
before 450 && timeout 100 $S bench $B --host-compute off --prefetch 1 > $W/b_off_p1.json 2> $W/b_off_p1.err
echo "8b off p1 exit $? at $(el) s"
python3 tools/bench_summary.py $W
pack; ls -la $RESULT
