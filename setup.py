"""Builds the injected payload and trace's recorder, and ships the skills/ folder inside the package.

The payload is a plain shared library, not a Python extension: it is compiled as an Extension
only so that `pip install` builds it with the machine's C compiler; it defines no PyInit and
never links libpython, because it resolves every Python symbol from the target at run time.
"""
import os
import shutil

from setuptools import Extension, setup
from setuptools.command.build_py import build_py


class BuildWithSkills(build_py):
    """Copies the top-level skills/ into the built package as flight_mcp/skills_data/."""

    def run(self):
        super().run()
        src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "skills")
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(self.build_lib, "flight_mcp", "skills_data"), dirs_exist_ok=True)


setup(
    cmdclass={"build_py": BuildWithSkills},
    ext_modules=[
        Extension(
            "flight_mcp.payload._flight_payload",
            sources=["flight_mcp/payload/payload.c"],
            extra_compile_args=["-O2", "-fvisibility=hidden"],
            extra_link_args=["-Wl,--as-needed"],
        ),
        # trace's C recorder: stable ABI only (one build for every target Python >= 3.8),
        # copied into the target's runtime dir with the agent and loaded there by path.
        Extension(
            "flight_mcp.agent._flight_mcp_recorder",
            sources=["flight_mcp/agent/recorder.c"],
            depends=["flight_mcp/agent/ext_common.h"],
            py_limited_api=True,
            extra_compile_args=["-O2", "-fvisibility=hidden", "-Wall"],
        ),
        # watch/trace's call hook on 3.8-3.11 (a frame evaluator): same build and shipping as the recorder.
        Extension(
            "flight_mcp.agent._flight_mcp_hook",
            sources=["flight_mcp/agent/hook.c"],
            depends=["flight_mcp/agent/ext_common.h"],
            py_limited_api=True,
            extra_compile_args=["-O2", "-fvisibility=hidden", "-Wall"],
        ),
        # gilstat's sampler (a native thread reading the GIL's state): same build and shipping.
        Extension(
            "flight_mcp.agent._flight_mcp_gilstat",
            sources=["flight_mcp/agent/gilstat.c"],
            depends=["flight_mcp/agent/ext_common.h"],
            py_limited_api=True,
            extra_compile_args=["-O2", "-fvisibility=hidden", "-Wall"],
            extra_link_args=["-pthread"],
        ),
    ],
)
