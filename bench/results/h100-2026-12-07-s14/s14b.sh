#!/usr/bin/env bash
# Session 14, call B (warm after A: llama.cpp built, the Mixtral NF4-dq folder under /dev/shm;
# its Q4_0 GGUF written first): at 0=10GiB --cpu-moe 32, (e) llama.cpp -ot exps=CPU, then (d)
# automatic with the new pack (6cbf1b3: host experts on their own stream, experts split by rows)
# against the old (6d29148) under uniform and Zipf(1.0) routing, then (c) uniform with the new
# pack and a generate --trace of (d) uniform.
set -u
RESULT=$OUT; W=/tmp/s14b; mkdir -p $W; T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
before() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
pack() { (cd $W && tar -cJf $RESULT/s14b.tar.xz .); }
[ -x gpu_pack/bin/_stowage ] || tar -xJf gpu_run/pack.tar.xz
mkdir -p /tmp/old && { [ -x /tmp/old/gpu_pack/bin/_stowage ] || tar -xJf gpu_run/pack_old.tar.xz -C /tmp/old; }
S=gpu_pack/bin/_stowage; OLD=/tmp/old/gpu_pack/bin/_stowage; M=/dev/shm/mixtral-nf4dq; R=bench/results/h100-2026-12-07-s14
pkill -f "cmake|ninja|convert_hf|make_synthetic" ; ls /dev/shm /tmp | head -20
[ -f $M/config.json ] || timeout 60 python3 tools/make_synthetic_model.py --shape mixtral-8x7b --dtype nf4-dq $M > $W/moe_prepare.log 2>&1
LB=/tmp/stowage-llamacpp/build/bin/llama-bench
[ -f /tmp/mixtral-q4_0.gguf ] || timeout 150 python3 tools/make_synthetic_gguf.py --shape mixtral-8x7b --type q4_0 --llamacpp /tmp/stowage-llamacpp/src/llama.cpp --python python3 /tmp/mixtral-q4_0.gguf > $W/moe_gguf.log 2>&1
echo "mixtral gguf exit $? at $(el) s"; tail -2 $W/moe_gguf.log
[ -f /tmp/mixtral-q4_0.gguf ] && timeout 100 $LB -m /tmp/mixtral-q4_0.gguf -ngl 99 -ot exps=CPU -p 16 -n 24 -r 3 -t 16 -o json > $W/llama_e.json 2> $W/llama_e.err
echo "e exit $? at $(el) s"; pack
D="--max-memory 0=10GiB --no-resident --batches 1 --prompt-tokens 16 --new-tokens 24 --cpu-moe 32 --json"
for t in uniform zipf:1.0; do
  for b in S OLD; do
    before 400 && timeout 75 ${!b} bench --model $M --routing-trace $t $D --expert-cache auto --expert-compute auto > $W/d_${t/:/}_$b.json 2> $W/d_${t/:/}_$b.err
    echo "d $t $b exit $? at $(el) s"; pack
  done
done
before 450 && timeout 60 $S bench --model $M --routing-trace uniform $D --expert-compute host > $W/c_uniform.json 2> $W/c_uniform.err
echo "c exit $? at $(el) s"; pack
before 500 && timeout 50 $S generate --model $M --max-memory 0=10GiB --cpu-moe 32 --expert-cache auto --expert-compute auto --routing-trace uniform --prompt-ids 1,2,3,4,5,6,7,8 --max-new-tokens 16 --ignore-eos --json --trace $W/trace_d_uniform.json > $W/gen_d.json 2> $W/gen_d.err
echo "gen split exit $? at $(el) s"
python3 tools/bench_summary.py $W
pack; ls -la $RESULT
