"""console on real targets, every pyenv Python 3.8-3.13: what a snippet prints comes back in the
answer and never on the target's stdout, while an application thread printing at the same time
keeps printing there; the value of the final expression; an infinite loop stopped at the deadline
with the target still serving; over MCP refused without --allow-mutating and run with it; every
run recorded in the log (0600, no symlink followed) and on the MCP server's stderr; the
interactive console through piped stdin."""
import json
import os
import shlex
import stat
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client

from .conftest import version_params
from .mcp_client import text_of

pytestmark = pytest.mark.timeout(240)


def cli(state_dir, pid, cmd, *extra, stdin=None, timeout=90):
    """The real CLI in a new interpreter, its console log under state_dir."""
    env = {**os.environ, "XDG_STATE_HOME": str(state_dir)}
    return subprocess.run([sys.executable, "-m", "flight_mcp.cli", *extra, str(pid), "--cmd", cmd, "--no-color"],
                          input=stdin, capture_output=True, text=True, timeout=timeout, env=env)


def ok(r):
    assert r.returncode == 0, f"{r.stdout}\n{r.stderr}"
    return r.stdout


def records(state_dir):
    path = Path(state_dir) / "flight-mcp" / "console.log"
    return [json.loads(line) for line in path.read_text().splitlines()]


def drain(target, seconds):
    """The target's stdout lines printed over the next `seconds`."""
    lines, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            lines.append(target.read_line(timeout=max(end - time.monotonic(), 0.05)))
        except AssertionError:
            break
    return lines


@pytest.mark.parametrize("version", version_params())
def test_prints_captured_not_on_the_targets_stdout_value_and_log(spawn, version, tmp_path):
    t = spawn(version, "source_target", args=["--chatter"])
    snippet = ("import sys, time\n"
               "for i in range(40):\n"
               "    print('snippet-line', i)\n"
               "    time.sleep(0.01)\n"
               "sys.stdout.write('via-sys-stdout\\n')\n"
               "print('to-stderr', file=sys.stderr)\n"
               "import __main__\n"
               "__main__.Shop().price(14)")
    out = ok(cli(tmp_path, t.pid, f"console {shlex.quote(snippet)}"))
    lines = out.splitlines()
    assert lines[:40] == [f"snippet-line {i}" for i in range(40)], out
    assert lines[40:] == ["via-sys-stdout", "to-stderr", "42"], out
    seen = drain(t, 1.0)
    assert seen and not [x for x in seen if "snippet" in x or "via-sys" in x or "to-stderr" in x], seen
    # the application's thread printed on its stdout all along, one line after another, none lost
    numbers = [int(x.split()[1]) for x in seen if x.startswith("app-line ")]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), seen
    assert numbers[-1] > 40
    # JSON: the same facts
    got = json.loads(ok(cli(tmp_path, t.pid, "console '[1, 2][0] + 1'", "--json")))
    assert got["state"] == "done" and got["value"]["repr"] == "2" and got["output"] == ""
    assert got["python"].startswith(version)
    # an exception: its traceback, the line of the snippet in it
    out = ok(cli(tmp_path, t.pid, "console 'x = 1\nx / 0'"))
    assert out.splitlines()[-3:] == ['  File "<console>", line 2, in <module>', "    x / 0",
                                     "ZeroDivisionError: division by zero"], out
    # a syntax error: the target's compiler says where, nothing ran
    r = cli(tmp_path, t.pid, "console 'x = ('")
    assert r.returncode == 1 and "[snippet_syntax_error]" in r.stderr and "line 1" in r.stderr
    # every run recorded: who, when, what, and how it ended
    recs = records(tmp_path)
    runs = [x for x in recs if x["event"] == "run"]
    ends = [x for x in recs if x["event"] == "end"]
    assert [x["code"] for x in runs[:2]] == [snippet, "[1, 2][0] + 1"]
    assert ends[0]["id"] == runs[0]["id"] and ends[0]["state"] == "done" and ends[0]["value"] == "42"
    assert runs[0]["via"] == "cli" and runs[0]["uid"] == os.getuid() and runs[0]["target_pid"] == t.pid
    assert runs[0]["client_pid"] > 0 and runs[0]["user"] and runs[0]["time"].endswith("+00:00")
    log = Path(tmp_path) / "flight-mcp" / "console.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700


