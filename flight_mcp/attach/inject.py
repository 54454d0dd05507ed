"""Gets the payload loaded into the target by pyinjector, from a child process with a deadline.

pyinjector holds its caller's GIL and waits without a deadline, and a ptrace tracer that dies
detaches its tracee: running it in a child we can kill keeps both our server and the target safe.
The child re-checks the borrowed thread's state after the ptrace stop, because a thread can
leave its system call between our survey and the stop.

The child is a fork of this process, not a new interpreter: starting Python and importing
pyinjector in a fresh process was ~60 ms of every first command (most of the injection). After
the fork it runs pyinjector's C calls, one /proc read and os._exit: no lock another thread could
hold at the fork, no garbage collection (a finalizer of ours must not run twice), no exit handler.
"""
from __future__ import annotations

import gc
import os
import select
import signal
import time
import warnings

from ..errors import FlightError
from . import safepoint

try:   # at import: a resident (resident_server.py) has it loaded for every command it forks
    from pyinjector.injector import Injector as _Injector
    _INJECTOR_MISSING = None
except ImportError as e:
    _Injector, _INJECTOR_MISSING = None, str(e)

# Exit codes of the child.
_OK, _UNSAFE, _ATTACH_FAILED, _INJECT_FAILED = 0, 3, 4, 5
# What the child may write back (its reason, a line): below PIPE_BUF, so its write never blocks.
_MESSAGE_MAX = 2048


def _injector():
    """pyinjector's Injector class (C), imported before any fork, never in the child."""
    if _Injector is None:
        raise FlightError("install_broken", f"pyinjector cannot be imported ({_INJECTOR_MISSING}): reinstall "
                          "flight-mcp (`pip install flight-mcp`).")
    return _Injector


def _child(pid: int, tid: int, library: bytes, injector_cls) -> tuple[int, str]:
    """Runs in the forked child: attach to tid, check it is still at a safe point, inject, detach."""
    injector = injector_cls()
    try:
        injector.attach(tid)
    except Exception as e:
        return _ATTACH_FAILED, _reason(e)
    try:
        st = safepoint.thread_state(pid, tid)
        if not st.safe:
            return _UNSAFE, st.why
        try:
            injector.inject(library)
        except Exception as e:
            return _INJECT_FAILED, _reason(e)
        return _OK, ""
    finally:
        injector.detach()


def _reason(e: Exception) -> str:
    # pyinjector's InjectorException carries (function, return value, error string); its wrapper's
    # texts (attach() in pyinjector/api.py) name the call and the code the same way.
    args = getattr(e, "args", ())
    if len(args) == 3 and isinstance(args[1], int):
        return f"Injector failed with {args[1]} calling {args[0]}: {args[2]}"
    return str(e) or type(e).__name__


def _fork_child(pid: int, tid: int, library: bytes, injector_cls) -> tuple[int, int]:
    """(child pid, read end of its message pipe)."""
    r, w = os.pipe()
    # Ctrl-C reaches the whole process group: the parent lets the child finish (_wait_child), so the
    # child never takes SIGINT/SIGTERM, from the fork on (blocked around it: no moment when the child
    # could raise into the parent's code).
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    child = -1
    try:
        with warnings.catch_warnings():
            # Python >= 3.12 warns about forking a threaded process: the child here touches no lock
            # (see the module's docstring).
            warnings.simplefilter("ignore", DeprecationWarning)
            child = os.fork()
        if child == 0:
            code, message = _INJECT_FAILED, "the injector child failed"
            try:
                gc.disable()
                os.close(r)
                code, message = _child(pid, tid, library, injector_cls)
            except BaseException as e:  # noqa: BLE001 - whatever happens, the child only reports and exits
                message = f"{type(e).__name__}: {e}"
            finally:
                try:
                    os.write(w, bytes([code]) + message.encode("utf-8", "replace")[:_MESSAGE_MAX])
                finally:
                    os._exit(code)
    except BaseException:   # the fork failed (the child never gets here: it exits above)
        os.close(r)
        raise
    finally:
        if child != 0:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.close(w)
    return child, r


def _wait_child(child: int, r: int, timeout: float) -> tuple[int, str] | None:
    """(exit code, message) of the child, or None when it did not end within timeout (it is killed:
    a dead tracer's tracee is detached and goes on). Woken by the child's end (its pipe closes), no poll."""
    end = time.monotonic() + timeout
    try:
        try:
            data = _read_all(r, end)
        except BaseException:
            # Interrupted (Ctrl-C): killed in the middle of its injection, the child could leave the
            # borrowed thread in the injector's code; it gets until its deadline to end on its own.
            try:
                _read_all(r, end)
            finally:
                _stop(child)
            raise
    finally:
        os.close(r)
    if data is None:
        _stop(child)
        return None
    status = _reap(child)
    if data:
        return data[0], data[1:].decode("utf-8", "replace")
    return _INJECT_FAILED, f"the injector child ended without a word ({status})"


def _read_all(r: int, end: float) -> bytes | None:
    """What the child wrote, once it ended (its end of the pipe closed); None at `end`."""
    data = b""
    while True:
        left = end - time.monotonic()
        if left <= 0 or not select.select([r], [], [], left)[0]:
            return None
        chunk = os.read(r, _MESSAGE_MAX + 1)
        if not chunk:
            return data
        data += chunk


def _stop(child: int) -> None:
    try:
        os.kill(child, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _reap(child)


def _reap(child: int) -> str:
    try:
        _, status = os.waitpid(child, 0)
    except ChildProcessError:  # reaped by someone else's handler: its message still says how it went
        return "exit status unknown"
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit {os.waitstatus_to_exitcode(status)}"


def inject(pid: int, library: str, deadline_s: float = 3.0) -> dict:
    """Injects `library` at a safe point of some thread; returns how it was done."""
    injector_cls = _injector()
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
            child, r = _fork_child(pid, st.tid, library.encode(), injector_cls)
            done = _wait_child(child, r, max(left, 1.0) + 2.0)
            if done is None:
                raise FlightError("inject_timeout", f"the injector did not finish within {max(left, 1.0) + 2.0:.1f}s "
                                  f"on thread {st.tid} of pid {pid}; it was stopped and the target released. "
                                  "Retry; if it persists, the thread may be stuck in the kernel (stack with "
                                  "native=true reads the process from outside).")
            code, err = done
            if code == _OK:
                return {"method": "pyinjector", "thread": st.tid, "syscall": st.syscall, "tries": tries}
            if code == _ATTACH_FAILED:
                attach_error = _attach_error(pid, err)
                if attach_error.code == "permission_denied":
                    raise attach_error
                continue  # seen under load (the stress bench): transient, another try usually works
            if code != _UNSAFE:
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
