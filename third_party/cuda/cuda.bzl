"""cuda_library: compiles .cu files with nvcc into a cc_library.

Bazel 4 has no CUDA rules; each .cu becomes one genrule calling nvcc -c, and
the objects are linked through a cc_library. Binaries and tests that reach
these objects need linkstatic = True (a shared object built from an nvcc
object with static cudart fails to load).
"""

load("@local_cuda//:defs.bzl", "CUDA_FOUND", "NVCC")

CUDA_ARCH_FLAGS = [
    "-gencode arch=compute_80,code=sm_80",
    "-gencode arch=compute_90,code=sm_90",
    "-gencode arch=compute_90,code=compute_90",
]

def cuda_library(name, srcs, hdrs = [], deps = [], copts = [], header_srcs = [], **kwargs):
    """A cc_library of nvcc-compiled objects; empty when no toolkit is found.

    header_srcs: headers of other packages the .cu files include (nvcc sees
    them in its sandbox; the library's deps must provide them to C++ too).
    """
    if not CUDA_FOUND:
        native.cc_library(name = name, hdrs = hdrs, deps = deps, **kwargs)
        return
    objs = []
    for src in srcs:
        obj = name + "_" + src.replace("/", "_").replace(".cu", ".pic.o")
        native.genrule(
            name = obj + "_nvcc",
            srcs = [src] + hdrs + header_srcs + native.glob(["**/*.h"]),
            outs = [obj],
            # nvcc names its temporary files after its process id, which is
            # the same in every linux-sandbox (each has its own PID
            # namespace): two nvcc runs at once in the shared /tmp overwrite
            # each other's files ("cannot open module id file"). Each run
            # gets its own directory.
            cmd = "tmp=$$(mktemp -d) && TMPDIR=$$tmp " + " ".join([
                NVCC,
                "-c",
                "-std=c++17",
                "-O3",
                "-Xcompiler -fPIC",
                "-I.",
                "-I$(GENDIR)",
                "--expt-relaxed-constexpr",
            ] + CUDA_ARCH_FLAGS + copts + [
                "-o $@",
                "$(location " + src + ")",
            ]) + "; status=$$?; rm -rf $$tmp; exit $$status",
        )
        objs.append(obj)
    native.cc_library(
        name = name,
        srcs = objs,
        hdrs = hdrs,
        deps = deps + ["@local_cuda//:cudart_static"],
        linkstatic = True,
        **kwargs
    )
