"""profile on real targets, every pyenv Python 3.8-3.13: a known hot function comes out on top, a
sleeping thread counts as idle, the thread holding the GIL is named, flight_profiler's
`perf -d N -f FILE` writes an SVG and prints its confirmation, and over MCP the answer is
structured and a file is written only with --allow-mutating. Nothing is loaded into the target."""
import json
import os
import subprocess
import time
import xml.dom.minidom

import anyio
import pytest

from flight_mcp import profiling
from flight_mcp.attach.bootstrap import PAYLOAD_FILE
from flight_mcp.errors import FlightError

from .conftest import flight_cli, version_params
from .mcp_client import mcp_session, text_of

pytestmark = pytest.mark.timeout(120)

HOT = """
import threading, time

def crunch():  # the known hot function
    j = 0
    for i in range(200000):
        j += i * i % 7
    return j

def nap():
    while True:
        time.sleep(0.5)

threading.Thread(target=nap, name="napper", daemon=True).start()
print("READY", flush=True)
while True:
    crunch()
"""


def _profile(pid, cmd, *extra):
    r = flight_cli(*extra, str(pid), "--cmd", cmd, "--no-color", timeout=60)
    assert r.returncode == 0, f"{cmd}: {r.stdout}\n{r.stderr}"
    return r.stdout


@pytest.mark.parametrize("version", version_params())
def test_hot_function_on_top_sleeper_idle_and_flame_graph(spawn, version, tmp_path):
    t = spawn(version, HOT)
    svg = tmp_path / "app.svg"
    out = _profile(t.pid, f"perf -d 2 -f {svg}", "--json")
    r = json.loads(out)
    seen = json.dumps({k: r[k] for k in ("functions", "threads", "gil_functions", "notes")})[:3000]
    assert r["functions"][0]["name"] == "crunch", seen
    assert r["functions"][0]["self_share"] > 0.5, seen
    threads = {th["name"]: th for th in r["threads"]}
    main, napper = threads["MainThread"], threads["napper"]
    assert main["main"] and main["native_id"] == t.pid, seen
    assert main["functions"][0]["name"] == "crunch", seen
    assert main["active_samples"] > main["idle_samples"], seen
    # the sleeping thread counts as idle, and where it waits is named
    assert napper["native_id"] is not None and napper["idle_samples"] > 0.8 * napper["samples"], napper
    assert napper["idle_in"] and napper["idle_in"][0]["name"] == "nap", seen
    # the CPU-bound main thread holds the GIL; the napper almost never
    assert main["gil_samples"] > napper["gil_samples"], seen
    assert r["gil_functions"][0]["name"] == "crunch", seen
    assert r["flamegraph_file"] == str(svg)
    doc = xml.dom.minidom.parse(str(svg))
    assert any("crunch" in x.firstChild.data for x in doc.getElementsByTagName("title"))
    # nothing of ours was ever loaded into the target
    with open(f"/proc/{t.pid}/maps") as f:
        assert not PAYLOAD_FILE.search(f.read())
    assert t.alive()


@pytest.mark.parametrize("version", version_params(["3.8", "3.12"]))
def test_flight_profiler_command_line_and_text(spawn, version, tmp_path):
    t = spawn(version, HOT)
    svg = tmp_path / "application.svg"
    out = _profile(t.pid, f"perf -d 2 -f {svg} -c -n 3")
    assert f"Flamegraph data has been successfully written to {svg}" in out
    assert svg.stat().st_size > 0
    lines = out.splitlines()
    top = lines[lines.index(next(x for x in lines if x.startswith("Top functions"))) + 2]
    assert "crunch" in top, out
    assert 'Thread "napper"' in out and "idle in nap" in out
    collapsed = out.split("Collapsed stacks", 1)[1]
    assert "MainThread;<module>" in collapsed and "crunch (" in collapsed
    # without -f no file is written, and the answer says nothing of one
    out = _profile(t.pid, "profile -d 1")
    assert "Flamegraph" not in out and "crunch" in out
    # a deadline before the duration's end stops sampling there and reports what was sampled
    out = _profile(t.pid, "profile -d 60 --timeout 6")
    assert "stopped at the deadline" in out and "crunch" in out


def test_bad_targets_get_specific_errors(spawn, tmp_path):
    r = flight_cli("999999", "--cmd", "perf -d 1", "--no-color")
    assert r.returncode != 0 and "[no_such_process]" in r.stderr
    other = subprocess.Popen(["sleep", "60"])
    try:
        r = flight_cli(str(other.pid), "--cmd", "perf -d 1", "--no-color")
        assert r.returncode != 0 and "[not_python]" in r.stderr
        # py-spy's own refusal, said as soon as a sampler fails, not after the duration
        started = time.monotonic()
        with pytest.raises(FlightError) as e:
            profiling.record(other.pid, rate=100, duration=30, deadline_s=40, cancelled=lambda: False)
        assert e.value.code == "not_python" and time.monotonic() - started < 20
    finally:
        other.kill()
        other.wait()
    r = flight_cli(str(os.getpid()), "--cmd", f"perf -d 1 -f {tmp_path}/missing/dir/x.svg", "--no-color")
    assert r.returncode != 0 and "[write_failed]" in r.stderr and "-f/--filepath" in r.stderr


def test_over_mcp_structured_and_file_writing_gated(spawn, tmp_path):
    t = spawn("3.12", HOT)
    svg = tmp_path / "mcp.svg"

    async def main():
        async with mcp_session() as s:
            ok = await s.call_tool("profile", {"pid": t.pid, "duration": 1, "collapsed": True, "limit": 5})
            refused = await s.call_tool("profile", {"pid": t.pid, "duration": 1, "filepath": str(svg)})
            return ok, refused

    ok, refused = anyio.run(main)
    assert not ok.is_error, text_of(ok)
    r = ok.structured_content
    assert r["functions"][0]["name"] == "crunch" and len(r["functions"]) <= 5
    assert r["collapsed"] and all(line.rsplit(" ", 1)[1].isdigit() for line in r["collapsed"])
    assert refused.is_error and ("read_only" in text_of(refused) or "read-only" in text_of(refused))
    assert not svg.exists()

    async def allowed():
        async with mcp_session("--allow-mutating") as s:
            return await s.call_tool("profile", {"pid": t.pid, "duration": 1, "filepath": str(svg)})

    res = anyio.run(allowed)
    assert not res.is_error, text_of(res)
    assert svg.exists() and res.structured_content["flamegraph_file"] == str(svg)
