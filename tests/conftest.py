"""Real targets on every pyenv Python 3.8-3.13 present; each is killed at teardown, pass or fail."""
from __future__ import annotations

import os
import shutil
import subprocess
import subprocess as _subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

# The run's own state folder (interactive history, HTTP tokens, thread names, the CLI's resident helpers),
# not the user's ~/.local/state: every process a test starts inherits it; residents started in it are
# stopped at the end (pytest_sessionfinish) and would end by themselves soon after an aborted run.
STATE_HOME = tempfile.mkdtemp(prefix="flight-tests-state-")
os.environ["XDG_STATE_HOME"] = STATE_HOME
os.environ.setdefault("FLIGHT_MCP_RESIDENT_IDLE", "120")

TARGET_VERSIONS = ["3.8", "3.9", "3.10", "3.11", "3.12", "3.13"]
TARGETS_DIR = Path(__file__).parent / "targets"
DEMO = Path(__file__).parent.parent / "flight_mcp" / "demo_target.py"


def _pyenv_root() -> Path:
    root = os.environ.get("PYENV_ROOT")
    if root:
        return Path(root)
    try:
        return Path(subprocess.run(["pyenv", "root"], capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.TimeoutExpired):
        return Path.home() / ".pyenv"


def find_python(version: str) -> str | None:
    """Newest pyenv interpreter for 'X.Y', or None."""
    versions = _pyenv_root() / "versions"
    found = sorted((p for p in versions.glob(f"{version}.*") if p.name.split(".")[:2] == version.split(".")
                    and p.name.replace(".", "").isdigit()), key=lambda p: [int(x) for x in p.name.split(".")])
    for p in reversed(found):
        exe = p / "bin" / f"python{version}"
        if exe.exists():
            return str(exe)
    return None


PYTHONS = {v: find_python(v) for v in TARGET_VERSIONS}


def version_params(versions=TARGET_VERSIONS):
    """pytest params, one per target version; an absent interpreter is a visible skip."""
    return [pytest.param(v, id=f"py{v}", marks=() if PYTHONS.get(v) else
                         pytest.mark.skip(reason=f"Python {v} is not installed under pyenv ({_pyenv_root()})"))
            for v in versions]


class Target:
    def __init__(self, proc: subprocess.Popen, version: str, script: Path):
        self.proc = proc
        self.pid = proc.pid
        self.version = version
        self.script = script

    def alive(self) -> bool:
        return self.proc.poll() is None

    def read_line(self, timeout: float = 10.0) -> str:
        """Next stdout line of the target (targets print READY and test markers)."""
        import selectors
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sel.select(timeout=0.1):
                line = self.proc.stdout.readline()
                if not line:
                    raise AssertionError(f"target {self.pid} closed stdout (exit {self.proc.poll()}); "
                                         f"stderr: {self.proc.stderr.read() if self.proc.poll() is not None else ''}")
                return line.rstrip("\n")
        raise AssertionError(f"target {self.pid} printed nothing within {timeout}s")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


@pytest.fixture
def spawn(tmp_path):
    """spawn(version, source_or_target_name) -> Target, started and READY; all killed at teardown."""
    started: list[Target] = []

    def _spawn(version: str, source: str, *, ready: str = "READY", args: list[str] | None = None,
               env: dict[str, str] | None = None) -> Target:
        exe = PYTHONS.get(version)
        if exe is None:
            pytest.skip(f"Python {version} is not installed under pyenv")
        path = DEMO if source == "demo" else TARGETS_DIR / f"{source}.py"
        if "\n" in source or not path.exists():  # source text (too long to be a file name) or a new target
            path = tmp_path / f"target_{len(started)}.py"
            path.write_text(textwrap.dedent(source))
        proc = subprocess.Popen([exe, "-u", str(path), *(args or [])], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=str(path.parent),
                                env={**os.environ, **env} if env else None)
        target = Target(proc, version, path)
        started.append(target)
        if ready:
            line = target.read_line(timeout=20)
            assert line == ready, f"target said {line!r} instead of {ready!r}"
        return target

    yield _spawn
    for t in started:
        t.kill()


def flight_cli(*args: str, timeout: float = 60, python_args: bool = False,
               subprocess: bool = False) -> _subprocess.CompletedProcess:
    """Runs the real CLI entry point, `flight_mcp.cli.main(args)`, in a process of its own and returns
    what `subprocess.run([python, "-m", "flight_mcp.cli", *args], capture_output=True, text=True)` would.

    By default that process is forked from a zygote that has imported flight_mcp already
    (tests/cli_zygote.py): the same code, argv, environment, cwd, stdio and exit code as
    `python -m flight_mcp.cli`, without the ~0.5 s of imports each new interpreter pays.
    `subprocess=True` runs a new interpreter instead; use it where the interpreter itself is the point.
    With python_args, `args` are the interpreter's own arguments (they must include -m flight_mcp.cli),
    which implies a new interpreter. FLIGHT_TESTS_NO_ZYGOTE=1 in the environment makes every call a new
    interpreter (to compare, or to rule the zygote out). `timeout` bounds the call: the process is killed and
    subprocess.TimeoutExpired raised, as subprocess.run does."""
    if python_args or subprocess or os.environ.get("FLIGHT_TESTS_NO_ZYGOTE"):
        argv = [sys.executable, *args] if python_args else [sys.executable, "-m", "flight_mcp.cli", *args]
        return _subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    return _zygote_cli(list(args), timeout)


def _zygote_cli(args: list[str], timeout: float) -> _subprocess.CompletedProcess:
    import selectors

    from . import cli_zygote

    shown = [sys.executable, "-m", "flight_mcp.cli", *args]
    deadline = time.monotonic() + timeout
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        child = cli_zygote.start(args, null, out_w, err_w)
    finally:
        for fd in (null, out_w, err_w):
            os.close(fd)
    chunks = {out_r: [], err_r: []}
    sel = selectors.DefaultSelector()
    for fd in chunks:
        sel.register(fd, selectors.EVENT_READ)

    def expired():
        child.kill()
        child.wait(timeout=5)
        return _subprocess.TimeoutExpired(shown, timeout, _text(b"".join(chunks[out_r])),
                                          _text(b"".join(chunks[err_r])))

    try:
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                raise expired()
            for key, _ in sel.select(timeout=min(left, 1.0)):
                data = os.read(key.fd, 65536)
                if data:
                    chunks[key.fd].append(data)
                else:
                    sel.unregister(key.fd)
        code = child.wait(timeout=max(deadline - time.monotonic(), 0.001))
        if code is None:  # closed its output but did not exit
            raise expired()
    finally:
        sel.close()
        os.close(out_r)
        os.close(err_r)
    return _subprocess.CompletedProcess(shown, code, _text(b"".join(chunks[out_r])), _text(b"".join(chunks[err_r])))


def _text(data: bytes) -> str:
    """Bytes decoded as subprocess.run(text=True) decodes them (locale encoding, universal newlines)."""
    import locale
    return data.decode(locale.getpreferredencoding(False)).replace("\r\n", "\n").replace("\r", "\n")


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.01, what: str | None = None):
    """Polls predicate() until it returns something truthy and returns that; fails the test after
    `timeout` seconds. Tests wait on a condition this way instead of sleeping a guessed time."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or getattr(predicate, '__name__', 'a condition')}")
        time.sleep(interval)


# The order the tests are handed to xdist's workers (--dist loadgroup, pyproject.toml: one test at a time to
# the next free worker): the files whose tests take longest first, so that none of them starts near the end
# and ends the run on one worker while the others idle, dealt in turns (a test of each file, then the next
# of each), so that the CPU-hungry ones (GIL stalls, gilstat) do not all run at once; then the other
# end-to-end tests, and the unit tests last. No test needs the machine to itself: one with a deadline
# gives it a margin for a machine loaded by the others.
LONG_FIRST = ("test_gil_stall.py", "test_gilstat.py", "test_flight_profiler_suite.py", "test_inspector.py",
              "test_packaging.py", "test_http.py", "test_console.py", "test_bad_input.py", "test_fleet.py",
              "test_readonly.py", "test_profile.py", "test_agent_session.py", "test_agent_threads.py",
              "test_monitor.py", "test_reload.py", "test_namespaces.py")


def _turns(items) -> dict:
    """item -> its sort key."""
    seen: dict[str, int] = {}
    keys = {}
    for item in items:
        if item.path.parent.name == "unit":
            keys[item] = (2, 0, 0)
        elif item.path.name in LONG_FIRST:
            nth = seen[item.path.name] = seen.get(item.path.name, -1) + 1
            keys[item] = (0, nth, LONG_FIRST.index(item.path.name))
        else:
            keys[item] = (1, 0, 0)
    return keys


def pytest_collection_modifyitems(config, items):
    keys = _turns(items)
    items.sort(key=keys.__getitem__)  # stable: the others keep their order


# CI must fail when no target Python ran: with no pyenv interpreter every end-to-end test is
# skipped and the run would pass. A run that collected tests parametrized by target version
# fails unless at least one of them ran (unit tests alone are not affected). Under pytest-xdist
# the workers collect and run the tests: each sends its counts to the controller (workeroutput),
# which decides.
_VERSION_TESTS: set[str] = set()
_VERSION_TESTS_RAN: list[str] = []
_FROM_WORKERS = {"collected": 0, "ran": 0}


def pytest_collection_finish(session):
    for item in session.items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("version") in TARGET_VERSIONS:
            _VERSION_TESTS.add(item.nodeid)


def pytest_runtest_logreport(report):
    if report.when == "call" and report.nodeid in _VERSION_TESTS:
        _VERSION_TESTS_RAN.append(report.nodeid)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    out = getattr(node, "workeroutput", None) or {}
    _FROM_WORKERS["collected"] = max(_FROM_WORKERS["collected"], out.get("flight_version_tests", 0))
    _FROM_WORKERS["ran"] += out.get("flight_version_tests_ran", 0)


def pytest_sessionfinish(session, exitstatus):
    from flight_mcp import resident
    resident.stop_all(os.path.join(STATE_HOME, "flight-mcp"))
    shutil.rmtree(STATE_HOME, ignore_errors=True)
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: the controller decides
        workeroutput["flight_version_tests"] = len(_VERSION_TESTS)
        workeroutput["flight_version_tests_ran"] = len(_VERSION_TESTS_RAN)
        return
    collected = max(len(_VERSION_TESTS), _FROM_WORKERS["collected"])
    ran = len(_VERSION_TESTS_RAN) + _FROM_WORKERS["ran"]
    if collected and not ran and exitstatus in (0, 5):
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = (f"no target Python ran: {collected} end-to-end tests need a pyenv interpreter "
                   f"3.8-3.13 and none is installed under {_pyenv_root()}; install them (pyenv install 3.12) "
                   "or set PYENV_ROOT.")
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_line(message, red=True)
        else:
            print(message, file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# Pasted into a target's source: whether flight-mcp instruments a code object, as the target itself
# can tell (3.12+: local sys.monitoring events; 3.8-3.11: a probe in the agent's frame evaluator,
# whose code objects stay untouched; the code-trampoline fallback is seen by the caller as a swapped
# __code__).
TARGET_SEES_INSTRUMENTATION = '''
def flight_mcp_hooks(code):
    import sys
    mon = getattr(sys, "monitoring", None)
    if mon is not None:
        return any(mon.get_local_events(tool, code) for tool in range(6))
    for name, module in list(sys.modules.items()):
        engine = getattr(module, "instrument", None) if name.startswith("_flight_mcp_agent") else None
        site = engine._sites.get(id(code)) if engine is not None else None
        hook = engine._hook["module"] if site is not None and site.probes else None
        if hook is not None and hook.active():
            return True
    return False
'''
