"""`flight-mcp demo`, the newcomer's first command, end to end through the real CLI."""
import re

import pytest

from flight_mcp import procfs
from flight_mcp.tools import all_tools

from .conftest import flight_cli

pytestmark = pytest.mark.timeout(120)

CHANGE_THE_TARGET = {"console", "reload"}   # not in the demo: everything else is read-only or used so


def test_demo_runs_every_read_only_tool_and_stops_its_target():
    r = flight_cli("demo", timeout=100)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "error:" not in r.stdout and not r.stderr, r.stdout + r.stderr
    shown = {cmd or "list_processes"   # `flight-mcp ps`
             for cmd, _ in re.findall(r'^\$ flight-mcp (?:\d+ --cmd "(\w+)|(ps))', r.stdout, re.M)}
    every = {name for name in all_tools() if name not in CHANGE_THE_TARGET}
    assert every <= shown, every - shown
    assert "(order-worker)" in r.stdout and "Traceback for thread" in r.stdout
    assert "EXPR:       target" in r.stdout and '"port": 5432' in r.stdout
    assert "demo_target.py" in r.stdout.split("$ flight-mcp ps")[1].split("$ ")[0]   # ps finds the target
    pid = int(re.search(r"stopping it now \(pid (\d+), started by this demo\)", r.stdout).group(1))
    assert r.stdout.rstrip().endswith("demo target stopped.")
    assert not procfs.alive(pid)
