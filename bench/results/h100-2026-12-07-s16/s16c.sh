#!/usr/bin/env bash
# Session 16, call C (fresh machine, little device time left): the decode attention rework and
# argmax (e3569fc) against 153efe8 beside llama.cpp, with llama-bench built on the development
# VM (the same source tarball and CMake options as bench/compare_llamacpp.py, CUDA 13.0, sm_90;
# GGML_NATIVE off since it was built on another CPU: the -ngl 99 decode runs on the GPU) and
# carried, so no build runs here. The 8B bf16 folder is written and converted to an f16 GGUF
# with llama.cpp's converter while the CUDA cases of the transformer ops and model tests, the
# stowage benches (new, base) and ncu over one decode step run. Then, side by side:
# llama-bench -ngl 99, and new and base again.
set -u
RESULT=$OUT; W=/tmp/s16c; mkdir -p $W; T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
pack() { (cd $W && tar -cJf $RESULT/s16c.tar.xz .); }
# Carry gpu_run/pack_small_with_base.tar.xz (_stowage, its 153efe8 build as _stowage_base, the
# transformer ops and model tests) and gpu_llamacpp/prebuilt: 66 MB with the tracked tree.
tar -xJf gpu_run/pack_small_with_base.tar.xz
mkdir -p /tmp/lc && tar -xJf gpu_llamacpp/prebuilt/llama_bench_cuda13.0_sm90.tar.xz -C /tmp/lc
tar -xJf gpu_llamacpp/prebuilt/converter.tar.xz -C /tmp/lc
S=gpu_pack/bin/_stowage; SB=gpu_pack/bin/_stowage_base; M=/dev/shm/l8b; LB=/tmp/lc/llama-bench
GG=/dev/shm/l8b-f16.gguf
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $W/gpu.txt; cat $W/gpu.txt
(timeout 60 python3 tools/make_synthetic_model.py --shape llama-3.1-8b --dtype bf16 $M > $W/folder.log 2>&1
 mkdir -p /tmp/conv; for f in $M/*; do ln -sf $f /tmp/conv/; done
 cp /tmp/lc/llama.cpp/stowage-tokenizer/tokenizer*.json /tmp/conv/
 timeout 200 python3 /tmp/lc/llama.cpp/convert_hf_to_gguf.py /tmp/conv --outtype f16 --outfile $GG.tmp > $W/convert.log 2>&1 && mv $GG.tmp $GG
 echo "gguf exit $? at $(el) s" >> $W/convert.log) &
P=$!
(. gpu_pack/env.sh
 for t in kernels_transformer_ops_test models_transformer_test; do
   timeout 60 gpu_pack/bin/$t --gtest_filter='*Cuda*' > $W/$t.log 2>&1; echo "$t exit $?: $(grep -E '^\[  (PASSED|FAILED)' $W/$t.log | tr '\n' ' ')"
 done)
while [ ! -f $M/config.json ] && [ $(el) -lt 90 ]; do sleep 2; done
echo "folder at $(el) s"
R="--model $M --prompt-tokens 16 --new-tokens 64 --batches 1 --cuda-graphs --json"
timeout 50 $S bench $R > $W/b_new1.json 2> $W/b_new1.err; echo "new1 exit $? at $(el) s"
timeout 50 $SB bench $R > $W/b_base1.json 2> $W/b_base1.err; echo "base1 exit $? at $(el) s"; pack
NCU="ncu --clock-control none --cache-control none"
MET=gpu__time_duration.sum,dram__bytes_read.sum,launch__grid_size,launch__block_size,launch__registers_per_thread
G="generate --model $M --prompt-ids $(seq -s, 1 40) --max-new-tokens 8 --ignore-eos"
timeout 60 $NCU --metrics $MET --launch-skip 1200 --launch-count 330 --csv --page raw $S $G > $W/ncu_stowage.csv 2> $W/ncu_stowage.err
echo "ncu exit $? at $(el) s"; python3 tools/ncu_summary.py $W/ncu_stowage.csv --top 8; pack
wait $P; tail -1 $W/convert.log
[ -f $GG ] && timeout 40 $LB -m $GG -ngl 99 -p 16 -n 64 -r 3 -t 16 -o json > $W/llama_ngl99.json 2> $W/llama_ngl99.err
echo "llama ngl99 exit $? at $(el) s"; pack
timeout 40 $S bench $R > $W/b_new2.json 2> $W/b_new2.err; echo "new2 exit $? at $(el) s"
timeout 40 $SB bench $R > $W/b_base2.json 2> $W/b_base2.err; echo "base2 exit $? at $(el) s"
python3 tools/bench_summary.py $W | grep -v prefill
pack; ls -la $RESULT
