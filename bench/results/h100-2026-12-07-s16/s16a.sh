#!/usr/bin/env bash
# Session 16, call A (fresh machine): resident decode. While llama.cpp builds and the 8B bf16
# folder and its f16 GGUF are written (compare_llamacpp.py prepare): the CUDA cases of the
# transformer ops and model tests (the fused RoPE/append/attention), and ncu over each kernel
# of stowage's resident decode (duration, DRAM bytes, grid, registers, occupancy). After the
# build, side by side: stowage bench resident with CUDA graphs, the binary before the fusion
# (153efe8) and after, alternated, beside llama-bench -ngl 99; then ncu over llama.cpp's decode.
set -u
RESULT=$OUT; W=/tmp/s16a; mkdir -p $W; T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
before() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
pack() { (cd $W && tar -cJf $RESULT/s16a.tar.xz .); }
[ -x gpu_pack/bin/_stowage ] || tar -xJf gpu_run/pack.tar.xz
mkdir -p /tmp/base && tar -xJf gpu_run/stowage_base.tar.xz -C /tmp/base
S=gpu_pack/bin/_stowage; SB=/tmp/base/gpu_pack/bin/_stowage; M=/dev/shm/l8b
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem --format=csv,noheader > $W/gpu.txt; cat $W/gpu.txt
setsid nohup timeout 400 python3 bench/compare_llamacpp.py prepare --model $M > $W/prepare.log 2>&1 &
P=$!
(. gpu_pack/env.sh; timeout 100 gpu_pack/bin/kernels_transformer_ops_test --gtest_filter='*Cuda*' > $W/ops_test.log 2>&1; echo "ops test exit $?"; tail -3 $W/ops_test.log
 timeout 100 gpu_pack/bin/models_transformer_test --gtest_filter='*Cuda*' > $W/model_test.log 2>&1; echo "model test exit $?"; tail -3 $W/model_test.log)
while [ ! -f $M/config.json ] && before 200; do sleep 2; done
echo "folder at $(el) s"
NCU="ncu --clock-control none --cache-control none"
MET=gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,launch__grid_size,launch__block_size,launch__registers_per_thread,sm__warps_active.avg.pct_of_peak_sustained_active,dram__throughput.avg.pct_of_peak_sustained_elapsed
G8="generate --model $M --prompt-ids 1,2,3,4 --max-new-tokens 8 --ignore-eos"
timeout 150 $NCU --metrics $MET --launch-skip 600 --launch-count 400 --csv --page raw $S $G8 > $W/ncu_stowage.csv 2> $W/ncu_stowage.err
echo "ncu stowage exit $? at $(el) s"; tail -2 $W/ncu_stowage.err; pack
wait $P; echo "prepare exit $? at $(el) s"; grep -v Writing $W/prepare.log | tail -2
G=$(ls /tmp/stowage-llamacpp/*-f16.gguf 2>/dev/null | head -1); LB=/tmp/stowage-llamacpp/build/bin/llama-bench
R="--model $M --prompt-tokens 16 --new-tokens 64 --batches 1 --cuda-graphs --json"
timeout 80 $SB bench $R > $W/b_base1.json 2> $W/b_base1.err; echo "base1 exit $? at $(el) s"
timeout 80 $S bench $R > $W/b_new1.json 2> $W/b_new1.err; echo "new1 exit $? at $(el) s"; pack
[ -n "$G" ] && timeout 60 $LB -m $G -ngl 99 -p 16 -n 64 -r 3 -t 16 -o json > $W/llama_ngl99.json 2> $W/llama_ngl99.err
echo "llama ngl99 exit $? at $(el) s"; pack
before 470 && timeout 80 $SB bench $R > $W/b_base2.json 2> $W/b_base2.err; echo "base2 exit $? at $(el) s"
before 500 && timeout 80 $S bench $R > $W/b_new2.json 2> $W/b_new2.err; echo "new2 exit $? at $(el) s"; pack
[ -n "$G" ] && before 500 && GGML_CUDA_DISABLE_GRAPHS=1 timeout 80 $NCU --metrics $MET --launch-skip 1500 --launch-count 600 --csv --page raw $LB -m $G -ngl 99 -p 0 -n 8 -r 1 -t 16 > $W/ncu_llama.csv 2> $W/ncu_llama.err
echo "ncu llama exit $? at $(el) s"; tail -2 $W/ncu_llama.err
python3 tools/bench_summary.py $W
pack; ls -la $RESULT
