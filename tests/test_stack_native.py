"""stack from outside the process: native frames, and an answer when the agent cannot run.

Targets are real processes on every pyenv Python 3.8-3.13: the main thread stuck in a C call that
holds the GIL (libc sleep() called through ctypes.PyDLL, which does not release the GIL) while two
other threads are deadlocked on each other's lock and a third waits for the GIL. Linux x86_64 (the
syscall numbers below), like pystack itself.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time

import anyio
import pytest

from .conftest import PYTHONS, TARGETS_DIR, flight_cli, version_params
from .mcp_client import mcp_session, text_of

pytestmark = pytest.mark.timeout(180)

STUCK = "gil_stuck"  # tests/targets/gil_stuck.py

HEALTHY = "sleepy_threads"  # tests/targets/sleepy_threads.py

MANY = "many_threads"  # tests/targets/many_threads.py


def _wait_in_c_call(pid: int, timeout: float = 10.0) -> None:
    """The main thread is in libc's sleep once its syscall is a nanosleep (READY is printed just before)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/syscall") as f:
            nr = f.read().split()[0]
        if nr in ("35", "230"):  # x86_64 nanosleep, clock_nanosleep
            return
        time.sleep(0.01)
    raise AssertionError("the target's main thread never entered sleep()")


def _by_name(threads, fn):
    return [t for t in threads if any(f["name"] == fn and f["kind"] == "python" for f in t["frames"])]


@pytest.mark.parametrize("version", version_params())
def test_gil_held_falls_back_to_external_within_deadline(spawn, version):
    t = spawn(version, STUCK)
    _wait_in_c_call(t.pid)

    async def go():
        async with mcp_session() as s:
            started = time.monotonic()
            r = await s.call_tool("stack", {"pid": t.pid, "timeout_s": 6})
            elapsed = time.monotonic() - started
            again = await s.call_tool("stack", {"pid": t.pid, "timeout_s": 6})
            native = await s.call_tool("stack", {"pid": t.pid, "timeout_s": 6, "native": True})
            return r, elapsed, again, native

    r, elapsed, again, native = anyio.run(go)
    assert not r.is_error, text_of(r)
    out = r.structured_content
    # The answer came from outside before the deadline; this bound only tells an answer bounded by the
    # deadline from one that waited for the GIL to come back (never: the target holds it for good).
    assert elapsed < 6 + 10, f"stack took {elapsed:.1f}s with timeout_s=6"
    assert out["source"] == "external"
    # injected at a safe point, then no GIL: read from outside, as a stall once the agent has had
    # gil.START_BUDGET_S to start, or at the deadline when that comes first
    assert out["agent_error"] in ("gil_held", "agent_timeout"), out
    assert "could not start yet" in out["notes"][0] or "did not answer" in out["notes"][0], out["notes"]
    main = [th for th in out["threads"] if th["main"]]
    assert len(main) == 1 and main[0]["holds_gil"] is True
    assert [f["name"] for f in main[0]["frames"]][-1] == "hold_the_gil"
    left, right = _by_name(out["threads"], "take_a_then_b"), _by_name(out["threads"], "take_b_then_a")
    assert len(left) == 1 and len(right) == 1
    assert left[0]["holds_gil"] is False and right[0]["holds_gil"] is False
    assert left[0]["frames"][-1]["source"].endswith("# DEADLOCK-LEFT")
    assert right[0]["frames"][-1]["source"].endswith("# DEADLOCK-RIGHT")
    assert all(f["kind"] == "python" for th in out["threads"] for f in th["frames"])
    text = text_of(r)
    assert "read from outside the process" in text and "[holds the GIL]" in text
    # Asked again: the agent injected the first time still waits for the GIL, so no second injection.
    assert again.structured_content["source"] == "external"
    assert again.structured_content["agent_error"] == "agent_pending", again.structured_content["notes"]
    assert any("left out: 1 flight-mcp agent(s) loaded into the process and waiting for the GIL" in n
               for n in native.structured_content["notes"]), native.structured_content["notes"]
    assert t.alive()
    with open(f"/proc/{t.pid}/syscall") as f:  # still in the same sleep (resumed by restart_syscall)
        assert f.read().split()[0] in ("35", "230", "219")


