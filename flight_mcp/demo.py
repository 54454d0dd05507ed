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

# What a person would try on a misbehaving service, in order: every read-only tool once (tt and vmtool in
# their read-only uses: recording calls, finding instances). console and reload change a target: not here.
COMMANDS = [
    "list_processes demo_target",
    "attach",
    "stack",
    "getglobal __main__",
    "getglobal __main__ CONFIG -x 2",
    "getglobal __main__ OrderService instances_created",
    "module {target}",
    "source __main__ OrderService apply_discount",
    "watch __main__ OrderService process_order --expr args,return_obj,cost -n 2",
    "trace __main__ OrderService process_order -n 1",
    "trace __main__ OrderService process_order -d 2 -n 1",
    "monitor __main__ OrderService process_order -c 1 -n 2",
    "tt -t __main__ OrderService apply_discount -n 2",
    "vmtool -a getInstances -c '__main__ OrderService'",
    "mem summary --limit 5",
    "mem diff --interval 1 --limit 3",
    "gilstat on 20 20 1",
    "profile -d 1 -n 5",
    "detach",
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
            shown = (f"flight-mcp ps {' '.join(words[1:])}" if words[0] == "list_processes"
                     else f'flight-mcp {proc.pid} --cmd "{cmd}"')
            print()
            print(paint(f"$ {shown}", "bold", color))
            started = time.monotonic()
            try:
                tool, params = cmdline.parse(words, tools, proc.pid)
                print(tool.text(tool.invoke(params, call), color))
            except FlightError as e:
                failures += 1
                print(f"error: {e.message}")
            print(paint(f"({(time.monotonic() - started) * 1000:.0f} ms)", "dim", color))
        print()
        print(f"the demo target ran through all of it: {'still running' if proc.poll() is None else 'GONE'}; "
              f"stopping it now (pid {proc.pid}, started by this demo).")
    finally:
        sessions.close()
        proc.kill()
        proc.wait(timeout=10)
        proc.stdout.close()
    print("demo target stopped.")
    return 1 if failures or proc.returncode != -9 else 0
