#!/usr/bin/env bash
# Session 11, call C (warm machine, after B): MoE (d) and (c) under uniform and Zipf(1.0); an 8B trace.
set -u
RESULT=$OUT; W=/tmp/s11c; mkdir -p $W; T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
before() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
pack() { (cd $W && tar -cJf $RESULT/s11c.tar.xz .); }
[ -x gpu_pack/bin/_stowage ] || tar -xJf gpu_run/pack.tar.xz
S=gpu_pack/bin/_stowage
timeout 40 $S generate --model /dev/shm/l8b --max-memory 0=6GiB --prompt-ids 1,2,3,4,5,6,7,8 --max-new-tokens 12 --ignore-eos --host-compute auto --json --trace $W/trace_auto.json > $W/gen_auto.json 2> $W/gen_auto.err
echo "gen exit $? at $(el) s"; rm -rf /dev/shm/l8b /tmp/stowage-llamacpp/*.gguf; pack
export MODEL=/dev/shm/mixtral-nf4dq OUT=$W/moe NEW=16 TRACES="uniform zipf:1.0"
timeout 120 bash bench/moe_gpu.sh prepare > $W/moe_prepare.log 2>&1; tail -2 $W/moe_prepare.log; echo "moe model at $(el) s"; pack
for l in d c; do
  before 250 && timeout 80 bash bench/moe_gpu.sh $l 2>&1 | grep -E "tok/s|exit"
  pack
done
bash bench/moe_gpu.sh summary 2>&1 | tail -12
pack; ls -la $RESULT
