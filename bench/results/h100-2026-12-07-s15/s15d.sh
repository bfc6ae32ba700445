#!/usr/bin/env bash
# Session 15, call D (6ec9ef4: prefetch window and resident layers spread among the streamed
# ones): the 8B bf16 shape at 0=6GiB with a 2048-token prompt, resident and budgeted in one
# bench run each (the prefill bound P / max(resident, link)): streaming alone with 3 slots
# (--prefetch 2, bench's default) and with 2 (--prefetch 1, generate's default); then
# --host-compute auto with 2 slots at batches 1 and 32; then the packed CUDA tests.
set -u
RESULT=$OUT; W=/tmp/s15d; mkdir -p $W; T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
before() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
pack() { (cd $W && tar -cJf $RESULT/s15d.tar.xz .); }
[ -x gpu_pack/bin/_stowage ] || tar -xJf gpu_run/pack.tar.xz
S=gpu_pack/bin/_stowage; M=/dev/shm/l8b
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $W/gpu.txt; cat $W/gpu.txt
[ -f $M/config.json ] || timeout 90 python3 tools/make_synthetic_model.py --shape llama-3.1-8b --dtype bf16 $M > $W/prepare.log 2>&1
echo "model at $(el) s"
B="--model $M --max-memory 0=6GiB --prompt-tokens 2048 --new-tokens 32 --json"
timeout 100 $S bench $B --batches 1 --host-compute off > $W/b_off_p2.json 2> $W/b_off_p2.err
echo "off p2 exit $? at $(el) s"; pack
timeout 100 $S bench $B --batches 1 --host-compute off --prefetch 1 > $W/b_off_p1.json 2> $W/b_off_p1.err
echo "off p1 exit $? at $(el) s"; pack
timeout 100 $S bench $B --batches 1,32 --no-resident --host-compute auto --prefetch 1 > $W/b_auto_p1.json 2> $W/b_auto_p1.err
echo "auto p1 exit $? at $(el) s"; pack
before 330 && timeout 60 $S generate --model $M --max-memory 0=6GiB --host-compute off --prompt-ids $(seq -s, 1 2048) --max-new-tokens 2 --ignore-eos --json --trace $W/trace_prefill_p1.json > $W/gen_prefill_p1.json 2> $W/gen_prefill_p1.err
echo "gen exit $? at $(el) s"
python3 tools/bench_summary.py $W
[ -f $W/trace_prefill_p1.json ] && python3 tools/trace_summary.py $W/trace_prefill_p1.json --max-gaps 8 > $W/trace_prefill_p1.txt 2>&1 && head -16 $W/trace_prefill_p1.txt && gzip -f $W/trace_prefill_p1.json
pack
before 360 && STOWAGE_TEST_TIMEOUT=150 timeout 230 bash gpu_pack/run_tests.sh > $W/tests.log 2>&1; tail -1 $W/tests.log; grep -E "^FAIL|FAILED" $W/tests.log | head
pack; ls -la $RESULT
