"""Only the compiled extension lives here; all other metadata is in pyproject.toml.

bot/_bookc.c is plain C against the CPython API and the buffer protocol (no numpy
headers): a C compiler and Python's headers build it. bot/_book_kernel.py falls back to
the pure-numpy store when it is not built.

-ffp-contract=off: no fused multiply-adds, so `a * b + c` rounds twice as Python's does
(the early-warning features must give the Python reference's bits on any -march).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "bot._bookc", sources=["bot/_bookc.c"], extra_compile_args=["-ffp-contract=off"]
        )
    ]
)
