"""The agent's C extensions, beside this file, each loaded once by path (the target does not have
flight-mcp installed), on first use: _flight_mcp_recorder (recorder.c: trace's recorder and the
starter of the agent's threads) and _flight_mcp_hook (hook.c: the frame evaluator of 3.8-3.11).

When one cannot be used, extension() says why: trace then records with its Python recorder, the
engine falls back to its code trampoline, the agent's threads start through ctypes, and each answer
says so."""
import _thread
import os
import sys

_AGENT_DIR = os.path.dirname(os.path.abspath(__file__))
_loaded = {}
_lock = _thread.allocate_lock()


def extension(name="_flight_mcp_recorder"):
    """(module, None), or (None, why it cannot be used: a sentence naming the cause and the fix)."""
    with _lock:
        if name not in _loaded:
            _loaded[name] = _load(name)
    return _loaded[name]


def _load(name):
    # The stable ABI's objects have the release build's layout: not a debug (Py_TRACE_REFS) build's,
    # not a free-threaded build's.
    if hasattr(sys, "getobjects"):
        return None, "this interpreter is a debug build (Py_TRACE_REFS) that C extensions of the stable ABI cannot serve"
    if not getattr(sys, "_is_gil_enabled", lambda: True)():
        return None, "this interpreter runs without the GIL (free-threaded), which the stable ABI does not support"
    paths = sorted(os.path.join(_AGENT_DIR, n) for n in os.listdir(_AGENT_DIR)
                   if n.startswith(name) and n.endswith(".so"))
    if not paths:
        return None, ("%s*.so is missing from %s: reinstall flight-mcp with a C compiler "
                      "(`pip install .`)" % (name, _AGENT_DIR))
    # importlib's own machinery (loaded in every interpreter), not importlib.util: ~5 ms of imports
    # (contextlib, types, ...) in a bare target, on the agent's start
    external, bootstrap = sys.modules.get("_frozen_importlib_external"), sys.modules.get("_frozen_importlib")
    if external is None or bootstrap is None:
        import importlib.machinery
        import importlib.util
        external, bootstrap = importlib.machinery, importlib.util
    failures = []
    for path in paths:
        try:
            loader = external.ExtensionFileLoader(name, path)
            spec = bootstrap.spec_from_loader(name, loader, origin=path)
            module = bootstrap.module_from_spec(spec)
            loader.exec_module(module)
            return module, None
        except Exception as e:
            failures.append("%s: %s" % (os.path.basename(path), e))
    return None, ("%s could not be loaded into this process (%s); a build on a machine with this target's "
                  "glibc or older fixes it" % (" / ".join(os.path.basename(p) for p in paths), "; ".join(failures)))
