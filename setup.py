"""Builds the injected payload: a plain shared library, not a Python extension.

It is compiled as an Extension only so that `pip install .` builds it with the
machine's C compiler; it defines no PyInit and never links libpython, because
it resolves every Python symbol from the target process at run time.
"""
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "flight_mcp.payload._flight_payload",
            sources=["flight_mcp/payload/payload.c"],
            extra_compile_args=["-O2", "-fvisibility=hidden"],
            extra_link_args=["-Wl,--as-needed"],
        )
    ]
)
