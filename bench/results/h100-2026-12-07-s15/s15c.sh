#!/usr/bin/env bash
# Session 15, call C (the machine of calls A and B, warm): the 8B bf16 shape resident, decode
# with CUDA graphs, beside llama-bench -ngl 99; then Mixtral NF4-dq at 0=10GiB --cpu-moe 32,
# batch 1: (d) automatic, uniform and Zipf(1.0) routes, and llama.cpp Q4_0 -ot exps=CPU (e).
set -u
RESULT=$OUT; W=/tmp/s15c; mkdir -p $W; T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
before() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
pack() { (cd $W && tar -cJf $RESULT/s15c.tar.xz .); }
[ -x gpu_pack/bin/_stowage ] || tar -xJf gpu_run/pack.tar.xz
S=gpu_pack/bin/_stowage; R=bench/results/h100-2026-12-07-s15; M=/dev/shm/mixtral-nf4dq
LB=/tmp/stowage-llamacpp/build/bin/llama-bench
G=$(ls /tmp/stowage-llamacpp/*-f16.gguf 2>/dev/null | head -1)
timeout 100 $S bench --model /dev/shm/l8b --prompt-tokens 16 --new-tokens 64 --batches 1 --cuda-graphs --json > $W/b_resident.json 2> $W/b_resident.err
echo "resident exit $? at $(el) s"; pack
[ -n "$G" ] && timeout 60 $LB -m $G -ngl 99 -p 16 -n 64 -r 3 -t 16 -o json > $W/llama_ngl99.json 2> $W/llama_ngl99.err
echo "llama ngl99 exit $? at $(el) s"; pack
[ -f $M/config.json ] || timeout 60 python3 tools/make_synthetic_model.py --shape mixtral-8x7b --dtype nf4-dq $M > $W/moe_prepare.log 2>&1
(timeout 150 python3 tools/make_synthetic_gguf.py --shape mixtral-8x7b --type q4_0 --llamacpp /tmp/stowage-llamacpp/src/llama.cpp --python python3 /tmp/mixtral-q4_0.gguf > $W/moe_gguf.log 2>&1; echo "gguf exit $?" >> $W/moe_gguf.log) &
Q=$!
D="--max-memory 0=10GiB --no-resident --batches 1 --prompt-tokens 16 --new-tokens 24 --cpu-moe 32 --json"
wait $Q; tail -1 $W/moe_gguf.log
for t in uniform zipf:1.0; do
  before 430 && timeout 75 $S bench --model $M --routing-trace $t $D --expert-cache auto --expert-compute auto > $W/d_${t/:/}.json 2> $W/d_${t/:/}.err
  echo "d $t exit $? at $(el) s"; pack
done
before 500 && [ -f /tmp/mixtral-q4_0.gguf ] && timeout 90 $LB -m /tmp/mixtral-q4_0.gguf -ngl 99 -ot exps=CPU -p 16 -n 24 -r 3 -t 16 -o json > $W/llama_e.json 2> $W/llama_e.err
echo "e exit $? at $(el) s"
python3 tools/bench_summary.py $W
pack; ls -la $RESULT