@pytest.mark.parametrize("version", version_params(["3.8", "3.13"]))  # this file's core test runs on every version
def test_infinite_loop_stopped_by_the_deadline_target_still_serving(spawn, version, tmp_path):
    t = spawn(version, "source_target", args=["--chatter"])
    ok(cli(tmp_path, t.pid, "console 1"))  # attached: the deadlines below are the snippets' own
    got = json.loads(ok(cli(tmp_path, t.pid, "console 'print(\"before\")\nwhile True: pass' --timeout 3", "--json")))
    assert got["state"] == "stopped" and got["stopped_by"] == "deadline" and got["output"] == "before\n", got
    # `except Exception` in the snippet does not keep it running. (A loop whose body STARTS with
    # `try:` never lets another thread run on 3.10, which skips its periodic checks before a try
    # block: not even its own signal handlers run; the statement before `try` is for that.)
    got = json.loads(ok(cli(tmp_path, t.pid,
                            "console 'while True:\n    n = 0\n    try:\n        n += 1\n    except Exception:\n"
                            "        pass' --timeout 2", "--json")))
    assert got["state"] == "stopped", got
    assert t.alive()
    assert ok(cli(tmp_path, t.pid, "console 'import __main__; __main__.PRINTS[0] > 0'")).strip() == "True"
    seen = drain(t, 0.5)
    assert any(x.startswith("app-line ") for x in seen)
    # names kept under a namespace for later snippets
    ok(cli(tmp_path, t.pid, "console 'counter = 41' --namespace ns1"))
    assert ok(cli(tmp_path, t.pid, "console 'counter + 1' --namespace ns1")).strip() == "42"
    r = cli(tmp_path, t.pid, "console 'counter'")
    assert "NameError" in r.stdout
    # the log says how each ended
    ends = [x for x in records(tmp_path) if x["event"] == "end"]
    assert [x["state"] for x in ends[:3]] == ["done", "stopped", "stopped"]


@pytest.mark.parametrize("version", version_params(["3.8", "3.13"]))  # this file's core test runs on every version
def test_interactive_console_through_piped_stdin(spawn, version, tmp_path):
    t = spawn(version, "source_target")
    lines = "x = 20\nprint('from', 'target')\ndef f(a):\n    return a + x\n\nf(22)\n1/0\nx\n"
    r = cli(tmp_path, t.pid, "console", stdin=lines)
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    # the banner: the target's sys.version (two lines on some builds), then flight_profiler's marker line
    assert out[0].startswith(f"Python {version}") and "(RemoteInteractiveConsole)" in out[2:4], r.stdout
    body = r.stdout
    assert "from target" in body and "\n42\n" in body.replace(">>> ", "\n")
    assert "ZeroDivisionError: division by zero" in body and "\n20\n" in body.replace(">>> ", "\n")
    assert [x["code"] for x in records(tmp_path) if x["event"] == "run"][1:] == [
        "x = 20", "print('from', 'target')", "def f(a):\n    return a + x\n", "f(22)", "1/0", "x"]
    # end of input at once: the banner, then exit 0
    r = cli(tmp_path, t.pid, "console", stdin="")
    assert r.returncode == 0 and "(RemoteInteractiveConsole)" in r.stdout


def test_a_symlinked_log_is_refused_and_the_snippet_does_not_run(spawn, tmp_path):
    t = spawn("3.12", "source_target")
    d = tmp_path / "flight-mcp"
    d.mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("")
    (d / "console.log").symlink_to(victim)
    r = cli(tmp_path, t.pid, "console 'import __main__; __main__.TOUCHED = 1'")
    assert r.returncode == 1 and "[write_failed]" in r.stderr, r.stderr
    assert victim.read_text() == ""
    (d / "console.log").unlink()
    r = cli(tmp_path, t.pid, "console 'import __main__; hasattr(__main__, \"TOUCHED\")'")
    assert ok(r).strip() == "False"


@pytest.mark.parametrize("version", version_params(("3.8", "3.13")))
def test_over_mcp_refused_without_allow_mutating_and_recorded_on_stderr(spawn, version, tmp_path):
    t = spawn(version, "source_target")
    errlog = open(tmp_path / "server.err", "w+")

    async def call(extra, code):
        params = StdioServerParameters(command=sys.executable, args=["-m", "flight_mcp.cli", "--stdio", *extra],
                                       env={"XDG_STATE_HOME": str(tmp_path)})
        async with stdio_client(params, errlog=errlog) as (read, write):
            async with ClientSession(read, write) as s:
                await s.initialize()
                return await s.call_tool("console", {"pid": t.pid, "code": code})

    res = anyio.run(call, [], "import __main__; __main__.TOUCHED = 1")
    assert res.is_error and "read-only" in text_of(res), text_of(res)
    res = anyio.run(call, ["--allow-mutating"], "import __main__; print('hi'); hasattr(__main__, 'TOUCHED')")
    assert not res.is_error, text_of(res)
    assert text_of(res).splitlines() == ["hi", "False"]
    assert res.structured_content["value"]["repr"] == "False" and res.structured_content["output"] == "hi\n"
    recs = records(tmp_path)
    assert [x["event"] for x in recs] == ["refused", "run", "end"] and all(x["via"] == "mcp" for x in recs)
    errlog.seek(0)
    err = errlog.read()
    assert err.count("flight-mcp console: ") == 3 and "TOUCHED" in err
