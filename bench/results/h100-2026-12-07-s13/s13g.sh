#!/usr/bin/env bash
# Session 13, call G (fresh machine, ~5 minutes of device time left): the float32 4-bit GEMV with
# its code tables as a parameter (new) against 0368b4c (old), same call: the CUDA kernel tests,
# then Mixtral NF4-dq resident decode and (d) at 0=10GiB under uniform and Zipf(1.0) routing.
set -u
RESULT=$OUT; W=/tmp/s13g; mkdir -p $W; T0=$(date +%s)
el() { echo $(( $(date +%s) - T0 )); }
before() { [ $(( $(date +%s) - T0 )) -lt $1 ]; }
pack() { (cd $W && tar -cJf $RESULT/s13g.tar.xz .); }
[ -x gpu_pack/bin/_stowage ] || tar -xJf gpu_run/pack.tar.xz
mkdir -p /tmp/old && { [ -x /tmp/old/gpu_pack/bin/_stowage ] || tar -xJf gpu_run/pack_old.tar.xz -C /tmp/old; }
NEW=gpu_pack/bin/_stowage; OLD=/tmp/old/gpu_pack/bin/_stowage; M=/dev/shm/mixtral-nf4dq
timeout 60 python3 tools/make_synthetic_model.py --shape mixtral-8x7b --dtype nf4-dq $M > $W/prepare.log 2>&1 &
P=$!
(. gpu_pack/env.sh; timeout 50 gpu_pack/bin/kernels_backend_test --gtest_filter='*FourBit*' > $W/backend_test.log 2>&1; echo "backend_test exit $?"; tail -3 $W/backend_test.log)
wait $P; echo "model at $(el) s"; pack
for b in NEW OLD; do
  timeout 40 ${!b} bench --model $M --batches 1 --prompt-tokens 16 --new-tokens 16 --json > $W/resident_$b.json 2> $W/resident_$b.err
  echo "resident $b exit $? at $(el) s"
done
pack
D="--max-memory 0=10GiB --no-resident --batches 1 --prompt-tokens 16 --new-tokens 24 --cpu-moe 32 --expert-cache auto --expert-compute auto --json"
for t in uniform zipf:1.0; do
  for b in NEW OLD; do
    before 245 && timeout 60 ${!b} bench --model $M --routing-trace $t $D > $W/d_${t/:/}_$b.json 2> $W/d_${t/:/}_$b.err
    echo "d $t $b exit $? at $(el) s"; pack
  done
done
python3 tools/bench_summary.py $W 2>&1 | grep -E "^[a-z]|decode|moe"
pack; ls -la $RESULT
