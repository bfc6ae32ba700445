#!/bin/sh
# Builds the safetensors header-parser fuzzer with clang's libFuzzer + ASan +
# UBSan outside Bazel and runs it on the seed corpus.
#   mmap_store/fuzz/build_and_run.sh [RUNS]      (from the repository root)
# RUNS defaults to 10000000 executions. New inputs go to a scratch corpus
# folder ($WORK, default /tmp/stowage_fuzz), the committed seeds stay small.
set -eu
RUNS=${1:-10000000}
WORK=${WORK:-/tmp/stowage_fuzz}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$WORK/corpus"
clang++ -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
  -DFMT_HEADER_ONLY=1 -DBOOST_JSON_NO_LIB -I"$ROOT" \
  "$ROOT/mmap_store/fuzz/header_parser_fuzzer.cc" "$ROOT/mmap_store/fuzz/boost_json_src.cc" \
  "$ROOT/mmap_store/header_parser.cc" "$ROOT/core/dtype.cc" "$ROOT/core/shape.cc" \
  "$ROOT/core/error.cc" -o "$WORK/header_parser_fuzzer"
"$WORK/header_parser_fuzzer" -runs="$RUNS" -max_len=4096 -print_final_stats=1 \
  "$WORK/corpus" "$ROOT/mmap_store/fuzz/corpus"
