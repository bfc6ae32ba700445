#!/usr/bin/env bash
# Session 15, call A (fresh machine): llama.cpp built and the 8B bf16 folder with its f16 GGUF
# written (bench/compare_llamacpp.py prepare) while the packed CUDA tests and kernels_bench
# gemv32 run; the Mixtral NF4-dq folder. Then, alone: the 8B bf16 2048-token prefill resident
# and under 0=6GiB in one bench run (the bound P / max(resident, link)), and a generate --trace
# of the budgeted prefill.
set -u
RESULT=$OUT; W=/tmp/s15a; mkdir -p $W; T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
before() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
pack() { (cd $W && tar -cJf $RESULT/s15a.tar.xz .); }
[ -x gpu_pack/bin/_stowage ] || tar -xJf gpu_run/pack.tar.xz
S=gpu_pack/bin/_stowage; M=/dev/shm/l8b; R=bench/results/h100-2026-12-07-s15
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $W/gpu.txt; lscpu > $W/lscpu.txt
cat $W/gpu.txt; grep -E "^CPU\(s\)|Model name" $W/lscpu.txt
setsid nohup timeout 420 python3 bench/compare_llamacpp.py prepare --model $M > $W/prepare.log 2>&1 &
P=$!
(. gpu_pack/env.sh; timeout 60 gpu_pack/bin/bench_kernels_bench gemv32 > $W/kernels_gemv32.txt 2>&1; echo "gemv32 exit $?"; tail -6 $W/kernels_gemv32.txt)
STOWAGE_TEST_TIMEOUT=150 timeout 250 bash gpu_pack/run_tests.sh > $W/tests.log 2>&1; tail -1 $W/tests.log; grep -E "^FAIL|FAILED" $W/tests.log | head
echo "tests at $(el) s"; pack
wait $P; echo "prepare exit $? at $(el) s"; grep -v Writing $W/prepare.log | tail -2
(timeout 60 python3 tools/make_synthetic_model.py --shape mixtral-8x7b --dtype nf4-dq /dev/shm/mixtral-nf4dq > $W/moe_prepare.log 2>&1; echo "mixtral folder exit $?" >> $W/moe_prepare.log)
echo "mixtral at $(el) s"
before 470 && timeout 100 $S bench --model $M --max-memory 0=6GiB --host-compute off --prompt-tokens 2048 --new-tokens 4 --batches 1 --json > $W/b_prefill.json 2> $W/b_prefill.err
echo "prefill bench exit $? at $(el) s"; pack
before 540 && timeout 50 $S generate --model $M --max-memory 0=6GiB --host-compute off --prompt-ids $(seq -s, 1 2048) --max-new-tokens 2 --ignore-eos --json --trace $W/trace_prefill.json > $W/gen_prefill.json 2> $W/gen_prefill.err
echo "gen exit $? at $(el) s"
python3 tools/bench_summary.py $W
python3 tools/trace_summary.py $W/trace_prefill.json --max-gaps 12 > $W/trace_prefill.txt 2>&1; head -40 $W/trace_prefill.txt
gzip -f $W/trace_prefill.json
pack; ls -la $RESULT
