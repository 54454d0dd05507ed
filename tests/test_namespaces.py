"""Targets in containers, made here with `unshare`: a mount namespace with a private /tmp (a tmpfs
mounted inside), and a pid namespace of its own (whose /proc numbers the target 1). Attach, stack,
watch with a record, detach: the pids and thread ids shown are ours, the target's /tmp gets only
flight-mcp's runtime directory (removed at detach), and nothing is left instrumented.

Skipped visibly when the kernel (or the lack of privilege) refuses the namespace."""
import json
import os
import re
import signal
import subprocess
import time

import pytest

from flight_mcp import procfs

from .conftest import PYTHONS, TARGET_SEES_INSTRUMENTATION, flight_cli, version_params, wait_until

pytestmark = pytest.mark.timeout(180)

TARGET = TARGET_SEES_INSTRUMENTATION + r'''
import os, sys, threading, time

def work(n):
    time.sleep(0.01)
    return n * 2

def loop():
    i = 0
    while True:
        work(i)
        i += 1

threading.Thread(target=loop, daemon=True, name="ns-worker").start()
print("READY", os.getpid(), sorted(os.listdir("/tmp")), flush=True)
for line in sys.stdin:
    print("HOOKED", flight_mcp_hooks(work.__code__), flush=True)
'''

# How each kind of container is made; {py} is the interpreter. A private /tmp is mounted in both.
MODES = {
    "mount": ["unshare", "-m", "--propagation", "private"],
    "pid": ["unshare", "-p", "-f", "--mount-proc", "--propagation", "private"],
    # a user namespace where root is root (ours is mapped): what a container run by root gets
    "user": ["unshare", "-U", "-r", "-m", "--propagation", "private"],
}
_SHELL = 'mount -t tmpfs flight-ns-tmp /tmp && exec "$0" -u -c "$1"'


