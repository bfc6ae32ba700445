#!/usr/bin/env bash
# Session 13, call E (warm after D; llama.cpp built): the Mixtral NF4-dq folder and its Q4_0 GGUF;
# (e) llama.cpp -ot exps=CPU; (d) automatic under both routings; generate with --trace under (d)'s
# flags (router routing).
set -u
RESULT=$OUT; W=/tmp/s13e; mkdir -p $W; T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
before() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
pack() { (cd $W && tar -cJf $RESULT/s13e.tar.xz .); }
[ -x gpu_pack/bin/_stowage ] || tar -xJf gpu_run/pack.tar.xz
pkill -f "cmake|ninja|convert_hf|make_synthetic"; rm -rf /dev/shm/l8b /tmp/stowage-llamacpp/*.gguf
export MODEL=/dev/shm/mixtral-nf4dq OUT=$W/moe NEW=24 GGUF=/tmp/mixtral-q4_0.gguf
[ -f $MODEL/config.json ] || { timeout 330 bash bench/moe_gpu.sh prepare > $W/moe_prepare.log 2>&1 & }
P=$!
[ -f $GGUF ] || { timeout 330 bash bench/moe_gpu.sh e-build > $W/e_build.log 2>&1; echo "e-build exit $? at $(el) s"; }
wait $P; echo "moe model at $(el) s"; pack
timeout 120 bash bench/moe_gpu.sh e 2>&1 | tail -2; echo "e at $(el) s"; pack
for t in uniform zipf:1.0; do
  TRACES=$t timeout 100 bash bench/moe_gpu.sh d 2>&1 | grep -E "tok/s|exit"; echo "d $t at $(el) s"; pack
done
before 480 && timeout 60 gpu_pack/bin/_stowage generate --model $MODEL --max-memory 0=10GiB --cpu-moe 32 --expert-cache auto --expert-compute auto --prompt-ids 1,2,3,4,5,6,7,8 --max-new-tokens 12 --ignore-eos --json --trace $W/trace_moe_d.json > $W/gen_moe_d.json 2> $W/gen_moe_d.err
echo "gen moe exit $? at $(el) s"
TRACES="uniform zipf:1.0" bash bench/moe_gpu.sh summary 2>&1 | tail -10
pack; ls -la $RESULT
