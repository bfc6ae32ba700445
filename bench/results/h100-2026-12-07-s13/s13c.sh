#!/usr/bin/env bash
# Session 13, call C (warm after B: the Mixtral folder on /dev/shm, the Q4_0 GGUF in /tmp): (c) host,
# (a) streamed, (b) cache + prediction under both routings, and whatever of (d) B did not run.
set -u
RESULT=$OUT; W=/tmp/s13b; mkdir -p $W; T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
before() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
pack() { (cd $W && tar -cJf $RESULT/s13c.tar.xz .); }
[ -x gpu_pack/bin/_stowage ] || tar -xJf gpu_run/pack.tar.xz
export MODEL=/dev/shm/mixtral-nf4dq OUT=$W/moe NEW=24 GGUF=/tmp/mixtral-q4_0.gguf
[ -f $MODEL/config.json ] || { timeout 330 bash bench/moe_gpu.sh prepare > $W/moe_prepare2.log 2>&1; }
[ -f $W/moe/d_uniform.json ] || { TRACES=uniform timeout 100 bash bench/moe_gpu.sh d 2>&1 | grep -E "tok/s|exit"; echo "d uniform at $(el) s"; }
for l in c a b; do
  for t in zipf:1.0 uniform; do
    before 520 && TRACES=$t timeout 90 bash bench/moe_gpu.sh $l 2>&1 | grep -E "tok/s|exit"; echo "$l $t at $(el) s"; pack
  done
done
TRACES="uniform zipf:1.0" bash bench/moe_gpu.sh summary 2>&1 | tail -14
pack; ls -la $RESULT
