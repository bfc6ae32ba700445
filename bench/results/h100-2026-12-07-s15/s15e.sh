#!/usr/bin/env bash
# Session 15, call E (the machine of call D, warm, 6ec9ef4): llama.cpp built and the f16 GGUF
# written (compare_llamacpp.py prepare), then side by side: stowage bench --host-compute auto
# (2 slots, generate's default) and streaming alone (3 slots, bench's default) at 0=6GiB with
# a 2048-token prompt, and llama-bench -ngl 12 -p 2048 -n 32.
set -u
RESULT=$OUT; W=/tmp/s15e; mkdir -p $W; T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
pack() { (cd $W && tar -cJf $RESULT/s15e.tar.xz .); }
[ -x gpu_pack/bin/_stowage ] || tar -xJf gpu_run/pack.tar.xz
S=gpu_pack/bin/_stowage; M=/dev/shm/l8b
timeout 420 python3 bench/compare_llamacpp.py prepare --model $M > $W/prepare.log 2>&1
echo "prepare exit $? at $(el) s"; grep -v Writing $W/prepare.log | tail -2
G=$(ls /tmp/stowage-llamacpp/*-f16.gguf 2>/dev/null | head -1); LB=/tmp/stowage-llamacpp/build/bin/llama-bench
B="--model $M --max-memory 0=6GiB --no-resident --prompt-tokens 2048 --new-tokens 32 --json"
timeout 90 $S bench $B --batches 1,32 --host-compute auto --prefetch 1 > $W/b_auto_p1.json 2> $W/b_auto_p1.err
echo "auto p1 exit $? at $(el) s"; pack
[ -n "$G" ] && timeout 50 $LB -m $G -ngl 12 -p 2048 -n 32 -r 1 -t 16 -o json > $W/llama_ngl12.json 2> $W/llama_ngl12.err
echo "llama ngl12 exit $? at $(el) s"; pack
timeout 80 $S bench $B --batches 1,32 --host-compute off > $W/b_off_p2.json 2> $W/b_off_p2.err
echo "off p2 exit $? at $(el) s"
python3 tools/bench_summary.py $W
pack; ls -la $RESULT
