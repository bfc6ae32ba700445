#!/usr/bin/env bash
# Session 13, call B (warm after A; llama.cpp built under /tmp/stowage-llamacpp): the Mixtral-8x7B
# NF4-dq folder and its Q4_0 GGUF written side by side; (e) llama.cpp -ot exps=CPU; (d) stowage
# automatic under uniform and Zipf(1.0) routing.
set -u
RESULT=$OUT; W=/tmp/s13b; mkdir -p $W; T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
before() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
pack() { (cd $W && tar -cJf $RESULT/s13b.tar.xz .); }
[ -x gpu_pack/bin/_stowage ] || tar -xJf gpu_run/pack.tar.xz
pkill -f "cmake|ninja|convert_hf|make_synthetic" ; rm -rf /dev/shm/l8b /tmp/stowage-llamacpp/*.gguf /tmp/stowage-llamacpp/*.tmp
export MODEL=/dev/shm/mixtral-nf4dq OUT=$W/moe NEW=24 TRACES="uniform zipf:1.0" GGUF=/tmp/mixtral-q4_0.gguf
nvidia-smi --query-gpu=name --format=csv,noheader; free -g | head -2; df -h /dev/shm /tmp | tail -2
[ -f $MODEL/config.json ] || { timeout 330 bash bench/moe_gpu.sh prepare > $W/moe_prepare.log 2>&1 & }
P=$!
[ -f $GGUF ] || { timeout 330 bash bench/moe_gpu.sh e-build > $W/e_build.log 2>&1; echo "e-build exit $? at $(el) s"; tail -4 $W/e_build.log; }
wait $P; tail -3 $W/moe_prepare.log; echo "moe model at $(el) s"; pack
timeout 120 bash bench/moe_gpu.sh e 2>&1 | tail -3; echo "e at $(el) s"; pack
TRACES=zipf:1.0 timeout 100 bash bench/moe_gpu.sh d 2>&1 | grep -E "tok/s|exit"; echo "d zipf at $(el) s"; pack
before 480 && TRACES=uniform timeout 100 bash bench/moe_gpu.sh d 2>&1 | grep -E "tok/s|exit"; echo "d uniform at $(el) s"; pack
bash bench/moe_gpu.sh summary 2>&1 | tail -12
pack; ls -la $RESULT
