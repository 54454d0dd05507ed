"""monitor across a GIL stall: while one thread holds the GIL in a long C call, no call of the monitored
function can start, and a cycle counts fewer calls for a reason the numbers alone do not show. monitor
says so as it happens (progress) and in one note naming the thread that held it, as watch and trace do."""
from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import TARGET_SEES_INSTRUMENTATION, flight_cli, version_params

pytestmark = pytest.mark.timeout(120)

# tick() runs every 10 ms; once the monitor has instrumented it (as the target itself sees:
# conftest.TARGET_SEES_INSTRUMENTATION) and its loop sleeps between beats, another thread holds the
# GIL for ~4 s in one C call (sum over a range: no bytecode runs, so the interpreter never lets go),
# calibrated at start on the fastest of five runs: long enough for the host to read the holder from
# outside once the agent falls silent.
TARGET = TARGET_SEES_INSTRUMENTATION + """
import os, sys, threading, time

def tick():
    return 1

def monitor_sleeping():
    # whether the agent's monitor command has reached its loop (a thread sleeps inside it): a stall
    # that began before would find no sleep to make late
    for frame in sys._current_frames().values():
        top, f = frame.f_code.co_name, frame
        while f is not None:
            if f.f_code.co_name == "monitor" and f.f_code.co_filename.endswith("cmd_monitor.py"):
                return top in ("sleep", "wait")
            f = f.f_back
    return False

def ticker():
    while True:
        tick()
        time.sleep(0.01)

def staller():
    runs = []
    for _ in range(5):   # the fastest run: a loaded machine only makes the stall longer, never shorter
        t0 = time.perf_counter(); sum(range(1_000_000)); runs.append(time.perf_counter() - t0)
    n = int(4.0 / (min(runs) / 1_000_000))
    while not (flight_mcp_hooks(tick.__code__) and monitor_sleeping()):
        time.sleep(0.01)
    time.sleep(0.5)
    sum(range(n))
    print("STALLED", flush=True)

threading.Thread(target=ticker, name="ticker", daemon=True).start()
threading.Thread(target=staller, name="staller", daemon=True).start()
print("READY", flush=True)
while True:
    time.sleep(1)
"""


@pytest.mark.parametrize("version", version_params(("3.8", "3.13")))
def test_monitor_says_when_the_gil_was_held_and_by_whom(spawn, version):
    t = spawn(version, TARGET)
    assert flight_cli(str(t.pid), "--cmd", "getglobal __main__ tick").returncode == 0   # attached before
    cli = subprocess.Popen([sys.executable, "-m", "flight_mcp.cli", str(t.pid), "--cmd",
                            "monitor __main__ tick -c 1 -n 8", "--no-color"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert t.read_line(timeout=60) == "STALLED"
        out, err = cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
    assert cli.returncode == 0, err
    lines = out.splitlines()
    assert any(line.startswith("GIL held ") and "no other thread ran Python code" in line for line in lines), out
    [note] = [line for line in lines if line.startswith("note: the GIL was held")]
    assert "(staller) held it when read from outside" in note, note
    assert "monitor __main__.tick: 8 of 8 cycles" in out
    assert t.alive()
