"""Lifecycle edges, output escaping and messages, on every pyenv Python 3.8-3.13 (issue 9, slice F).

One target per version carries everything: a CPU-busy main thread calling `hot` in a tight loop, a
thread named with terminal escape sequences, globals holding them, a thread that forks as soon as
`forked_fn` is instrumented (the child reports its own state), and a thread that prints each change
of `hot`'s instrumentation state as the target itself sees it (its code object on <= 3.11, its
sys.monitoring local events on >= 3.12).
"""
import json
import os
import signal
import subprocess
import sys
import time

import anyio
import pytest

from .conftest import TARGET_SEES_INSTRUMENTATION, flight_cli, version_params
from .mcp_client import mcp_session, text_of

pytestmark = pytest.mark.timeout(180)

RAW_NAME = "\x1b[2J\x1b[31mred-thread\x07"
RAW_VALUE = "evil\x1b]0;pwned\x07\x1b[2J\x9b31m\u202eabc"

TARGET = TARGET_SEES_INSTRUMENTATION + r'''
import os, sys, threading, time

HOSTILE = "evil\x1b]0;pwned\x07\x1b[2J\x9b31m\u202eabc"
Hostile = type("Evil\x1b[2J\x07", (), {})
HOSTILE_OBJ = Hostile()
HOSTILE_OBJ.note = HOSTILE


def hot(n):
    return n + 1


def forked_fn(n):
    return n * 2


ORIG = {f.__name__: f.__code__ for f in (hot, forked_fn)}


def state(fn):
    """How the target itself sees fn: patched (its code swapped), hooked (3.8-3.11: our frame
    evaluator has a probe on its code), monitored (local events of a flight-mcp tool), tool-left (no events on fn, but a flight-mcp tool still registered), clean."""
    if fn.__code__ is not ORIG[fn.__name__]:
        return "patched"
    if sys.version_info < (3, 12) and flight_mcp_hooks(fn.__code__):   # our frame evaluator
        return "hooked"
    mon = getattr(sys, "monitoring", None)
    if mon is not None:
        tools = [i for i in range(6) if (mon.get_tool(i) or "").startswith("flight-mcp")]
        if any(mon.get_local_events(i, fn.__code__) for i in tools):
            return "monitored"
        if tools:
            return "tool-left"
    return "clean"


LOG = open(sys.argv[1], "a", buffering=1)


def report_hot():
    last = None
    while True:
        now = state(hot)
        if now != last:
            LOG.write("HOT %s\n" % now)
            last = now
        time.sleep(0.005)


def fork_when_watched():
    while state(forked_fn) not in ("patched", "monitored", "hooked"):
        time.sleep(0.002)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        for i in range(200):
            forked_fn(-1)
        os.write(w, state(forked_fn).encode())
        os._exit(0)
    os.close(w)
    deadline = time.time() + 10
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.time() > deadline:  # the child hung in the fork handler
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            break
        time.sleep(0.01)
    child = os.read(r, 100).decode() or "child-hung"
    LOG.write("FORKED %s %s\n" % (child, state(forked_fn)))
    forked_fn(-5)  # the parent's watch captures this one


def idle():
    while True:
        time.sleep(0.05)


threading.Thread(target=idle, name="\x1b[2J\x1b[31mred-thread\x07", daemon=True).start()
print("READY", flush=True)
threading.Thread(target=report_hot, name="reporter", daemon=True).start()
threading.Thread(target=fork_when_watched, name="forker", daemon=True).start()
n = 0
while True:  # CPU-busy main thread (on 3.11 its f_lineno is None at some instructions)
    n = (n * 31 + 7) % 1000003
    hot(n)
'''


def cli(pid, cmd, *extra, timeout=60):
    return flight_cli(*extra, str(pid), "--cmd", cmd, timeout=timeout)


