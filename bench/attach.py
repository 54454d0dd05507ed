"""Attach latency: the first command on a fresh target (injection included) and a warm command,
through an MCP session (official SDK client, `flight-mcp --stdio`) and through the CLI.

Not a test: prints medians over N fresh targets (idle tests/targets/idle.py) per Python version,
and where the first command's time goes (in-process attach: survey + injector child, then the
agent starting inside the target; the CLI's own start-up).

--phases: only the in-process first command (attach + stack), phase by phase, with the CPU it cost
(ours, the injector child's, the target's); --against DIR adds the same figures for another checkout
of flight-mcp (e.g. `git archive main | tar -x -C DIR`, with the built .so files copied in), measured
in the same run, target by target in turns (the load of a shared machine changes by the second).

Usage: python bench/attach.py [-n TARGETS] [--versions 3.12,3.8] [--warm 20]
       python bench/attach.py --phases [--against DIR] [--contended] [-n TARGETS] [--versions 3.8,3.12]
Goals (issue 2): first command < 150 ms, warm MCP command < 5 ms; issue 13: in-process attach + stack
<= 100 ms on 3.8 and 3.12.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# flight_mcp is imported where it is used: a --phases worker imports it from the checkout it measures.
from tests.conftest import PYTHONS, TARGETS_DIR  # noqa: E402


def start_target(version: str) -> subprocess.Popen:
    proc = subprocess.Popen([PYTHONS[version], "-u", str(TARGETS_DIR / "idle.py")], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout.readline().strip() == "READY"
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()


def ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000


def cli(pid: int, cmd: str) -> float:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "flight_mcp.cli", str(pid), "--cmd", cmd], capture_output=True)
    took = ms(t0)
    assert r.returncode == 0, r.stderr
    return took


def bench_cli(version: str, n: int) -> dict:
    first, warm = [], []
    for _ in range(n):
        p = start_target(version)
        try:
            first.append(cli(p.pid, "stack"))
            warm.append(cli(p.pid, "stack"))
        finally:
            stop(p)
    t0 = time.perf_counter()
    base = []
    for _ in range(5):  # the CLI's fixed cost: start, imports, parse, fail fast on a pid that cannot exist
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "flight_mcp.cli", "99999999", "--cmd", "stack"], capture_output=True)
        base.append(ms(t0))
    return {"first": first, "warm": warm, "startup": base}


def bench_inprocess(version: str, n: int) -> dict:
    from flight_mcp import session
    from flight_mcp.tools.stack import StackParams
    inject, total, stack = [], [], []
    for _ in range(n):
        p = start_target(version)
        try:
            s = session.Sessions()
            t0 = time.perf_counter()
            client = s.get(p.pid)
            client.request("stack", StackParams(pid=p.pid).agent_args(), timeout=120)
            total.append(ms(t0))
            inject.append(client.info["injection"]["inject_ms"])
            stack.append(client.info["injection"]["ms"])
            s.close()
        finally:
            stop(p)
    return {"first": total, "inject": inject, "agent_up": stack}


async def bench_mcp(version: str, n: int, warm_calls: int) -> dict:
    from tests.mcp_client import mcp_session
    first, warm, warm_gg = [], [], []
    async with mcp_session() as s:
        for _ in range(n):
            p = start_target(version)
            try:
                t0 = time.perf_counter()
                r = await s.call_tool("stack", {"pid": p.pid})
                first.append(ms(t0))
                assert not r.is_error, r.content
                for _ in range(warm_calls):
                    t0 = time.perf_counter()
                    await s.call_tool("stack", {"pid": p.pid})
                    warm.append(ms(t0))
                    t0 = time.perf_counter()
                    await s.call_tool("getglobal", {"pid": p.pid, "module": "__main__", "field": "CONFIG"})
                    warm_gg.append(ms(t0))
                await s.call_tool("detach", {"pid": p.pid})
            finally:
                stop(p)
    return {"first": first, "warm": warm, "warm_getglobal": warm_gg}


def med(xs: list[float]) -> str:
    return f"{statistics.median(xs):7.1f}" if xs else "      -"


# -- --phases: where the first command's time goes ------------------------------------------------------
PHASES = [
    ("checks", "pid, version, runtime dir, lock (what precedes the staging)"),
    ("stage", "agent folder checked, payload + bootstrap script written"),
    ("survey", "threads' states read from /proc"),
    ("injector", "injector child: ptrace attach, safe-point check, dlopen in the target"),
    ("agent_up", "payload thread -> GIL -> bootstrap -> agent listening"),
    ("info", "first request on the connection (the agent's facts)"),
    ("stack", "the command"),
    ("total", "attach + stack"),
    ("host_cpu", "CPU: our process (every thread)"),
    ("child_cpu", "CPU: the injector child"),
    ("target_cpu", "CPU: the target (every thread)"),
]


# idle.py, which prints its CPU time (every thread, µs: /proc's ticks are too coarse) on SIGUSR1
_COUNTED_IDLE = """
import resource, signal, sys
def _cpu(*_):
    r = resource.getrusage(resource.RUSAGE_SELF)
    print("CPU %.3f" % ((r.ru_utime + r.ru_stime) * 1000), flush=True)
