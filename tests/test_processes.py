"""list_processes: resource facts, masters and their workers marked, flight-mcp's own processes left out."""
import json

import anyio
import pytest

from flight_mcp.tools.processes import _is_flight_mcp

from .conftest import flight_cli, version_params
from .mcp_client import mcp_session

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("version", version_params(["3.8", "3.13"]))
def test_master_and_workers_marked_with_their_resources(spawn, version):
    t = spawn(version, "prefork")
    r = flight_cli("ps", "--json", "prefork.py")
    assert r.returncode == 0, r.stderr
    listed = {p["pid"]: p for p in json.loads(r.stdout)["processes"]}
    master = listed[t.pid]
    workers = [p for p in listed.values() if p["ppid"] == t.pid]
    assert master["role"] == "master" and master["server"] == "multiprocessing"
    # its two workers (and multiprocessing's resource tracker, a child as well)
    assert len(workers) >= 2 and all(w["role"] == "worker" and w["server"] == "multiprocessing" for w in workers)
    for p in (master, *workers):
        assert p["rss_mb"] > 1 and p["threads"] >= 1 and p["state"] in ("sleeping", "running")
        assert p["uptime_s"] >= 0 and p["cpu_percent"] >= 0 and p["python"] == version
    text = flight_cli("ps", "prefork.py", "--no-color").stdout
    assert "[master]" in text and text.count("└ [worker of multiprocessing]") >= 2, text


def test_flight_mcps_own_processes_are_left_out():
    """Filtering by our own module name used to list the MCP server and its client themselves."""
    async def go():
        async with mcp_session(fresh_interpreter=True) as s:   # its command line is `python -m flight_mcp.cli`
            r = await s.call_tool("list_processes", {"filter": "flight_mcp"})
            return r.structured_content
    listed = anyio.run(go)
    # no flight-mcp server or CLI (`python -m flight_mcp.cli ...`, `flight-mcp ...`) is listed; targets
    # whose path holds "flight_mcp" (the demo) and the test harness's own launchers may be
    assert not any(_is_flight_mcp(p["command"].split()) for p in listed["processes"]), listed
