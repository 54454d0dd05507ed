"""What source and console cost inside the target (the time the agent's thread holds the GIL),
measured in-process on this interpreter with the request the host sends.

- source of one method in a large file (argparse.py, typing.py, a generated 20,000-line module):
  the file is scanned and the def's block compiled to compare it with the running code; side by
  side with compiling the whole file, and the longest pause of an application thread during each
  (a single compile() holds the GIL for all its time);
- source of a whole module (every function compared);
- console: one trivial snippet, start to answer (a thread started per snippet), and how many
  bytecodes per second an application thread loses while a `while True: pass` snippet runs
  until its deadline (both share the GIL: the snippet is CPU-bound code like any other).

Usage: python bench/source_console.py
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flight_mcp.agent import cmd_console, cmd_source  # noqa: E402


class Stand:
    cancelled = False


def timed(fn, n=5):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return statistics.median(out) * 1000


def source_args(module, cls=None, method=None):
    return {"module": module, "cls": cls, "method": method, "nested_method": None, "limit": 400,
            "allow_mutating": False, "may_change_target": False}


class Pauses:
    """The longest gap between two iterations of an application thread's loop while inside."""

    def __enter__(self):
        self.stop, self.longest = False, 0.0

        def app():
            last = time.perf_counter()
            while not self.stop:
                now = time.perf_counter()
                self.longest = max(self.longest, (now - last) * 1000)
                last = now
        self.thread = threading.Thread(target=app)
        self.thread.start()
        time.sleep(0.05)
        self.longest = 0.0
        return self

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join()


def big_module():
    d = tempfile.mkdtemp()
    path = Path(d) / "big_generated.py"
    body = ["class Big:\n"]
    for i in range(5000):
        body.append(f"    def m{i}(self, x):\n        y = x + {i}\n        return y * 2\n\n")
    path.write_text("".join(body))
    spec = importlib.util.spec_from_file_location("big_generated", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["big_generated"] = mod
    spec.loader.exec_module(mod)
    return mod


def main():
    big_module()
    import typing  # noqa: F401
    rows = []
    pauses = Pauses()
    for label, args, file in [
        ("argparse ArgumentParser.parse_args", source_args("argparse", "ArgumentParser", "parse_args"), argparse.__file__),
        ("typing get_type_hints", source_args("typing", None, "get_type_hints"), sys.modules["typing"].__file__),
        ("20k-line module Big.m4999", source_args("big_generated", "Big", "m4999"), sys.modules["big_generated"].__file__),
    ]:
        text = Path(file).read_text()
        lines = len(text.splitlines())
        with pauses:
            ms = timed(lambda: cmd_source.source(args, Stand()))
        ours = pauses.longest
        with pauses:
            whole = timed(lambda: compile(text, file, "exec", dont_inherit=True))
        rows.append((label, lines, ms, ours, whole, pauses.longest))
    print("source of one function (scan the file, compile the def's block) vs compiling the whole file; and the")
    print("longest pause of an application thread meanwhile (one compile() holds the GIL throughout):")
    for label, lines, ms, ours, whole, held in rows:
        print(f"  {label:38s} {lines:6d} lines  source {ms:7.1f} ms (app paused <= {ours:6.1f} ms)   "
              f"whole-file compile {whole:7.1f} ms (app paused <= {held:6.1f} ms)   pause ratio {held / ours:5.1f}x")
    ms = timed(lambda: cmd_source.source(source_args("argparse"), Stand()))
    print(f"source of module argparse (every function compared): {ms:.1f} ms")
    ms = timed(lambda: cmd_source.source(source_args("big_generated", "Big"), Stand()), n=3)
    print(f"source of class Big (5000 methods, 300 compared, 400 lines kept): {ms:.1f} ms")

    def snippet(code, timeout=5.0):
        return cmd_console.console({"code": code, "namespace": None, "expand": 0, "verbose": False, "raw": False,
                                    "timeout_s": timeout, "allow_mutating": False, "may_change_target": True},
                                   Stand())
    ms = timed(lambda: snippet("1 + 1"), n=20)
    print(f"console snippet `1 + 1`, start to answer (in-process): {ms:.2f} ms")

    counts, stop = [0], [False]

    def app():
        while not stop[0]:
            counts[0] += 1
    t = threading.Thread(target=app)
    t.start()
    time.sleep(0.2)
    c0 = counts[0]
    time.sleep(1.0)
    alone = counts[0] - c0
    c0 = counts[0]
    t0 = time.perf_counter()
    r = snippet("while True: pass", timeout=1.0)
    took = time.perf_counter() - t0
    shared = (counts[0] - c0) / took
    stop[0] = True
    t.join()
    print(f"console `while True: pass` with a 1 s deadline: state={r['state']} after {took:.2f} s; an application "
          f"thread ran {shared / alone * 100:.0f}% of its loop rate meanwhile ({alone:,.0f}/s alone)")


if __name__ == "__main__":
    main()
