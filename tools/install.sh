#!/usr/bin/env bash
# Installs the Stowage library for hosts without Bazel:
#   bazel run //:install -- PREFIX
# PREFIX/lib/libstowage.a                       the library (every public package, one archive)
# PREFIX/include/stowage/...                    the headers, at their repository paths
# PREFIX/lib/cmake/stowage/stowageConfig.cmake  find_package(stowage) -> target stowage::stowage
# PREFIX/lib/pkgconfig/stowage.pc               pkg-config --cflags --libs stowage
# What goes in comes from //:package (tools/package.bzl): its manifest lists the
# archive, the headers, the defines, the external libraries and link flags.
set -euo pipefail

if [ $# -ne 1 ] || [ "${1:0:1}" = "-" ]; then
  echo "usage: bazel run //:install -- PREFIX (given $# arguments: $*)" >&2
  exit 2
fi
prefix=$1
# Under `bazel run` a relative PREFIX is relative to where the command was typed.
case "$prefix" in
  /*) ;;
  *) prefix="${BUILD_WORKING_DIRECTORY:-$PWD}/$prefix" ;;
esac

# The runfiles of this script: its own tree, or the test's that runs it.
runfiles=${RUNFILES_DIR:-${TEST_SRCDIR:-$0.runfiles}}
root="$runfiles/stowage"
manifest="$root/package.manifest"
[ -f "$manifest" ] || { echo "install: cannot find $manifest" >&2; exit 1; }
# A manifest path is relative to the workspace's runfiles (external ones start with ../).
real() { readlink -f "$root/$1"; }
# Copies FILE to DEST (mode 0644), creating folders. Not install(1): a PATH
# holding the runfiles folder (tests) would find this script under that name.
put() { mkdir -p "$(dirname "$2")" && cp -f "$1" "$2" && chmod 0644 "$2"; }

mkdir -p "$prefix/lib/cmake/stowage" "$prefix/lib/pkgconfig" "$prefix/include/stowage"
defines=() flags=() cmake_deps="" cmake_libs=() pc_libs=() pc_cflags=()
headers=0
while read -r kind a b; do
  case "$kind" in
    archive) put "$(real "$a")" "$prefix/lib/libstowage.a" ;;
    header)
      put "$(real "$a")" "$prefix/include/stowage/$a"
      headers=$((headers + 1))
      ;;
    define) defines+=("$a") ;;
    flag) flags+=("$a") ;;
    external)
      path=$(real "$b")
      pc_libs+=("$path")
      case "$a" in
        boost_json)
          cmake_deps+=$'find_dependency(Boost 1.81 CONFIG COMPONENTS json)\n'
          cmake_libs+=("Boost::json")
          ;;
        openblas | re2)
          var="STOWAGE_${a^^}_LIBRARY"
          # Static first, as the Bazel build links them (OpenBLAS: the serial flavour).
          suffixes=""
          [ "$a" = openblas ] && suffixes=" PATH_SUFFIXES openblas-serial"
          cmake_deps+="find_library($var NAMES lib$a.a $a HINTS \"$(dirname "$path")\"$suffixes)"$'\n'
          cmake_deps+="if(NOT $var)"$'\n'"  set(stowage_FOUND FALSE)"$'\n'
          cmake_deps+="  set(stowage_NOT_FOUND_MESSAGE \"stowage needs $a (lib$a)\")"$'\n'"  return()"$'\n'"endif()"$'\n'
          cmake_libs+=("\${$var}")
          ;;
        cudart_static | cublasLt)
          cuda_root=$(dirname "$(dirname "$path")")
          if [[ "$cmake_deps" != *CUDAToolkit* ]]; then
            cmake_deps+="if(NOT CUDAToolkit_ROOT)"$'\n'"  set(CUDAToolkit_ROOT \"$cuda_root\")"$'\n'"endif()"$'\n'
            cmake_deps+=$'find_dependency(CUDAToolkit)\n'
            pc_cflags+=("-I$cuda_root/include")
          fi
          cmake_libs+=("CUDA::$a")
          ;;
        *) echo "install: unknown external library '$a'" >&2; exit 1 ;;
      esac
      ;;
    *) echo "install: unknown manifest line '$kind $a $b'" >&2; exit 1 ;;
  esac
done <"$manifest"

# Link flags: -lNAME as a library, anything else (e.g. -fsanitize=...) as a link option.
link_options=()
for f in "${flags[@]}"; do
  if [[ "$f" == -l* ]]; then cmake_libs+=("${f#-l}"); else link_options+=("$f"); fi
done
join() { local IFS=";"; echo "$*"; }
defs_cmake=$(join "${defines[@]}")

cat >"$prefix/lib/cmake/stowage/stowageConfig.cmake" <<CMAKE
# Stowage, installed by \`bazel run //:install -- PREFIX\`.
#   find_package(stowage REQUIRED)
#   target_link_libraries(app PRIVATE stowage::stowage)
# The target carries the include directory, the defines and every library
# the archive needs; C++17 or newer.
include(CMakeFindDependencyMacro)
get_filename_component(_stowage_prefix "\${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
set(THREADS_PREFER_PTHREAD_FLAG ON)
find_dependency(Threads)
${cmake_deps}
if(NOT TARGET stowage::stowage)
  add_library(stowage::stowage STATIC IMPORTED)
  set_target_properties(stowage::stowage PROPERTIES
    IMPORTED_LOCATION "\${_stowage_prefix}/lib/libstowage.a"
    IMPORTED_LINK_INTERFACE_LANGUAGES CXX
    INTERFACE_INCLUDE_DIRECTORIES "\${_stowage_prefix}/include/stowage"
    INTERFACE_COMPILE_DEFINITIONS "${defs_cmake}"
    INTERFACE_COMPILE_FEATURES cxx_std_17
    INTERFACE_LINK_LIBRARIES "$(join "${cmake_libs[@]}");Threads::Threads"
    INTERFACE_LINK_OPTIONS "$(join "${link_options[@]}")")
endif()
unset(_stowage_prefix)
CMAKE

cat >"$prefix/lib/cmake/stowage/stowageConfigVersion.cmake" <<'CMAKE'
set(PACKAGE_VERSION "0.1.0")
if(PACKAGE_FIND_VERSION VERSION_GREATER PACKAGE_VERSION)
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
else()
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
endif()
CMAKE

pc_defines=""
for d in "${defines[@]}"; do pc_defines+=" -D$d"; done
cat >"$prefix/lib/pkgconfig/stowage.pc" <<PC
prefix=\${pcfiledir}/../..
libdir=\${prefix}/lib
includedir=\${prefix}/include/stowage

Name: stowage
Description: Memory-offload runtime for models whose weights do not fit in GPU memory
Version: 0.1.0
Cflags: -std=c++17 -I\${includedir}${pc_defines}${pc_cflags[*]:+ ${pc_cflags[*]}}
Libs: -L\${libdir} -lstowage ${pc_libs[*]} ${flags[*]} -pthread
PC

echo "installed Stowage into $prefix: lib/libstowage.a, $headers headers under include/stowage/," \
  "lib/cmake/stowage/stowageConfig.cmake (stowage::stowage), lib/pkgconfig/stowage.pc"
