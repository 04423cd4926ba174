"""Metadata lives in setup.cfg; this file only declares the optional compiled kernel."""

from setuptools import Extension, setup

# The hash grid's CPU kernel. Optional: without a C compiler the install still succeeds and
# the grid runs on torch operations alone (the same results, slower).
HASHGRID_CPU = Extension(
    "fieldkd.platform.fields.encodings._hashgrid_cpu",
    sources=["fieldkd/platform/fields/encodings/hashgrid_cpu.c"],
    # No implicit fused multiply-adds: the kernel rounds as the torch operations do (its one
    # explicit fmaf is the order of torch's embedding_bag).
    extra_compile_args=["-O3", "-std=c11", "-ffp-contract=off", "-pthread"],
    extra_link_args=["-pthread"],
    optional=True,
)

setup(ext_modules=[HASHGRID_CPU])
