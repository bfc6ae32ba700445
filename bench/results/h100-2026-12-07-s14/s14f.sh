#!/usr/bin/env bash
# Session 14, call F: where the 2048-token prefill of the 8B bf16 shape at 0=6GiB goes. The
# resident prefill (no budget: the acceptance bound's other half), then a generate --trace of
# the budgeted prefill (streaming alone).
set -u
RESULT=$OUT; W=/tmp/s14f; mkdir -p $W; T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
pack() { (cd $W && tar -cJf $RESULT/s14f.tar.xz .); }
[ -x gpu_pack/bin/_stowage ] || tar -xJf gpu_run/pack.tar.xz
S=gpu_pack/bin/_stowage; M=/dev/shm/l8b; R=bench/results/h100-2026-12-07-s14
nvidia-smi --query-gpu=name --format=csv,noheader
[ -f $M/config.json ] || timeout 90 python3 tools/make_synthetic_model.py --shape llama-3.1-8b --dtype bf16 $M > $W/prepare.log 2>&1
echo "model at $(el) s"
timeout 70 $S bench --model $M --prompt-tokens 2048 --new-tokens 4 --batches 1 --json > $W/resident.json 2> $W/resident.err
echo "resident exit $? at $(el) s"; pack
timeout 70 $S generate --model $M --max-memory 0=6GiB --host-compute off --prompt-ids $(seq -s, 1 2048) --max-new-tokens 2 --ignore-eos --json --trace $W/trace_prefill.json > $W/gen_prefill.json 2> $W/gen_prefill.err
echo "gen exit $? at $(el) s"; pack
python3 tools/bench_summary.py $W
pack; ls -la $RESULT
