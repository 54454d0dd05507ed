"""The package as a user gets it: the sdist is built from this checkout, a wheel is built from the sdist, and
the wheel is installed into a fresh venv; then `flight-mcp --stdio` serves MCP (initialize, list_tools,
a skill) and `flight-mcp PID --cmd ...` runs tools on real targets, from that venv alone.

All offline, once per run (the workers of an xdist run share one build): no build isolation and
--no-deps, the fresh venv seeing this venv's installed dependencies through a .pth line (a plain path
entry: the editable flight_mcp of this venv is NOT visible there, which the test checks).

The wheel itself: tagged py3-none-manylinux_2_17 (no library in it is loaded by the installing Python),
`auditwheel show` agrees, every library stripped, without RUNPATH, needing nothing but libc/the loader
and no glibc symbol version above the floor, read with binutils (readelf), independent of setup.py."""
from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client

from .conftest import version_params
from .mcp_client import text_of

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parent.parent
GLIBC_FLOOR = (2, 17)   # setup.py's GLIBC_FLOOR; flight_profiler's and manylinux2014's
LIBRARIES = {"flight_mcp/payload/_flight_payload.abi3.so", "flight_mcp/agent/_flight_mcp_recorder.abi3.so",
             "flight_mcp/agent/_flight_mcp_hook.abi3.so", "flight_mcp/agent/_flight_mcp_gilstat.abi3.so"}
ALLOWED_NEEDED = {"libc.so.6", "ld-linux-x86-64.so.2", "libpthread.so.0", "libdl.so.2"}


def _run(*argv, cwd=None, timeout=240, env=None):
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                       env={**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", **(env or {})})
    assert r.returncode == 0, f"{' '.join(map(str, argv))} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """(sdist path, wheel path, fresh venv path), built once per run: under xdist the workers share one
    build through a lock in their common temp folder."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent
    out = shared / "packaging"
    with open(shared / "packaging.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "done").exists():
            shutil.rmtree(out, ignore_errors=True)
            _build(out)
            (out / "done").write_text("")
    return next(out.glob("*.tar.gz")), next((out / "wheels").glob("*.whl")), out / "venv"


def _build(out: Path) -> None:
    # From a copy of the checkout (builds write into the tree they run in), through the PEP 517 hook
    # `python -m build --sdist --no-isolation` would call, without needing `build`.
    src = out / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", ".cache", "build", "dist", "*.so",
                                                             "__pycache__", "*.egg-info", ".pytest_cache"))
    r = _run(sys.executable, "-c", f"from setuptools import build_meta; print(build_meta.build_sdist({str(out)!r}))",
             cwd=src)
    sdist = out / r.stdout.strip().splitlines()[-1]
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", out / "wheels", sdist)
    wheel, = (out / "wheels").glob("*.whl")
    venv = out / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    here = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    (purelib / "_flight_test_deps.pth").write_text("".join(f"{p}\n" for p in sorted(here)))
    _run(venv / "bin" / "python", "-m", "pip", "install", "--no-deps", "--no-build-isolation", wheel)


def test_sdist_has_what_builds_tests_and_benchmarks(package):
    sdist, _, _ = package
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    tracked = _tracked()
    expected = {"LICENSE", "README.md", "pyproject.toml", "setup.py", "MANIFEST.in"}
    for folder, keep in (("skills", None), ("tests", None), ("deploy", None), ("bench", ".py"), ("compat", ".py"),
                         ("flight_mcp", (".py", ".c", ".h"))):
        for path in (ROOT / folder).rglob("*"):
            rel = path.relative_to(ROOT).as_posix()
            if (path.is_file() and "__pycache__" not in rel and not rel.endswith((".so", ".pyc"))
                    and (keep is None or rel.endswith(keep)) and (tracked is None or rel in tracked)):
                expected.add(rel)
    assert {"tests/conftest.py", "tests/mcp_client.py", "tests/cli_zygote.py", "tests/targets/idle.py",
            "skills/flight-mcp-stack/SKILL.md", "flight_mcp/agent/ext_common.h", "flight_mcp/payload/payload.c",
            "compat/flight_profiler_suite.py", "bench/attach.py", "deploy/k8s/sidecar-example.yaml"} <= expected
    assert expected - names == set(), f"missing from the sdist: {sorted(expected - names)}"


def _tracked() -> set[str] | None:
    """The files git knows (an untracked scratch file in the checkout need not be shipped); None outside
    a git checkout (in an unpacked sdist, every file counts)."""
    r = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    return set(r.stdout.splitlines()) if r.returncode == 0 and r.stdout else None


