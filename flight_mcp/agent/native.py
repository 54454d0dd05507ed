"""The agent's C extension (recorder.c, beside this file): trace's recorder and the starter of the
agent's threads. Loaded once, by path (the target does not have flight-mcp installed), on first use.

When it cannot be used, extension() says why: trace then records with its Python recorder and tells
the user so; the agent's threads start through ctypes (server.start_thread)."""
import _thread
import glob
import os
import sys

_AGENT_DIR = os.path.dirname(os.path.abspath(__file__))
_loaded = []
_lock = _thread.allocate_lock()


def extension():
    """(module, None), or (None, why it cannot be used: a sentence naming the cause and the fix)."""
    with _lock:
        if not _loaded:
            _loaded.append(_load())
    return _loaded[0]


def _load():
    # The stable ABI's objects have the release build's layout: not a debug (Py_TRACE_REFS) build's,
    # not a free-threaded build's.
    if hasattr(sys, "getobjects"):
        return None, "this interpreter is a debug build (Py_TRACE_REFS) that C extensions of the stable ABI cannot serve"
    if not getattr(sys, "_is_gil_enabled", lambda: True)():
        return None, "this interpreter runs without the GIL (free-threaded), which the stable ABI does not support"
    paths = sorted(glob.glob(os.path.join(_AGENT_DIR, "_flight_mcp_recorder*.so")))
    if not paths:
        return None, ("_flight_mcp_recorder*.so is missing from %s: reinstall flight-mcp with a C compiler "
                      "(`pip install .`)" % _AGENT_DIR)
    from importlib.machinery import ExtensionFileLoader
    import importlib.util
    failures = []
    for path in paths:
        try:
            loader = ExtensionFileLoader("_flight_mcp_recorder", path)
            spec = importlib.util.spec_from_file_location("_flight_mcp_recorder", path, loader=loader)
            module = importlib.util.module_from_spec(spec)
            loader.exec_module(module)
            return module, None
        except Exception as e:
            failures.append("%s: %s" % (os.path.basename(path), e))
    return None, ("%s could not be loaded into this process (%s); a build on a machine with this target's "
                  "glibc or older fixes it" % (" / ".join(os.path.basename(p) for p in paths), "; ".join(failures)))
