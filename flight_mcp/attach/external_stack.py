"""Every thread's stack read from outside the process: no code runs in the target.

The reader is pystack (Bloomberg, PyPI `pystack`, maintained, Linux): it reads the interpreter's
thread and frame structures from memory for CPython 3.8-3.13, unwinds native stacks with
elfutils (DWARF/.eh_frame), knows which native frames are the eval loop so both stacks can be
merged, and reports who holds the GIL and who collects garbage. py-spy's `dump --native` has no
library API and reports no GIL waiters; gdb needs the python-gdb helpers of each exact build.

pystack is C++ that ptrace-stops the target and waits without a deadline, and a crash in it would
take our server down: it runs in a child process we can kill (a dead tracer detaches its tracees;
see _resume for the stops it can leave behind). The child prints one JSON document; this module
turns it into the same thread/frame dicts the in-process agent returns (see agent/cmd_stack.py),
plus GIL/GC facts.
"""
from __future__ import annotations

import functools
import inspect
import json
import linecache
import os
import re
import signal
import subprocess
import sys
import time

from .. import procfs
from ..errors import FlightError
from . import procs
from .bootstrap import OWN_PATH, PAYLOAD_FILE
from .elf_debug import debug_info_status

# Threads of our own agent (a pending payload thread, or agent threads) are left out, as the agent does.
_OWN = OWN_PATH
# The payload's thread lives only until the bootstrap has started the agent: seen, it means an
# injected agent is still waiting for the GIL.
_PAYLOAD = PAYLOAD_FILE

def child_main(pid: int, stop: bool) -> None:
    """Runs in the child: read with pystack, print JSON to stdout. Never raises."""
    try:
        from pystack.engine import NativeReportingMode, StackMethod, get_process_threads
        from pystack.errors import NotEnoughInformation
        from pystack.types import frame_type
    except ImportError as e:
        print(json.dumps({"error": "external_unavailable", "message": str(e)}))
        return
    # Native unwinding costs little beside stopping the threads (measured: 200 threads ~0.9 s
    # either way) and it is what tells GIL waiters and our own pending thread apart.
    mode = NativeReportingMode.ALL if stop else NativeReportingMode.OFF
    method = "auto"
    try:
        try:
            threads = get_process_threads(pid, stop_process=stop, native_mode=mode, method=StackMethod.AUTO)
        except NotEnoughInformation:
            # Stripped builds: scan the heap and anonymous maps for the interpreter state (slower).
            method = "exhaustive"
            threads = get_process_threads(pid, stop_process=stop, native_mode=mode, method=StackMethod.ALL)
    except Exception as e:  # pystack's own errors, or a process that vanished under it
        print(json.dumps({"error": type(e).__name__, "message": str(e)}))
        return
    out = []
    for t in threads:
        kinds = [frame_type(f, t.python_version).name for f in t.native_frames]
        out.append({
            "tid": t.tid, "name": t.name, "holds_gil": t.holds_the_gil,
            "gc": t.is_gc_collecting, "gc_status": t.gc_status,
            # pystack's gil_status wants the exact symbol take_gil; 3.8 builds name it take_gil.constprop.0
            "waiting_for_gil": any(f.symbol.split(".")[0].split(" ")[0] == "take_gil" for f in t.native_frames),
            # pystack marks threads the interpreter does not know (native_mode ALL) by leaving these unset
            "python": t.frame is not None or t.python_version is not None,
            "frames": [{"file": f.code.filename, "line": f.code.location.lineno, "name": f.code.scope,
                        "entry": f.is_entry} for f in t.frames],
            "native": [{"symbol": f.symbol, "path": f.path, "line": f.linenumber, "library": f.library,
                        "kind": k} for f, k in zip(t.native_frames, kinds)],
        })
    print(json.dumps({"threads": out, "method": method, "stopped": stop}))


# The child runs child_main's own source, not an import of this package: importing flight_mcp there cost
# ~0.2 s on an idle machine and over 1 s on a loaded one, before the reading could start (during a GIL
# stall, every such second is one the answer comes later).
# Made on first use, not at import: every command imports this module (session/gil.py) and few read from outside.
@functools.lru_cache(maxsize=1)
def _child() -> str:
    return "import json, sys\n" + inspect.getsource(child_main) + "\nchild_main(int(sys.argv[1]), sys.argv[2] == '1')\n"


def expected_seconds(pid: int) -> float:
    """A generous estimate of one reading, child start included (measured ~0.5 s for a few threads and
    ~1.2 s for 200 on an idle machine; a loaded one needs more)."""
    return max(1.5, 0.8 + 0.006 * procfs.thread_count(pid))


def _resume(pid: int) -> None:
    """Undo what a reader killed mid-way leaves behind.

    The reader ptrace-attaches thread by thread, and each attach queues a SIGSTOP; a tracer that dies
    detaches its tracees, and threads whose SIGSTOP was not consumed yet then stop the whole process
    (measured: 300 of 301 threads left stopped). SIGCONT resumes them and discards pending stops. Only
    called when the process was not stopped before we started, so a user's SIGSTOP is respected.
    """
    try:
        os.kill(pid, signal.SIGCONT)
    except OSError:
        pass


