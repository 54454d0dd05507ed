"""Python >= 3.14: PEP 768's sys.remote_exec instead of ptrace injection.

The call is made by the target's own interpreter binary (/proc/PID/exe), so the versions always
match; the target runs the bootstrap at its next safe evaluation point, which is exactly the
safety rule the ptrace path has to approximate. Not exercised on machines without a 3.14.
"""
from __future__ import annotations

import subprocess

from .. import procfs
from ..errors import FlightError

_SNIPPET = "import sys; sys.remote_exec(int(sys.argv[1]), sys.argv[2])"


def command(pid: int, script_target_path: str) -> list[str]:
    return [procfs.path(pid, "exe"), "-I", "-c", _SNIPPET, str(pid), script_target_path]


def run(pid: int, script_target_path: str, timeout: float = 5.0) -> dict:
    try:
        proc = subprocess.run(command(pid, script_target_path), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise FlightError("inject_failed", f"sys.remote_exec into pid {pid} did not return within {timeout}s.")
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["unknown error"])[-1]
        hint = (" The target may run with PYTHON_DISABLE_REMOTE_DEBUG or -X disable-remote-debug."
                if "disabled" in last.lower() else "")
        raise FlightError("inject_failed", f"sys.remote_exec into pid {pid} failed: {last}.{hint}")
    return {"method": "sys.remote_exec", "thread": None, "syscall": None, "tries": 1}