def cli_background(pid, cmd):
    return subprocess.Popen([sys.executable, "-m", "flight_mcp.cli", str(pid), "--cmd", cmd, "--no-color"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class Log:
    """The lines the target writes to its log file (a file, not its stdout pipe: lines that come
    in a burst must each be seen when they come)."""

    def __init__(self, path):
        self.path = path
        self.seen = {}   # prefix -> lines read for it

    def next(self, prefix, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.path.read_text().splitlines() if self.path.exists() else []
            while self.seen.get(prefix, 0) < len(lines):
                line = lines[self.seen.get(prefix, 0)]
                self.seen[prefix] = self.seen.get(prefix, 0) + 1
                if line.startswith(prefix + " "):
                    return line.split()[1:], time.monotonic()
            time.sleep(0.005)
        raise AssertionError(f"the target wrote no {prefix} line within {timeout}s")


def proc_state(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def check_escaping_cli(t):
    """CLI text escapes what the target controls (thread names, values, type names), colours of our
    own kept (JSON keeping the strings is checked over MCP)."""
    r = cli(t.pid, "stack", "--color")
    assert r.returncode == 0, r.stderr
    assert "\\x1b[2J\\x1b[31mred-thread\\x07" in r.stdout, repr(r.stdout)
    assert "\x1b[2J" not in r.stdout and "\x07" not in r.stdout, repr(r.stdout)
    assert "\x1b[1m" in r.stdout  # our own colours
    for cmd in ("getglobal __main__ HOSTILE -r", "getglobal __main__"):
        r = cli(t.pid, cmd, "--no-color")
        assert r.returncode == 0, r.stderr
        for raw in ("\x1b", "\x07", "\x9b", "\u202e"):
            assert raw not in r.stdout, (cmd, repr(r.stdout))
    assert "Evil\\x1b[2J\\x07" in r.stdout, repr(r.stdout)  # the listing names the class


def strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from strings(v)
    elif isinstance(obj, list):
        for x in obj:
            yield from strings(x)


async def check_over_mcp(t, stuck, path):
    """Over MCP: a CPU-busy main thread's stack answers every time (an unknown line shown as such);
    text escaped, structuredContent raw; stack with filepath refused on a read-only server;
    timeout_s covers the attach, and the attach tool's timeout_s is not every later call's."""
    async with mcp_session() as s:
        r = await s.call_tool("attach", {"pid": t.pid, "timeout_s": 60})
        assert not r.is_error, text_of(r)
        for _ in range(5):
            r = await s.call_tool("stack", {"pid": t.pid})
            assert not r.is_error and "Traceback (most recent call last)" not in text_of(r), repr(text_of(r))
            assert RAW_NAME in [th["name"] for th in r.structured_content["threads"]]  # JSON keeps it
            main = [th for th in r.structured_content["threads"] if th["main"]][0]
            assert main["frames"] and all(f["line"] is None or f["line"] > 0 for f in main["frames"])
            assert "line None" not in text_of(r)
        r = await s.call_tool("getglobal", {"pid": t.pid, "module": "__main__", "field": "HOSTILE_OBJ"})
        assert not r.is_error, repr(text_of(r))
        assert "Evil\\x1b[2J\\x07" in text_of(r) and "\x1b" not in text_of(r), repr(text_of(r))
        assert any("Evil\x1b[2J\x07" in x for x in strings(r.structured_content)), repr(r.structured_content)
        r = await s.call_tool("stack", {"pid": t.pid, "filepath": str(path)})
        assert r.is_error and "read_only" in text_of(r) and "--allow-mutating" in text_of(r), text_of(r)
        assert not path.exists()
        started = time.monotonic()
        r = await s.call_tool("getglobal", {"pid": stuck.pid, "module": "__main__", "timeout_s": 1.5})
        took = time.monotonic() - started
        assert r.is_error and "GIL" in text_of(r), text_of(r)
        # timeout_s, not the default 10 s, bounded the call (a margin for a loaded machine's round trip)
        assert took < 1.5 + 6, f"timeout_s=1.5 took {took:.1f}s"


def check_stopped_client(t, log):
    """The CLI is stopped (as by Ctrl-Z) during a watch whose captures flood the socket: the
    instrumentation goes at the deadline anyway; resumed, the CLI still gets the whole answer."""
    assert log.next("HOT")[0] == ["clean"]
    watch = cli_background(t.pid, "watch __main__ hot -n 10000 --timeout 3 --expr args[0]")
    try:
        (on,), _ = log.next("HOT", timeout=30)
        assert on in ("patched", "monitored", "hooked"), on
        watch.send_signal(signal.SIGSTOP)
        # The clean-up comes while the CLI is still stopped: a clean-up that waited for the client
        # would come only after the agent gives it up (REPLY_WAIT_S, 30 s), past this wait.
        (off,), _ = log.next("HOT", timeout=25)
        assert off == "clean", off
        assert watch.poll() is None  # still stopped: the clean-up did not wait for it
    finally:
        watch.send_signal(signal.SIGCONT)
    out, err = watch.communicate(timeout=40)
    assert watch.returncode == 0, err
    assert "captured" in out and "Traceback (most recent call last)" not in err, out[-2000:] + err


def check_fork(t, log):
    """The target forks while forked_fn is watched: the child calls it with no probe and keeps no
    patched code or monitoring tool; the parent's watch goes on and captures its next call."""
    watch = cli_background(t.pid, "watch __main__ forked_fn -n 1 -f 'args[0] == -5' --expr args[0] --timeout 30")
    (child, parent), _ = log.next("FORKED", timeout=40)
    assert child == "clean", f"the forked child kept our instrumentation: {child}"
    assert parent in ("patched", "monitored", "hooked"), parent
    out, err = watch.communicate(timeout=40)
    assert watch.returncode == 0, err
    assert "1 of 1 captured" in out and "VALUE:  -5" in out, out
    r = cli(t.pid, "stack")  # the child did not take the parent's socket with it
    assert r.returncode == 0, r.stderr


def check_stopped_target(t):
    """A SIGSTOPped target: the message says it is stopped and how to resume it, not that a thread
    holds the GIL; stack reads it from outside instead; it stays stopped."""
    os.kill(t.pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 5
        while proc_state(t.pid) != "T":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        started = time.monotonic()
        r = cli(t.pid, "watch __main__ hot -n 1 --timeout 2")
        assert r.returncode == 1, (r.stdout, r.stderr)
        assert "is stopped" in r.stderr and f"kill -CONT {t.pid}" in r.stderr, r.stderr
        assert "GIL" not in r.stderr and "Traceback (most recent call last)" not in r.stderr, r.stderr
        assert time.monotonic() - started < 2 + 6  # said at once or at the deadline, not after a default one
        r = cli(t.pid, "stack", "--json")
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["source"] == "external" and out["agent_error"] == "process_stopped", out["notes"]
        assert f"kill -CONT {t.pid}" in out["notes"][0] and "GIL" not in out["notes"][0], out["notes"]
        assert proc_state(t.pid) == "T"  # left as it was
    finally:
        os.kill(t.pid, signal.SIGCONT)


@pytest.mark.parametrize("version", version_params())
def test_lifecycle_edges_and_output(spawn, version, tmp_path):
    log = Log(tmp_path / "target.log")
    t = spawn(version, TARGET, args=[str(log.path)])
    stuck = spawn(version, "gil_stuck")
    check_escaping_cli(t)
    anyio.run(check_over_mcp, t, stuck, tmp_path / "mcp-stack.txt")
    check_stopped_client(t, log)
    check_fork(t, log)
    r = cli(t.pid, f"stack -f {tmp_path / 'stack.txt'}")  # the CLI writes where its user asks
    assert r.returncode == 0, r.stderr
    written = (tmp_path / "stack.txt").read_text()
    assert "\\x1b[2J" in written and "\x1b" not in written, repr(written)
    check_stopped_target(t)
    assert t.alive() and stuck.alive()


@pytest.mark.timeout(120)
def test_ci_fails_when_no_target_python_ran(tmp_path):
    """With no pyenv interpreter, every end-to-end test is skipped: the run must fail, not pass."""
    env = {**os.environ, "PYENV_ROOT": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
                        "-k", "lifecycle_edges"], capture_output=True, text=True, timeout=100, env=env,
                       cwd=os.path.dirname(os.path.dirname(__file__)))
    assert r.returncode != 0, r.stdout + r.stderr
    assert "no target Python" in r.stdout + r.stderr, r.stdout + r.stderr
