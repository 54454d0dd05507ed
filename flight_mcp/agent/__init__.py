"""The agent: runs inside the target process.

Rules for everything under this package (checked by tests):
- standard library only, Python 3.8 syntax, nothing done at import time beyond definitions;
- never imports `threading`, `asyncio`, `logging`, `subprocess` or `queue` itself: importing
  `threading` first from a foreign thread makes that thread the target's "main thread" on 3.11/3.12;
  these modules are used only when the target already imported them (looked up in sys.modules);
- loaded by the bootstrap under a private module name (one per build: `_flight_mcp_agent_<build>`),
  never as `flight_mcp.agent`; `detach` unloads it (unload()), so a later attach loads it afresh.
"""
import os
import sys

# registry, server and atfork are imported where they are used, not here: the host imports
# flight_mcp.agent.codes (the error catalogue) and must not start a socket server's imports for it.

AGENT_VERSION = "0.2.0"


def _import(name):
    """importlib.import_module(name) without importing importlib (~2 ms in a bare 3.8 target): the
    function it calls, from the import system every interpreter has loaded."""
    boot = sys.modules.get("_frozen_importlib")
    if boot is None or not hasattr(boot, "_gcd_import"):
        import importlib
        return importlib.import_module(name)
    return boot._gcd_import(name)


def _load_commands(name=None):
    # Each cmd_*.py registers its commands on import; listing the folder keeps this file
    # untouched when a command is added. Loaded on first use: cmd_<name>.py first, every
    # module when that does not define the command. Importing all of them at attach (with
    # ast, the instrumentation engine, ...) was ~half of the agent's start in a bare target.
    from . import registry as _registry
    here = os.path.dirname(os.path.abspath(__file__))
    if name is not None and os.path.exists(os.path.join(here, "cmd_%s.py" % name)):
        _import(__name__ + ".cmd_" + name)
        if name in _registry.COMMANDS:
            return
    for entry in sorted(os.listdir(here)):
        if entry.startswith("cmd_") and entry.endswith(".py"):
            _import(__name__ + "." + entry[:-3])


def start(socket_path, allowed_uid, build=None):
    """Idempotent: a second attach finds the running listener and does nothing. `build` is the
    content hash of the agent's files (the host compares it with its own)."""
    from . import atfork as _atfork
    from . import registry as _registry
    from . import server as _server
    if "info" not in _registry.COMMANDS:  # every attach asks for info first (cmd_admin: info, detach)
        _import(__name__ + ".cmd_admin")
    _server.command_loader[0] = _load_commands
    _server._state["build"] = build
    _atfork.install()   # a child the target forks starts clean
    return _server.ensure_listening(socket_path, allowed_uid, AGENT_VERSION)


def listening():
    """Whether this agent still serves its socket (a bootstrap of another build asks)."""
    from . import server as _server
    return _server._state["listener"] is not None


def unload():
    """Forgets this package and its modules (after detach): nothing of ours stays in sys.modules or
    in the import caches; running agent threads keep what they hold until they end."""
    for key in [k for k in list(sys.modules) if k == __name__ or k.startswith(__name__ + ".")]:
        module = sys.modules.pop(key, None)
        on_detach = getattr(module, "on_detach", None) if key != __name__ else None
        if on_detach is not None:   # a module that keeps state between commands frees it (tt's table)
            try:
                on_detach()
            except Exception:
                pass
    for entry in __path__:
        sys.path_importer_cache.pop(entry, None)
