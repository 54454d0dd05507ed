"""console's agent command called in-process with the request the host sends: the snippet's prints
come back and never reach this process's stdout (nor does it replace sys.stdout), output is
bounded, a loop is stopped at the deadline, the gate and syntax errors answer with their codes;
and the host's log: 0600 in a 0700 directory, never through a symlink, the XDG rule."""
import stat
import sys

import pytest

from flight_mcp.agent import cmd_console
from flight_mcp.agent.registry import AgentError
from flight_mcp.errors import FlightError
from flight_mcp.tools import console as tool
from flight_mcp.tools.console import TOOL, ConsoleParams, ConsoleResult


class Stand:
    cancelled = False


def run(code, allowed=True, timeout_s=5.0, **kw):
    p = ConsoleParams(pid=1, code=code, **kw)
    args = dict(p.agent_args(), allow_mutating=False, may_change_target=allowed, timeout_s=timeout_s)
    return ConsoleResult(**cmd_console.console(args, Stand()))


def test_prints_value_and_the_real_stdout_untouched(capfd):
    before = sys.stdout, sys.stderr
    r = run("import sys\nprint('a', 1)\nsys.stdout.write('b\\n')\nprint('c', file=sys.stderr)\nfrom sys import stdout\n"
            "stdout.write('d\\n')\nhelp(len)\n[1, 2]")
    assert (sys.stdout, sys.stderr) == before
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert r.state == "done" and r.output.startswith("a 1\nb\nc\nd\n") and "len(obj" in r.output
    assert r.value.repr == "[1, 2]" and r.python == sys.version


def test_output_bounded_and_exceptions():
    r = run("print('x' * 100000)")
    assert len(r.output) == cmd_console.OUTPUT_LIMIT and r.output_elided == 100001 - cmd_console.OUTPUT_LIMIT
    r = run("def f():\n    raise KeyError('k')\nf()")
    assert r.state == "raised" and r.error.type == "KeyError"
    assert [(f.name, f.line, f.source) for f in r.error.frames] == [("<module>", 3, "f()"),
                                                                  ("f", 2, "raise KeyError('k')")]
    r = run("exit(3)")  # a snippet never ends the process, nor closes its stdin
    assert r.state == "raised" and r.error.type == "SystemExit"
    assert sys.stdin is None or not sys.stdin.closed


def test_deadline_stops_a_loop_and_namespaces_keep_names():
    r = run("n = 0\nwhile True:\n    n += 1", timeout_s=0.3)
    assert r.state == "stopped" and r.stopped_by == "deadline"
    run("kept = 5", namespace="k1")
    assert run("kept * 2", namespace="k1").value.repr == "10"
    assert run("kept", namespace="k2").error.type == "NameError"


def test_gate_and_syntax_errors():
    with pytest.raises(AgentError) as e:
        run("1", allowed=False)
    assert e.value.kind == "read_only"
    with pytest.raises(AgentError) as e:
        run("x = (")
    assert e.value.kind == "snippet_syntax_error" and e.value.arg == "code" and "line 1" in e.value.message


class Call:
    on_cli = True
    may_change_target = True


def test_log_file_permissions_symlink_and_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    tool.record({"event": "run", "code": "1"}, Call())
    log = tmp_path / "flight-mcp" / "console.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600 and stat.S_IMODE(log.parent.stat().st_mode) == 0o700
    assert log.read_text() == '{"event": "run", "code": "1"}\n'
    log.unlink()
    (tmp_path / "elsewhere").write_text("")
    log.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(FlightError) as e:
        tool.record({"event": "run"}, Call())
    assert e.value.code == "write_failed" and (tmp_path / "elsewhere").read_text() == ""
    monkeypatch.setenv("XDG_STATE_HOME", "relative/dir")  # ignored, as the XDG spec says
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert tool.log_path() == str(tmp_path / "home" / ".local" / "state" / "flight-mcp" / "console.log")


def test_refused_over_mcp_is_recorded_and_nothing_sent(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))

    class McpCall:
        on_cli = False
        may_change_target = False

        def require_mutating(self, what):
            raise FlightError("read_only", what + " changes the target")

        def request(self, *a, **k):
            raise AssertionError("nothing may be sent")

    with pytest.raises(FlightError) as e:
        TOOL.run(ConsoleParams(pid=1, code="1"), McpCall())
    assert e.value.code == "read_only"
    assert '"event": "refused"' in (tmp_path / "flight-mcp" / "console.log").read_text()


def test_render():
    base = dict(started=0.0, duration_s=3.0, output="hi\n", output_elided=0, python="3", platform="linux")
    assert TOOL.render(ConsoleResult(state="done", **base), False) == "hi"
    text = TOOL.render(ConsoleResult(state="stopped", stopped_by="deadline", **base), False)
    assert text.splitlines()[-1].startswith("stopped after 3.000s: the deadline")
    text = TOOL.render(ConsoleResult(state="running", stopped_by="deadline", **base), False)
    assert "NOT stopped" in text
