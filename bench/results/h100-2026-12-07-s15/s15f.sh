#!/usr/bin/env bash
# Session 15, call F (cd913da: the host rate from a decode with the link idle is the rate
# alone): 8B bf16 at 0=6GiB, --host-compute auto with 2 slots, batch 1, and the cost model's
# report test on this machine.
set -u
RESULT=$OUT; W=/tmp/s15f; mkdir -p $W; T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
pack() { (cd $W && tar -cJf $RESULT/s15f.tar.xz .); }
[ -x gpu_pack/bin/_stowage ] || tar -xJf gpu_run/pack.tar.xz
S=gpu_pack/bin/_stowage; M=/dev/shm/l8b
nvidia-smi --query-gpu=name --format=csv,noheader
[ -f $M/config.json ] || timeout 90 python3 tools/make_synthetic_model.py --shape llama-3.1-8b --dtype bf16 $M > $W/prepare.log 2>&1
echo "model at $(el) s"
timeout 90 $S bench --model $M --max-memory 0=6GiB --no-resident --prompt-tokens 2048 --new-tokens 32 --batches 1 --host-compute auto --prefetch 1 --json > $W/b_auto_p1.json 2> $W/b_auto_p1.err
echo "auto p1 exit $? at $(el) s"; pack
(. gpu_pack/env.sh; timeout 30 gpu_pack/bin/cli_compute_split_report_test > $W/report_test.log 2>&1; echo "report test exit $?"; tail -1 $W/report_test.log)
python3 tools/bench_summary.py $W
pack
