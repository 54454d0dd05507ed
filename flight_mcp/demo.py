"""`flight-mcp demo`: start the bundled order service, look inside it with every read-only tool, stop it."""
from __future__ import annotations

import os
import subprocess
import sys
import time

from . import cmdline
from .errors import FlightError
from .render import paint
from .session import Sessions
from .tools import all_tools
from .tools.base import Call

TARGET = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo_target.py")

# What a person would try first on a misbehaving service, in order.
COMMANDS = [
    "stack",
    "getglobal __main__",
    "getglobal __main__ CONFIG -x 2",
    "getglobal __main__ OrderService instances_created",
    "module {target}",
    "watch __main__ OrderService process_order --expr args,return_obj,cost -n 2",
    "trace __main__ OrderService process_order -n 1",
    "trace __main__ OrderService process_order -d 2 -n 1",
]


def run_demo(color: bool = False) -> int:
    proc = subprocess.Popen([sys.executable, "-u", TARGET], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    sessions = Sessions()
    tools = all_tools()
    failures = 0
    try:
        if proc.stdout.readline().strip() != "READY":
            print("error: the demo target did not start", file=sys.stderr)
            return 1
        print(paint(f"demo target started: pid {proc.pid} ({TARGET})", "bold", color))
        call = Call(sessions)
        for template in COMMANDS:
            cmd = template.format(target=TARGET)
            words = cmdline.split(cmd)
            if words[0] not in tools:
                continue
            print()
            print(paint(f'$ flight-mcp {proc.pid} --cmd "{cmd}"', "bold", color))
            started = time.monotonic()
            try:
                tool, params = cmdline.parse(words, tools, proc.pid)
                print(tool.text(tool.invoke(params, call), color))
            except FlightError as e:
                failures += 1
                print(f"error: {e.message}")
            print(paint(f"({(time.monotonic() - started) * 1000:.0f} ms)", "dim", color))
        print()
        detached = sessions.detach(proc.pid)
        print(f"detached: {detached}; target still running: {proc.poll() is None}")
    finally:
        sessions.close()
        proc.kill()
        proc.wait(timeout=10)
    return 1 if failures else 0
