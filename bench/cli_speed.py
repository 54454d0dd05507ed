"""A warm command's time, flight-mcp side by side with flight_profiler 1.0.7, in one run (issue 13).

Not a test: prints medians (and minimums: the machine is shared) in ms of
- `getglobal __main__ CONFIG` and `stack`, by `flight-mcp PID --cmd ...` and `flight_profiler PID --cmd ...`,
  on a target each has attached already
  (two idle targets of the flight_profiler venv's Python, tests/targets/idle.py, one per tool), run as a
  user runs them (their console scripts, new processes);
- the CLI's fixed cost: `flight-mcp --version` (start-up, no command) and `flight-mcp 1 --cmd "stack -h"`
  (the command's help: the imports and models of a command, no process touched);
- a warm MCP call: tools/call stack through the official SDK client on the same attached target;
- what the CLI path imports: whether the MCP SDK is among them, and the heaviest imports (-X importtime).

Usage: python bench/cli_speed.py [-n RUNS] [--fp-venv /work/fpvenv/venv]
Goals (issue 13): warm CLI <= 0.7x flight_profiler's and < 100 ms; warm MCP call 5 ms.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import TARGETS_DIR  # noqa: E402
from tests.mcp_client import mcp_session  # noqa: E402

OURS = Path(sys.executable).parent / "flight-mcp"
# getglobal first: cheap on both (flight_profiler's stack spends ~2 s of its own; the ratios below are
# against its getglobal)
COMMANDS = ["getglobal __main__ CONFIG", "stack"]


def ms_of(argv: list[str]) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    took = (time.perf_counter() - t0) * 1000
    if r.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed: {r.stdout[-500:]} {r.stderr[-500:]}")
    return took


def runs(argv: list[str], n: int) -> list[float]:
    ms_of(argv)   # warm: attach (and for flight_profiler, its agent's start) happens here
    return [ms_of(argv) for _ in range(n)]


def start_target(python: str) -> subprocess.Popen:
    proc = subprocess.Popen([python, "-u", str(TARGETS_DIR / "idle.py")], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    if proc.stdout.readline().strip() != "READY":
        raise RuntimeError("target did not start")
    return proc


async def mcp_warm(pid: int, n: int) -> list[float]:
    async with mcp_session(fresh_interpreter=True) as s:
        await s.call_tool("stack", {"pid": pid})
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            r = await s.call_tool("stack", {"pid": pid})
            out.append((time.perf_counter() - t0) * 1000)
            assert not r.is_error
        return out


def heaviest_imports(most: int = 8) -> tuple[bool, list[tuple[int, str]]]:
    r = subprocess.run([str(Path(sys.executable)), "-X", "importtime", "-m", "flight_mcp.cli", "1",
                        "--cmd", "stack -h"], capture_output=True, text=True, timeout=120)
    rows = []
    for line in r.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "self [us]" not in line:
            self_us, _cumulative, name = line[len("import time:"):].split("|")
            rows.append((int(self_us), name.strip()))
    names = {n for _, n in rows}
    return any(n == "mcp" or n.startswith("mcp.") for n in names), sorted(rows, reverse=True)[:most]


def line(label: str, xs: list[float], ref: list[float] | None = None) -> str:
    ratio = f"{statistics.median(xs) / statistics.median(ref):5.2f}x" if ref else ""
    return f"  {label:<50} {statistics.median(xs):7.1f} {min(xs):7.1f}  {ratio}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--runs", type=int, default=15)
    ap.add_argument("--fp-venv", default="/work/fpvenv/venv")
    a = ap.parse_args()
    fp_venv = Path(a.fp_venv)
    fp_cli, fp_python = fp_venv / "bin" / "flight_profiler", fp_venv / "bin" / "python"
    python = str(fp_python) if fp_python.exists() else sys.executable
    targets = [start_target(python) for _ in range(2)]
    try:
        ours_pid, fp_pid = (str(t.pid) for t in targets)
        measured = {}
        for cmd in COMMANDS:
            measured[cmd] = (runs([str(OURS), ours_pid, "--cmd", cmd, "--no-color"], a.runs),
                             runs([str(fp_cli), fp_pid, "--cmd", cmd, "--no-color"], a.runs) if fp_cli.exists() else None)
        fp = measured[COMMANDS[0]][1]
        version = runs([str(OURS), "--version"], a.runs)
        fixed = runs([str(OURS), "1", "--cmd", "stack -h"], a.runs)
        bare = runs([sys.executable, "-c", "pass"], a.runs)
        mcp = anyio.run(mcp_warm, int(ours_pid), a.runs * 4)
    finally:
        for t in targets:
            t.kill()
            t.wait()
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    print(f"ms over {a.runs} runs (load average {load}; target {python})")
    print(f"  {'':<50} median     min  vs flight_profiler's getglobal (or the same command)")
    for cmd, (ours, theirs) in measured.items():
        if theirs:
            print(line(f"flight_profiler PID --cmd {cmd!r} (warm)", theirs))
        print(line(f"flight-mcp PID --cmd {cmd!r} (warm)", ours, theirs))
    print(line("flight-mcp --version (start-up only)", version, fp))
    print(line('flight-mcp 1 --cmd "stack -h" (imports, no attach)', fixed, fp))
    print(line("python -c pass (the interpreter alone)", bare, fp))
    print(line("MCP tools/call stack (warm, SDK client)", mcp))
    sdk, heavy = heaviest_imports()
    print(f"CLI path imports the MCP SDK: {'YES' if sdk else 'no'}; heaviest imports (self ms): "
          + ", ".join(f"{name} {us / 1000:.1f}" for us, name in heavy))
    return 0


if __name__ == "__main__":
    sys.exit(main())
