"""A child forked by the target starts clean: no probe, no patched code, no monitoring tool of
ours, no copy of the parent's listener or connections (the parent's watch goes on untouched).

Registered once per agent with os.register_at_fork(after_in_child=...). The handler runs in the
child right after fork(), on the only thread the child has: it never waits (locks held by threads
that did not survive the fork are replaced, not acquired) and never raises into the application.
"""
import os
import sys

from . import server

_installed = []


def install():
    """Registers the child handler, once per agent (a second attach finds it registered)."""
    if not _installed and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_clean_child)
        _installed.append(True)


def _clean_child():
    try:
        server.forget_in_child()   # its commands are now cancelled: their probes record nothing
        package = __name__.rpartition(".")[0]
        instrument = sys.modules.get(package + ".instrument")
        if instrument is not None:
            instrument.remove_all(fresh_lock=True)
        _free_monitoring_tools()
        recording = sys.modules.get(package + ".recording")
        if recording is not None:   # its cached monitoring tool was just freed: a later trace takes a new one
            recording.forget_recorders()
    except BaseException:
        pass   # the child must run on whatever happens here


def _free_monitoring_tools():
    """Python >= 3.12: every sys.monitoring tool of ours (the probes' and trace's own) is freed."""
    mon = getattr(sys, "monitoring", None)
    if mon is None:
        return
    for tool in range(6):
        name = mon.get_tool(tool)
        if not (isinstance(name, str) and name.startswith("flight-mcp")):
            continue
        mon.set_events(tool, 0)
        for event in range(32):   # every event bit; the ones a version lacks raise ValueError
            try:
                mon.register_callback(tool, 1 << event, None)
            except ValueError:
                pass
        mon.free_tool_id(tool)
