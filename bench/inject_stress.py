"""Inject the agent again and again into targets that are hard to inject into, and count the damage.

Not a test: prints a table. Targets (tests/targets/stress_*.py):
  cpu    pure-Python busy loop on the main thread, a second thread napping (the only safe point)
  alloc  two threads churning malloc/mmap/munmap, a third napping
  float  recomputes floating-point sums and prints MISMATCH when one differs from its first result

One iteration = a full attach (survey, safe-point check, pyinjector in a child, payload, bootstrap,
agent socket) + a `stack` + `detach`. attach is idempotent, so we detach each time to force a
fresh injection; the agent module itself stays imported in the target (the bootstrap finds it in
sys.modules and only restarts the listener), while the payload library is a new copy every time.

Counted per Python version and target:
  crash  the target died          hang   no answer within the deadline (attach or stack)
  wrong  MISMATCH printed          stall  the target stopped printing its 1 s TICK
  other  attach refused (e.g. no_safe_point) or another error: counted, not a failure of safety

Usage: python bench/inject_stress.py [-n INJECTIONS_PER_VERSION] [--versions 3.8,3.11] [--kinds cpu,float]
"""
from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flight_mcp import session  # noqa: E402
from flight_mcp.tools.stack import StackParams  # noqa: E402
from flight_mcp.errors import FlightError  # noqa: E402
from tests.conftest import PYTHONS, TARGET_VERSIONS, TARGETS_DIR  # noqa: E402

KINDS = ("cpu", "alloc", "float")
HANG_KINDS = {"agent_timeout", "inject_timeout"}
MESSAGES: dict[str, str] = {}  # first message of each error kind, printed under the table


def wait_ready(out: Path, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "READY" in out.read_text():
            return
        if proc.poll() is not None:
            raise RuntimeError(f"target exited before READY: {out.read_text()[-500:]}")
        time.sleep(0.05)
    raise RuntimeError("target not READY in time")


def one_injection(pid: int, deadline_s: float) -> tuple[str, float]:
    """-> (outcome, ms to the stack answer). outcome: ok | hang | error:<kind>."""
    t0 = time.monotonic()
    sessions = session.Sessions(attach_timeout=deadline_s)
    try:
        client = sessions.get(pid)
        if client.info["injection"]["method"] == "already attached":
            return "error:still_attached", 0.0
        if not client.request("stack", StackParams(pid=pid).agent_args(), timeout=deadline_s).get("threads"):
            return "error:empty_stack", 0.0
        ms = (time.monotonic() - t0) * 1000
        sessions.detach(pid)
    except FlightError as e:
        MESSAGES.setdefault(e.kind, e.message)
        return ("hang" if e.kind in HANG_KINDS else f"error:{e.kind}"), (time.monotonic() - t0) * 1000
    finally:
        sessions.close()
    return "ok", ms


def run_kind(version: str, kind: str, count: int, deadline_s: float) -> dict:
    exe = PYTHONS[version]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.txt"
        with open(out, "w") as f:
            proc = subprocess.Popen([exe, "-u", str(TARGETS_DIR / f"stress_{kind}.py")], stdout=f,
                                    stderr=subprocess.STDOUT)
        try:
            wait_ready(out, proc)
            outcomes: Counter = Counter()
            times = []
            crashed = False
            for _ in range(count):
                outcome, ms = one_injection(proc.pid, deadline_s)
                outcomes[outcome] += 1
                if outcome == "ok":
                    times.append(ms)
                if proc.poll() is not None:
                    crashed = True
                    break
                if outcome == "hang":
                    # Let a late agent start and remove it, so the next iteration injects afresh.
                    time.sleep(1.0)
                    try:
                        session.Sessions().detach(proc.pid)
                    except FlightError:
                        pass
            ticks_before = out.read_text().count("TICK")
            time.sleep(2.5)
            text = out.read_text()
            stalled = not crashed and text.count("TICK") <= ticks_before
            return {"version": version, "kind": kind, "n": sum(outcomes.values()), "ok": outcomes["ok"],
                    "crash": int(crashed or proc.poll() is not None), "hang": outcomes["hang"],
                    "wrong": text.count("MISMATCH"), "stall": int(stalled),
                    "other": {k: v for k, v in outcomes.items() if k.startswith("error:")},
                    "median_ms": statistics.median(times) if times else None,
                    "exit": proc.poll()}
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def main() -> int:
    # `kill` of a background run must still stop its target (the finally in run_kind).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--count", type=int, default=300, help="injections per Python version (split over kinds)")
    ap.add_argument("--versions", default=",".join(TARGET_VERSIONS))
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--deadline", type=float, default=5.0, help="seconds for attach, and for stack")
    a = ap.parse_args()
    kinds = [k for k in a.kinds.split(",") if k]
    per_kind = max(1, a.count // len(kinds))
    rows = []
    header = f"{'python':<7} {'target':<6} {'inject':>6} {'ok':>6} {'crash':>5} {'hang':>5} {'wrong':>5} {'stall':>5} {'med ms':>7}  other"
    print(header, flush=True)
    for v in a.versions.split(","):
        if not PYTHONS.get(v):
            print(f"{v:<7} (not installed under pyenv: skipped)", flush=True)
            continue
        for k in kinds:
            r = run_kind(v, k, per_kind, a.deadline)
            rows.append(r)
            med = f"{r['median_ms']:.0f}" if r["median_ms"] is not None else "-"
            other = ", ".join(f"{key[6:]}={n}" for key, n in r["other"].items()) or "-"
            print(f"{v:<7} {k:<6} {r['n']:>6} {r['ok']:>6} {r['crash']:>5} {r['hang']:>5} {r['wrong']:>5} "
                  f"{r['stall']:>5} {med:>7}  {other}", flush=True)
    tot = {key: sum(r[key] for r in rows) for key in ("n", "ok", "crash", "hang", "wrong", "stall")}
    print(f"{'total':<14} {tot['n']:>6} {tot['ok']:>6} {tot['crash']:>5} {tot['hang']:>5} {tot['wrong']:>5} "
          f"{tot['stall']:>5}", flush=True)
    for kind, message in MESSAGES.items():
        print(f"{kind}: {message}", flush=True)
    return 1 if tot["crash"] or tot["hang"] or tot["wrong"] or tot["stall"] else 0


if __name__ == "__main__":
    sys.exit(main())
