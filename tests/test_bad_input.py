"""Bad input: every case gets a specific error naming cause and fix, the CLI exits non-zero
without a traceback, and the target is unchanged and keeps running."""
import json
import os
import shutil
import subprocess
import sys

import anyio
import pytest

from .conftest import PYTHONS, TARGETS_DIR, Target, flight_cli, version_params, wait_until
from .mcp_client import mcp_session, text_of

pytestmark = pytest.mark.timeout(180)


def cli_error(*args):
    r = flight_cli(*args)
    assert r.returncode != 0, f"expected an error, got exit 0: {r.stdout}"
    assert "Traceback (most recent call last)" not in r.stderr and "Traceback (most recent call last)" not in r.stdout, r.stderr
    return r.stderr


# ---- processes we cannot or must not attach to ------------------------------------------------

def test_pid_that_does_not_exist():
    with open("/proc/sys/kernel/pid_max") as f:
        pid = int(f.read()) + 1  # above pid_max: can never exist
    err = cli_error(str(pid), "--cmd", "stack")
    assert f"no process with pid {pid}: it is not running" in err
    assert "flight-mcp ps" in err  # the fix: how to find a pid


def test_pid_of_a_non_python_process():
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        err = cli_error(str(sleeper.pid), "--cmd", "stack")
        assert f"pid {sleeper.pid} runs {shutil.which('sleep')}" in err or f"pid {sleeper.pid} runs /" in err
        assert "not a CPython interpreter" in err and "list_processes" in err
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


def _unprivileged_prefix():
    if os.geteuid() != 0:
        return None, "needs root to start a target another user cannot trace"
    if shutil.which("setpriv"):
        return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"], None
    if shutil.which("runuser"):
        return ["runuser", "-u", "nobody", "--"], None
    return None, "neither setpriv nor runuser is available to run the CLI as an unprivileged user"


@pytest.mark.parametrize("version", version_params(["3.12"]))
def test_no_permission_to_trace(spawn, version):
    prefix, why = _unprivileged_prefix()
    if prefix is None:
        pytest.skip(why)
    t = spawn(version, "idle")  # root-owned
    r = subprocess.run(prefix + [sys.executable, "-m", "flight_mcp.cli", str(t.pid), "--cmd", "stack"],
                       capture_output=True, text=True, timeout=60, cwd="/")
    if "ModuleNotFoundError" in r.stderr or "Permission denied: '/" in r.stderr:
        pytest.skip(f"user nobody cannot run this checkout's Python: {r.stderr.strip()[-200:]}")
    assert r.returncode != 0 and "Traceback (most recent call last)" not in r.stderr, r.stderr
    assert f"not allowed to inspect pid {t.pid}" in r.stderr
    assert "run flight-mcp as the target's user or as root" in r.stderr and "CAP_SYS_PTRACE" in r.stderr
    assert t.alive()


@pytest.mark.parametrize("version", version_params())
def test_busy_target_without_safe_point(spawn, version):
    """A single thread computing in pure Python never enters a system call: no safe point. We
    must refuse (no unsafe injection), say why, and leave the target running untraced."""
    t = spawn(version, "single_busy")

    async def main():
        async with mcp_session() as s:
            return await s.call_tool("attach", {"pid": t.pid, "timeout_s": 1.0})

    r = anyio.run(main)
    assert r.is_error
    text = text_of(r)
    assert text.startswith("no_safe_point: "), text
    assert "only borrows a thread that is blocked in a system call" in text
    assert "A single-threaded process that computes without ever making a system call" in text
    assert "native=true" in text  # the fix available right now
    assert t.alive()
    with open(f"/proc/{t.pid}/status") as f:
        status = dict(line.split(":", 1) for line in f if ":" in line)
    assert status["TracerPid"].strip() == "0" and status["State"].split()[0] in ("R", "S")
    with open(f"/proc/{t.pid}/maps") as f:
        assert "/inject-" not in f.read(), "nothing may be loaded into the target"
    assert _cpu_ticks_grow(t.pid), "the target keeps computing"


def _cpu_ticks_grow(pid, within=5.0):
    def ticks():
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[11])  # utime
    before = ticks()
    return wait_until(lambda: ticks() > before, timeout=within, interval=0.05, what="the target's CPU time to grow")


# ---- bad input against a live target: one idle target per version, shared -------------------

