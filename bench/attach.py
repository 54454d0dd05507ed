"""Attach latency: the first command on a fresh target (injection included) and a warm command,
through an MCP session (official SDK client, `flight-mcp --stdio`) and through the CLI.

Not a test: prints medians over N fresh targets (idle tests/targets/idle.py) per Python version,
and where the first command's time goes (in-process attach: survey + injector child, then the
agent starting inside the target; the CLI's own start-up).

Usage: python bench/attach.py [-n TARGETS] [--versions 3.12,3.8] [--warm 20]
Goals (issue 2): first command < 150 ms, warm MCP command < 5 ms.
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

from flight_mcp import session  # noqa: E402
from flight_mcp.tools.stack import StackParams  # noqa: E402
from tests.conftest import PYTHONS, TARGETS_DIR  # noqa: E402
from tests.mcp_client import mcp_session  # noqa: E402


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
    inject, total, stack = [], [], []
    for _ in range(n):
        p = start_target(version)
        try:
            s = session.Sessions()
            t0 = time.perf_counter()
            client = s.get(p.pid)
            client.request("stack", StackParams(pid=p.pid).agent_args())
            total.append(ms(t0))
            inject.append(client.info["injection"]["inject_ms"])
            stack.append(client.info["injection"]["ms"])
            s.close()
        finally:
            stop(p)
    return {"first": total, "inject": inject, "agent_up": stack}


async def bench_mcp(version: str, n: int, warm_calls: int) -> dict:
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--targets", type=int, default=10, help="fresh targets per path and version")
    ap.add_argument("--versions", default="3.12")
    ap.add_argument("--warm", type=int, default=20, help="warm calls per target (MCP)")
    a = ap.parse_args()
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
