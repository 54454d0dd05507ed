"""Finding Python processes and their versions from /proc, without touching them."""
from __future__ import annotations

import os
import time
import re
from dataclasses import dataclass

from .. import procfs
from ..errors import FlightError

_EXE_VERSION = re.compile(r"python(\d)\.(\d+)")
_LIB_VERSION = re.compile(r"libpython(\d)\.(\d+)")


@dataclass
class PythonProcess:
    pid: int
    version: tuple[int, int] | None
    exe: str
    uid: int
    user: str
    cmdline: list[str]
    ppid: int


def python_version(pid: int) -> tuple[int, int] | None:
    """(major, minor) of the interpreter in pid, or None when pid runs no CPython we know."""
    try:
        exe = procfs.exe(pid)
    except FileNotFoundError:
        raise FlightError("no_such_process", f"no process with pid {pid}: it is not running. "
                          "list_processes (CLI: flight-mcp ps) shows the Python processes you can attach to.")
    except PermissionError:
        raise FlightError("permission_denied", f"not allowed to inspect pid {pid}: run flight-mcp as the "
                          "target's user or as root (in a container: add CAP_SYS_PTRACE).")
    m = _EXE_VERSION.search(os.path.basename(exe))
    if m:
        return int(m.group(1)), int(m.group(2))
    # `python3` or an embedding program (uwsgi, ...): the mapped libpython says which version.
    m = _EXE_VERSION.search(exe)
    for mapping in procfs.maps(pid) or ():
        lm = _LIB_VERSION.search(mapping.path)
        if lm:
            return int(lm.group(1)), int(lm.group(2))
    if m:
        return int(m.group(1)), int(m.group(2))
    if os.path.basename(exe).startswith("python"):
        return _version_from_exe_symbols(exe)
    return None


def _version_from_exe_symbols(exe: str) -> tuple[int, int] | None:
    # A statically linked `python3` with no version in its name: pyenv's layout names it.
    m = re.search(r"/(\d)\.(\d+)\.\d+[^/]*/bin/", exe)
    return (int(m.group(1)), int(m.group(2))) if m else None


def describe(pid: int) -> PythonProcess | None:
    try:
        version = python_version(pid)
    except FlightError:
        return None
    if version is None:
        return None
    import psutil   # here: a command on one known pid needs none of it (~10 ms of a CLI start)
    try:
        p = psutil.Process(pid)
        with p.oneshot():
            uid = p.uids().real
            user = p.username()
            cmd = p.cmdline()
            ppid = p.ppid()
            exe = procfs.exe(pid)
    except (psutil.Error, OSError):
        return None
    return PythonProcess(pid, version, exe, uid, user, cmd, ppid)


def list_python(substring: str | None = None) -> list[PythonProcess]:
    import psutil
    out = []
    for pid in psutil.pids():
        proc = describe(pid)
        if proc is None:
            continue
        if substring and substring not in " ".join(proc.cmdline) and substring != str(pid):
            continue
        out.append(proc)
    return out


def require_python(pid: int) -> tuple[int, int]:
    """pid's Python version, or the error that says why it cannot be attached (read from /proc alone:
    describe()'s psutil reading is for listings)."""
    if pid <= 0:
        raise FlightError("bad_pid", f"{pid} is not a process id; pass the pid of a running Python process.")
    version = python_version(pid)
    if version is None:
        try:
            exe = procfs.exe(pid)
        except OSError:
            raise FlightError("no_such_process", f"pid {pid} exited while being inspected.")
        raise FlightError("not_python", f"pid {pid} runs {exe}, which is not a CPython interpreter "
                          "(no python executable or libpython mapped). list_processes shows the Python ones.")
    if version < (3, 8):
        raise FlightError("unsupported_python", f"pid {pid} runs Python {version[0]}.{version[1]}; "
                          "flight-mcp supports targets on Python 3.8 and newer.")
    if not procfs.exists(pid):
        raise FlightError("no_such_process", f"pid {pid} exited while being inspected.")
    return version


STOP_SETTLE_S = 0.3


def stopped_error(pid: int) -> FlightError | None:
    """A process_stopped error when pid is stopped (state T: SIGSTOP, Ctrl-Z; t: held by a
    debugger), else None. Nothing runs in a stopped process, so the agent cannot answer or start;
    without this, the silence looked like a thread holding the GIL. We never resume it ourselves:
    whoever stopped it meant it."""
    state = procfs.state(pid)
    # A stop that passes is not one: another flight-mcp's injection holds a thread under ptrace for
    # a few ms (seen as "t" when two attaches race). Only a stop that lasts is reported.
    deadline = time.monotonic() + STOP_SETTLE_S
    while state in ("T", "t") and time.monotonic() < deadline:
        time.sleep(0.02)
        state = procfs.state(pid)
    if state == "T":
        return FlightError("process_stopped", f"pid {pid} is stopped (by SIGSTOP, or Ctrl-Z in its terminal): "
                           "no code runs in it, so flight-mcp cannot attach or get an answer, and left it "
                           f"stopped. Resume it with `kill -CONT {pid}` (or `fg` in its shell), then retry.")
    if state == "t":
        return FlightError("process_stopped", f"pid {pid} is stopped by a debugger or tracer (ptrace): no code "
                           "runs in it, so flight-mcp cannot attach or get an answer. Continue it in that "
                           "debugger (or detach the debugger), then retry.")
    return None