@pytest.fixture(scope="module")
def idle():
    """version -> Target (idle.py), started on first use; killed at module teardown."""
    started = {}

    def get(version):
        if version not in started:
            exe = PYTHONS.get(version) or pytest.skip(f"Python {version} is not installed")
            proc = subprocess.Popen([exe, "-u", str(TARGETS_DIR / "idle.py")], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, cwd=str(TARGETS_DIR))
            started[version] = Target(proc, version, TARGETS_DIR / "idle.py")
            assert started[version].read_line(timeout=20) == "READY"
        return started[version]

    yield get
    for t in started.values():
        t.kill()


ERRORS = {
    "module_not_imported": ("getglobal json_not_here CONFIG",
                            ["module 'json_not_here' is not imported in the target",
                             "flight-mcp never imports modules into it", "'__main__'"]),
    "class_not_found": ("getglobal __main__ Nope region",
                        ["class 'Nope' not found in __main__", "It defines: ", "Settings"]),
    "field_not_found": ("getglobal __main__ Settings regoin",
                        ["field 'regoin' not found in Settings", "Did you mean: region?"]),
    "global_not_found": ("getglobal __main__ CONFIGS",
                         ["field 'CONFIGS' not found in __main__", "Did you mean: CONFIG?"]),
    "file_not_found": ("module /no/such/file.py",
                       ["/no/such/file.py is not imported in the target: no such file",
                        "stack shows the files of running code"]),
    "file_not_imported": (f"module {TARGETS_DIR / 'busy.py'}",
                          ["the file exists but the target has not imported it"]),
    "expression_syntax_error": ("getglobal __main__ CONFIG -e 'target[\"db\"'",
                                ["syntax error in -e/--expr expression 'target[\"db\"'", "\n  target[\"db\"\n",
                                 "^. Write a single Python expression"]),
    "expression_raises": ("getglobal __main__ CONFIG -e 'target[\"nope\"]'",
                          ["-e/--expr expression 'target[\"nope\"]' raised KeyError: 'nope'",
                           "The name `target` is the value of __main__.CONFIG"]),
}


# The expression's own errors come from each version's compiler and runtime: every version. The
# lookups' messages are the agent's own text, the same on each: the oldest and newest.
ON_EVERY_VERSION = {"expression_syntax_error", "expression_raises"}


@pytest.mark.parametrize("case", sorted(ON_EVERY_VERSION))
@pytest.mark.parametrize("version", version_params())
def test_expression_errors(idle, version, case):
    test_bad_input_errors(idle, version, case)


@pytest.mark.parametrize("case", sorted(set(ERRORS) - ON_EVERY_VERSION))
@pytest.mark.parametrize("version", version_params(("3.8", "3.13")))
def test_bad_input_errors(idle, version, case):
    t = idle(version)
    cmd, expected = ERRORS[case]
    err = cli_error(str(t.pid), "--cmd", cmd)
    for piece in expected:
        assert piece in err, f"{piece!r} not in {err!r}"
    assert t.alive()


def _value(t, cmd):
    r = flight_cli(str(t.pid), "--cmd", cmd, "--json")
    assert r.returncode == 0 and "Traceback (most recent call last)" not in r.stderr, r.stderr
    return json.loads(r.stdout)["view"]


@pytest.mark.parametrize("version", version_params())
def test_repr_that_raises_or_recurses(idle, version):
    t = idle(version)
    bad = _value(t, "getglobal __main__ BAD")  # a view never calls the target's __repr__ ...
    assert bad["type"] == "__main__.BadRepr" and "error" not in bad and "BadRepr" in bad["repr"]
    bad = _value(t, "getglobal __main__ BAD -r")  # ... raw does, on an agent thread
    assert bad["error"] == "<repr failed: ValueError: repr is broken on purpose>"
    rec = _value(t, "getglobal __main__ RECURSIVE -r")
    assert rec["error"] == "<repr failed: RecursionError (a __repr__ that recurses)>"
    loop = _value(t, "getglobal __main__ LOOP -x 4")
    assert loop["children"][2]["view"].get("cycle") is True  # the list inside itself is not re-expanded
    assert t.alive()


@pytest.mark.parametrize("version", version_params())
def test_huge_containers_are_bounded(idle, version):
    t = idle(version)
    for cmd, total in (("getglobal __main__ HUGE", 1000000), ("getglobal __main__ HUGE_DICT -x 3", 100000)):
        r = flight_cli(str(t.pid), "--cmd", cmd, "--no-color")
        assert r.returncode == 0, r.stderr
        assert len(r.stdout) < 20000, f"{cmd}: {len(r.stdout)} characters"
        assert "..." in r.stdout  # the text says it left items out
        view = _value(t, cmd)
        shown = len(view["children"])
        assert view["len"] == total and 0 < shown <= 50 and view["elided"] == total - shown, view.get("elided")
    text = _value(t, "getglobal __main__ LONG_TEXT")
    assert len(text["repr"]) < 5000 and "chars)" in text["repr"]
    assert t.alive()


