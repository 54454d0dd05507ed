"""Gets the payload loaded into the target by pyinjector, from a child process with a deadline.

pyinjector holds its caller's GIL and waits without a deadline, and a ptrace tracer that dies
detaches its tracee: running it in a child we can kill keeps both our server and the target safe.
The child re-checks the borrowed thread's state after the ptrace stop, because a thread can
leave its system call between our survey and the stop.
"""
from __future__ import annotations

import subprocess
import sys
import time

from ..errors import FlightError
from . import safepoint

# Exit codes of the child.
_OK, _UNSAFE, _ATTACH_FAILED, _INJECT_FAILED = 0, 3, 4, 5

_CHILD = r"""
import sys
pid, tid, lib = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
sys.path[:0] = sys.argv[4:]
from flight_mcp.attach import safepoint
import pyinjector
try:
    ctx = pyinjector.attach(tid)
    inj = ctx.__enter__()
except Exception as e:
    print(e, file=sys.stderr); sys.exit(4)
try:
    st = safepoint.thread_state(pid, tid)
    if not st.safe:
        print(st.why, file=sys.stderr); sys.exit(3)
    try:
        inj.inject(lib.encode())
    except Exception as e:
        print(e, file=sys.stderr); sys.exit(5)
finally:
    ctx.__exit__(None, None, None)
"""


def _child_path() -> list[str]:
    """sys.path entries the child needs: our package and pyinjector. The child runs with -S (no
    site): site processing (.pth files, editable-install finders) was ~2/3 of its start-up."""
    import importlib.util
    import os
    pkg_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    spec = importlib.util.find_spec("pyinjector")
    if spec is None or not spec.submodule_search_locations:
        raise FlightError("install_broken", "pyinjector is not installed next to flight-mcp: "
                          "reinstall flight-mcp (`pip install flight-mcp`).")
    return [pkg_root, os.path.dirname(list(spec.submodule_search_locations)[0])]


def inject(pid: int, library: str, deadline_s: float = 3.0) -> dict:
    """Injects `library` at a safe point of some thread; returns how it was done."""
    child_path = _child_path()
    deadline = time.monotonic() + deadline_s
    tries = 0
    last_states: list[safepoint.ThreadState] = []
    attach_error: FlightError | None = None
    while True:
        last_states = safepoint.survey(pid)
        if not last_states:
            raise FlightError("no_such_process", f"pid {pid} exited while attaching.")
        candidates = [s for s in last_states if s.safe]
        for st in candidates[:3]:
            tries += 1
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                proc = subprocess.run([sys.executable, "-S", "-c", _CHILD, str(pid), str(st.tid), library, *child_path],
                                      capture_output=True, text=True, timeout=max(left, 1.0) + 2.0)
            except subprocess.TimeoutExpired:
                # run() killed the child, and a dead tracer's tracee is detached: the target goes on.
                raise FlightError("inject_timeout", f"the injector did not finish within {max(left, 1.0) + 2.0:.1f}s "
                                  f"on thread {st.tid} of pid {pid}; it was stopped and the target released. "
                                  "Retry; if it persists, the thread may be stuck in the kernel (stack with "
                                  "native=true reads the process from outside).")
            if proc.returncode == _OK:
                return {"method": "pyinjector", "thread": st.tid, "syscall": st.syscall, "tries": tries}
            err = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
            if proc.returncode == _ATTACH_FAILED:
                attach_error = _attach_error(pid, err)
                if attach_error.code == "permission_denied":
                    raise attach_error
                continue  # seen under load (the stress bench): transient, another try usually works
            if proc.returncode not in (_UNSAFE,):
                raise FlightError("inject_failed", f"injecting into pid {pid} failed: {err}")
        if time.monotonic() >= deadline:
            break
        time.sleep(0.01)
    if attach_error is not None:
        raise attach_error
    seen = "; ".join(f"thread {s.tid}: {s.why}" for s in last_states[:6])
    raise FlightError(
        "no_safe_point",
        f"pid {pid} offered no safe point within {deadline_s:.1f}s: flight-mcp only borrows a thread "
        f"that is blocked in a system call, never one running code, because that can crash or corrupt the "
        f"target. Thread states: {seen}. A single-threaded process that computes without ever making a "
        f"system call has no such point; retry when it waits for I/O, a lock or a sleep (a longer "
        f"attach timeout helps for intermittent waits), or use stack with native=true, which reads it from outside.")


def _attach_error(pid: int, err: str) -> FlightError:
    if "ermission" in err or "-8" in err or "EPERM" in err:
        return FlightError(
            "permission_denied",
            f"the kernel refused to let flight-mcp trace pid {pid} ({err.splitlines()[0][:120]}). "
            "Run flight-mcp as root or as the target's user with ptrace allowed: "
            "`sysctl kernel.yama.ptrace_scope=0` (or 1 with the server as the parent), and in a container "
            "add the CAP_SYS_PTRACE capability (docker run --cap-add=SYS_PTRACE).")
    return FlightError("attach_failed", f"could not ptrace-attach to pid {pid}: {err}")
