"""The agent's threads do not inherit the target's choices, every pyenv Python 3.8-3.13.

A target that set threading.stack_size(128 KiB), raised its recursion limit and holds a 5,000-deep
nested list answers getglobal -r / -x / a deep expression, a watch, a stack and a trace (a value or
a message, never a crash; the trace says why its slower Python recorder recorded), while its own threads, started before, during and after, keep the stack
size it chose. Attach works while the target traces allocations with tracemalloc and its threads
keep calling into the dynamic loader (the payload's thread once started under the loader lock).
On 3.12+, a trace whose command ended keeps no recording referenced from the traced thread."""
import json
import subprocess
import sys
import time

import pytest

from .conftest import TARGET_SEES_INSTRUMENTATION, flight_cli, version_params

pytestmark = pytest.mark.timeout(240)

# What a thread's real stack size is, as pthread sees it (threading.stack_size() only says what
# the next thread will get).
STACK_PROBE = """
import ctypes
_libc = ctypes.CDLL(None)
_libc.pthread_self.restype = ctypes.c_ulong
def actual_stack():
    attr = ctypes.create_string_buffer(256)
    size = ctypes.c_size_t()
    assert _libc.pthread_getattr_np(ctypes.c_ulong(_libc.pthread_self()), attr) == 0
    _libc.pthread_attr_getstacksize(attr, ctypes.byref(size))
    _libc.pthread_attr_destroy(attr)
    return size.value
"""

SMALL_STACK_DEEP = STACK_PROBE + """
import os, sys, threading, time
sys.setrecursionlimit(10 ** 6)
SMALL = 128 * 1024
threading.stack_size(SMALL)
DEEP = []
cur = DEEP
for _ in range(5000):
    cur.append([])
    cur = cur[0]

def use(x):
    return len(x)

wrong, started = [], [0]

def probe_thread():
    size = actual_stack()
    if size != SMALL:
        wrong.append(size)

def starter():         # keeps starting threads while the agent starts its own: none may get ours
    while not os.path.exists("CHECK"):
        t = threading.Thread(target=probe_thread)
        t.start()
        t.join()
        started[0] += 1
        time.sleep(0.002)

starting = threading.Thread(target=starter, daemon=True)
starting.start()
print("READY", flush=True)
while not os.path.exists("CHECK"):
    use(DEEP)          # watched on the main thread: values read on a target's small stack are slice C's
    time.sleep(0.01)
t = threading.Thread(target=probe_thread)
t.start()
t.join()
starting.join()
# read with no thread being started: threading.stack_size() without an argument also resets it to 0
print("CHECK", threading.stack_size(), started[0], wrong, flush=True)
while True:
    time.sleep(1)
"""


def answered(r, cmd):
    """A value or a clean message: no traceback, and not the connection dying under the command."""
    out = r.stdout + r.stderr
    assert "Traceback (most recent call last)" not in out and "closed the connection" not in out, f"{cmd}: {out}"
    assert r.returncode == 0 or out.startswith("error:"), f"{cmd}: rc={r.returncode} {out}"
    return out


@pytest.mark.parametrize("version", version_params())
def test_small_target_stack_deep_data(spawn, version, tmp_path):
    t = spawn(version, SMALL_STACK_DEEP, env={"FLIGHT_MCP_PY_RECORDER": "1"})   # trace says why it is slow
    deep_expr = "target" + "[0]" * 3000
    commands = [
        ("getglobal __main__ DEEP -r", "VALUE"),
        ("getglobal __main__ DEEP -x 50", None),
        ("getglobal __main__ DEEP -x 6", "VALUE"),
        ("getglobal __main__ DEEP -e '%s'" % deep_expr, None),
        ("getglobal __main__ DEEP -e '%s'" % ("(" * 3000 + "target" + ")" * 3000), None),
        ("watch __main__ use -n 1 -x 6 --timeout 20", "use"),
        ("stack", "MainThread"),
        ("trace __main__ use -n 1", "Python recorder, which makes traced calls 30-90x slower than the native one: "
                                    "FLIGHT_MCP_PY_RECORDER=1 is set in the target's environment"),
    ]
    for cmd, expected in commands:
        r = flight_cli(str(t.pid), "--cmd", cmd, "--no-color", timeout=90)
        out = answered(r, cmd)
        assert t.alive(), f"the target died during {cmd!r}: {out}"
        if expected:
            assert r.returncode == 0 and expected in out, f"{cmd}: {out}"
    (tmp_path / "CHECK").write_text("")
    line = t.read_line(timeout=20).split(" ", 3)
    assert line[0] == "CHECK" and line[1] == str(128 * 1024), line   # the target's setting, as it sees it
    assert int(line[2]) > 10, line                                   # its starter kept starting threads
    assert line[3] == "[]", f"threads of the target got another stack size than it chose: {line}"


TRACEMALLOC_LOADER = """
import ctypes, threading, time, tracemalloc
tracemalloc.start(5)
libc = ctypes.CDLL(None)
beats = [0]

def churn():           # holds the GIL while it allocates and calls dlsym (the loader lock)
    keep = []
    while True:
        keep.append([object() for _ in range(20)])
        getattr(ctypes.CDLL(None), "strlen")
        if len(keep) > 200:
            keep.clear()
        beats[0] += 1

for _ in range(2):
    threading.Thread(target=churn, daemon=True).start()
print("READY", flush=True)
while True:
    time.sleep(0.01)   # the main thread waits in a system call: a safe point to inject into
"""


