"""The CLI's resident helper (flight_mcp/resident.py, resident_server.py), through the installed `flight-mcp` command as a user
runs it: the same answers and exit codes as without it, one resident serving many commands, Ctrl-C and a
killed command or resident leaving the target clean, a dead or replaced resident replaced, a socket only
this user can reach, and an idle resident ending by itself. The resident runs on the host: its tests need
one target version each, not six."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flight_mcp import procfs, resident

from .conftest import PYTHONS, version_params, wait_until
from .test_watch import instrumented

pytestmark = pytest.mark.timeout(180)

FLIGHT_MCP = str(Path(sys.executable).parent / "flight-mcp")   # the console script: front.py
ONE_VERSION = next((v for v in ("3.12", "3.13", "3.11", "3.10", "3.9", "3.8") if PYTHONS.get(v)), "3.12")
WATCH = "watch __main__ OrderService process_order -n 1000 --expr args[0] --timeout 120"


@pytest.fixture
def env(tmp_path):
    """The environment of commands whose state folder is this test's own; its residents are stopped
    (and, should one not answer, killed) at the end."""
    folder = tmp_path / "state" / "flight-mcp"
    yield {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    resident.stop_all(str(folder))
    for pid in residents(folder).values():
        os.kill(pid, signal.SIGKILL)


def residents(folder: Path) -> dict[str, int]:
    """socket name -> pid of each resident listening in folder."""
    return {os.path.basename(sock): pid for sock, pid in resident.running(str(folder)).items()}


def folder_of(env) -> Path:
    return Path(env["XDG_STATE_HOME"]) / "flight-mcp"


def resident_up(env) -> tuple[str, int]:
    """(socket name, pid) of the one resident of env's state folder, once it listens (the command that
    found none ran by itself and started it in the background)."""
    wait_until(lambda: residents(folder_of(env)), timeout=60, what="a resident listening")
    (found,) = residents(folder_of(env)).items()
    return found


def flight(env, *args, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([FLIGHT_MCP, *args], capture_output=True, text=True, env=env, timeout=timeout)


def quiet(stderr: str) -> str:
    """stderr without the note a loaded machine adds (`note: this answer waited 2.17s for the GIL ...`)."""
    return re.sub(r"(?m)^note: this answer waited .*\n", "", stderr)


@pytest.mark.parametrize("version", version_params(("3.8", "3.13")))
def test_one_resident_answers_as_the_command_would(spawn, env, version):
    t = spawn(version, "demo")
    direct = {**env, "FLIGHT_MCP_RESIDENT": "0"}
    commands = [
        ("getglobal __main__ CONFIG", ["--no-color"]),
        ("getglobal __main__ CONFIG -x 1", ["--json"]),
        ("getglobal __main__ NO_SUCH_GLOBAL", ["--no-color"]),        # the agent's error: exit 1
        ("trace __main__", ["--no-color"]),                            # a usage error: exit 2
        ("watch __main__ OrderService process_order -n 1 --expr args[0]", ["--no-color"]),
    ]
    assert not residents(folder_of(env))
    for cmd, flags in commands:
        via = flight(env, str(t.pid), "--cmd", cmd, *flags)
        alone = flight(direct, str(t.pid), "--cmd", cmd, *flags)
        assert via.returncode == alone.returncode, (cmd, via.stderr, alone.stderr)
        assert quiet(via.stderr) == quiet(alone.stderr), cmd
        if cmd.startswith("watch"):   # a different call each time: compare its shape
            assert "1 of 1 captured" in via.stdout and "method=__main__.OrderService.process_order" in via.stdout
        elif "--json" in flags:
            assert re.sub(r'"(gil_wait|took)_ms": [\d.]+', "", via.stdout) == \
                re.sub(r'"(gil_wait|took)_ms": [\d.]+', "", alone.stdout), cmd
        else:
            assert via.stdout == alone.stdout, cmd
    _, pid = resident_up(env)
    for cmd, flags in commands:   # now surely through the resident
        assert flight(env, str(t.pid), "--cmd", cmd, *flags).returncode == (1 if "NO_SUCH" in cmd else
                                                                             2 if cmd == "trace __main__" else 0)
    assert residents(folder_of(env)) == {resident_up(env)[0]: pid}   # one resident served them all
    assert t.alive()


def test_ctrl_c_or_a_killed_command_leaves_the_target_clean(spawn, env):
    t = spawn(ONE_VERSION, "demo")
    assert not instrumented(t.pid, ONE_VERSION)
    assert flight(env, str(t.pid), "--cmd", "getglobal __main__ CONFIG").returncode == 0
    resident_up(env)
    for how in (signal.SIGINT, signal.SIGKILL):
        cli = subprocess.Popen([FLIGHT_MCP, str(t.pid), "--cmd", WATCH, "--no-color"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_until(lambda: instrumented(t.pid, ONE_VERSION) or cli.poll() is not None, timeout=60,
                       what="the watch instrumenting the function")
            first = ""   # captures stream through the resident's child as they arrive
            while not first.endswith("─" * 60 + "\n") and len(first) < 100_000:
                first += cli.stdout.readline()
            cli.send_signal(how)
            cli.wait(timeout=30)
            out, err = first + cli.stdout.read(), cli.stderr.read()
        finally:
            if cli.poll() is None:
                cli.kill()
                cli.wait()
        if how == signal.SIGINT:   # forwarded to the child: the watch ends as cancelled, with its captures
            assert cli.returncode == 0, err
            assert "stopped because it was cancelled" in out, out[-2000:]
        else:   # the resident kills the orphaned child; the agent removes what the watch installed
            assert cli.returncode == -signal.SIGKILL
        wait_until(lambda: not instrumented(t.pid, ONE_VERSION), timeout=30,
                   what=f"the instrumentation removed after {signal.Signals(how).name}")
    assert t.alive()


def test_a_dead_resident_is_replaced_and_its_command_ends(spawn, env):
    t = spawn(ONE_VERSION, "demo")
    assert flight(env, str(t.pid), "--cmd", "getglobal __main__ CONFIG").returncode == 0
    name, first = resident_up(env)
    # killed between commands: its socket is left behind, refuses connections, and is replaced
    os.kill(first, signal.SIGKILL)
    wait_until(lambda: not procfs.alive(first), timeout=10)
    assert (folder_of(env) / name).exists()
    r = flight(env, str(t.pid), "--cmd", "getglobal __main__ CONFIG")
    assert r.returncode == 0 and "localhost" in r.stdout, r.stderr
    _, second = resident_up(env)
    assert second != first
    # killed while a command runs: the command says so and ends (cleanly: as Ctrl-C would)
    cli = subprocess.Popen([FLIGHT_MCP, str(t.pid), "--cmd", WATCH, "--no-color"], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: instrumented(t.pid, ONE_VERSION) or cli.poll() is not None, timeout=60)
        os.kill(second, signal.SIGKILL)
        out, err = cli.communicate(timeout=30)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert cli.returncode == 1 and "resident helper ended before the command did" in err, err
    wait_until(lambda: not instrumented(t.pid, ONE_VERSION), timeout=30)
    assert t.alive()


def test_a_resident_ends_when_idle_or_when_its_socket_goes(spawn, env, tmp_path):
    t = spawn(ONE_VERSION, "demo")
    idle = {**env, "FLIGHT_MCP_RESIDENT_IDLE": "1"}
    assert flight(idle, str(t.pid), "--cmd", "getglobal __main__ CONFIG").returncode == 0
    name, pid = resident_up(env)
    wait_until(lambda: not procfs.alive(pid), timeout=30, what="the idle resident ending")
    assert not (folder_of(env) / name).exists()   # and it took its socket with it
    assert flight(env, str(t.pid), "--cmd", "getglobal __main__ CONFIG").returncode == 0
    name, pid = resident_up(env)
    (folder_of(env) / name).unlink()    # an operator removing the socket ends its resident
    wait_until(lambda: not procfs.alive(pid), timeout=30, what="the resident whose socket was removed ending")
    off = {**env, "FLIGHT_MCP_RESIDENT": "0"}
    assert flight(off, str(t.pid), "--cmd", "getglobal __main__ CONFIG").returncode == 0
    assert not list(folder_of(env).glob("resident-*.sock"))   # turned off: none started


def test_only_this_user_reaches_it(spawn, env, tmp_path):
    t = spawn(ONE_VERSION, "demo")
    assert flight(env, str(t.pid), "--cmd", "getglobal __main__ CONFIG").returncode == 0
    resident_up(env)
    folder = folder_of(env)
    assert folder.stat().st_mode & 0o777 == 0o700
    (sock,) = folder.glob("resident-*.sock")
    if os.getuid() == 0:   # as another user: the private folder keeps it out before the socket's own check
        child = os.fork()
        if child == 0:
            code = 99
            try:
                os.chdir(folder)   # as if it had got this far: the socket's own folder's mode refuses it
                os.setgid(65534)
                os.setuid(65534)
                try:
                    socket.socket(socket.AF_UNIX).connect(sock.name)
                    code = 0
                except PermissionError:
                    code = 13
            finally:
                os._exit(code)
        assert os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) == 13   # EACCES: refused
    # a state folder that is a symlink (planted, say) is not used: the command runs without a resident
    # and nothing is created where the link points
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / "flight-mcp").symlink_to(elsewhere)
    r = flight({**env, "XDG_STATE_HOME": str(planted)}, str(t.pid), "--cmd", "getglobal __main__ CONFIG")
    assert r.returncode == 0 and "localhost" in r.stdout, r.stderr
    assert not list(elsewhere.iterdir())
