"""Repository rule that finds the CUDA toolkit, if any.

Creates @local_cuda with:
  - :cuda_headers, :cudart_static, :cublasLt (only meaningful when found),
  - defs.bzl with CUDA_FOUND, NVCC and if_cuda_found().
Set STOWAGE_NO_CUDA=1 (--repo_env) to behave as if no toolkit were installed.
"""

def _cuda_configure_impl(ctx):
    no_cuda = ctx.os.environ.get("STOWAGE_NO_CUDA", "0") == "1"
    cuda_path = ctx.os.environ.get("CUDA_PATH", "/usr/local/cuda")
    nvcc = ctx.path(cuda_path + "/bin/nvcc")
    found = (not no_cuda) and nvcc.exists
    if found:
        for entry in ctx.path(cuda_path).readdir():
            ctx.symlink(entry, entry.basename)
        build = """
package(default_visibility = ["//visibility:public"])

cc_library(
    name = "cuda_headers",
    hdrs = glob(["include/**"]),
    includes = ["include"],
)

cc_library(
    name = "cudart_static",
    srcs = ["lib64/libcudart_static.a"],
    linkopts = ["-ldl", "-lrt", "-lpthread"],
    deps = [":cuda_headers"],
)

cc_library(
    name = "cublasLt",
    srcs = ["lib64/libcublasLt.so"],
    deps = [":cuda_headers"],
)

filegroup(name = "nvcc", srcs = ["bin/nvcc"])
"""
    else:
        build = """
package(default_visibility = ["//visibility:public"])

cc_library(name = "cuda_headers")

cc_library(name = "cudart_static")

cc_library(name = "cublasLt")
"""
    ctx.file("BUILD", build)
    ctx.file("defs.bzl", """
CUDA_FOUND = {found}
NVCC = "{nvcc}"

def if_cuda_found(if_true, if_false = []):
    return if_true if CUDA_FOUND else if_false
""".format(found = found, nvcc = str(nvcc) if found else ""))

cuda_configure = repository_rule(
    implementation = _cuda_configure_impl,
    environ = ["STOWAGE_NO_CUDA", "CUDA_PATH"],
    local = True,
)