@pytest.mark.parametrize("version", version_params())
def test_no_safe_point_falls_back_to_external(spawn, version):
    """One thread computing in pure Python offers no safe point to inject at: stack still answers."""
    t = spawn(version, "single_busy")

    async def go():
        async with mcp_session() as s:
            return await s.call_tool("stack", {"pid": t.pid, "timeout_s": 6})

    r = anyio.run(go)
    assert not r.is_error, text_of(r)
    out = r.structured_content
    assert out["source"] == "external" and out["agent_error"] == "no_safe_point", out
    assert any("offered no safe point" in n for n in out["notes"]), out["notes"]
    (main,) = out["threads"]
    assert main["main"] and main["holds_gil"] is True
    assert [f["name"] for f in main["frames"]] == ["<module>"]
    # The reading stops the thread anywhere in its loop: on the body or on the `while` test.
    assert main["frames"][0]["source"] in ("while True:", "n = (n * 31 + 7) % 1000003"), main["frames"]
    with open(f"/proc/{t.pid}/maps") as f:
        assert "/inject-" not in f.read(), "nothing may be loaded into the target"
    with open(f"/proc/{t.pid}/status") as f:
        status = f.read()
    assert "TracerPid:\t0\n" in status and t.alive()


@pytest.mark.parametrize("version", version_params())
def test_native_frames_below_python_frames(spawn, version, tmp_path):
    t = spawn(version, STUCK)
    _wait_in_c_call(t.pid)
    r = flight_cli(str(t.pid), "--json", "--cmd", "stack --native")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["source"] == "external"
    main = [th for th in out["threads"] if th["main"]][0]
    kinds = [f["kind"] for f in main["frames"]]
    names = [f["name"] for f in main["frames"]]
    last_py = max(i for i, k in enumerate(kinds) if k == "python")
    assert names[last_py] == "hold_the_gil"
    below = main["frames"][last_py + 1:]
    assert below and all(f["kind"] == "native" for f in below)
    assert "PyCFuncPtr_call" in [f["name"] for f in below]  # ctypes' call, then libffi, then libc
    assert any(f["name"] == "sleep" and f["library"].startswith("libc") for f in below), below
    assert main["holds_gil"] is True and main["gc_collecting"] is False and main["waiting_for_gil"] is False
    # native frames also sit above the Python ones (the interpreter's entry), each thread in order
    assert kinds[0] == "native" and "python" in kinds
    for fn in ("take_a_then_b", "take_b_then_a"):
        th = _by_name(out["threads"], fn)[0]
        names = [f["name"] for f in th["frames"]]
        assert names.index(fn) < names.index("lock_PyThread_acquire_lock")
        assert th["waiting_for_gil"] is False
    ticker = _by_name(out["threads"], "tick_forever")[0]
    assert ticker["waiting_for_gil"] is True and ticker["holds_gil"] is False
    assert any(f["name"].startswith("take_gil") for f in ticker["frames"])  # 3.8: take_gil.constprop.0
    # the text rendering marks native frames distinctly, and -f writes that same rendering
    path = tmp_path / "stack.txt"
    r = flight_cli(str(t.pid), "--cmd", f"stack --native -f {path}")
    assert r.returncode == 0, r.stderr
    written = path.read_text()
    assert "(C) File" in written and "in sleep (libc" in written
    assert 'in hold_the_gil' in written and "[holds the GIL]" in written and "[waiting for the GIL]" in written
    assert f"note: Write stack to {path} successfully!" in r.stdout
    assert t.alive()


@pytest.mark.parametrize("version", version_params())
def test_garbage_collecting_thread(spawn, version):
    t = spawn(version, "gc_stuck")
    _wait_in_c_call(t.pid)
    r = flight_cli(str(t.pid), "--json", "--cmd", "stack --native")
    assert r.returncode == 0, r.stderr
    main = [th for th in json.loads(r.stdout)["threads"] if th["main"]][0]
    assert main["gc_collecting"] is True and main["holds_gil"] is True
    names = [f["name"] for f in main["frames"]]
    collect = min(i for i, f in enumerate(main["frames"]) if f["kind"] == "native" and "collect" in f["name"])
    assert collect < names.index("on_gc") < names.index("sleep")  # gc.collect (C) -> callback -> libc
    r = flight_cli(str(t.pid), "--cmd", "stack --native")
    assert 'Traceback for thread %d (MainThread) [holds the GIL, garbage collecting]' % t.pid in r.stdout


