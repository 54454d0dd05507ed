"""Builds the injected payload and the agent's C extensions, and ships the skills/ folder inside the package.

None of the native libraries is loaded by the Python that installs flight-mcp: the payload is a plain
shared library dlopen()ed into a TARGET (no PyInit, no libpython: it resolves every Python symbol from
the target at run time), and the agent's extensions (stable ABI 3.8, `.abi3.so`) are copied into a
target's runtime folder and loaded there by path. So the wheel is `py3-none-<platform>`: one wheel for
every host Python. The platform tag is manylinux_X_Y with X.Y the newest glibc symbol version the built
libraries need (read from their ELF version tables below; 2.17 on x86_64 since the sources pin the
few symbols glibc re-versioned later), because the libraries also land in targets running in other
containers, on older distributions. They are linked without a RUNPATH (the build Python's LDSHARED adds
its own lib folder) and stripped.
"""
import os
import platform
import re
import shutil
import struct
import sys
import sysconfig

from setuptools import Extension, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

try:
    from setuptools.errors import CompileError, PlatformError
except ImportError:  # pragma: no cover - setuptools < 59
    from distutils.errors import CompileError, DistutilsPlatformError as PlatformError

GLIBC_FLOOR = (2, 17)   # what manylinux2014 and flight_profiler support; tests/test_packaging.py checks it
NO_COMPILER = ("flight-mcp needs a C compiler to build its injected library, and {cc!r} was not found: install "
               "one (Debian/Ubuntu: apt install gcc; Fedora/RHEL: dnf install gcc; Alpine: apk add gcc musl-dev), "
               "or set CC to it, then run pip install again.")
NO_HEADERS = ("flight-mcp's C extensions need Python's headers (Python.h), missing for {py}: install them "
              "(Debian/Ubuntu: apt install python3-dev; Fedora/RHEL: dnf install python3-devel), then run pip "
              "install again.")


def require_compiler(cc=None):
    """Fails the build at its start, in one line, when the C compiler is missing (else setuptools prints
    a page of copying lines first, then a spawn error)."""
    cc = cc or (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        raise PlatformError(NO_COMPILER.format(cc=cc))


class BuildWithSkills(build_py):
    """Copies the top-level skills/ into the built package as flight_mcp/skills_data/."""

    def run(self):
        if self.distribution.ext_modules:   # build_py runs first, in a wheel's build as in an editable one
            require_compiler()
        super().run()
        src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "skills")
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(self.build_lib, "flight_mcp", "skills_data"), dirs_exist_ok=True)


class BuildNative(build_ext):
    """One clear line when the compiler or Python's headers are missing; no RUNPATH; stripped."""

    def build_extensions(self):
        if getattr(self.compiler, "compiler_so", None):
            require_compiler(self.compiler.compiler_so[0])
        if hasattr(self.compiler, "linker_so"):
            # The build Python's LDSHARED carries `-Wl,-rpath,<its lib folder>`: a path of the build
            # machine that would be searched in every target the library is loaded into.
            self.compiler.linker_so = [a for a in self.compiler.linker_so
                                       if not re.match(r"-Wl,(-rpath|-R|--enable-new-dtags)", a)]
        for ext in self.extensions:
            ext.extra_link_args = [*ext.extra_link_args, "-s"]   # no symbol table, no debug info
        super().build_extensions()

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except CompileError:
            include = sysconfig.get_paths()["include"]
            if ext.py_limited_api and not os.path.exists(os.path.join(include, "Python.h")):
                raise PlatformError(NO_HEADERS.format(py=sys.executable)) from None
            raise


def glibc_versions(path):
    """The GLIBC_x.y versions an ELF64 little-endian shared library needs (its .gnu.version_r)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return set()
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    found = set()
    for _name, kind, _flags, _addr, offset, _size, link, info, _align, _entsize in sections:
        if kind != 0x6FFFFFFE:   # SHT_GNU_verneed
            continue
        strtab = sections[link][4]
        entry = offset
        for _ in range(info):
            _version, count, _file, aux, following = struct.unpack_from("<HHIII", data, entry)
            at = entry + aux
            for _ in range(count):
                _hash, _vflags, _other, name, next_aux = struct.unpack_from("<IHHII", data, at)
                text = data[strtab + name:data.index(b"\0", strtab + name)].decode()
                if m := re.fullmatch(r"GLIBC_(\d+)\.(\d+)(?:\.\d+)?", text):
                    found.add((int(m.group(1)), int(m.group(2))))
                at += next_aux
            entry += following
    return found


class PortableWheel(bdist_wheel):
    """py3-none-manylinux_X_Y: the libraries serve every host Python, and X.Y is what they need."""

    def get_tag(self):
        _python, _abi, plat = super().get_tag()
        machine = platform.machine()
        if plat.startswith("linux_") and platform.libc_ver()[0] == "glibc":
            build_lib = self.get_finalized_command("build").build_lib
            needed = [GLIBC_FLOOR]
            for root, _dirs, files in os.walk(build_lib):
                needed += [v for name in files if name.endswith(".so")
                           for v in glibc_versions(os.path.join(root, name))]
            major, minor = max(needed)
            plat = f"manylinux_{major}_{minor}_{machine}"
            if (major, minor) == (2, 17) and machine in ("x86_64", "aarch64"):
                plat += f".manylinux2014_{machine}"   # the legacy alias, for pip < 20.3
        return "py3", "none", plat


setup(
    cmdclass={"build_py": BuildWithSkills, "build_ext": BuildNative, "bdist_wheel": PortableWheel},
    ext_modules=[
        # The payload: built as an Extension only so that `pip install` compiles it; py_limited_api only
        # names it `.abi3.so` (it includes no Python header).
        Extension(
            "flight_mcp.payload._flight_payload",
            sources=["flight_mcp/payload/payload.c"],
            py_limited_api=True,
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