# ---- the command line itself ------------------------------------------------------------------

def test_cli_unknown_command():
    err = cli_error(str(os.getpid()), "--cmd", "stakc")
    assert "unknown command 'stakc'; commands: " in err and "stack" in err


def test_cli_unknown_option_of_a_command():
    err = cli_error(str(os.getpid()), "--cmd", "stack --bogus")
    assert "stack: unknown option '--bogus'. Usage: stack" in err and "-a/--async" in err


def test_cli_unknown_program_option():
    r = flight_cli(str(os.getpid()), "--bogus")
    assert r.returncode == 2 and "unrecognized arguments: --bogus" in r.stderr and "Traceback (most recent call last)" not in r.stderr


def test_cli_unquoted_expression_with_spaces():
    err = cli_error(str(os.getpid()), "--cmd", "getglobal __main__ CONFIG -e target['db'] + 1")
    assert "unexpected argument(s) ['1']" in err
    assert "quote the whole expression as one word" in err and "-e 'target[" in err


def test_cli_unclosed_quote():
    err = cli_error(str(os.getpid()), "--cmd", "getglobal __main__ CONFIG -e 'target")
    assert "cannot split the command" in err and "close every quote" in err


def test_cli_missing_command():
    err = cli_error(str(os.getpid()))
    assert 'give a command: flight-mcp' in err and '--cmd "stack"' in err


def test_detach_of_a_pid_that_does_not_exist():
    with open("/proc/sys/kernel/pid_max") as f:
        pid = int(f.read()) + 1
    err = cli_error(str(pid), "--cmd", "detach")
    assert f"no process with pid {pid}: it is not running" in err


# ---- the test harness's CLI is the real CLI ------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["4194305", "--cmd", "stakc"],  # a usage error: exit 2
    [str(os.getpid()), "--bogus"],  # argparse's SystemExit(2)
    ["4194305"],  # no --cmd
    [],  # no target: help on stderr, exit 2
    ["4194305", "--cmd", "stack"],  # an error from the tool: exit 1
    ["ps", "--json", "no-such-process-name-here"],  # exit 0, JSON on stdout
], ids=["usage", "bogus-flag", "no-cmd", "help", "tool-error", "ps-json"])
def test_flight_cli_answers_as_a_new_interpreter_does(args):
    """flight_cli forks its CLI process from a zygote that imported flight_mcp already (tests/cli_zygote.py);
    what the caller sees must be what `python -m flight_mcp.cli` gives."""
    forked = flight_cli(*args)
    fresh = flight_cli(*args, subprocess=True)
    assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)


@pytest.mark.parametrize("version", version_params(["3.12"]))
def test_flight_cli_timeout_kills_the_command(idle, version):
    """A command that outlives flight_cli's timeout fails the test (TimeoutExpired, as subprocess.run)
    instead of hanging the run; the target keeps running."""
    t = idle(version)
    import time
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        flight_cli(str(t.pid), "--cmd", "watch __main__ BadRepr __repr__ -n 1 --timeout 60", timeout=3)
    assert time.monotonic() - started < 20
    assert t.alive()
    r = flight_cli(str(t.pid), "--cmd", "getglobal __main__ CONFIG")  # the agent still answers
    assert r.returncode == 0, r.stderr


@pytest.mark.timeout(120)
def test_ci_fails_when_no_target_python_ran_under_xdist(tmp_path):
    """The README's command runs on xdist workers: the controller, which collects nothing itself,
    must still fail a run in which every end-to-end test was skipped for want of an interpreter."""
    env = {**os.environ, "PYENV_ROOT": str(tmp_path)}
    env.pop("PYTEST_XDIST_TESTRUNUID", None)
    env.pop("PYTEST_XDIST_WORKER", None)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "-p", "no:cacheprovider",
                        os.path.join(root, "tests", "test_foundation.py"), "-k", "stack_getglobal"],
                       capture_output=True, text=True, timeout=100, env=env, cwd=root)
    assert r.returncode != 0, r.stdout + r.stderr
    assert "no target Python ran: 6 end-to-end tests" in r.stdout + r.stderr, r.stdout + r.stderr
