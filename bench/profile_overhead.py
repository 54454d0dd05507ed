"""What `profile` costs the process it samples (issue 11: under 1 % at 100 Hz).

Not a test: prints a table. Two identical CPU-bound targets (one thread looping a fixed chunk of
Python work) run side by side and report every 0.1 s their wall time, the chunks done and their
thread's CPU time. In each window one of them is sampled and the other is not, so both live through
the same machine noise at the same moments and the ratio of their throughputs is the cost; control
windows (neither sampled) calibrate that ratio, and the sampled target alternates (A, then B) so a
difference between the two cancels out. Variants:
  one      one py-spy record --nonblocking (py-spy's plain CPU profile, what flight_profiler runs)
  profile  flight-mcp's profile: its three samplers side by side (running, --idle, --gil), plus the
           OS-state sampler on Python <= 3.10
Each window counts only the time all samplers were sampling (from 1 s after the start to the
duration's end). "wall" is throughput per wall second (it includes competing for the CPU with the
samplers, which depends on spare cores); "cpu" is per CPU second of the target thread (what sampling
takes from the target itself: memory reads from outside never pause it). Printed: the sampled
target's throughput relative to its unsampled twin, divided by the control ratio (1.0000 = no cost),
medians over the rounds, and the samplers' own CPU as a share of one core.

--pin puts both targets on one core and the samplers on another (the twins then see the same cache
and frequency, and the samplers take no CPU time from them): the cost of being read from outside,
apart from competing for a core.

Usage: python bench/profile_overhead.py [--versions 3.8,3.12] [--seconds 5] [--rounds 3] [--rate 100] [--pin]
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flight_mcp import profiling  # noqa: E402
from flight_mcp.attach import procs  # noqa: E402

TARGET = """
import sys, time
def chunk():
    j = 0
    for i in range(20000):
        j += i * i % 7
    return j
n = 0
next_report = time.time()
print("READY", flush=True)
while True:
    chunk()
    n += 1
    now = time.time()
    if now >= next_report:
        print(now, n, time.thread_time(), flush=True)
        next_report = now + 0.1
"""


class Target:
    def __init__(self, python: str):
        fd, self.path = tempfile.mkstemp(suffix=".py", prefix="profile-bench-")
        with os.fdopen(fd, "w") as f:
            f.write(TARGET)
        self.proc = subprocess.Popen([python, "-u", self.path], stdout=subprocess.PIPE, text=True)
        if PIN is not None:
            os.sched_setaffinity(self.proc.pid, {PIN[0]})
        assert self.proc.stdout.readline().strip() == "READY"
        self.reports: list[tuple[float, int, float]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            wall, n, cpu = line.split()
            self.reports.append((float(wall), int(n), float(cpu)))

    def rates(self, t0: float, t1: float) -> tuple[float, float]:
        """(chunks per wall second, chunks per target CPU second) between t0 and t1."""
        wait_until = time.time() + 10
        while (not self.reports or self.reports[-1][0] < t1) and time.time() < wait_until:
            time.sleep(0.05)  # our reader may lag behind on a loaded machine: the reports carry their own times
        inside = [r for r in list(self.reports) if t0 <= r[0] <= t1]
        (w0, n0, c0), (w1, n1, c1) = inside[0], inside[-1]
        return (n1 - n0) / (w1 - w0), (n1 - n0) / (c1 - c0)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        os.unlink(self.path)


# With --pin: both targets share one core, the samplers (this process and its children) run on
# another, so the twins see the same cache and frequency and the samplers take no time from them:
# what remains is the cost of being read from outside. None: no pinning.
PIN: tuple[int, int] | None = None


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def window(a: Target, b: Target, sampled: Target | None, variant: str, seconds: int, rate: int,
           old_python: bool) -> tuple[float, float, float]:
    """(wall ratio a/b, cpu ratio a/b, samplers' CPU as a share of one core) over one window."""
    start = time.time()
    own = 0.0
    if sampled is None:
        time.sleep(seconds)
    else:
        kinds = ("active",) if variant == "one" else tuple(profiling.SAMPLERS)
        cpu0, own0 = _children_cpu(), time.process_time()
        rec = profiling.record(sampled.proc.pid, rate=rate, duration=seconds, deadline_s=seconds + 20,
                               cancelled=lambda: False, kinds=kinds,
                               sample_states=variant == "profile" and old_python)
        own = ((_children_cpu() - cpu0) + (time.process_time() - own0)) / rec.seconds
    wa, ca = a.rates(start + 1.0, start + seconds)
    wb, cb = b.rates(start + 1.0, start + seconds)
    return wa / wb, ca / cb, own


def bench(version: str, python: str, seconds: int, rounds: int, rate: int) -> None:
    a, b = Target(python), Target(python)
    old = procs.python_version(a.proc.pid) < (3, 11)
    control: list[tuple[float, float, float]] = []
    cost: dict[str, list[tuple[float, float, float]]] = {"one": [], "profile": []}
    try:
        time.sleep(1.0)
        for _ in range(rounds):
            for sampled in (a, b):
                base = window(a, b, None, "", seconds, rate, old)
                control.append(base)
                for variant in cost:
                    w, c, own = window(a, b, sampled, variant, seconds, rate, old)
                    if sampled is a:  # the sampled one's throughput relative to its twin, over the control's
                        cost[variant].append((w / base[0], c / base[1], own))
                    else:
                        cost[variant].append((base[0] / w, base[1] / c, own))
    finally:
        a.stop()
        b.stop()
    spread = statistics.pstdev(x[1] for x in control)
    print(f"{version:>5}  {'control':<8} {'':>10} {'':>10} {'':>12}   A/B cpu ratio "
          f"{statistics.median(x[1] for x in control):.4f} (stdev {spread:.4f} over {len(control)} windows)")
    for variant, runs in cost.items():
        print(f"{version:>5}  {variant:<8} {statistics.median(x[0] for x in runs):10.4f} "
              f"{statistics.median(x[1] for x in runs):10.4f} {100 * statistics.median(x[2] for x in runs):11.1f}%"
              "   " + " ".join(f"{x[1]:.3f}" for x in runs), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--versions", default="3.8,3.12")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate", type=int, default=100)
    ap.add_argument("--pin", action="store_true", help="targets on one core, samplers on another")
    opts = ap.parse_args()
    global PIN
    if opts.pin:
        cores = sorted(os.sched_getaffinity(0))
        PIN = (cores[0], cores[1])
        os.sched_setaffinity(0, {PIN[1]})
    root = subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip()
    installed = sorted(os.listdir(os.path.join(root, "versions")))
    print(f"profile overhead at {opts.rate} Hz, {opts.seconds} s windows, {opts.rounds} rounds, "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"
          + (f", targets pinned to core {PIN[0]}, samplers to core {PIN[1]}" if PIN else ""))
    print(f"{'py':>5}  {'variant':<8} {'wall':>10} {'cpu':>10} {'sampler cpu':>12}   per-window cpu ratios")
    for v in opts.versions.split(","):
        match = [x for x in installed if x == v or x.startswith(v + ".")]
        if not match:
            print(f"{v:>5}  not installed under pyenv")
            continue
        bench(v, os.path.join(root, "versions", match[-1], "bin", "python"), opts.seconds, opts.rounds, opts.rate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
