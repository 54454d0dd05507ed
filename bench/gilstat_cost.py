"""What gilstat costs the target: its throughput without and with a measurement running, side by side.

Not a test: prints a table. The target (a real process, one per Python version) runs THREADS worker
threads of pure-Python work (contending for the GIL) and prints, every 50 ms, its monotonic time and
the total work done. Windows, in order, each WINDOW seconds:
  off   nothing running (the agent is attached beforehand, idle)
  on    `gilstat on 1000 1000 WINDOW -r RATE` running; the window is the time the sampler's thread
        exists in the target (seen in /proc/PID/task), trimmed by 0.1 s at both ends
  ... alternating, so that drift of this shared 2-core machine falls on both sides
Throughput is work per second from the target's own lines (its clock is the system's monotonic clock,
the same as ours). `sampler cpu` is the sampler thread's own CPU time over its life (from
/proc/PID/task/TID/stat), in % of one core: the CPU it takes from other work on the machine, the
target's Python threads never wait for it (it never takes the GIL).

Usage: python bench/gilstat_cost.py [--versions 3.8,3.12] [--window 2] [--rates 1000,100] [--threads 1,4]
       [--idle 0,200] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = [sys.executable, "-m", "flight_mcp.cli"]

TARGET = r'''
import sys, threading, time
N = int(sys.argv[1])
counts = [0] * N
def work(i):
    c = 0
    while True:
        for _ in range(1000):
            c += 1
        counts[i] = c
for i in range(N):
    threading.Thread(target=work, args=(i,), daemon=True).start()
for i in range(int(sys.argv[2])):  # idle threads: what the sampler's per-thread reads cost
    threading.Thread(target=lambda: time.sleep(1e6), daemon=True).start()
print("READY", flush=True)
while True:
    time.sleep(0.05)
    print(time.monotonic(), sum(counts), flush=True)
'''


def pyenv_python(version: str) -> str:
    root = subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip()
    for name in sorted(os.listdir(os.path.join(root, "versions"))):
        if name == version or name.startswith(version + "."):
            return os.path.join(root, "versions", name, "bin", "python")
    raise SystemExit(f"no pyenv Python {version}")


class Target:
    def __init__(self, python: str, threads: int, idle: int):
        fd, self.path = tempfile.mkstemp(suffix=".py", prefix="gilstat_cost_")
        os.write(fd, TARGET.encode())
        os.close(fd)
        self.proc = subprocess.Popen([python, "-u", self.path, str(threads), str(idle)], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "READY"
        self.points: list[tuple[float, int]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            t, n = line.split()
            self.points.append((float(t), int(n)))

    def work_at(self, t: float) -> float:
        pts = self.points
        for (t0, n0), (t1, n1) in zip(pts, pts[1:]):
            if t0 <= t <= t1:
                return n0 + (n1 - n0) * (t - t0) / (t1 - t0)
        raise ValueError("no sample around that time")

    def throughput(self, a: float, b: float) -> float:
        deadline = time.monotonic() + 5
        while (not self.points or self.points[-1][0] < b) and time.monotonic() < deadline:
            time.sleep(0.02)  # the target's line may come late: its main thread waits for the GIL too
        return (self.work_at(b) - self.work_at(a)) / (b - a)

    def cpu_total(self) -> float:
        """The target's CPU seconds so far, all threads."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def sampler(self) -> int | None:
        for tid in self.tasks():
            try:
                with open(f"/proc/{self.proc.pid}/task/{tid}/comm") as f:
                    if f.read().strip() == "flight-mcp-gil":
                        return tid
            except OSError:
                pass
        return None

    def tasks(self) -> set[int]:
        return {int(x) for x in os.listdir(f"/proc/{self.proc.pid}/task")}

    def cpu_s(self, tid: int) -> float | None:
        try:
            with open(f"/proc/{self.proc.pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            return None

    def close(self):
        self.proc.kill()
        self.proc.wait()
        os.unlink(self.path)


def off_window(t: Target, window: float) -> tuple[float, float]:
    """(work per second, work per CPU second of the target) over a window with nothing running."""
    a, cpu_a = time.monotonic(), t.cpu_total()
    time.sleep(window)
    b, cpu_b = time.monotonic(), t.cpu_total()
    work = t.throughput(a, b) * (b - a)
    return work / (b - a), work / max(cpu_b - cpu_a, 1e-9)


def on_window(t: Target, window: float, rate: int) -> tuple[float, float, float | None]:
    """The same while `gilstat` measures (the window: while its sampler thread exists), and the
    sampler's CPU in % of one core; the target's CPU excludes the sampler's."""
    cli = subprocess.Popen(CLI + [str(t.proc.pid), "--cmd", f"gilstat on 1000 1000 {window} -r {rate}", "--no-color"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    sampler = None
    while sampler is None and cli.poll() is None:
        sampler = t.sampler()
        time.sleep(0.005)
    if sampler is None:
        raise SystemExit(f"gilstat ended before its sampler was seen: {cli.stderr.read()}")
    time.sleep(0.1)
    a, cpu_a, s_a = time.monotonic(), t.cpu_total(), t.cpu_s(sampler) or 0.0
    time.sleep(max(window - 0.4, 0.2))
    b, cpu_b, s_b = time.monotonic(), t.cpu_total(), t.cpu_s(sampler)
    cli.wait()
    if cli.returncode != 0:
        raise SystemExit(f"gilstat failed: {cli.stderr.read()}")
    work = t.throughput(a, b) * (b - a)
    own = (s_b - s_a) if s_b is not None else 0.0
    return work / (b - a), work / max(cpu_b - cpu_a - own, 1e-9), (own / (b - a) * 100 if s_b is not None else None)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--versions", default="3.8,3.12")
    ap.add_argument("--window", type=float, default=2.0)
    ap.add_argument("--rates", default="1000,100")
    ap.add_argument("--threads", default="1,4")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--idle", default="0", help="idle threads beside the workers, e.g. 0,200")
    opts = ap.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (figures on a loaded machine swing by tens "
          f"of %: compare the sampler's own CPU, and on/off across rates)")
    print(f"{'python':<8}{'idle':>5}{'threads':>8}{'rate Hz':>8}{'off work/s':>13}{'on work/s':>13}{'on/off':>8}"
          f"{'off work/cpu-s':>16}{'on work/cpu-s':>15}{'on/off':>8}{'sampler cpu':>13}")
    for version in opts.versions.split(","):
        python = pyenv_python(version)
        for threads, idle in [(w, i) for w in map(int, opts.threads.split(",")) for i in map(int, opts.idle.split(","))]:
            t = Target(python, threads, idle)
            try:
                # attach once, so that the windows compare a running measurement with an idle agent
                subprocess.run(CLI + [str(t.proc.pid), "--cmd", "gilstat off --timeout 60"], check=True,
                               capture_output=True, cwd=ROOT)
                for rate in map(int, opts.rates.split(",")):
                    offs, ons, cpus = [], [], []
                    for _ in range(opts.rounds):
                        offs.append(off_window(t, opts.window))
                        on = on_window(t, opts.window, rate)
                        ons.append(on[:2])
                        if on[2] is not None:
                            cpus.append(on[2])
                    offs.append(off_window(t, opts.window))
                    off_w, off_c = (statistics.median(x[i] for x in offs) for i in (0, 1))
                    on_w, on_c = (statistics.median(x[i] for x in ons) for i in (0, 1))
                    cpu = f"{statistics.median(cpus):.1f}%" if cpus else "?"
                    print(f"{version:<8}{idle:>5}{threads:>8}{rate:>8}{off_w:>13,.0f}{on_w:>13,.0f}{on_w / off_w:>8.3f}"
                          f"{off_c:>16,.0f}{on_c:>15,.0f}{on_c / off_c:>8.3f}{cpu:>13}", flush=True)
            finally:
                t.close()

if __name__ == "__main__":
    main()
