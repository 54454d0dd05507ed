"""list_processes' pure parts: which command lines are flight-mcp's own, and the table."""
import pytest

from flight_mcp.tools.processes import ListResult, ProcessInfo, _is_flight_mcp, render


@pytest.mark.parametrize("cmdline, ours", [
    (["/venv/bin/python", "/venv/bin/flight-mcp", "--stdio"], True),
    (["flight-mcp", "1234", "--cmd", "stack"], True),
    (["python", "-m", "flight_mcp.cli", "--stdio"], True),
    (["python", "-m", "flight_mcp", "ps"], True),
    (["python3.12", "/site/flight_mcp/demo_target.py"], False),   # the demo target is a target
    (["python", "-m", "flight_mcp.demo_target"], False),
    (["python", "app.py", "--name", "flight-mcp"], False),
])
def test_our_own_command_lines(cmdline, ours):
    assert _is_flight_mcp(cmdline) is ours


def test_table_marks_workers_and_unknown_facts():
    base = dict(user="app", python="3.12", agent_attached=False, parent_is_python=False)
    r = ListResult(left_out=2, processes=[
        ProcessInfo(pid=10, ppid=1, command="gunicorn app:wsgi", role="master", server="gunicorn", rss_mb=50.0,
                    cpu_percent=0.0, threads=1, state="sleeping", uptime_s=7200, **base),
        ProcessInfo(pid=11, ppid=10, command="gunicorn app:wsgi", role="worker", server="gunicorn", rss_mb=80.5,
                    cpu_percent=97.5, threads=4, state="running", uptime_s=90, **dict(base, parent_is_python=True)),
        ProcessInfo(pid=12, ppid=1, command="python gone.py", **base),
    ])
    lines = render(r, False).splitlines()
    assert lines[0].split() == ["PID", "PPID", "USER", "PY", "AGENT", "RSS_MB", "CPU%", "THR", "STATE", "UP",
                                "COMMAND"]
    assert lines[1].split()[5:11] == ["50.0", "0.0", "1", "sleeping", "2h", "[master]"]
    assert "97.5" in lines[2] and "└ [worker of gunicorn] gunicorn app:wsgi" in lines[2]
    assert lines[3].split()[5:10] == ["?", "?", "?", "?", "?"]
    assert lines[-1] == "2 of flight-mcp's own not listed"
