"""The injector child (attach/inject.py): a fork of flight-mcp that runs pyinjector and reports back
through a pipe. What it says reaches the caller as the specific error, a child that hangs is killed
at its deadline and reaped, and the target goes on untouched either way."""
import ctypes
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from flight_mcp.attach import inject

from .conftest import flight_cli, version_params

pytestmark = pytest.mark.timeout(120)

PTRACE_SEIZE, PTRACE_DETACH = 0x4206, 17

# Holds pid under ptrace (PTRACE_SEIZE: the tracee keeps running) until its stdin closes: a second tracer
# (our injector child) is refused by the kernel.
_TRACER = textwrap.dedent(f"""
    import ctypes, sys
    libc = ctypes.CDLL(None, use_errno=True)
    pid = int(sys.argv[1])
    if libc.ptrace({PTRACE_SEIZE}, pid, None, None) != 0:
        print("FAILED", ctypes.get_errno(), flush=True)
        sys.exit(1)
    print("TRACING", flush=True)
    sys.stdin.read()
""")


@pytest.mark.parametrize("version", version_params(["3.12"]))
def test_a_refused_ptrace_is_reported_by_the_child_and_the_target_goes_on(spawn, version):
    t = spawn(version, "idle")
    tracer = subprocess.Popen([sys.executable, "-c", _TRACER, str(t.pid)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert tracer.stdout.readline().strip() == "TRACING"
        r = flight_cli(str(t.pid), "--cmd", "attach")
        assert r.returncode != 0 and "Traceback (most recent call last)" not in r.stderr, r.stderr
        # the child's own words (pyinjector's failing call and code), through the pipe, in our error
        assert "the kernel refused to let flight-mcp trace pid" in r.stderr, r.stderr
        assert "calling injector_attach" in r.stderr, r.stderr
    finally:
        tracer.stdin.close()
        tracer.wait(timeout=10)
    assert t.alive()
    r = flight_cli(str(t.pid), "--cmd", "attach")  # no tracer any more: the attach works
    assert r.returncode == 0 and "pyinjector via thread" in r.stdout, r.stderr


def _fork(body):
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(r)
            body(w)
        finally:
            os._exit(0)
    os.close(w)
    return child, r


def test_a_child_that_does_not_end_is_killed_at_its_deadline_and_reaped():
    child, r = _fork(lambda w: time.sleep(30))
    t0 = time.monotonic()
    assert inject._wait_child(child, r, 0.3) is None
    assert time.monotonic() - t0 < 5
    with pytest.raises(ChildProcessError):  # reaped: no zombie left behind
        os.waitpid(child, os.WNOHANG)


def test_the_childs_code_and_message_come_back_and_a_silent_death_is_told():
    child, r = _fork(lambda w: os.write(w, bytes([inject._UNSAFE]) + "running (not in a system call)".encode()))
    assert inject._wait_child(child, r, 10) == (inject._UNSAFE, "running (not in a system call)")
    child, r = _fork(lambda w: os.kill(os.getpid(), signal.SIGKILL))
    code, message = inject._wait_child(child, r, 10)
    assert code == inject._INJECT_FAILED and "killed by signal 9" in message, message
