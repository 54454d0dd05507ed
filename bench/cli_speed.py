"""A warm command's time, flight-mcp side by side with flight_profiler 1.0.7, in one run (issue 13).

Not a test: prints medians (and minimums: the machine is shared) in ms of
- `getglobal __main__ CONFIG` and `stack`, by `flight-mcp PID --cmd ...` and `flight_profiler PID --cmd ...`,
  on a target each has attached already
  (two idle targets of the flight_profiler venv's Python, tests/targets/idle.py, one per tool), run as a
  user runs them (their console scripts, new processes);
- the CLI's fixed cost: `flight-mcp --version` (start-up, no command) and `flight-mcp 1 --cmd "stack -h"`
  (the command's help: the imports and models of a command, no process touched);
- the first command on a fresh target (injection included), `getglobal __main__ CONFIG` by each CLI, each on
  fresh idle targets of its own (-f of them);
- a warm MCP call: tools/call getglobal and stack through the official SDK client on the same attached target,
  and a ping (the SDK's stdio round trip with no tool: the floor of any call);
- floors: `python -c pass`, and `python -c "from pydantic import BaseModel"` (what any command that validates
  with pydantic pays before its first line of its own);
- what the CLI path imports: whether the MCP SDK is among them, and the heaviest imports (-X importtime).

Our package is byte-compiled first (compileall, as `pip install` does): in an editable install with
PYTHONDONTWRITEBYTECODE set, every run would otherwise compile every module of ours from source.

Usage: python bench/cli_speed.py [-n RUNS] [-f FRESH_TARGETS] [--fp-venv /work/fpvenv/venv]
Goals (issue 13): warm CLI <= 0.7x flight_profiler's and < 100 ms; first command <= 0.2x flight_profiler's;
warm MCP call 5 ms.
"""
from __future__ import annotations

import argparse
import resource
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


class Took(float):
    """A command's wall-clock ms, with .cpu: the CPU ms (user + system) it and its children spent. On a
    shared machine the wall clock counts the time spent waiting for a core; the CPU time does not."""
    cpu: float


def ms_of(argv: list[str]) -> Took:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    took = Took((time.perf_counter() - t0) * 1000)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    took.cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000
    if r.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed: {r.stdout[-500:]} {r.stderr[-500:]}")
    return took


def runs(argv: list[str], n: int) -> list[float]:
    ms_of(argv)   # warm: attach (and for flight_profiler, its agent's start) happens here
    return [ms_of(argv) for _ in range(n)]


def paired(ours: list[str], theirs: list[str] | None, n: int) -> tuple[list[float], list[float] | None]:
    """Both commands n times, taking turns (the load of a shared machine changes by the second)."""
    ms_of(ours)
    if theirs is None:
        return [ms_of(ours) for _ in range(n)], None
    ms_of(theirs)
    a, b = [], []
    for _ in range(n):
        a.append(ms_of(ours))
        b.append(ms_of(theirs))
    return a, b


