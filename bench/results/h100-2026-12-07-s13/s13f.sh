#!/usr/bin/env bash
# Session 13, call F (fresh machine): where a Mixtral NF4-dq decode step goes with every expert
# resident: bench resident decode, and generate --trace resident (experts run through the hooks,
# so each one's compute is traced). Printed: the step's time by kind of module.
set -u
RESULT=$OUT; W=/tmp/s13f; mkdir -p $W; T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
pack() { (cd $W && tar -cJf $RESULT/s13f.tar.xz .); }
[ -x gpu_pack/bin/_stowage ] || tar -xJf gpu_run/pack.tar.xz
S=gpu_pack/bin/_stowage; M=/dev/shm/mixtral-nf4dq
timeout 150 python3 tools/make_synthetic_model.py --shape mixtral-8x7b --dtype nf4-dq $M > $W/prepare.log 2>&1
echo "model exit $? at $(el) s"
timeout 60 $S generate --model $M --prompt-ids 1,2,3,4,5,6,7,8 --max-new-tokens 8 --ignore-eos --json --trace $W/trace_resident.json > $W/gen_resident.json 2> $W/gen_resident.err
echo "gen resident exit $? at $(el) s"; pack
timeout 60 $S bench --model $M --batches 1 --prompt-tokens 16 --new-tokens 16 --json > $W/bench_resident.json 2> $W/bench_resident.err
echo "bench resident exit $? at $(el) s"; pack
python3 tools/bench_summary.py $W
# (then a per-kind sum of the trace's events over one step; see README)
pack; ls -la $RESULT
