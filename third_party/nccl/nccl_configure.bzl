"""Repository rule that finds NCCL (the library and nccl.h), if any.

Creates @local_nccl with:
  - :nccl (libnccl.so.2 and nccl.h; empty when not found),
  - defs.bzl with NCCL_FOUND and if_nccl_found().
Where it looks, in order: $NCCL_PATH; /opt/nccl (tools/install_deps.sh
unpacks NVIDIA's nvidia-nccl-cu<major> wheel there: include/nccl.h,
lib/libnccl.so.2); /usr/local/nccl; /usr with the Debian multiarch library
(libnccl-dev). A folder counts when it holds include/nccl.h and
lib*/libnccl.so*. Set STOWAGE_NO_NCCL=1 (--repo_env) to behave as if none
were installed. NCCL is of use only where CUDA is found too (@local_cuda):
the BUILD files that use it check both.
"""

_LIB_DIRS = ["lib", "lib64", "lib/x86_64-linux-gnu", "lib/aarch64-linux-gnu"]

def _find(ctx, root):
    if not ctx.path(root + "/include/nccl.h").exists:
        return None
    for lib in _LIB_DIRS:
        for name in ["libnccl.so.2", "libnccl.so"]:
            if ctx.path(root + "/" + lib + "/" + name).exists:
                return (root + "/include", root + "/" + lib + "/" + name)
    return None

def _nccl_configure_impl(ctx):
    found = None
    if ctx.os.environ.get("STOWAGE_NO_NCCL", "0") != "1":
        roots = []
        if ctx.os.environ.get("NCCL_PATH"):
            roots.append(ctx.os.environ["NCCL_PATH"])
        roots += ["/opt/nccl", "/usr/local/nccl", "/usr"]
        for root in roots:
            found = _find(ctx, root)
            if found:
                break
    if found:
        include, lib = found
        ctx.symlink(include + "/nccl.h", "include/nccl.h")
        ctx.symlink(lib, "lib/libnccl.so.2")
        build = """
package(default_visibility = ["//visibility:public"])

cc_library(
    name = "nccl",
    srcs = ["lib/libnccl.so.2"],
    hdrs = ["include/nccl.h"],
    includes = ["include"],
)
"""
    else:
        build = """
package(default_visibility = ["//visibility:public"])

cc_library(name = "nccl")
"""
    ctx.file("BUILD", build)
    ctx.file("defs.bzl", """
NCCL_FOUND = {found}

def if_nccl_found(if_true, if_false = []):
    return if_true if NCCL_FOUND else if_false
""".format(found = found != None))

nccl_configure = repository_rule(
    implementation = _nccl_configure_impl,
    environ = ["STOWAGE_NO_NCCL", "NCCL_PATH"],
    local = True,
)