@pytest.mark.parametrize("version", version_params(["3.8", "3.13"]))
def test_stack_file_and_names_with_agent_source(spawn, version, tmp_path):
    t = spawn(version, HEALTHY)
    path = tmp_path / "agent.txt"
    r = flight_cli(str(t.pid), "--cmd", f"stack -f {path}")
    assert r.returncode == 0, r.stderr
    written = path.read_text()
    assert re.search(r"Traceback for thread \d+ \(server\)", written) and "serve_forever" in written
    assert "(C)" not in written and "read from outside" not in written
    assert r.stdout.startswith(written.rstrip("\n"))
    r = flight_cli(str(t.pid), "--json", "--cmd", "stack")
    assert json.loads(r.stdout)["source"] == "agent"
    # --native reads from outside; the agent left running by the calls above lends its thread names
    path = tmp_path / "native.txt"
    r = flight_cli(str(t.pid), "--cmd", f"stack --native -f {path}")
    assert r.returncode == 0, r.stderr
    written = path.read_text()
    assert re.search(r"Traceback for thread \d+ \(server\)", written) and "(C) File" in written and "serve_forever" in written
    assert "come from the agent already running" in written
    flight_cli(str(t.pid), "--cmd", "detach")
    r = flight_cli(str(t.pid), "--json", "--cmd", "stack --native")
    assert all(th["name"] != "server" for th in json.loads(r.stdout)["threads"])  # OS names: nothing injected
    assert t.alive()