@pytest.mark.parametrize("version", version_params())
def test_attach_while_tracemalloc_traces_and_threads_use_the_loader(spawn, version):
    t = spawn(version, TRACEMALLOC_LOADER)

    def beats():
        r = flight_cli(str(t.pid), "--cmd", "getglobal __main__ beats", "--no-color", timeout=60)
        assert r.returncode == 0 and "VALUE" in r.stdout, r.stdout + r.stderr
        return int(r.stdout.split("VALUE:")[1].split("]")[0].strip(" ["))

    first = beats()     # the first injection
    assert flight_cli(str(t.pid), "--cmd", "detach", "--no-color", timeout=60).returncode == 0
    later = beats()     # a fresh injection after the detach
    assert later > first, "the target's threads stopped making progress after the attach"
    assert t.alive()


TRACED_THREAD_ENDS = TARGET_SEES_INSTRUMENTATION + """
import gc, os, sys, threading, time

def blocked(gate):
    gate.wait()
    return 1

def recordings():
    # Each live recording holds a reference to its type (a heap type), so the type's reference
    # count counts them; the type is the one the agent's trace loaded. (The command's own objects
    # may end in reference cycles: collected first.)
    gc.collect()
    for name, module in list(sys.modules.items()):
        if name.endswith(".recording") and getattr(module, "_recorders", None):
            return sys.getrefcount(module._recorders[0][0])
    return None

gate = threading.Event()
print("READY", flush=True)
while not os.path.exists("BASE"):  # a first trace (no call) has loaded the recorder, and ended
    time.sleep(0.02)
baseline = recordings()
print("BASELINE", baseline, flush=True)
original = blocked.__code__

def instrumented():
    return blocked.__code__ is not original or flight_mcp_hooks(original)

while not os.path.exists("GO") or not instrumented():   # a second trace waits for the call
    time.sleep(0.02)
t = threading.Thread(target=blocked, args=(gate,), name="traced")
t.start()
while not os.path.exists("END"):   # the trace command runs, sees the call start, and times out
    time.sleep(0.02)
gate.set()
t.join()                           # the traced call returned and its thread ended
for _ in range(100):
    if recordings() == baseline:
        break
    time.sleep(0.02)
print("RECORDINGS", recordings() - baseline, flush=True)
while True:
    time.sleep(1)
"""


@pytest.mark.parametrize("version", version_params())
def test_trace_that_ended_keeps_no_recording_on_the_traced_thread(spawn, version, tmp_path):
    t = spawn(version, TRACED_THREAD_ENDS)
    flight_cli(str(t.pid), "--cmd", "stack", timeout=60)   # attached first: the 1 s below is the trace's own
    cmd = "trace __main__ blocked -n 1 --timeout 1"
    assert "0 of 1 captured" in flight_cli(str(t.pid), "--cmd", cmd, "--no-color", timeout=60).stdout
    (tmp_path / "BASE").write_text("")
    assert t.read_line(timeout=20).startswith("BASELINE ")
    cmd = "trace __main__ blocked -n 1 --timeout 4"
    proc = subprocess.Popen([sys.executable, "-m", "flight_mcp.cli", str(t.pid), "--cmd", cmd, "--no-color"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        (tmp_path / "GO").write_text("")   # the call starts once the probe is in place
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "1 calls seen" in out and "deadline" in out, out + err   # the call ran past the command
    (tmp_path / "END").write_text("")
    line = t.read_line(timeout=20)
    assert line == "RECORDINGS 0", f"a recording stays referenced after its command ended: {line}"


SMALL_STACK_RECURSION = """
import os, sys, threading, time
threading.stack_size(256 * 1024)
# 3.11+ run Python-to-Python calls without C recursion, so 900 levels fit a 256 KiB thread; before
# 3.11 every level takes C stack already, and the application itself stays shallower.
DEPTH = 900 if sys.version_info >= (3, 11) else 150

def watched(x):
    return x + 1

def rec(n):
    return 0 if n == 0 else 1 + rec(n - 1)

def worker():
    while True:
        watched(rec(DEPTH))
        time.sleep(0.005)

threading.Thread(target=worker, daemon=True).start()
print("READY", flush=True)
while True:
    time.sleep(1)
"""


@pytest.mark.parametrize("version", version_params())
def test_watch_never_overflows_a_small_thread_stack(spawn, version):
    # On 3.11 a frame evaluator would make each of the worker's 900 levels use C stack: 256 KiB
    # overflowed (a crash) until the engine learnt to fall back to its trampoline there.
    t = spawn(version, SMALL_STACK_RECURSION)
    r = flight_cli("--json", str(t.pid), "--cmd", "watch __main__ watched -n 3 --timeout 20", timeout=60)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["captured"] == 3, result
    mechanism = result["mechanism"]
    if version == "3.11":
        assert mechanism.startswith("code trampoline") and "256 KiB" in mechanism, mechanism
    else:
        assert mechanism in ("frame evaluator", "sys.monitoring"), mechanism
    time.sleep(0.5)   # the worker goes on recursing, uninstrumented again
    assert t.alive(), "the target died while its function was watched"