def _gone(pid: int, what: str) -> FlightError:
    return FlightError("no_such_process", f"pid {pid} exited while {what}; nothing is left to read.")


def read(pid: int, *, native: bool, timeout: float, stop: bool = True) -> dict:
    """{"threads": [...], "notes": [...]} read from outside pid; raises FlightError with a cause and a fix.
    stop=False: read the memory without stopping the process (Python frames and who holds the GIL, no
    native frames nor GIL waiters): what a sample of a GIL holder needs, the holder's frames do not move."""
    version = procs.python_version(pid)  # raises no_such_process / permission_denied
    if version is None:
        try:
            exe = procfs.exe(pid)
        except OSError:
            raise _gone(pid, "being inspected")
        raise FlightError(
            "not_python", f"pid {pid} runs {exe}, not a CPython interpreter (no python executable or libpython "
            "mapped), so there are no Python frames to read; flight-mcp's external reader needs the interpreter's "
            f"structures to find the threads. For native stacks of any program use: gdb -p {pid} -batch -ex "
            "'thread apply all bt'.")
    notes: list[str] = []
    tracer = procfs.tracer(pid)
    # A process already under a tracer (a debugger) cannot be ptrace-stopped again; its memory can still
    # be read, which gives the Python frames but no native ones.
    asked_stop, stop = stop, stop and tracer == 0
    if asked_stop and not stop:
        notes.append(f"pid {pid} is being traced by pid {tracer} (a debugger?), so it could not be stopped: "
                     "Python frames were read from its memory without stopping it; native frames and GIL "
                     "waiters need a stop and are unavailable. Detach the debugger for a native reading.")
    inner = _in_own_pid_namespace(pid, stop, notes)
    stop = stop and not inner
    stopped_before = procfs.state(pid) == "T"
    started = time.monotonic()
    try:
        child = subprocess.run([sys.executable, "-c", _child(), str(pid), "1" if stop else "0"],
                               capture_output=True, text=True, timeout=max(timeout, 0.5))
    except subprocess.TimeoutExpired:
        if stop and not stopped_before:
            _resume(pid)
        if not procfs.alive(pid):
            raise _gone(pid, "being read")
        raise FlightError("external_timeout", f"reading pid {pid} from outside took longer than {timeout:.1f}s "
                          f"({procfs.thread_count(pid)} threads); the reader was stopped and the target resumed. "
                          "Call again with a larger timeout_s.")
    except BaseException:  # e.g. KeyboardInterrupt: run() killed the reader on its way out
        if stop and not stopped_before:
            _resume(pid)
        raise
    if child.returncode != 0 and stop and not stopped_before:
        _resume(pid)  # the reader crashed, maybe in the middle of stopping threads
    try:
        doc = json.loads(child.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        if not procfs.alive(pid):
            raise _gone(pid, "being read")
        raise FlightError("external_failed", f"the external reader of pid {pid} failed (exit "
                          f"{child.returncode}): {child.stderr.strip()[-300:] or 'no message'}. The target is "
                          "unaffected.")
    if "error" in doc:
        raise _reader_error(pid, doc["error"], doc["message"])
    if not procfs.alive(pid):
        if not doc["threads"]:
            raise _gone(pid, "being read")
        notes.append(f"pid {pid} exited just after this reading was taken.")
    if doc["method"] == "exhaustive":
        notes.append("the interpreter state was not found from symbols (a stripped build?); it was found by "
                     "scanning memory instead.")
    if inner:  # pystack tells the threads by the ids the target sees
        tids = procfs.ns_tids(pid)
        for t in doc["threads"]:
            t["tid"] = tids.get(t["tid"], t["tid"])
    threads, own, pending = _threads(pid, doc["threads"], native and stop)
    if pending:
        notes.append(f"left out: {pending} flight-mcp agent(s) loaded into the process and waiting for the GIL; "
                     "an agent starts by itself once the GIL is free (expected and harmless).")
    if own - pending:
        notes.append(f"{own - pending} flight-mcp agent thread(s) left out.")
    if native and stop:
        notes.extend(debug_info_status(pid))
    return {"pid": pid, "threads": threads, "notes": notes, "pending_agents": pending,
            "ms": round((time.monotonic() - started) * 1000, 1)}


def _in_own_pid_namespace(pid: int, stop: bool, notes: list[str]) -> bool:
    """A target in a pid namespace of its own (a container): pystack knows its threads by the ids the
    target sees, and unwinding native stacks by those ids fails here; its memory reads well."""
    if procfs.ns_pid(pid) == pid:
        return False
    if stop:
        notes.append(f"pid {pid} runs in a pid namespace of its own (a container): the external reader cannot "
                     "unwind its native stacks from here, so its Python frames were read from memory without "
                     "stopping it (no native frames nor GIL waiters).")
    return True


def _reader_error(pid: int, kind: str, message: str) -> FlightError:
    if not procfs.alive(pid):
        return _gone(pid, "being read")
    low = message.lower()
    if kind == "external_unavailable":
        return FlightError("external_unavailable", f"reading from outside needs pystack ({message}): "
                           "`pip install pystack` (Linux only) in flight-mcp's environment.")
    if "operation not permitted" in low or "permission" in low or kind == "PermissionError":
        return FlightError("permission_denied", f"not allowed to read pid {pid} from outside ({message}): run "
                           "flight-mcp as the target's user or as root; in a container add CAP_SYS_PTRACE; with "
                           "Yama ptrace_scope=1 a non-root reader may only trace its own children.")
    if "invalid thread id" in low and procfs.ns_pid(pid) != pid:
        return FlightError("external_failed", f"pid {pid} runs in a pid namespace of its own (a container), and the "
                           f"external reader cannot match its interpreter's threads with ours from here ({message}; "
                           "Python 3.8-3.10 keep the ids the container sees). Use stack without native=true (the "
                           "agent inside answers), or run flight-mcp inside the container.")
    if kind in ("NotEnoughInformation", "InvalidPythonProcess"):
        return FlightError("external_failed", f"pid {pid}'s Python state could not be located from outside "
                           f"({message}): the interpreter may be starting up or shutting down, or the build is "
                           "stripped of the symbols that locate it. Retry in a moment; installing the Python "
                           "build's debug symbols makes this reliable.")
    return FlightError("external_failed", f"the external reader of pid {pid} failed: {message}. The target is "
                       "unaffected.")


def _source_line(pid: int, path: str, line: int) -> str:
    # The target's files as it sees them: through /proc/PID/root when it runs in another mount namespace.
    for p in (path, procfs.root(pid, path)):
        text = linecache.getline(p, line)
        if text:
            return text.strip()[:200]
    return ""


def _native_frame(f: dict) -> dict:
    known_src = f["path"] not in ("???", "")
    return {"file": f["path"] if known_src else f["library"], "line": (f["line"] or None) if known_src else None,
            "name": f["symbol"], "qualname": f["symbol"], "kind": "native",
            "library": os.path.basename(f["library"])}


def _merge(py: list[dict], nat: list[dict]) -> tuple[list[dict], bool]:
    """Python frames placed where their eval-loop frame sits in the native stack (outermost first).

    Each EVAL native frame runs one Python entry frame and the Python frames it calls directly (on
    3.11+ one C eval call runs several Python frames); interpreter plumbing (IGNORE) is left out.
    False when the counts disagree (unwinding stopped early): then both lists are simply stacked.
    """
    entries = sum(1 for f in py if f["entry"])
    evals = sum(1 for f in nat if f["kind"] == "EVAL")
    if py and evals != entries:
        return py + [_native_frame(f) for f in nat if f["kind"] == "OTHER"], False
    out, i = [], 0
    for f in nat:
        if f["kind"] == "EVAL":
            if i < len(py):
                out.append(py[i])
                i += 1
                while i < len(py) and not py[i]["entry"]:
                    out.append(py[i])
                    i += 1
        elif f["kind"] == "OTHER":
            out.append(_native_frame(f))
    return out + py[i:], True


def _threads(pid: int, raw: list[dict], native: bool) -> tuple[list[dict], int, int]:
    """(thread dicts, our own threads left out, of which pending payload threads)."""
    threads, own, pending = [], 0, 0
    for t in raw:
        paths = [f["file"] for f in t["frames"]] + [f["library"] for f in t["native"]]
        if any(_OWN.search(p) for p in paths):
            own += 1
            pending += any(_PAYLOAD.search(f["library"]) for f in t["native"])
            continue
        if not t["python"] and not native:
            continue  # a thread the interpreter does not know: only interesting with native frames
        py = [{"file": f["file"], "line": f["line"], "name": f["name"], "qualname": f["name"],
               "source": _source_line(pid, f["file"], f["line"]), "kind": "python", "entry": f["entry"]}
              for f in t["frames"]]
        note = None
        if native and t["native"]:
            frames, merged = _merge(py, t["native"])
            if not merged:
                note = ("native frames are listed after the Python ones, not interleaved: the native unwinding "
                        "did not reach every interpreter frame (missing unwind info in some library)")
        else:
            frames = py
        for f in frames:
            f.pop("entry", None)
        if not t["python"]:
            note = "a native thread, not registered with the Python interpreter: native frames only"
        elif not py:
            note = "no Python frames: the thread is idle inside the interpreter or running native code"
        threads.append({
            "ident": None, "name": "MainThread" if t["tid"] == pid else (t["name"] or f"thread {t['tid']}"),
            "native_id": t["tid"], "daemon": None, "main": t["tid"] == pid, "frames": frames, "note": note,
            "holds_gil": bool(t["holds_gil"] > 0) if t["python"] else False,
            # Waiting for the GIL shows only in native frames (take_gil); unknown when they were not unwound.
            "waiting_for_gil": t["waiting_for_gil"] if t["native"] else None,
            "gc_collecting": bool(t["gc_status"]) if t["gc"] != -1 or t["native"] else None,
        })
    threads.sort(key=lambda t: (not t["main"], t["native_id"]))
    return threads, own, pending
