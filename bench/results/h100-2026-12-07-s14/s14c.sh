#!/usr/bin/env bash
# Session 14, call C (fresh machine, no llama.cpp): Mixtral NF4-dq at 0=10GiB --cpu-moe 32, (d)
# automatic with the new pack (6cbf1b3: host experts on their own stream, experts split by rows)
# against the old (6d29148) under uniform and Zipf(1.0) routing; a generate --trace of (d).
set -u
RESULT=$OUT; W=/tmp/s14c; mkdir -p $W; T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
before() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
pack() { (cd $W && tar -cJf $RESULT/s14c.tar.xz .); }
[ -x gpu_pack/bin/_stowage ] || tar -xJf gpu_run/pack.tar.xz
mkdir -p /tmp/old && { [ -x /tmp/old/gpu_pack/bin/_stowage ] || tar -xJf gpu_run/pack_old.tar.xz -C /tmp/old; }
S=gpu_pack/bin/_stowage; OLD=/tmp/old/gpu_pack/bin/_stowage; M=/dev/shm/mixtral-nf4dq; R=bench/results/h100-2026-12-07-s14
nvidia-smi --query-gpu=name --format=csv,noheader
[ -f $M/config.json ] || timeout 60 python3 tools/make_synthetic_model.py --shape mixtral-8x7b --dtype nf4-dq $M > $W/moe_prepare.log 2>&1
echo "model at $(el) s"
D="--max-memory 0=10GiB --no-resident --batches 1 --prompt-tokens 16 --new-tokens 24 --cpu-moe 32 --json"
for t in uniform zipf:1.0; do
  for b in S OLD; do
    before 420 && timeout 75 ${!b} bench --model $M --routing-trace $t $D --expert-cache auto --expert-compute auto > $W/d_${t/:/}_$b.json 2> $W/d_${t/:/}_$b.err
    echo "d $t $b exit $? at $(el) s"; pack
  done
done
before 480 && timeout 50 $S generate --model $M --max-memory 0=10GiB --cpu-moe 32 --expert-cache auto --expert-compute auto --routing-trace uniform --prompt-ids 1,2,3,4,5,6,7,8 --max-new-tokens 16 --ignore-eos --json --trace $W/trace_d_uniform.json > $W/gen_d.json 2> $W/gen_d.err
echo "gen d exit $? at $(el) s"
python3 tools/bench_summary.py $W
pack; ls -la $RESULT
