"""One call across a fleet of workers against the same calls made one process at a time.

Not a test: prints a table. A real gunicorn (sync workers, default 8) serves tests/test_fleet.py's app on
loopback, on the target Python (default 3.12); requests are driven throughout. Rows:
  stack cold     first stack (attach + inject) on every worker: fleet (workers_of) vs one pid after another
  stack warm     agents attached: median of the next runs
  watch -n 1     one captured call of fleet_app.handle per worker, requests flowing
Times are for Tool.invoke in this process (the CLI adds its own start, ~0.3 s, once either way).

Usage: python bench/fleet.py [--workers 8] [-n RUNS] [--version 3.12]
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from flight_mcp.session import Sessions  # noqa: E402
from flight_mcp.tools import all_tools  # noqa: E402
from flight_mcp.tools.base import Call  # noqa: E402
from tests.conftest import PYTHONS  # noqa: E402
from tests.test_fleet import APP, GUNICORN, _free_port  # noqa: E402


def timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def start(version: str, workers: int, where: Path) -> tuple[subprocess.Popen, int]:
    for name in ("gunicorn", "h11", "click", "packaging", "uvicorn"):
        (where / name).symlink_to(Path(importlib.util.find_spec(name).origin).parent)
    (where / "fleet_app.py").write_text(APP)
    port = _free_port()
    (where / "serve.py").write_text(GUNICORN.format(workers=workers, kind="sync", threads=1, port=port))
    proc = subprocess.Popen([PYTHONS[version], str(where / "serve.py")], cwd=where, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(where)})
    deadline = time.monotonic() + 30
    while len(psutil.Process(proc.pid).children()) < workers or not _get(port):
        if time.monotonic() > deadline:
            raise SystemExit("gunicorn did not start its workers")
        time.sleep(0.1)
    return proc, port


def _get(port: int) -> bool:
    import urllib.request
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/x", timeout=2).read()
        return True
    except OSError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("-n", "--runs", type=int, default=5)
    ap.add_argument("--version", default="3.12")
    a = ap.parse_args()
    tools = all_tools()
    stack, watch = tools["stack"], tools["watch"]
    with tempfile.TemporaryDirectory() as tmp:
        proc, port = start(a.version, a.workers, Path(tmp))
        workers = sorted(c.pid for c in psutil.Process(proc.pid).children())
        stop = threading.Event()

        def drive():
            while not stop.is_set():
                _get(port)
        drivers = [threading.Thread(target=drive, daemon=True) for _ in range(4)]
        for t in drivers:
            t.start()
        rows = []
        try:
            # cold: half the workers attached by the fleet call, the other half one at a time
            half = len(workers) // 2
            s1, s2 = Sessions(), Sessions()
            fleet_cold, r = timed(lambda: stack.invoke(stack.params(pids=workers[:half]), Call(s1)))
            assert r.failed == 0, r
            seq_cold, _ = timed(lambda: [stack.invoke(stack.params(pid=p), Call(s2)) for p in workers[half:]])
            rows.append((f"stack cold ({half} workers)", fleet_cold, seq_cold))
            sessions = Sessions()
            stack.invoke(stack.params(pids=workers), Call(sessions))   # every agent attached
            fleet = [timed(lambda: stack.invoke(stack.params(workers_of=proc.pid), Call(sessions)))[0]
                     for _ in range(a.runs)]
            seq = [timed(lambda: [stack.invoke(stack.params(pid=p), Call(sessions)) for p in workers])[0]
                   for _ in range(a.runs)]
            rows.append((f"stack warm ({len(workers)} workers)", statistics.median(fleet), statistics.median(seq)))
            wargs = dict(module="fleet_app", method="handle", limit=1, timeout_s=20)
            fleet = [timed(lambda: watch.invoke(watch.params(workers_of=proc.pid, **wargs), Call(sessions)))[0]
                     for _ in range(a.runs)]
            seq = [timed(lambda: [watch.invoke(watch.params(pid=p, **wargs), Call(sessions)) for p in workers])[0]
                   for _ in range(a.runs)]
            rows.append((f"watch -n 1 ({len(workers)} workers)", statistics.median(fleet), statistics.median(seq)))
            for s in (s1, s2, sessions):
                s.close()
        finally:
            stop.set()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
            for p in workers:
                try:
                    psutil.Process(p).kill()
                except psutil.Error:
                    pass
    print(f"gunicorn sync, {len(workers)} workers, Python {a.version}, {a.runs} runs (medians), requests flowing")
    print(f"{'call':<28} {'fleet':>9} {'one by one':>11} {'ratio':>7}")
    for name, f, s in rows:
        print(f"{name:<28} {f * 1000:>7.0f}ms {s * 1000:>9.0f}ms {s / f:>6.1f}x")


if __name__ == "__main__":
    main()
