#!/usr/bin/env bash
# Packs the llama.cpp source needed on the GPU host (no network there) into gpu_llamacpp/
# (ignored by git), for `carry`: llama-bench, llama-quantize and llama-completion built with
# CMake (CPU and CUDA backends only), convert_hf_to_gguf.py with its conversion/ package and
# gguf-py, and an Apache-2.0 tokenizer (SmolLM2's, 49152 tokens) for the converter, which
# synthetic model folders lack. bench/compare_llamacpp.sh builds and runs it there.
#
# llama.cpp comes from the PyPI source distribution of llama-cpp-python, which vendors it at
# vendor/llama.cpp (pinned below with its SHA-256). Run here, from anywhere:
#   tools/pack_llamacpp.sh            # -> gpu_llamacpp/llamacpp-src.tar.gz (about 7 MB)
# Environment: LLAMACPP_CACHE (default /work/cache/llamacpp) holds the download;
# LLAMACPP_TOKENIZER_DIR (default /work/cache/real_model) holds tokenizer.json of SmolLM2.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
version=0.3.36
sha256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
cache=${LLAMACPP_CACHE:-/work/cache/llamacpp}
tokenizer_dir=${LLAMACPP_TOKENIZER_DIR:-/work/cache/real_model}
out=$repo/gpu_llamacpp

sdist=$cache/llama_cpp_python-$version.tar.gz
mkdir -p "$cache"
if [ ! -f "$sdist" ]; then
  python3 -m pip download --no-binary :all: --no-deps -d "$cache" "llama-cpp-python==$version"
fi
echo "$sha256  $sdist" | sha256sum -c --quiet

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -xzf "$sdist" -C "$work" "llama_cpp_python-$version/vendor/llama.cpp"
src=$work/llama_cpp_python-$version/vendor/llama.cpp
dst=$work/llama.cpp
mkdir -p "$dst/tools" "$dst/ggml/src" "$dst/vendor"

# The library, its CMake, the common library and the converter.
for p in CMakeLists.txt LICENSE licenses cmake include src common convert_hf_to_gguf.py \
  conversion; do
  cp -a "$src/$p" "$dst/"
done
mkdir -p "$dst/gguf-py"
cp -a "$src/gguf-py/gguf" "$src/gguf-py/LICENSE" "$src/gguf-py/pyproject.toml" "$dst/gguf-py/"
# ggml: every backend folder but CPU and CUDA dropped (ggml_add_backend adds a folder only when
# its GGML_<BACKEND> option is on).
cp -a "$src/ggml/CMakeLists.txt" "$src/ggml/cmake" "$src/ggml/include" "$dst/ggml/"
for f in "$src"/ggml/src/*; do
  case "$(basename "$f")" in
    ggml-*) [ -d "$f" ] || cp -a "$f" "$dst/ggml/src/" ;;
    *) cp -a "$f" "$dst/ggml/src/" ;;
  esac
done
cp -a "$src/ggml/src/ggml-cpu" "$src/ggml/src/ggml-cuda" "$dst/ggml/src/"
# Third-party code that common needs (mtmd's audio and image libraries are not built).
for v in CMakeLists.txt cpp-httplib nlohmann sheredom hash; do cp -a "$src/vendor/$v" "$dst/vendor/"; done
sed -i -e '/add_subdirectory(miniaudio)/d' -e '/add_subdirectory(stb)/d' "$dst/vendor/CMakeLists.txt"
# Three tools; tools/CMakeLists.txt rewritten to add just them.
for t in llama-bench quantize completion; do cp -a "$src/tools/$t" "$dst/tools/"; done
cat >"$dst/tools/CMakeLists.txt" <<'EOF'
# Written by stowage's tools/pack_llamacpp.sh: the tools a benchmark needs, nothing else.
find_package(Threads REQUIRED)
llama_add_compile_flags()
add_subdirectory(llama-bench)
add_subdirectory(quantize)
add_subdirectory(completion)
EOF
# The converter reads tokenizer.json and tokenizer_config.json from the model folder; SmolLM2's
# tokenizer (Apache-2.0) is one whose pre-tokenizer the converter recognizes ("smollm"), and it
# pads the vocabulary to config.json's vocab_size with unused tokens.
mkdir -p "$dst/stowage-tokenizer"
cp "$tokenizer_dir/tokenizer.json" "$dst/stowage-tokenizer/"
cat >"$dst/stowage-tokenizer/tokenizer_config.json" <<'EOF'
{"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|im_start|>",
 "eos_token": "<|im_end|>", "unk_token": "<|endoftext|>", "model_max_length": 131072}
EOF
cat >"$dst/STOWAGE_PACK.txt" <<EOF
llama.cpp from llama-cpp-python $version (PyPI sdist, SHA-256 $sha256), vendor/llama.cpp,
trimmed by stowage tools/pack_llamacpp.sh; tokenizer: $tokenizer_dir/tokenizer.json
(SHA-256 $(sha256sum "$tokenizer_dir/tokenizer.json" | cut -d' ' -f1))
EOF

rm -rf "$out"
mkdir -p "$out"
tar -C "$work" -czf "$out/llamacpp-src.tar.gz" llama.cpp
du -sh "$out/llamacpp-src.tar.gz"