signal.signal(signal.SIGUSR1, _cpu)
sys.argv[0] = {path!r}
exec(compile(open({path!r}).read(), {path!r}, "exec"))
"""


def start_counted_target(version: str, target: str = "idle") -> subprocess.Popen:
    path = str(TARGETS_DIR / f"{target}.py")
    proc = subprocess.Popen([PYTHONS[version], "-u", "-c", _COUNTED_IDLE.format(path=path)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout.readline().strip() == "READY"
    return proc


def _cpu_ms_of(proc: subprocess.Popen) -> float:
    proc.send_signal(signal.SIGUSR1)
    line = proc.stdout.readline()
    assert line.startswith("CPU "), line
    return float(line.split()[1])


def phase_worker(code_dir: str, target: str) -> None:
    """Measures one fresh target (tests/targets/<target>.py) per version read from stdin, with flight_mcp
    from code_dir; one JSON line per target."""
    sys.path.insert(0, code_dir)
    from flight_mcp import session
    from flight_mcp.attach import bootstrap, inject, safepoint
    from flight_mcp.attach.client import AgentClient
    from flight_mcp.session import connect
    from flight_mcp.tools.stack import StackParams
    assert session.__file__.startswith(code_dir), session.__file__
    spent: dict[str, float] = {}

    def timed(owner, name, key=None):
        fn = getattr(owner, name)

        @functools.wraps(fn)
        def run(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                label = key(*a, **k) if callable(key) else key or name
                spent[label] = spent.get(label, 0.0) + (time.perf_counter() - t0) * 1000
        setattr(owner, name, run)

    timed(bootstrap.RuntimeDir, "stage_injection", "stage")
    timed(bootstrap.RuntimeDir, "check_staged", "stage")
    timed(safepoint, "survey", "survey")
    timed(inject, "inject", "inject")
    timed(connect, "_wait_for_agent", "agent_up")
    timed(AgentClient, "request", lambda self, cmd, *a, **k: cmd)
    for line in sys.stdin:
        version = line.strip()
        p = start_counted_target(version, target)
        try:
            spent.clear()
            sessions = session.Sessions(attach_timeout=120)   # a contended target's agent starts in seconds
            cpu0, kids0, target0 = time.process_time(), resource.getrusage(resource.RUSAGE_CHILDREN), _cpu_ms_of(p)
            t0 = time.perf_counter()
            client = sessions.get(p.pid)
            attached = (time.perf_counter() - t0) * 1000
            client.request("stack", StackParams(pid=p.pid).agent_args(), timeout=120)
            total = (time.perf_counter() - t0) * 1000
            kids = resource.getrusage(resource.RUSAGE_CHILDREN)
            row = {"stage": spent["stage"], "survey": spent["survey"], "injector": spent["inject"] - spent["survey"],
                   "agent_up": spent["agent_up"], "info": spent["info"], "stack": spent["stack"], "total": total,
                   "host_cpu": (time.process_time() - cpu0) * 1000,
                   "child_cpu": (kids.ru_utime + kids.ru_stime - kids0.ru_utime - kids0.ru_stime) * 1000,
                   "target_cpu": _cpu_ms_of(p) - target0}
            row["checks"] = attached - spent["stage"] - spent["inject"] - spent["agent_up"] - spent["info"]
            sessions.close()
        finally:
            stop(p)
        print(json.dumps(row), flush=True)


def bench_phases(versions: list[str], n: int, trees: list[tuple[str, str]], target: str = "idle") -> None:
    """Each tree's worker measures a fresh target in turn, n per version; prints medians (CPU: means)."""
    workers = {name: subprocess.Popen([sys.executable, __file__, "--phase-worker", path, target],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
               for name, path in trees}
    try:
        for v in versions:
            rows: dict[str, list[dict]] = {name: [] for name, _ in trees}
            for i in range(n + 1):   # the first is not counted: it compiles the agent for this version once
                for name, w in workers.items():
                    w.stdin.write(v + "\n")
                    w.stdin.flush()
                    line = w.stdout.readline()
                    if not line:
                        raise SystemExit(f"the {name} worker failed on {v}")
                    if i:
                        rows[name].append(json.loads(line))
            print(f"\npython {v}: first command on a fresh {target} target, in process (ms, median of {n})")
            print(f"  {'phase':<11}" + "".join(f"{name:>10}" for name, _ in trees) + "  what")
            for phase, what in PHASES:
                print(f"  {phase:<11}" + "".join(f"{statistics.median(r[phase] for r in rows[name]):10.1f}"
                                                 for name, _ in trees)
                      + f"  {what}")
    finally:
        for w in workers.values():
            w.stdin.close()
            w.wait()


def main() -> int:
    if sys.argv[1:2] == ["--phase-worker"]:
        phase_worker(sys.argv[2], sys.argv[3])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--targets", type=int, default=10, help="fresh targets per path and version")
    ap.add_argument("--versions", default="3.12")
    ap.add_argument("--warm", type=int, default=20, help="warm calls per target (MCP)")
    ap.add_argument("--phases", action="store_true", help="only the in-process first command, phase by phase")
    ap.add_argument("--against", metavar="DIR", help="with --phases: also measure this checkout of flight-mcp")
    ap.add_argument("--contended", action="store_true",
                    help="with --phases: targets whose threads all want the GIL (tests/targets/gil_contention.py: "
                         "a sort holding it ~90 ms at a time, two busy loops, a 2 ms ticker)")
    a = ap.parse_args()
    if a.phases:
        trees = [("this", str(ROOT))] + ([("against", os.path.abspath(a.against))] if a.against else [])
        bench_phases([v for v in a.versions.split(",") if PYTHONS.get(v)], a.targets, trees,
                     "gil_contention" if a.contended else "idle")
        return 0
    import anyio
    print(f"medians in ms over {a.targets} fresh targets per row (warm MCP: {a.warm} calls per target)")
    print(f"{'python':<7} {'path':<28} {'first':>7} {'warm':>7}  notes")
    for v in a.versions.split(","):
        if not PYTHONS.get(v):
            print(f"{v:<7} not installed under pyenv: skipped")
            continue
        m = anyio.run(bench_mcp, v, a.targets, a.warm)
        print(f"{v:<7} {'MCP tools/call stack':<28} {med(m['first'])} {med(m['warm'])}  "
              f"warm getglobal {med(m['warm_getglobal']).strip()}; warm p90 stack "
              f"{sorted(m['warm'])[int(len(m['warm']) * 0.9)]:.1f}")
        c = bench_cli(v, a.targets)
        print(f"{v:<7} {'CLI flight-mcp PID --cmd stack':<28} {med(c['first'])} {med(c['warm'])}  "
              f"CLI fixed cost (start + imports, no target) {med(c['startup']).strip()}")
        i = bench_inprocess(v, a.targets)
        print(f"{v:<7} {'in-process attach + stack':<28} {med(i['first'])} {'':>7}  "
              f"survey + injector child {med(i['inject']).strip()}, agent up {med(i['agent_up']).strip()} "
              f"(first-command breakdown)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
