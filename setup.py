from setuptools import Extension, setup

# The MST kernel is plain C (no torch headers), so it builds in seconds with any C compiler.
# OpenMP resolves to the libgomp that torch has already loaded, so both share one thread pool.
setup(
    ext_modules=[
        Extension(
            "corel._native._ext",
            ["src/corel/_native/kernels.c"],
            depends=["src/corel/_native/kernels_impl.h"],
            # -ffp-contract=off: no fused multiply-add, so l1/l2 sums round as torch's do
            extra_compile_args=["-O3", "-std=gnu99", "-fopenmp", "-ffp-contract=off"],
            extra_link_args=["-fopenmp"],
        )
    ]
)