def test_wheel_tag_metadata_and_license(package):
    _, wheel, _ = package
    assert re.fullmatch(r"flight_mcp-[\d.]+-py3-none-manylinux_2_17_x86_64\.manylinux2014_x86_64\.whl", wheel.name)
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = z.read(f"{info}/METADATA").decode()
        wheel_file = z.read(f"{info}/WHEEL").decode()
    assert f"{info}/licenses/LICENSE" in names
    assert "License-Expression: MIT" in metadata and "Classifier: Operating System :: POSIX :: Linux" in metadata
    assert "Root-Is-Purelib: false" in wheel_file
    assert {n for n in names if n.endswith(".so")} == LIBRARIES
    assert any(n.startswith("flight_mcp/skills_data/flight-mcp-stack/") for n in names)
    assert any(n.startswith("flight_mcp/session/") for n in names)


def _readelf(*args) -> str:
    return _run("readelf", "-W", *args).stdout


def test_wheel_libraries_stripped_no_runpath_glibc_floor(package, tmp_path):
    _, wheel, _ = package
    with zipfile.ZipFile(wheel) as z:
        z.extractall(tmp_path, members=sorted(LIBRARIES))
    newest = (0, 0)
    for rel in sorted(LIBRARIES):
        lib = tmp_path / rel
        dynamic = _readelf("-d", lib)
        assert "RUNPATH" not in dynamic and "RPATH" not in dynamic, f"{rel}:\n{dynamic}"
        needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", dynamic))
        assert needed <= ALLOWED_NEEDED, f"{rel} needs {needed - ALLOWED_NEEDED} (libpython must never be linked)"
        sections = _readelf("-S", lib)
        assert ".symtab" not in sections and ".debug_" not in sections, f"{rel} is not stripped"
        versions = {tuple(map(int, v.split("."))) for v in re.findall(r"GLIBC_(\d+\.\d+)", _readelf("-V", lib))}
        assert versions, f"{rel}: no glibc version found (readelf -V)"
        worst = max(versions)
        assert worst <= GLIBC_FLOOR, f"{rel} needs GLIBC_{'.'.join(map(str, worst))} > the floor {GLIBC_FLOOR}"
        newest = max(newest, worst)
    print(f"newest glibc symbol version over {len(LIBRARIES)} libraries: GLIBC_{newest[0]}.{newest[1]}")


def test_auditwheel_show_agrees(package):
    _, wheel, _ = package
    auditwheel = Path(sys.executable).parent / "auditwheel"
    out = " ".join(_run(auditwheel, "show", wheel).stdout.split())
    assert 'is consistent with the following platform tag: "manylinux_2_17_x86_64"' in out, out


def test_fresh_venv_serves_mcp_and_runs_cli(package, tmp_path):
    _, _, venv = package
    exe = venv / "bin" / "flight-mcp"
    where = _run(venv / "bin" / "python", "-c", "import flight_mcp; print(flight_mcp.__file__)", cwd=tmp_path)
    assert where.stdout.strip().startswith(str(venv)), f"flight_mcp came from {where.stdout}, not the fresh venv"

    async def session():
        params = StdioServerParameters(command=str(exe), args=["--stdio"], cwd=str(tmp_path))
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as s:
                init = await s.initialize()
                tools = {t.name for t in (await s.list_tools()).tools}
                skill = await s.read_resource("skill://flight-mcp-stack")
                processes = await s.call_tool("list_processes", {})
                return init, tools, skill, processes

    init, tools, skill, processes = anyio.run(session)
    assert init.server_info.name == "flight-mcp"
    assert {"stack", "watch", "trace", "getglobal", "list_processes"} <= tools
    assert "flight-mcp-stack" in skill.contents[0].text
    assert not processes.is_error, text_of(processes)
    skills = tmp_path / "skills"
    r = _run(exe, "install-skills", "--dir", skills)
    assert (skills / "flight-mcp-stack" / "SKILL.md").is_file(), r.stdout


@pytest.mark.parametrize("version", version_params(("3.8", "3.13")))
def test_fresh_venv_tools_on_target(package, spawn, version, tmp_path):
    """The installed payload injects, and the installed C extensions (stripped, no RUNPATH) load in the
    oldest and the newest target: trace records with the C recorder or hook."""
    _, _, venv = package
    target = spawn(version, "demo")
    exe = venv / "bin" / "flight-mcp"
    r = _run(exe, target.pid, "--cmd", "stack", "--no-color", cwd=tmp_path, timeout=60)
    assert "OrderService" in r.stdout or "worker" in r.stdout, r.stdout
    r = _run(exe, target.pid, "--cmd", "trace __main__ OrderService process_order -n 1", "--no-color",
             cwd=tmp_path, timeout=60)
    assert "process_order" in r.stdout and "validate" in r.stdout, r.stdout
