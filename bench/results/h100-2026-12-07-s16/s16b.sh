#!/usr/bin/env bash
# Session 16, call B (fresh machine): the decode attention rework and argmax (e3569fc, this pack)
# against 153efe8 (stowage_base). While llama.cpp builds and the 8B bf16 folder and its f16 GGUF
# are written: the CUDA cases of the transformer ops and model tests, stowage bench resident with
# CUDA graphs (new, base), and ncu over each kernel of the resident decode. After the build,
# side by side: llama-bench -ngl 99, then new and base again.
set -u
RESULT=$OUT; W=/tmp/s16b; mkdir -p $W; T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
pack() { (cd $W && tar -cJf $RESULT/s16b.tar.xz .); }
[ -x gpu_pack/bin/_stowage ] || tar -xJf gpu_run/pack.tar.xz
mkdir -p /tmp/base && tar -xJf gpu_run/stowage_base.tar.xz -C /tmp/base
S=gpu_pack/bin/_stowage; SB=/tmp/base/gpu_pack/bin/_stowage; M=/dev/shm/l8b
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $W/gpu.txt; cat $W/gpu.txt
setsid nohup timeout 400 python3 bench/compare_llamacpp.py prepare --model $M > $W/prepare.log 2>&1 &
P=$!
(. gpu_pack/env.sh
 for t in kernels_transformer_ops_test models_transformer_test; do
   timeout 60 gpu_pack/bin/$t --gtest_filter='*Cuda*' > $W/$t.log 2>&1; echo "$t exit $?: $(grep -E '^\[  (PASSED|FAILED)' $W/$t.log | tr '\n' ' ')"
 done)
while [ ! -f $M/config.json ] && [ $(el) -lt 100 ]; do sleep 2; done
echo "folder at $(el) s"
R="--model $M --prompt-tokens 16 --new-tokens 64 --batches 1 --cuda-graphs --json"
timeout 60 $S bench $R > $W/b_new1.json 2> $W/b_new1.err; echo "new1 exit $? at $(el) s"
timeout 60 $SB bench $R > $W/b_base1.json 2> $W/b_base1.err; echo "base1 exit $? at $(el) s"
python3 tools/bench_summary.py $W | grep decode; pack
NCU="ncu --clock-control none --cache-control none"
MET=gpu__time_duration.sum,dram__bytes_read.sum,launch__grid_size,launch__block_size,launch__registers_per_thread
G="generate --model $M --prompt-ids $(seq -s, 1 40) --max-new-tokens 8 --ignore-eos"
timeout 90 $NCU --metrics $MET --launch-skip 1200 --launch-count 330 --csv --page raw $S $G > $W/ncu_stowage.csv 2> $W/ncu_stowage.err
echo "ncu exit $? at $(el) s"; python3 tools/ncu_summary.py $W/ncu_stowage.csv --top 8; pack
wait $P; echo "prepare exit $? at $(el) s"; grep -v Writing $W/prepare.log | tail -1
GG=$(ls /tmp/stowage-llamacpp/*-f16.gguf 2>/dev/null | head -1); LB=/tmp/stowage-llamacpp/build/bin/llama-bench
[ -n "$GG" ] && timeout 40 $LB -m $GG -ngl 99 -p 16 -n 64 -r 3 -t 16 -o json > $W/llama_ngl99.json 2> $W/llama_ngl99.err
echo "llama ngl99 exit $? at $(el) s"; pack
timeout 40 $S bench $R > $W/b_new2.json 2> $W/b_new2.err; echo "new2 exit $? at $(el) s"; pack
timeout 40 $SB bench $R > $W/b_base2.json 2> $W/b_base2.err; echo "base2 exit $? at $(el) s"
python3 tools/bench_summary.py $W | grep -v prefill
pack; ls -la $RESULT