def _refused(mode):
    """Why the kernel will not make this namespace here, or None."""
    try:
        r = subprocess.run(MODES[mode] + ["sh", "-c", "mount -t tmpfs x /tmp"], capture_output=True, text=True,
                           timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unshare failed: {e}"
    return None if r.returncode == 0 else f"`{' '.join(MODES[mode])}` refused here: {r.stderr.strip()[:200]}"


class Contained:
    """A target started in its own namespace(s): pid is its pid as we see it."""

    def __init__(self, mode, version):
        self.proc = subprocess.Popen(MODES[mode] + ["sh", "-c", _SHELL, PYTHONS[version], TARGET],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.pid = None
        try:
            line = self.line(30)
            ready, inner, tmp = re.match(r"^(READY) (\d+) (.*)$", line).groups()
            self.inner, self.tmp_at_start = int(inner), tmp
            # the target: the interpreter under unshare (under its forked child with -f)
            self.pid = wait_until(self._find, what="the contained target's pid")
        except BaseException:
            self.kill()
            raise

    def _find(self):
        todo = [self.proc.pid]  # unshare execs the shell that execs python; with -f, in a child
        while todo:
            p = todo.pop()
            if os.path.basename(os.readlink(f"/proc/{p}/exe")).startswith("python"):
                return p
            todo += [int(c) for c in open(f"/proc/{p}/task/{p}/children").read().split()]
        return None

    def line(self, timeout=10):
        import selectors
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise AssertionError(f"the contained target printed nothing within {timeout}s")
        out = self.proc.stdout.readline()
        assert out, f"the contained target exited: {self.proc.poll()} {self.proc.stderr.read()}"
        return out.rstrip("\n")

    def hooked(self):
        self.proc.stdin.write("?\n")
        self.proc.stdin.flush()
        return self.line() == "HOOKED True"

    def kill(self):
        # SIGKILL: the first process of a pid namespace ignores other signals from outside it; its
        # end ends every process of the namespace.
        if self.pid is not None and procfs.alive(self.pid):
            os.kill(self.pid, signal.SIGKILL)
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@pytest.fixture
def contained():
    started = []

    def start(mode, version):
        why = _refused(mode)
        if why:
            pytest.skip(why)
        t = Contained(mode, version)
        started.append(t)
        return t

    yield start
    for t in started:
        t.kill()


def cli(pid, cmd, *extra):
    r = flight_cli(*extra, str(pid), "--cmd", cmd, "--no-color")
    assert r.returncode == 0, f"{cmd}: {r.stdout}\n{r.stderr}"
    return r.stdout


# The pid namespace (the core case: what failed before) on every version, the others on the oldest and newest.
CASES = [pytest.param("pid", *p.values, id=f"pid-{p.id}", marks=p.marks) for p in version_params()] + \
    [pytest.param(mode, *p.values, id=f"{mode}-{p.id}", marks=p.marks)
     for mode in ("mount", "user") for p in version_params(("3.8", "3.13"))]


@pytest.mark.parametrize("mode,version", CASES)
def test_attach_in_namespaces(contained, mode, version):
    t = contained(mode, version)
    tmp = procfs.root(t.pid, "/tmp")
    assert t.tmp_at_start == "[]" and os.listdir(tmp) == []  # its own, empty /tmp
    assert not os.path.samestat(os.stat(tmp), os.stat("/tmp"))
    if mode == "pid":
        assert t.inner == 1 and t.pid != 1  # it numbers itself otherwise than we do
        # read from outside (no agent): our ids too, and why there are no native frames
        r = flight_cli(str(t.pid), "--cmd", "stack --native", "--no-color")
        if version in ("3.8", "3.9", "3.10"):  # pystack matches their threads by the container's ids: refused
            assert r.returncode != 0 and "runs in a pid namespace of its own (a container)" in r.stderr, r.stderr
            assert "Use stack without native=true" in r.stderr
        else:
            assert f"Traceback for thread {t.pid} (MainThread)" in r.stdout and "in work" in r.stdout, r.stdout
            assert "runs in a pid namespace of its own" in r.stdout
        assert os.listdir(tmp) == []

    facts = json.loads(cli(t.pid, "stack", "--json"))
    assert facts["pid"] == t.pid
    by_name = {th["name"]: th["native_id"] for th in facts["threads"]}
    assert by_name["MainThread"] == t.pid
    assert by_name["ns-worker"] in procfs.threads(t.pid) and by_name["ns-worker"] != t.pid
    text = cli(t.pid, "stack")
    assert f"Traceback for thread {t.pid} (MainThread)" in text
    assert f"Traceback for thread {by_name['ns-worker']} (ns-worker)" in text and "in work" in text

    out = cli(t.pid, "watch __main__ work -n 1 --expr 'args[0], return_obj'")
    assert re.search(r"^✓ .* method=__main__\.work cost=\S+ is_exp=False thread=ns-worker", out, re.M), out
    assert "1 of 1 captured" in out
    assert not t.hooked()  # the watch ended: its hook went with it

    assert os.listdir(tmp) == [f"flight-mcp-{os.geteuid()}"]  # nothing of ours beside the runtime dir
    names = os.listdir(os.path.join(tmp, f"flight-mcp-{os.geteuid()}"))
    assert f"agent-{t.pid}.sock" in names and not [n for n in names if n.startswith("inject-")], names

    assert "agent detached" in cli(t.pid, "detach")
    assert os.listdir(tmp) == []  # the runtime dir went with the agent
    assert not t.hooked()
    assert procfs.alive(t.pid)


# A rootless container's user namespace: its root is uid 100000 outside, and ours (0) has no id there.
ROOTLESS = r"""
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER
    print("REFUSED", os.strerror(ctypes.get_errno()), flush=True)
    sys.exit(1)
print("UNSHARED", flush=True)
sys.stdin.readline()  # our uid_map and gid_map are written from outside meanwhile
os.setresgid(0, 0, 0)
os.setresuid(0, 0, 0)
libc.prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE: /proc/PID stays its owner's
print("READY", os.getuid(), flush=True)
while True:
    time.sleep(0.05)
"""


@pytest.mark.parametrize("version", version_params(("3.13",)))
def test_user_namespace_without_our_uid_is_refused(version):
    proc = subprocess.Popen([PYTHONS[version], "-u", "-c", ROOTLESS], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        if line.startswith("REFUSED"):
            pytest.skip(f"the kernel refused a user namespace here: {line}")
        assert line == "UNSHARED", proc.stderr.read() if proc.poll() is not None else line
        for kind in ("uid", "gid"):
            with open(f"/proc/{proc.pid}/{kind}_map", "w") as f:
                f.write("0 100000 65536\n")
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "READY 0" and procfs.owner(proc.pid)[0] == 100000
        r = flight_cli(str(proc.pid), "--cmd", "getglobal __main__ ROOTLESS", "--no-color")
        assert r.returncode != 0
        assert "runs in a user namespace where uid 0 (flight-mcp's) has no id" in r.stderr, r.stderr
        assert "0 -> 100000 (x65536)" in r.stderr and "[unmapped_user]" in r.stderr
        assert not os.path.exists(procfs.root(proc.pid, "/tmp/flight-mcp-100000"))  # nothing staged
        out = flight_cli(str(proc.pid), "--cmd", "stack", "--no-color")  # read from outside instead
        assert out.returncode == 0 and "read from outside the process" in out.stdout, out.stdout + out.stderr
    finally:
        proc.kill()
        proc.wait(timeout=10)
