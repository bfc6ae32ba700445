#!/usr/bin/env bash
# Session 14, call A (fresh machine): llama.cpp built (its binaries returned for later calls),
# the 8B bf16 folder with its f16 GGUF and the Mixtral NF4-dq folder written;
# meanwhile the packed CUDA tests and kernels_bench gemv32 (GPU-only timings). Then, alone:
# host_gemv_bench (huge vs 4 KiB pages), 8B bf16 at 0=6GiB with a 2048-token prompt and batches
# 1 and 32, --host-compute auto and off, then llama-bench -ngl 12 -p 2048 -n 32.
set -u
RESULT=$OUT; W=/tmp/s14a; mkdir -p $W; T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
before() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
pack() { (cd $W && tar -cJf $RESULT/s14a.tar.xz .); }
[ -x gpu_pack/bin/_stowage ] || tar -xJf gpu_run/pack.tar.xz
mkdir -p /tmp/old && { [ -x /tmp/old/gpu_pack/bin/_stowage ] || tar -xJf gpu_run/pack_old.tar.xz -C /tmp/old; }
S=gpu_pack/bin/_stowage; OLD=/tmp/old/gpu_pack/bin/_stowage; R=bench/results/h100-2026-12-07-s14
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $W/gpu.txt; lscpu > $W/lscpu.txt
cat $W/gpu.txt; grep -E "^CPU\(s\)|Model name" $W/lscpu.txt; free -g | head -2
(timeout 60 python3 tools/make_synthetic_model.py --shape mixtral-8x7b --dtype nf4-dq /dev/shm/mixtral-nf4dq > $W/moe_prepare.log 2>&1; echo "mixtral folder exit $?" >> $W/moe_prepare.log) &
setsid nohup timeout 420 python3 bench/compare_llamacpp.py prepare --model /dev/shm/l8b > $W/prepare.log 2>&1 &
P=$!
(. gpu_pack/env.sh; timeout 60 gpu_pack/bin/bench_kernels_bench gemv32 > $W/kernels_gemv32.txt 2>&1; echo "gemv32 exit $?"; cat $W/kernels_gemv32.txt | tail -8)
STOWAGE_TEST_TIMEOUT=150 timeout 250 bash gpu_pack/run_tests.sh > $W/tests.log 2>&1; tail -1 $W/tests.log; grep -E "^FAIL|FAILED" $W/tests.log | head
echo "tests at $(el) s"; pack
wait $P; echo "prepare exit $? at $(el) s"; grep -v Writing $W/prepare.log | tail -3
(cd /tmp/stowage-llamacpp && ls -la build/bin && tar -cf - src/stowage-source.json build/stowage-stamp.json build/bin/llama-bench build/bin/llama-quantize build/bin/llama-completion | xz -T16 -6 > $RESULT/llamacpp_built.tar.xz); ls -la $RESULT
cat $W/moe_prepare.log | tail -2
pack
(. gpu_pack/env.sh; timeout 60 gpu_pack/bin/bench_host_gemv_bench --threads 15 --pages both > $W/host_gemv.txt 2>&1; echo "host_gemv exit $? at $(el) s")
G=$(ls /tmp/stowage-llamacpp/*-f16.gguf 2>/dev/null | head -1); LB=/tmp/stowage-llamacpp/build/bin/llama-bench
for mode in auto off; do
  [ $mode = auto ] && L=400 || L=470
  before $L && timeout 110 $S bench --model /dev/shm/l8b --max-memory 0=6GiB --no-resident --prompt-tokens 2048 --new-tokens 32 --batches 1,32 --host-compute $mode --json > $W/b_$mode.json 2> $W/b_$mode.err
  echo "8b $mode exit $? at $(el) s"; pack
done
before 540 && [ -n "$G" ] && timeout 50 $LB -m $G -ngl 12 -p 2048 -n 32 -r 1 -t 16 -o json > $W/llama_ngl12.json 2> $W/llama_ngl12.err
echo "llama ngl12 exit $? at $(el) s"; pack
python3 tools/bench_summary.py $W
pack; ls -la $RESULT
