"""gilstat on real targets, every pyenv Python 3.8-3.13: a thread holding the GIL in long stretches
(a big sorted(), all in C) shows a high hold share and the stack that held it, the threads that want
the GIL show as waiting; an idle target shows low shares; flight_profiler's command lines print their
report lines; and nothing keeps running in the target after the command ends, also when the client
is killed mid-measurement."""
import json
import os
import signal
import subprocess
import sys
import time

import anyio
import pytest

from .conftest import flight_cli, version_params
from .mcp_client import mcp_session, text_of

pytestmark = pytest.mark.timeout(240)


def run(pid, cmd, *extra, timeout=90):
    r = flight_cli(*extra, str(pid), "--cmd", cmd, "--no-color", timeout=timeout)
    assert r.returncode == 0, f"{cmd}: {r.stdout}\n{r.stderr}"
    return r.stdout


def tasks(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


def settle(pid, at_most, within=15.0):
    """Waits until the target has at most `at_most` threads; returns how many it has."""
    deadline = time.monotonic() + within
    while tasks(pid) > at_most and time.monotonic() < deadline:
        time.sleep(0.1)
    return tasks(pid)


def by_name(result):
    rows = {}
    for t in result["threads"]:
        rows.setdefault(t["name"], []).append(t)
    return rows


@pytest.mark.parametrize("version", version_params())
def test_the_holder_holds_the_others_wait_and_nothing_stays(spawn, version, tmp_path):
    # attached before the contention starts (an agent starting in a contended target took 10-15 s here;
    # test_over_mcp_structured_and_the_deadline_bounds_the_interval attaches during it)
    go = tmp_path / "go"
    t = spawn(version, "gil_contention", args=["wait", str(go)])
    run(t.pid, "attach --timeout 60")
    go.touch()
    result = json.loads(run(t.pid, "gilstat on 30 30 2 --timeout 60", "--json"))
    assert result["mechanism"] == "gil_state_sampler" and result["waits_measured"] is True
    assert result["stopped_by"] == "interval" and result["samples"] > 100 and result["resolution_ms"] > 0
    rows = by_name(result)
    [hog], spinners, [ticker] = rows["hog"], rows["spinner"], rows["ticker"]
    assert len(spinners) == 2
    # the sort holds the GIL most of the time; everyone else mostly waits for it
    assert hog["hold_share"] > 0.4, result["threads"]
    assert all(hog["hold_share"] > t["hold_share"] for t in result["threads"] if t is not hog)
    assert all(s["wait_share"] > 0.3 for s in spinners) and ticker["wait_share"] > 0.3, result["threads"]
    assert hog["long_holds"] >= 1 and hog["max_hold_ms"] >= 30
    assert result["held_share"] > 0.8
    assert not any((t["name"] or "").startswith("flight-mcp") for t in result["threads"])
    # the long holds are the hog's, with the stack that held the GIL
    # (a spinner may hold it long too when the OS preempts it holding the GIL on this loaded machine)
    holds = [e for e in result["events"] if e["kind"] == "hold"]
    assert holds and holds[0]["name"] == "hog", holds  # longest first
    assert all(e["duration_ms"] >= 30 for e in holds)
    with_stack = [e for e in holds if e["frames"] and e["name"] == "hog"]
    assert with_stack and all(e["frames"][-1]["name"] == "hog" for e in with_stack), with_stack
    waits = [e for e in result["events"] if e["kind"] == "wait"]
    assert waits and {e["name"] for e in waits} <= {"spinner", "ticker", "hog", "MainThread"}

    # flight_profiler's command line and report lines; the agent is attached now: count its threads
    baseline = settle(t.pid, tasks(t.pid))
    out = run(t.pid, "gilstat on 1 1 1")
    assert "gil statistics report:" in out and "gil warning report:" in out, out
    assert settle(t.pid, baseline) <= baseline, "a thread of gilstat outlived the command"

    # a client killed mid-measurement: the sampler stops with the connection, long before its interval
    cli = subprocess.Popen([sys.executable, "-m", "flight_mcp.cli", str(t.pid), "--cmd", "gilstat on 10 10 60",
                            "--no-color"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while tasks(t.pid) <= baseline and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tasks(t.pid) > baseline, "the sampler never started"
        time.sleep(0.5)
        cli.send_signal(signal.SIGKILL)
        cli.wait(10)
        assert settle(t.pid, baseline, within=20) <= baseline, "the sampler outlived its killed client"
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    # `off` stops whatever still runs (on a loaded machine the killed client's command may still be
    # ending); then nothing runs
    run(t.pid, "gilstat off")
    out = run(t.pid, "gilstat off")
    assert "nothing was running" in out
    assert t.proc.poll() is None


@pytest.mark.parametrize("version", version_params())
def test_an_idle_target_shows_low_shares(spawn, version):
    t = spawn(version, "gil_contention", args=["idle"])
    result = json.loads(run(t.pid, "gilstat --hold 50 --take 50 -i 1.5 --timeout 60", "--json"))
    assert result["threads"] and result["held_share"] < 0.3, result
    for row in result["threads"]:
        assert row["hold_share"] < 0.2 and row["wait_share"] < 0.2, row
    assert not [e for e in result["events"] if e["kind"] == "hold"]


def test_over_mcp_structured_and_the_deadline_bounds_the_interval(spawn):
    t = spawn("3.12", "gil_contention")

    async def go():
        async with mcp_session() as s:
            full = await s.call_tool("gilstat", {"pid": t.pid, "interval": 1, "hold_threshold_ms": 20,
                                                 "timeout_s": 60})  # attach included
            short = await s.call_tool("gilstat", {"pid": t.pid, "interval": 60, "timeout_s": 3})
            off = await s.call_tool("gilstat", {"pid": t.pid, "action": "off"})
            return full, short, off

    full, short, off = anyio.run(go)
    assert not full.is_error, text_of(full)
    r = full.structured_content
    assert r["action"] == "on" and r["hold_threshold_ms"] == 20 and r["threads"]
    assert "gil statistics report:" in text_of(full)
    assert not short.is_error, text_of(short)
    assert short.structured_content["stopped_by"] == "deadline" and short.structured_content["duration_s"] < 3
    assert off.structured_content == {**off.structured_content, "action": "off", "stopped_running": False}


def sampler_running(pid):
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().strip() == "flight-mcp-gil":
                    return True
        except OSError:
            pass
    return False


@pytest.mark.parametrize("version", version_params(["3.8", "3.13"]))
def test_one_measurement_at_a_time_and_off_stops_it(spawn, version):
    t = spawn(version, "gil_contention", args=["idle"])
    run(t.pid, "gilstat off --timeout 60")  # attach
    first = subprocess.Popen([sys.executable, "-m", "flight_mcp.cli", str(t.pid), "--cmd", "gilstat on 10 10 60",
                              "--no-color"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not sampler_running(t.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sampler_running(t.pid)
        busy = flight_cli(str(t.pid), "--cmd", "gilstat on 10 10 1", "--no-color")
        assert busy.returncode != 0 and "gilstat_busy" in busy.stdout + busy.stderr, busy
        assert "stopped the measurement" in run(t.pid, "gilstat off")
        out, err = first.communicate(timeout=20)  # long before its 60 s
        assert first.returncode == 0, err
        assert "(stopped by off)" in out and "gil statistics report:" in out, out
        assert not sampler_running(t.pid)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