@pytest.mark.parametrize("version", version_params(["3.8", "3.13"]))
def test_process_stopped_in_a_debugger(spawn, version):
    if shutil.which("gdb") is None:
        pytest.skip("needs gdb to hold the target stopped")
    t = spawn(version, HEALTHY)
    gdb = subprocess.Popen(["gdb", "-p", str(t.pid), "-batch", "-ex", "shell sleep 60"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with open(f"/proc/{t.pid}/status") as f:
                status = f.read()
            if "TracerPid:\t0\n" not in status and "(tracing stop)" in status:
                break
            time.sleep(0.05)
        else:
            pytest.fail("gdb never stopped the target")
        for cmd in ("stack", "stack --native"):
            r = flight_cli(str(t.pid), "--json", "--cmd", cmd)
            assert r.returncode == 0, r.stderr
            out = json.loads(r.stdout)
            assert out["source"] == "external"
            assert any("is being traced by pid" in n for n in out["notes"]), out["notes"]
            main = [th for th in out["threads"] if th["main"]][0]
            assert [f["name"] for f in main["frames"]] == ["<module>", "serve_forever"]
        assert out["agent_error"] is None  # --native never asked the agent
    finally:
        gdb.kill()
        gdb.wait()


def test_pid_exits_while_being_read(spawn):
    t = spawn("3.12" if PYTHONS.get("3.12") else next(v for v, p in PYTHONS.items() if p), MANY)
    cli = subprocess.Popen([sys.executable, "-m", "flight_mcp.cli", str(t.pid), "--cmd", "stack --native"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        tracer = 0
        while tracer == 0 and time.monotonic() < deadline and cli.poll() is None:
            with open(f"/proc/{t.pid}/status") as f:
                tracer = int(next(line for line in f if line.startswith("TracerPid:")).split()[1])
        assert tracer, "the reader never attached"
        t.proc.kill()  # not reaped: the target stays a zombie, which must count as exited
        out, err = cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 1, out + err
    assert "exited while being read" in err and "Traceback (most recent call last)" not in err


@pytest.mark.parametrize("version", version_params(["3.8", "3.13"]))
def test_native_thread_is_labelled(spawn, version):
    t = spawn(version, "native_thread")
    r = flight_cli(str(t.pid), "--json", "--cmd", "stack --native")
    assert r.returncode == 0, r.stderr
    threads = json.loads(r.stdout)["threads"]
    native = [th for th in threads if "not registered with the Python interpreter" in (th["note"] or "")]
    assert len(native) == 1
    assert native[0]["frames"] and all(f["kind"] == "native" for f in native[0]["frames"])
    assert "sleep" in [f["name"] for f in native[0]["frames"]]
    assert native[0]["holds_gil"] is False
    # without native frames such a thread has nothing to show, and is left out
    r = flight_cli(str(t.pid), "--json", "--cmd", "stack")
    assert json.loads(r.stdout)["source"] == "agent"


def test_reader_stopped_at_its_deadline_leaves_the_target_running(spawn):
    from flight_mcp.attach import external_stack
    from flight_mcp.errors import FlightError

    t = spawn("3.11" if PYTHONS.get("3.11") else next(v for v, p in PYTHONS.items() if p), MANY)
    started = time.monotonic()
    with pytest.raises(FlightError) as e:
        external_stack.read(t.pid, native=True, timeout=0.5)  # 300 threads take longer than that to read
    assert e.value.kind == "external_timeout" and "target resumed" in e.value.message
    assert time.monotonic() - started < 0.5 + 2.0  # the deadline held (killing the reader is not instant)
    time.sleep(0.2)
    stopped = []
    for tid in os.listdir(f"/proc/{t.pid}/task"):
        with open(f"/proc/{t.pid}/task/{tid}/status") as f:
            state = next(line for line in f if line.startswith("State:"))
        if "stopped" in state or "tracing stop" in state:
            stopped.append(tid)
    assert not stopped, f"threads left stopped: {stopped}"
    with open(f"/proc/{t.pid}/status") as f:
        assert "TracerPid:\t0\n" in f.read()
    r = flight_cli(str(t.pid), "--json", "--cmd", "stack")  # and it still runs Python: the agent answers
    assert r.returncode == 0 and json.loads(r.stdout)["source"] == "agent", r.stderr


def test_non_python_process_is_a_clear_error():
    proc = subprocess.Popen(["sleep", "60"])
    try:
        for cmd in ("stack --native", "stack"):
            r = flight_cli(str(proc.pid), "--cmd", cmd)
            assert r.returncode == 1
            assert "not a CPython interpreter" in r.stderr and "Traceback (most recent call last)" not in r.stderr
        r = flight_cli(str(proc.pid), "--cmd", "stack --native")
        assert f"gdb -p {proc.pid}" in r.stderr
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("version", version_params())
def test_python_without_symbols(version, tmp_path):
    """libpython stripped of its symbol table and debug info: Python frames stay complete, native
    frames inside the interpreter lose names and lines, and the result says so."""
    exe = PYTHONS.get(version)
    if exe is None:
        pytest.skip(f"Python {version} is not installed under pyenv")
    lib = os.path.join(os.path.dirname(os.path.dirname(exe)), "lib", f"libpython{version}.so.1.0")
    if not os.path.exists(lib) or shutil.which("strip") is None:
        pytest.skip("needs a shared libpython and binutils' strip")
    stripped = tmp_path / os.path.basename(lib)
    shutil.copyfile(lib, stripped)
    subprocess.run(["strip", "--strip-all", str(stripped)], check=True)
    script = TARGETS_DIR / f"{STUCK}.py"
    # Same SONAME preloaded: the dynamic linker uses the stripped copy for the interpreter.
    proc = subprocess.Popen([exe, "-u", str(script)], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, LD_PRELOAD=str(stripped)))
    try:
        assert proc.stdout.readline().strip() == "READY"
        _wait_in_c_call(proc.pid)
        with open(f"/proc/{proc.pid}/maps") as f:
            assert str(stripped) in f.read()
        r = flight_cli(str(proc.pid), "--json", "--cmd", "stack --native")
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert any("is stripped" in n and os.path.basename(lib) in n for n in out["notes"]), out["notes"]
        main = [th for th in out["threads"] if th["main"]][0]
        assert [f["name"] for f in main["frames"] if f["kind"] == "python"] == ["<module>", "hold_the_gil"]
        interp = [f for th in out["threads"] for f in th["frames"] if f.get("library") == os.path.basename(lib)]
        assert interp and all(f["line"] is None for f in interp)  # no file:line from a stripped library
        assert any(f["name"] == "sleep" for f in main["frames"])  # libc keeps its own
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_no_permission_is_a_clear_error(spawn):
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run the CLI as another user")
    t = spawn("3.12" if PYTHONS.get("3.12") else next(v for v, p in PYTHONS.items() if p), HEALTHY)
    for cmd in ("stack --native", "stack"):
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m",
                            "flight_mcp.cli", str(t.pid), "--cmd", cmd], capture_output=True, text=True, timeout=60,
                           cwd="/")
        if "No module named" in r.stderr:
            pytest.skip("flight-mcp's install is not readable by the nobody user here")
        assert r.returncode == 1, r.stdout + r.stderr
        assert "not allowed" in r.stderr and "root" in r.stderr and "Traceback (most recent call last)" not in r.stderr
    assert t.alive()
