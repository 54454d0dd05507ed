"""A command's time, flight-mcp side by side with flight_profiler 1.0.7, in one run (issue 13).

Not a test: prints medians (and minimums: the machine is shared) in ms of
- `getglobal __main__ CONFIG` and `stack`, by `flight-mcp PID --cmd ...` and `flight_profiler PID --cmd ...`,
  on a target each has attached already, run as a user runs them (their console scripts, new processes).
  Ours is installed as the README's first command installs it (`pip install .`, into .cache/bench-venv,
  rebuilt when the source changes), so a command reaches the user's resident helper (flight_mcp/resident.py),
  started by the first command;
- the same command when no resident runs yet (the first command of all, which starts it), and with the
  resident turned off (FLIGHT_MCP_RESIDENT=0: the command imports everything itself);
- the CLI's fixed cost: `flight-mcp --version` (start-up, no command) and `flight-mcp 1 --cmd "stack -h"`
  (a command's help: no process touched);
- the first command on a fresh target (injection included), `getglobal __main__ CONFIG` by each CLI, each on
  fresh idle targets of its own (-f of them);
- a warm MCP call: tools/call getglobal and stack through the official SDK client on the same attached target,
  and a ping (the SDK's stdio round trip with no tool: the floor of any call);
- floors: `python -c pass`, and `python -c "from pydantic import BaseModel"` (what any command that validates
  with pydantic pays before its first line of its own);
- what the command's own process imports (-X importtime): whether pydantic or the MCP SDK are among them,
  and the heaviest.
CPU ms count the command's process and, through the resident, its child (the resident's reaped children's
time, read from /proc): a command served by the resident is not a child of this script.

Usage: python bench/cli_speed.py [-n RUNS] [-f FRESH_TARGETS] [--fp-venv DIR]
(flight_profiler's venv: by default the tests' .cache/flight_profiler-venv, made here if absent)
Goals (issue 13): warm CLI <= 0.7x flight_profiler's and < 100 ms; first command <= 0.2x flight_profiler's;
warm MCP call 5 ms.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flight_mcp import resident  # noqa: E402
from tests.conftest import STATE_HOME, TARGETS_DIR  # noqa: E402  (its import gives us a state folder of our own)
from tests.mcp_client import mcp_session  # noqa: E402

os.environ["FLIGHT_MCP_RESIDENT_IDLE"] = "3600"   # not ending between two rows (tests/conftest.py sets 120)
VENV = ROOT / ".cache" / "bench-venv"
RESIDENTS = os.path.join(STATE_HOME, "flight-mcp")


def install_ours() -> Path:
    """flight-mcp installed as a user installs it (`pip install .`, not editable: an editable install's
    import hook costs every command ~20 ms at start-up), reinstalled when the source changed."""
    stamp = VENV / "source-key"
    key = resident._code_key(str(ROOT / "flight_mcp"))
    if not (stamp.exists() and stamp.read_text() == key):
        shutil.rmtree(VENV, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", str(ROOT)], check=True)
        stamp.write_text(key)
    return VENV / "bin" / "flight-mcp"


def residents_cpu_ms() -> float:
    """CPU ms of the children our residents have reaped (their commands)."""
    import psutil
    total = 0.0
    for pid in resident.running(RESIDENTS).values():
        t = psutil.Process(pid).cpu_times()
        total += (t.children_user + t.children_system) * 1000
    return total


# getglobal first: cheap on both (flight_profiler's stack spends ~2 s of its own; the ratios below are
# against its getglobal)
COMMANDS = ["getglobal __main__ CONFIG", "stack"]


class Took(float):
    """A command's wall-clock ms, with .cpu: the CPU ms (user + system) it and its children spent. On a
    shared machine the wall clock counts the time spent waiting for a core; the CPU time does not."""
    cpu: float


def resident_up(timeout: float = 60.0) -> None:
    """Waits until a resident listens in our state folder (a command that found none started one)."""
    deadline = time.monotonic() + timeout
    while not resident.running(RESIDENTS):
        if time.monotonic() > deadline:
            raise RuntimeError("no resident started")
        time.sleep(0.05)


def ms_of(argv: list[str], env: dict | None = None) -> Took:
    before, before_resident = resource.getrusage(resource.RUSAGE_CHILDREN), residents_cpu_ms()
    t0 = time.perf_counter()
    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
    took = Took((time.perf_counter() - t0) * 1000)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    took.cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000
    took.cpu += max(0.0, residents_cpu_ms() - before_resident)
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


def heaviest_imports(ours: Path, pid: str, most: int = 8) -> tuple[list[str], list[tuple[int, str]]]:
    """What a warm command's own process imports: which of pydantic and the MCP SDK, and the heaviest."""
    python = ours.parent / "python"
    r = subprocess.run([str(python), "-X", "importtime", "-m", "flight_mcp.front", pid, "--cmd", COMMANDS[0],
                        "--no-color"], capture_output=True, text=True, timeout=120, cwd="/")   # not ROOT: -m would
    # import the source tree's flight_mcp, not the installation's (another key, no resident)
    rows = []
    for line in r.stderr.splitlines():
        if line.startswith("import time:") and "|" in line and "self [us]" not in line:
            self_us, _cumulative, name = line[len("import time:"):].split("|")
            rows.append((int(self_us), name.strip()))
    names = {n for _, n in rows}
    heavy = [top for top in ("pydantic", "mcp") if any(n == top or n.startswith(top + ".") for n in names)]
    return heavy, sorted(rows, reverse=True)[:most]


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
    ap.add_argument("--fp-venv", help="a venv with flight_profiler 1.0.7 installed")
    a = ap.parse_args()
    if a.fp_venv is None:
        from tests.test_flight_profiler_suite import _venv_python
        fp_venv = Path(_venv_python()).parent.parent
    else:
        fp_venv = Path(a.fp_venv)
    fp_cli, fp_python = fp_venv / "bin" / "flight_profiler", fp_venv / "bin" / "python"
    python = str(fp_python) if fp_python.exists() else sys.executable
    ours_cli = str(install_ours())
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "flight_mcp")], check=True)
    targets = [start_target(python) for _ in range(2)]
    try:
        ours_pid, fp_pid = (str(t.pid) for t in targets)
        ms_of([ours_cli, ours_pid, "--cmd", COMMANDS[0]])   # attaches, and starts the resident
        resident_up()
        measured = {}
        for cmd in COMMANDS:
            measured[cmd] = paired([ours_cli, ours_pid, "--cmd", cmd, "--no-color"],
                                   [str(fp_cli), fp_pid, "--cmd", cmd, "--no-color"] if fp_cli.exists() else None, a.runs)
        fp = measured[COMMANDS[0]][1]
        getglobal = [ours_cli, ours_pid, "--cmd", COMMANDS[0], "--no-color"]
        no_resident = [ms_of(getglobal, env={**os.environ, "FLIGHT_MCP_RESIDENT": "0"}) for _ in range(a.runs)]
        starting = []
        for _ in range(a.fresh):
            resident_up()
            resident.stop_all(RESIDENTS)
            starting.append(ms_of(getglobal))
        resident_up()
        version = runs([ours_cli, "--version"], a.runs)
        fixed = runs([ours_cli, "1", "--cmd", "stack -h"], a.runs)
        bare = runs([python, "-c", "pass"], a.runs)
        pydantic = runs([str(Path(ours_cli).parent / "python"), "-c", "from pydantic import BaseModel"], a.runs)
        mcp = anyio.run(mcp_warm, int(ours_pid), a.runs * 4)
        first = first_command([ours_cli] + ([str(fp_cli)] if fp_cli.exists() else []), python, a.fresh) + [None]
        resident_up()
        heavy, imports = heaviest_imports(Path(ours_cli), ours_pid)
    finally:
        for t in targets:
            t.kill()
            t.wait()
        resident.stop_all(RESIDENTS)
        shutil.rmtree(STATE_HOME, ignore_errors=True)
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    print(f"ms over {a.runs} runs (load average {load}; target {python}; ours: {ours_cli}); ratios to "
          "flight_profiler's getglobal (or the same command)")
    print(f"  {'':<58}  median     min     cpu  median    min    cpu")
    for cmd, (ours, theirs) in measured.items():
        if theirs:
            print(line(f"flight_profiler PID --cmd {cmd!r} (warm)", theirs))
        print(line(f"flight-mcp PID --cmd {cmd!r} (warm)", ours, theirs))
    print(line("  the same, when no resident runs (it then starts one)", starting, fp))
    print(line("  the same, FLIGHT_MCP_RESIDENT=0 (no resident)", no_resident, fp))
    print(line("flight-mcp --version (start-up only)", version, fp))
    print(line('flight-mcp 1 --cmd "stack -h" (a command\'s help, no attach)', fixed, fp))
    print(line("python -c pass (the target's interpreter alone)", bare, fp))
    print(line('python -c "from pydantic import BaseModel"', pydantic, fp))
    if first[1]:
        print(line(f"flight_profiler PID --cmd {COMMANDS[0]!r} (fresh target)", first[1]))
    print(line(f"flight-mcp PID --cmd {COMMANDS[0]!r} (fresh target)", first[0], first[1]))
    for tool, xs in mcp.items():
        print(line(f"MCP {'ping (no tool)' if tool == 'ping' else 'tools/call ' + tool} (warm, SDK client)", xs))
    print(f"a warm command's own process imports {' and '.join(heavy) if heavy else 'neither pydantic nor the MCP SDK'}"
          "; heaviest imports (self ms): " + ", ".join(f"{name} {us / 1000:.1f}" for us, name in imports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
