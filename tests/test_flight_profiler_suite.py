"""flight_profiler's own plugin integration tests, pointed at our CLI (compat/flight_profiler_suite.py).

flight_profiler is installed in a venv of its own under .cache/ (never in ours), once per checkout.
Each of its suites is one test here, so pytest-xdist spreads them; their scripts run on the target
Pythons in turn (suite i on version i mod n), so one CI run covers every version present. Their
harness starts scripts that loop forever and kills them itself; the runner runs in its own process
group, killed whole at the end, so nothing outlives a test that fails or times out.
"""
from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import PYTHONS, TARGET_VERSIONS

pytestmark = pytest.mark.timeout(420)

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".cache" / "flight_profiler-venv"
RUNNER = ROOT / "compat" / "flight_profiler_suite.py"
# torch: not in scope.
SUITES = ["stack", "trace", "watch", "getglobal", "module", "reload", "vmtool", "tt", "mem", "perf", "gilstat",
          "console", "help", "history"]
PRESENT = [v for v in TARGET_VERSIONS if PYTHONS.get(v)]


def _venv_python() -> str:
    """The venv with flight_profiler, made once (a lock: xdist workers ask at the same time)."""
    VENV.parent.mkdir(parents=True, exist_ok=True)
    python = VENV / "bin" / "python"
    with open(VENV.parent / "flight_profiler-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (VENV / "ok").exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True, timeout=120)
            r = subprocess.run([str(python), "-m", "pip", "install", "-q", "flight_profiler"],
                               capture_output=True, text=True, timeout=300)
            if r.returncode != 0:
                pytest.skip(f"flight_profiler could not be installed from the package index: {r.stderr[-500:]}")
            (VENV / "ok").write_text("")
    return str(python)


@pytest.mark.parametrize("suite", SUITES)
def test_flight_profiler_plugin_suite(suite):
    if not PRESENT:
        pytest.skip("no target Python is installed under pyenv")
    version = PRESENT[SUITES.index(suite) % len(PRESENT)]
    proc = subprocess.Popen([_venv_python(), str(RUNNER), "--cli", f"{sys.executable} -m flight_mcp.cli",
                             "--target-python", PYTHONS[version], suite],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        out, _ = proc.communicate(timeout=360)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # their scripts and our CLIs, whatever is left
        except ProcessLookupError:
            pass
        proc.wait()
    assert proc.returncode == 0, f"{suite} on Python {version}:\n{out[-6000:]}"
    assert "\nOK" in out, out[-3000:]
