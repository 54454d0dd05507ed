"""How long a request waits before Python runs for it in the agent (the ack's queued_s), on targets
that are idle, busy in pure Python, and busy with ~90 ms C calls (gil_contention): what the stall budget
(attach/client.py STALL_BUDGET_S) must stay above so a busy-but-fine process does not trip it. Also the
cost of the ack on a normal answer: `info` round trips with and without it, side by side.

    python bench/gil_wait_budget.py [python] [requests]
"""
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from flight_mcp.attach import client as client_mod  # noqa: E402
from flight_mcp.session import attach  # noqa: E402

TARGETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "targets")
PY = sys.argv[1] if len(sys.argv) > 1 else sys.executable
N = int(sys.argv[2]) if len(sys.argv) > 2 else 300


class Queued:
    names = {}

    def __init__(self):
        self.q = None

    def sent(self, at): pass
    def started(self, q): self.q = q
    def overdue(self): pass
    def finished(self, w): pass


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def run(name, args):
    proc = subprocess.Popen([PY, "-u", os.path.join(TARGETS, name + ".py"), *args], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "READY"
        c = attach(proc.pid, 20)
        queued, with_ack, without = [], [], []
        for i in range(N):
            w = Queued()
            t = time.perf_counter()
            c.request("info", {}, timeout=10, watch=w)
            with_ack.append(time.perf_counter() - t)
            queued.append(w.q)
        send = c._send
        c._send = lambda msg: send({k: v for k, v in msg.items() if k not in ("sent", "slow_s")})
        for i in range(N):
            t = time.perf_counter()
            c.request("info", {}, timeout=10)
            without.append(time.perf_counter() - t)
        c._send = send
        c.close()
        ms = lambda x: f"{x * 1000:7.2f}"
        print(f"{name + ' ' + ' '.join(args):24} queued p50 {ms(pct(queued, .5))} p95 {ms(pct(queued, .95))} "
              f"p99 {ms(pct(queued, .99))} max {ms(max(queued))} ms | info round trip median with ack "
              f"{ms(statistics.median(with_ack))} without {ms(statistics.median(without))} ms")
    finally:
        proc.kill()
        proc.wait()


print(f"python {PY}, {N} requests each, load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
      f"budget {client_mod.STALL_BUDGET_S * 1000:.0f} ms")
run("idle", [])
run("gil_contention", [])
run("stress_cpu", []) if os.path.exists(os.path.join(TARGETS, "stress_cpu.py")) else None
