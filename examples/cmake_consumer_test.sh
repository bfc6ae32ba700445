#!/usr/bin/env bash
# The package for non-Bazel hosts, end to end: //:install into a temporary
# prefix (what `bazel run //:install -- PREFIX` runs), then
# examples/cmake_consumer configured and built with CMake against it
# (find_package(stowage), target stowage::stowage) and run on the simulated
# accelerator; the same program built through pkg-config; and the prefix
# moved elsewhere, where the CMake package must still work (no absolute
# paths into the old prefix).
set -euo pipefail
absolute() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
install=$(absolute "$1")  # "install" alone would be /usr/bin/install
source_dir=$(dirname "$(absolute "$2")")
tmp=${TEST_TMPDIR:-$(mktemp -d)}
fail() { echo "FAIL: $*" >&2; exit 1; }

"$install" "$tmp/prefix"
for f in lib/libstowage.a lib/cmake/stowage/stowageConfig.cmake lib/pkgconfig/stowage.pc \
         include/stowage/core/tensor.h include/stowage/offload/offload_manager.h \
         include/stowage/hooks/offload_hook.h include/stowage/kernels/gemm.h; do
  [ -f "$tmp/prefix/$f" ] || fail "the install has no $f"
done
"$install" 2>/dev/null && fail "install without PREFIX succeeded"

build_and_run() {  # PREFIX BUILD_DIR
  cmake -S "$source_dir" -B "$2" -DCMAKE_PREFIX_PATH="$1" -DCMAKE_BUILD_TYPE=Release >"$2.log" 2>&1 ||
    { cat "$2.log"; fail "cmake could not configure against $1"; }
  cmake --build "$2" >>"$2.log" 2>&1 || { cat "$2.log"; fail "the consumer did not build"; }
  out=$("$2/cmake_consumer") || { echo "$out"; fail "the consumer failed"; }
  echo "$out"
  grep -q "^cmake_consumer: OK$" <<<"$out" || fail "the consumer did not print its OK"
}
build_and_run "$tmp/prefix" "$tmp/build"

flags=$(PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig" pkg-config --cflags --libs stowage) ||
  fail "pkg-config does not know stowage"
c++ -o "$tmp/pc_consumer" "$source_dir/main.cc" $flags || fail "the pkg-config build failed"
"$tmp/pc_consumer" | grep -q "^cmake_consumer: OK$" || fail "the pkg-config build did not run"

mv "$tmp/prefix" "$tmp/moved"
build_and_run "$tmp/moved" "$tmp/build_moved"
echo "PASS"
