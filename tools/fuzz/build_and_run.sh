#!/bin/sh
# libFuzzer targets for the parsers of untrusted text, built with clang's
# libFuzzer + ASan + UBSan outside Bazel (so they never count among CI's
# tests), then run:
#   tools/fuzz/build_and_run.sh [RUNS] [TARGET...]     (from anywhere)
# TARGETs: quant_state transformer_config tokenizer index_json flags header_parser
# (default: all). RUNS defaults to 10000000 executions each; MAX_TIME (seconds,
# default 0 = none) caps each run. New inputs go to $WORK/corpus/TARGET
# (default WORK=/tmp/stowage_fuzz); committed seeds live in tools/fuzz/seeds.
set -eu
RUNS=${1:-10000000}
[ $# -gt 0 ] && shift
TARGETS=${*:-quant_state transformer_config tokenizer index_json flags header_parser}
WORK=${WORK:-/tmp/stowage_fuzz}
MAX_TIME=${MAX_TIME:-0}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$WORK/obj"
FLAGS="-std=c++17 -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all \
  -DFMT_HEADER_ONLY=1 -DBOOST_JSON_NO_LIB -I$ROOT"

# The library sources the parsers reach, compiled once with instrumentation.
SOURCES="core/dtype.cc core/shape.cc core/error.cc core/buffer.cc core/memory_resource.cc
  core/tensor.cc core/tier.cc core/stream.cc core/platform.cc core/sim_backend.cc
  core/host_registration.cc
  core/cuda_backend_stub.cc
  mmap_store/header_parser.cc mmap_store/json_file.cc mmap_store/mapped_file.cc
  mmap_store/safetensors_reader.cc mmap_store/sharded_checkpoint.cc mmap_store/offload_folder.cc
  mmap_store/atomic_file.cc mmap_store/checkpoint.cc mmap_store/file_handle.cc
  quant/bnb_format.cc quant/quant_state.cc
  models/transformer_config.cc
  cli/args.cc
  tokenizer/tokenizer.cc tokenizer/added_vocabulary.cc tokenizer/bpe_model.cc
  tokenizer/decoder.cc tokenizer/normalizer.cc tokenizer/pre_tokenizer.cc tokenizer/unicode.cc
  tokenizer/unicode_tables.cc mmap_store/fuzz/boost_json_src.cc"
OBJS=""
for src in $SOURCES; do
  obj="$WORK/obj/$(echo "$src" | tr / _).o"
  if [ ! -f "$obj" ] || [ "$ROOT/$src" -nt "$obj" ]; then
    clang++ $FLAGS -fsanitize=fuzzer-no-link -c "$ROOT/$src" -o "$obj"
  fi
  OBJS="$OBJS $obj"
done

for target in $TARGETS; do
  case $target in
    header_parser) main="$ROOT/mmap_store/fuzz/header_parser_fuzzer.cc" ;;
    *) main="$ROOT/tools/fuzz/${target}_fuzzer.cc" ;;
  esac
  clang++ $FLAGS -fsanitize=fuzzer "$main" $OBJS -lre2 -lpthread -lrt -ldl -o "$WORK/${target}_fuzzer"
  mkdir -p "$WORK/corpus/$target"
  seeds="$ROOT/tools/fuzz/seeds/$target"
  [ "$target" = header_parser ] && seeds="$ROOT/mmap_store/fuzz/corpus"
  echo "== $target: $RUNS runs =="
  "$WORK/${target}_fuzzer" -runs="$RUNS" -max_total_time="$MAX_TIME" -max_len=8192 \
    -print_final_stats=1 "$WORK/corpus/$target" "$seeds"
done
