"""stowage_package: the library as a package for hosts without Bazel.

Collects, from the CcInfo of `deps` and everything they depend on:
- this repository's static libraries, merged into one `libstowage.a` (ar MRI);
- this repository's headers (installed under include/stowage/ at their
  repository paths, so `#include "core/tensor.h"` works unchanged);
- the preprocessor defines consumers need (e.g. FMT_HEADER_ONLY=1);
- the external libraries and link flags, written to a manifest that
  tools/install.sh turns into stowageConfig.cmake and stowage.pc. An external
  library the manifest has no name for fails the build here, so a new system
  dependency cannot silently go missing from the package.
The build's own --linkopt values (e.g. the sanitizers of --config=asan) are
passed on to consumers too: the objects need them.
"""

# External libraries by file name -> the manifest's name for them (the names
# tools/install.sh knows how to find on a host without Bazel).
_KNOWN_EXTERNAL = {
    "libboost_json.a": "boost_json",
    "libopenblas.a": "openblas",
    "libre2.a": "re2",
    "libcudart_static.a": "cudart_static",
    "libcublasLt.so": "cublasLt",
}

def _is_external(f):
    return f.short_path.startswith("../")

def _stowage_package_impl(ctx):
    merged = cc_common.merge_cc_infos(cc_infos = [d[CcInfo] for d in ctx.attr.deps])
    own = []
    external = []
    flags = []
    for linker_input in merged.linking_context.linker_inputs.to_list():
        for lib in linker_input.libraries:
            # A prebuilt shared library is linked through a _solib symlink;
            # the file it resolves to says where it comes from.
            f = (lib.pic_static_library or lib.static_library or
                 lib.resolved_symlink_dynamic_library or lib.dynamic_library)
            if f == None:
                continue
            if not _is_external(f):
                if lib.pic_static_library or lib.static_library:
                    own.append(f)
                continue
            name = _KNOWN_EXTERNAL.get(f.basename)
            if name == None:
                fail("stowage_package: no consumer-side name for the external library %s; " % f.short_path +
                     "add it to _KNOWN_EXTERNAL in tools/package.bzl and to tools/install.sh")
            if f not in external:
                external.append(f)
        for flag in linker_input.user_link_flags:
            if flag not in flags:
                flags.append(flag)
    for flag in ctx.fragments.cpp.linkopts:
        if flag not in flags:
            flags.append(flag)

    archive = ctx.actions.declare_file("lib/libstowage.a")
    mri = "\n".join(["create " + archive.path] + ["addlib " + f.path for f in own] + ["save", "end", ""])
    ctx.actions.run_shell(
        inputs = own,
        outputs = [archive],
        command = "printf '%s' \"$1\" | ar -M",
        arguments = [mri],
        mnemonic = "StowageArchive",
        progress_message = "Merging %d static libraries into libstowage.a" % len(own),
    )

    headers = [h for h in merged.compilation_context.headers.to_list() if not _is_external(h)]
    lines = ["archive " + archive.short_path]
    lines += ["header " + h.short_path for h in headers]
    lines += ["define " + d for d in merged.compilation_context.defines.to_list()]
    lines += ["external %s %s" % (_KNOWN_EXTERNAL[f.basename], f.short_path) for f in external]
    lines += ["flag " + f for f in flags]
    manifest = ctx.actions.declare_file(ctx.label.name + ".manifest")
    ctx.actions.write(manifest, "\n".join(lines) + "\n")

    files = [archive, manifest]
    return [DefaultInfo(
        files = depset(files),
        runfiles = ctx.runfiles(files = files + headers + external),
    )]

stowage_package = rule(
    implementation = _stowage_package_impl,
    attrs = {
        "deps": attr.label_list(providers = [CcInfo]),
    },
    fragments = ["cpp"],
)
