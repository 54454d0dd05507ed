"""`flight-mcp PID` without --cmd: the interactive session, driven through a pseudo-terminal as a
person drives it (readline, Tab, Ctrl-C as the terminal's SIGINT, Ctrl-D), and with piped stdin.

The attach banner and two commands on one attach on every target version; Ctrl-C ending a watch
with the target left uninstrumented, history across two sessions, completion of a method name and
piped commands on 3.8 and 3.13. HOME and XDG_STATE_HOME point into the test's tmp dir."""
from __future__ import annotations

import fcntl
import os
import re
import select
import stat
import subprocess
import sys
import termios
import time

import pytest

from .conftest import version_params
from .test_watch import instrumented

pytestmark = pytest.mark.timeout(180)

EDGES = version_params(("3.8", "3.13"))
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|[\x01\x02]")


class Terminal:
    """The CLI on the slave side of a pty that is its controlling terminal (so ^C is the terminal's
    SIGINT to it, as for a person); what it writes is read from the master side."""

    def __init__(self, pid: int, home, *extra: str):
        self.master, slave = os.openpty()
        env = dict(os.environ, HOME=str(home), XDG_STATE_HOME=str(home / "state"), TERM="dumb",
                   INPUTRC=os.devnull, NO_COLOR="1", COLUMNS="200")
        self.proc = subprocess.Popen([sys.executable, "-m", "flight_mcp.cli", *extra, str(pid)],
                                     stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True,
                                     preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
        os.close(slave)
        self.seen = ""      # everything read (ANSI sequences and \r removed)
        self.pos = 0        # where the next expect() looks from

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def _read(self, wait: float) -> bool:
        if select.select([self.master], [], [], wait)[0]:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the CLI closed the terminal
                return False
            self.seen += _ANSI.sub("", data.decode("utf-8", "replace")).replace("\r", "")
            return bool(data)
        return True

    def expect(self, pattern: str, timeout: float = 30.0) -> re.Match:
        """The next match of pattern in the output, waiting for it."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            m = rx.search(self.seen, self.pos)
            if m:
                self.pos = m.end()
                return m
            if time.monotonic() > deadline or not self._read(0.1):
                raise AssertionError(f"no {pattern!r} within {timeout}s; output after the last match:\n"
                                     f"{self.seen[self.pos:][-3000:]}")

    def prompt(self, timeout: float = 30.0) -> str:
        """Everything up to the next prompt."""
        start = self.pos
        self.expect(r"flight-mcp \d+> ", timeout)
        return self.seen[start:self.pos]

    def run(self, line: str, timeout: float = 30.0) -> str:
        """Types line and Enter; what it printed up to the next prompt."""
        self.send(line + "\r")
        return self.prompt(timeout)

    def exit_code(self, timeout: float = 15.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(0.1)
        return self.proc.wait(timeout=1)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        os.close(self.master)


@pytest.fixture
def terminal(tmp_path):
    opened = []

    def _open(pid: int, *extra: str) -> Terminal:
        t = Terminal(pid, tmp_path, *extra)
        opened.append(t)
        return t

    yield _open
    for t in opened:
        t.close()


@pytest.mark.parametrize("version", version_params())
def test_banner_then_commands_on_one_attach(spawn, terminal, version):
    t = spawn(version, "demo")
    term = terminal(t.pid)
    banner = term.prompt()
    major_minor = re.escape(version)
    assert re.search(rf"attached to pid {t.pid}: Python {major_minor}\.\d+ \(.*\), \d+ threads", banner), banner
    assert re.search(r"agent \S+: pyinjector via thread \d+", banner), banner
    out = term.run("stack")
    assert "OrderService.process_order" in out or "in worker" in out, out
    out = term.run("getglobal __main__ CONFIG -x 2")
    assert '"discount": 0.1' in out, out
    out = term.run("attach")  # the session's connection, not a second injection
    assert "agent" in out and "already attached" in out, out
    out = term.run("watch __main__ nosuch -n 1")  # an error is shown, the session goes on
    assert "error:" in out and "nosuch" in out, out
    assert '"retries": 3' in term.run("getglobal __main__ CONFIG")
    term.send("exit\r")
    assert term.exit_code() == 1   # a command failed
    assert t.alive()


@pytest.mark.parametrize("version", EDGES)
def test_ctrl_c_ends_a_watch_and_the_session_goes_on(spawn, terminal, version):
    t = spawn(version, "demo")
    term = terminal(t.pid)
    term.prompt()
    term.send("watch __main__ OrderService process_order -n 100000 --timeout 600\r")
    term.expect(r"method=__main__\.OrderService\.process_order")  # captures shown as they arrive
    assert instrumented(t.pid, version)
    term.send("\x03")
    out = term.prompt()
    assert "stopped because it was cancelled" in out, out
    assert not instrumented(t.pid, version)   # removed at once, while the session stays attached
    assert "already attached" in term.run("attach")
    term.send("half a line\x03")   # Ctrl-C at the prompt: the line is dropped
    term.prompt()
    assert '"retries": 3' in term.run("getglobal __main__ CONFIG")
    term.send("\x04")   # Ctrl-D leaves
    assert term.exit_code() == 0
    assert not instrumented(t.pid, version) and t.alive()


@pytest.mark.parametrize("version", EDGES)
def test_history_persists_across_sessions(spawn, terminal, tmp_path, version):
    t = spawn(version, "demo")
    first = terminal(t.pid)
    first.prompt()
    first.run("getglobal __main__ CONFIG -x 1")
    first.run("stack")
    first.send("quit\r")
    assert first.exit_code() == 0
    path = tmp_path / "state" / "flight-mcp" / "history"
    assert path.read_text().splitlines() == ["getglobal __main__ CONFIG -x 1", "stack", "quit"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700

    second = terminal(t.pid)
    second.prompt()
    out = second.run("history -n 3")
    assert re.search(r"2  stack\n\s+3  quit\n\s+4  history -n 3\n", out), out
    # Ctrl-P four times: back to the getglobal of the first session; Enter runs it again
    second.send("\x10\x10\x10\x10\r")
    out = second.prompt()
    assert '"discount": 0.1' in out, out
    second.run("history -c")
    out = second.run("history")
    assert re.search(r"^\s+1  history$", out, re.M) and "stack" not in out, out
    assert path.read_text() == "history\n"
    second.send("exit\r")
    assert second.exit_code() == 0


@pytest.mark.parametrize("version", EDGES)
def test_tab_completes_names_from_the_target(spawn, terminal, version):
    t = spawn(version, "demo")
    term = terminal(t.pid)
    term.prompt()
    # the command, the module, the class and the method, each from a few letters
    term.send("wat\t__mai\tOrderSer\tprocess_ord\t-n 1\r")
    out = term.prompt()
    assert "watch __main__ OrderService process_order -n 1" in out, out
    assert "method=__main__.OrderService.process_order" in out and "1 of 1 captured" in out, out
    term.send("getglobal __main__ CON\t\r")
    assert '"discount": 0.1' in term.prompt()
    term.send("exit\r")
    assert term.exit_code() == 0


@pytest.mark.parametrize("version", EDGES)
def test_piped_commands(spawn, version):
    t = spawn(version, "demo")
    run = [sys.executable, "-m", "flight_mcp.cli", str(t.pid)]
    r = subprocess.run(run, input="getglobal __main__ CONFIG\n\nstack\n", capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, r.stderr
    # only the commands' output on stdout: no banner, no prompt
    assert r.stdout.startswith("  EXPR:") and "flight-mcp" not in r.stdout and "attached" not in r.stdout, r.stdout
    assert '"discount": 0.1' in r.stdout and "Traceback for thread" in r.stdout
    assert f"attached to pid {t.pid}" in r.stderr
    r = subprocess.run(run, input="watch __main__ nosuch -n 1\ngetglobal __main__ CONFIG\n", capture_output=True,
                       text=True, timeout=90)
    assert r.returncode == 1 and "nosuch" in r.stderr and '"retries": 3' in r.stdout, (r.stdout, r.stderr)
    assert not instrumented(t.pid, version) and t.alive()