def start_target(python: str) -> subprocess.Popen:
    proc = subprocess.Popen([python, "-u", str(TARGETS_DIR / "idle.py")], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    if proc.stdout.readline().strip() != "READY":
        raise RuntimeError("target did not start")
    return proc


MCP_CALLS = {"getglobal": {"module": "__main__", "field": "CONFIG"}, "stack": {}}


async def mcp_warm(pid: int, n: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"ping": []}
    async with mcp_session(fresh_interpreter=True) as s:
        for _ in range(n):
            t0 = time.perf_counter()
            await s.send_ping()
            out["ping"].append((time.perf_counter() - t0) * 1000)
        for tool, args in MCP_CALLS.items():
            await s.call_tool(tool, {"pid": pid, **args})
            out[tool] = []
            for _ in range(n):
                t0 = time.perf_counter()
                r = await s.call_tool(tool, {"pid": pid, **args})
                out[tool].append((time.perf_counter() - t0) * 1000)
                assert not r.is_error, r
    return out


def first_command(clis: list[str], python: str, n: int) -> list[list[float]]:
    """The first command on each of n fresh targets per CLI (taking turns): attach, injection and the agent's
    start included."""
    out: list[list[float]] = [[] for _ in clis]
    for _ in range(n):
        for i, cli in enumerate(clis):
            target = start_target(python)
            try:
                out[i].append(ms_of([cli, str(target.pid), "--cmd", COMMANDS[0], "--no-color"]))
            finally:
                target.kill()
                target.wait()
    return out


def heaviest_imports(most: int = 8) -> tuple[bool, list[tuple[int, str]]]:
    r = subprocess.run([str(Path(sys.executable)), "-X", "importtime", "-m", "flight_mcp.cli", "1",
                        "--cmd", COMMANDS[0] + " -h"], capture_output=True, text=True, timeout=120)
    rows = []
    for line in r.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "self [us]" not in line:
            self_us, _cumulative, name = line[len("import time:"):].split("|")
            rows.append((int(self_us), name.strip()))
    names = {n for _, n in rows}
    return any(n == "mcp" or n.startswith("mcp.") for n in names), sorted(rows, reverse=True)[:most]


def line(label: str, xs: list[float], ref: list[float] | None = None) -> str:
    """median and minimum wall ms, median CPU ms (commands), and their ratios to ref's: on a loaded machine a
    median carries the other sessions' noise, a minimum less of it, the CPU time least."""
    cpu = [x.cpu for x in xs] if isinstance(xs[0], Took) else None
    out = f"  {label:<58} {statistics.median(xs):7.1f} {min(xs):7.1f} " + (f"{statistics.median(cpu):7.1f}" if cpu else "      -")
    if ref:
        out += f"  {statistics.median(xs) / statistics.median(ref):5.2f}x {min(xs) / min(ref):5.2f}x"
        if cpu:
            out += f" {statistics.median(cpu) / statistics.median([x.cpu for x in ref]):5.2f}x"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--runs", type=int, default=15)
    ap.add_argument("-f", "--fresh", type=int, default=5, help="fresh targets for the first command, per tool")
    ap.add_argument("--fp-venv", default="/work/fpvenv/venv")
    a = ap.parse_args()
    fp_venv = Path(a.fp_venv)
    fp_cli, fp_python = fp_venv / "bin" / "flight_profiler", fp_venv / "bin" / "python"
    python = str(fp_python) if fp_python.exists() else sys.executable
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "flight_mcp")], check=True)
    targets = [start_target(python) for _ in range(2)]
    try:
        ours_pid, fp_pid = (str(t.pid) for t in targets)
        measured = {}
        for cmd in COMMANDS:
            measured[cmd] = paired([str(OURS), ours_pid, "--cmd", cmd, "--no-color"],
                                   [str(fp_cli), fp_pid, "--cmd", cmd, "--no-color"] if fp_cli.exists() else None, a.runs)
        fp = measured[COMMANDS[0]][1]
        version = runs([str(OURS), "--version"], a.runs)
        fixed = runs([str(OURS), "1", "--cmd", "stack -h"], a.runs)
        bare = runs([sys.executable, "-c", "pass"], a.runs)
        pydantic = runs([sys.executable, "-c", "from pydantic import BaseModel"], a.runs)
        mcp = anyio.run(mcp_warm, int(ours_pid), a.runs * 4)
        first = first_command([str(OURS)] + ([str(fp_cli)] if fp_cli.exists() else []), python, a.fresh) + [None]
    finally:
        for t in targets:
            t.kill()
            t.wait()
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    print(f"ms over {a.runs} runs (load average {load}; target {python}); ratios to flight_profiler's getglobal "
          "(or the same command)")
    print(f"  {'':<58}  median     min     cpu  median    min    cpu")
    for cmd, (ours, theirs) in measured.items():
        if theirs:
            print(line(f"flight_profiler PID --cmd {cmd!r} (warm)", theirs))
        print(line(f"flight-mcp PID --cmd {cmd!r} (warm)", ours, theirs))
    print(line("flight-mcp --version (start-up only)", version, fp))
    print(line('flight-mcp 1 --cmd "stack -h" (imports, no attach)', fixed, fp))
    print(line("python -c pass (the interpreter alone)", bare, fp))
    print(line('python -c "from pydantic import BaseModel"', pydantic, fp))
    if first[1]:
        print(line(f"flight_profiler PID --cmd {COMMANDS[0]!r} (fresh target)", first[1]))
    print(line(f"flight-mcp PID --cmd {COMMANDS[0]!r} (fresh target)", first[0], first[1]))
    for tool, xs in mcp.items():
        print(line(f"MCP {'ping (no tool)' if tool == 'ping' else 'tools/call ' + tool} (warm, SDK client)", xs))
    sdk, heavy = heaviest_imports()
    print(f"CLI path imports the MCP SDK: {'YES' if sdk else 'no'}; heaviest imports (self ms): "
          + ", ".join(f"{name} {us / 1000:.1f}" for us, name in heavy))
    return 0


if __name__ == "__main__":
    sys.exit(main())
