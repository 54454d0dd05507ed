"""Agent housekeeping: info (what attach reports) and detach (remove everything, stop listening)."""
import os
import sys

from . import server
from .registry import command


@command("info")
def info(args, ctx):
    threading = sys.modules.get("threading")
    return {
        "pid": os.getpid(),
        "python_version": "%d.%d.%d" % sys.version_info[:3],
        "executable": sys.executable,
        "thread_count": len([i for i in sys._current_frames() if i not in server.AGENT_THREADS]),
        "agent_version": server._state["version"],
        "agent_build": server._state.get("build"),
        "connections": len(server._state["connections"]),
        "threading_imported": threading is not None,
        "asyncio_imported": "asyncio" in sys.modules,
        "argv": list(getattr(sys, "argv", []))[:20],
    }


@command("detach")
def detach(args, ctx):
    # Answer first, then close: closing cancels every command and removes its instrumentation;
    # then the package leaves sys.modules, so that nothing of ours stays and a re-attach loads afresh.
    ctx.after_reply.append(server.shutdown)
    ctx.after_reply.append(_unload)
    return {"detached": True}


def _unload():
    package = sys.modules.get(__package__)
    if package is not None:
        package.unload()
