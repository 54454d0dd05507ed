"""The instrumentation engine: runs a probe around every call of one Python function in the target.

It must reach every reference to the function (aliases, bound methods, `from m import f`, decorator
wrappers that call it), so it never rebinds a name; it instruments the function's code:
- Python >= 3.12: sys.monitoring LOCAL events (PY_START/RETURN/YIELD/RESUME) on the code object,
  plus the global PY_UNWIND/PY_THROW (they cannot be local) filtered by code object. A nested
  function (-nm) is covered by instrumenting its code object, so every inner function the outer
  one creates later is covered too.
- Python <= 3.11: a C frame evaluator (hook.c, PEP 523) matches the frames of instrumented code
  objects and runs the probes around them, so, as with sys.monitoring, the application sees no
  frame of ours (frame chains, tracebacks, inspect, recursion depth) and the function object is
  never touched; nested functions are covered through their code object, generator and coroutine
  frames are seen at each resumption. It is installed with the first site, removed with the last.
- Fallback when the evaluator cannot load (the answer's `mechanism` says so): the function's
  __code__ is swapped for a trampoline with the same parameters, freevars, name, file and line; it
  forwards the bound arguments to a hook that runs the probes and calls the original code (its
  frames show in the application's stacks). Removal puts back the very same code object. A nested
  function is covered by swapping its code object inside the outer function's co_consts.
  (Limitation: while the outer function itself is instrumented, its nested function cannot be;
  the answer says so.)

A probe is any object with:
  needs_args             whether enter() needs args/kwargs (else it receives None, None)
  enter(args, kwargs, frame) -> token or None   args are ALL positional values (instance included)
  leave(token, result, exc)                     exc: the exception that ended the call, or None
                                                (with `leave_offset = True`: leave(token, result, exc,
                                                offset), the byte offset of the instruction a call
                                                returned at, -1 when unknown)
  suspend(token) / resume(token)                generator/coroutine suspension and resumption
Several probes on one function are independent: each is added and removed on its own, and the
function returns to its original code when the last one goes. Probe errors never reach the
application (they are swallowed here; probes report their own failures). Calls made by the agent's
own threads are never seen by probes.
"""
import _thread
import os
import sys
import types

from . import lookup, native
from .codes import arg
from .registry import AgentError
from .server import AGENT_THREADS

_get_ident = _thread.get_ident
_getframe = sys._getframe
_lock = _thread.allocate_lock()
MONITORING = sys.version_info >= (3, 12)

CO_VARARGS, CO_VARKEYWORDS, CO_GENERATOR = 0x04, 0x08, 0x20
CO_COROUTINE, CO_ITERABLE_COROUTINE, CO_ASYNC_GENERATOR = 0x80, 0x100, 0x200

# Our trampolines -> the code they stand in for: the trace recorder skips them, and a second
# instrumentation of an already instrumented function must see the original code.
TRAMPOLINE_CODES = {}


class Target(object):
    """What a (module, class, method[, nested]) names, resolved without importing anything."""

    def __init__(self, func, code, has_self, label, outer=None):
        self.func = func          # the function object (for nested: None, the code is shared)
        self.code = code          # the code object instrumented
        self.has_self = has_self  # first positional argument is the instance (or class)
        self.label = label        # e.g. "__main__.OrderService.process_order"
        self.outer = outer        # nested only: the outer function whose co_consts hold `code`
        self.posnames = code.co_varnames[:code.co_argcount]
        flags = code.co_flags
        self.kind = ("async generator" if flags & CO_ASYNC_GENERATOR else
                     "coroutine" if flags & (CO_COROUTINE | CO_ITERABLE_COROUTINE) else
                     "generator" if flags & CO_GENERATOR else "function")

    def describe(self):
        return {"target": self.label, "kind": self.kind, "file": self.code.co_filename,
                "line": self.code.co_firstlineno, "mechanism": mechanism()}


def _unwrap(obj):
    """The Python function behind a method wrapper / decorator chain, and whether it takes self."""
    has_self = None
    if isinstance(obj, staticmethod):
        obj, has_self = obj.__func__, False
    elif isinstance(obj, classmethod):
        obj, has_self = obj.__func__, True
    elif isinstance(obj, property):
        obj, has_self = obj.fget, True
    elif isinstance(obj, types.MethodType):
        obj, has_self = obj.__func__, True
    seen = 0
    while not isinstance(obj, types.FunctionType) and seen < 20:
        inner = getattr(obj, "__wrapped__", None) or getattr(obj, "__func__", None)
        if inner is None:
            break
        obj, seen = inner, seen + 1
    # functools.wraps decorators: instrument the real function, not a wrapper code object
    # shared by every function that decorator wraps.
    while isinstance(obj, types.FunctionType) and isinstance(getattr(obj, "__wrapped__", None), types.FunctionType) \
            and seen < 40:
        obj, seen = obj.__wrapped__, seen + 1
    return obj, has_self


def resolve(module, cls, method, nested=None):
    mod = lookup.module(module)
    owner = lookup.klass(mod, cls) if cls else mod
    raw = lookup.attribute(owner, method, "method")
    func, has_self = _unwrap(raw)
    where = "%s.%s" % (module, (cls + "." if cls else "") + method)
    if not isinstance(func, types.FunctionType):
        kind = type(func).__name__
        if isinstance(func, (types.BuiltinFunctionType, types.BuiltinMethodType, types.MethodDescriptorType,
                             types.WrapperDescriptorType)) or kind in ("method_descriptor", "builtin_function_or_method"):
            raise AgentError("not_a_function", "%s is a built-in (C) function (%s): it has no Python code to "
                             "instrument. Trace or watch the Python function that calls it instead; a trace of "
                             "the caller shows it as a `<built-in>` node with its time." % (where, kind), arg="method")
        raise AgentError("not_a_function", "%s is a %s, not a Python function or method. Name a function "
                         "defined with def (for a callable object, its class and `__call__`)." % (where, kind), arg="method")
    if has_self is None:
        has_self = bool(cls)
    code = TRAMPOLINE_CODES.get(func.__code__, func.__code__)
    if not nested:
        return Target(func, code, has_self, where)
    # -nm: a function defined inside `method`; its code object is a constant of the outer code.
    inner = [TRAMPOLINE_CODES.get(c, c) for c in code.co_consts
             if isinstance(c, types.CodeType) and c.co_name == nested]
    if not inner:
        names = sorted(set(c.co_name for c in code.co_consts
                           if isinstance(c, types.CodeType) and not c.co_name.startswith("<")))
        raise AgentError("nested_method_not_found", "%s defines no nested function %r. %s" % (
            where, nested, ("Nested functions it defines: %s." % ", ".join(names)) if names else
            "It defines no nested functions (only functions defined directly inside it can be named as %s)."
            % arg("nested_method")), arg="nested_method")
    return Target(None, inner[0], False, "%s.%s" % (where, nested), outer=func)


class _Site(object):
    """One instrumented code object and the probes on it; probes is a tuple swapped atomically."""

    def __init__(self, target):
        self.target = target
        self.code = target.code
        self.probes = ()
        self.needs_args = False
        self.live = {}           # monitoring: id(frame) -> (frame, [(probe, token)])
        self.undo = None         # trampoline: restores the original code
        self.replaced_codes = [] # monitoring: the codes it ran before replace_code (their events go with it)
        self._reader = self._reader_code = None
        self._read_params()

    def _read_params(self):
        co = self.code
        n, k = co.co_argcount, co.co_kwonlyargcount
        names = co.co_varnames
        self.posnames = names[:n]
        self.kwonames = names[n:n + k]
        i = n + k
        self.varargs = names[i] if co.co_flags & CO_VARARGS else None
        if self.varargs:
            i += 1
        self.varkw = names[i] if co.co_flags & CO_VARKEYWORDS else None

    def set_probes(self, probes):
        self.probes = tuple(probes)
        self.needs_args = any(p.needs_args for p in probes)

    def args_from_frame(self, frame):
        """(all positional values, keyword-only and **kwargs) from a frame at its PY_START."""
        if self._reader_code is not self.code:   # first use, or the code was replaced (reload)
            self._reader = self._make_reader()
            self._reader_code = self.code
        return self._reader(frame.f_locals)

    def _make_reader(self):
        """`lambda loc: ((loc['a'], loc['b']) + tuple(loc['rest']), {'k': loc['k'], **loc['kw']})`
        for this code's parameters: generated because a generic loop over the names costs several
        times more, and this runs on every call (3.12 f_locals is a fresh dict, 3.13 a proxy)."""
        return eval("lambda loc: %s" % self.args_source(lambda name: "loc[%r]" % name),
                    {"__builtins__": __builtins__})

    def args_source(self, at):
        """Source of `(all positional values, keyword-only and **kwargs)` for this code's parameters,
        where at(name) spells the expression of one parameter's value."""
        self._read_params()
        args = "(%s)" % "".join("%s, " % at(n) for n in self.posnames)
        if self.varargs:
            args += " + tuple(%s)" % at(self.varargs)
        kwargs = "{%s}" % ", ".join(["%r: %s" % (n, at(n)) for n in self.kwonames] +
                                    (["**%s" % at(self.varkw)] if self.varkw else []))
        return "(%s, %s)" % (args, kwargs)


def _enter(site, args, kwargs, frame):
    """Runs every probe's enter; the (probe, token) pairs that want the call's end, or None.
    Inlined in the two hot paths (_plain_hook, _mon_start): keep them in step."""
    entered = None
    for p in site.probes:
        try:
            token = p.enter(args, kwargs, frame)
        except BaseException:
            token = None
        if token is not None:
            if entered is None:
                entered = [(p, token)]
            else:
                entered.append((p, token))
    return entered


def _leave(entered, result, exc, offset=-1):
    for p, token in reversed(entered):
        try:
            if getattr(p, "leave_offset", False):
                p.leave(token, result, exc, offset)
            else:
                p.leave(token, result, exc)
        except BaseException:
            pass


def _each(entered, method):
    for p, token in entered:
        try:
            getattr(p, method)(token)
        except BaseException:
            pass


_sites = {}   # key -> _Site (key: code object with monitoring; the function or (outer, code) otherwise)


def _key(target):
    if MONITORING or _hook_module() is not None:
        return id(target.code)  # by identity: equal code objects of different functions exist
    return (id(target.outer), target.code) if target.outer is not None else id(target.func)


def add(target, probe):
    """Starts calling probe around every call of target; returns a function that stops it."""
    if target.kind == "async generator":
        raise AgentError("unsupported", "%s is an async generator function; flight-mcp cannot instrument "
                         "those yet. Trace or watch the coroutine that iterates it." % target.label)
    with _lock:
        key = _key(target)
        site = _sites.get(key)
        if site is None or not site.probes:   # (a site without probes is one being taken down)
            site = _Site(target)
            site.set_probes([probe])
            if MONITORING:
                _monitoring_install(site)
            else:
                _sites[key] = site
                try:
                    _trampoline_install(site)
                except BaseException:
                    del _sites[key]
                    raise
            _sites[key] = site
        else:
            site.set_probes(site.probes + (probe,))
    done = []

    def remove():
        with _lock:
            if done:
                return
            done.append(True)
            site.set_probes([p for p in site.probes if p is not probe])
            if site.probes:
                return
            for k in [k for k, s in _sites.items() if s is site]:   # a reload may have added a key
                del _sites[k]
            if MONITORING:
                _monitoring_uninstall(site)
            elif site.undo is not None:
                site.undo()
    return remove


def remove_all(fresh_lock=False):
    """Removes every instrumentation of every command at once, and frees the monitoring tool.
    fresh_lock: in a forked child (atfork.py), where the lock may be held by a thread that did not
    survive the fork, so waiting for it would hang the child."""
    global _lock
    if fresh_lock:
        _lock = _thread.allocate_lock()
    with _lock:
        for key, site in list(_sites.items()):
            site.set_probes(())
            del _sites[key]   # before the uninstall: the last one frees the monitoring tool
            if MONITORING:
                _monitoring_uninstall(site)
            elif site.undo is not None:
                site.undo()


def _sites_on(func):
    """(key, site) of the sites on func itself or on a function nested in it (-nm); a site moved by
    an earlier replace_code is under two keys, listed once."""
    found, seen = [], set()
    for k, s in list(_sites.items()):
        if id(s) not in seen and (s.target.func is func or s.target.outer is func):
            seen.add(id(s))
            found.append((k, s))
    return found


def current_code(func):
    """The function's own code, looking past an active instrumentation's trampoline (<= 3.11)."""
    for _, site in _sites_on(func):
        if site.target.outer is None:
            return site.code
    return TRAMPOLINE_CODES.get(func.__code__, func.__code__)


def replace_code(func, new_code):
    """Installs new_code as func's code (reload). An active trace/watch on func, or on a function
    nested in it, moves to the new code: it keeps capturing, and ending it leaves the new code in
    place. Returns how many instrumentations were moved."""
    with _lock:
        found = _sites_on(func)
        if not found:
            func.__code__ = new_code
            return 0
        if not MONITORING:
            for _, site in found:  # trampolines off: the function holds its original code again
                if site.undo is not None:
                    site.undo()
        func.__code__ = new_code
        moved = 0
        for key, site in found:
            code = new_code
            if site.target.outer is not None:  # -nm: the nested function's code inside the new code
                code = next((c for c in new_code.co_consts
                             if isinstance(c, types.CodeType) and c.co_name == site.code.co_name), None)
            if code is None:
                continue  # the nested function is gone from the new code: nothing left to instrument
            if MONITORING:
                _monitoring_move(key, site, code)
            else:
                _point_at(site, code)
                _trampoline_install(site)  # its undo now puts back the NEW code
            moved += 1
        return moved


def _point_at(site, code):
    """Points a site (and its argument names) at another code object."""
    site.code = site.target.code = code
    site._read_params()


# ---------------------------------------------------------------------------------------------
# Python >= 3.12: sys.monitoring

_mon = {"tool": None}


def monitoring_tool():
    """The sys.monitoring tool id the probes use, or None."""
    return _mon["tool"]


def _monitoring_install(site):
    mon = sys.monitoring
    ev = mon.events
    if _mon["tool"] is None:
        tool = None
        for candidate in (4, 3, 5, 1, 2, 0):
            if mon.get_tool(candidate) is None:
                tool = candidate
                break
        if tool is None:
            raise AgentError("monitoring_busy", "all sys.monitoring tool ids are in use by other tools (debuggers, "
                             "profilers, coverage) in the target; stop one of them and retry.")
        mon.use_tool_id(tool, "flight-mcp")
        mon.register_callback(tool, ev.PY_START, _mon_start)
        mon.register_callback(tool, ev.PY_RETURN, _mon_return)
        mon.register_callback(tool, ev.PY_YIELD, _mon_yield)
        mon.register_callback(tool, ev.PY_RESUME, _mon_resume)
        mon.register_callback(tool, ev.PY_UNWIND, _mon_unwind)
        mon.register_callback(tool, ev.PY_THROW, _mon_resume_throw)
        # Global-only events: called for every frame that unwinds or is thrown into; the
        # callbacks drop foreign code objects with one dict lookup.
        mon.set_events(tool, ev.PY_UNWIND | ev.PY_THROW)
        _mon["tool"] = tool
    # Only PY_START until a probe takes a call: the events that end or suspend a call matter only
    # for calls a probe took, and a watch whose filter never matches then pays one callback, not two.
    mon.set_local_events(_mon["tool"], site.code, ev.PY_START)
    site.ends_on = False


def _monitoring_follow_ends(site, code):
    """A probe took a call: from now on the code also reports its returns (and suspensions)."""
    ev = sys.monitoring.events
    local = ev.PY_START | ev.PY_RETURN
    if site.target.kind != "function":
        local |= ev.PY_YIELD | ev.PY_RESUME
    sys.monitoring.set_local_events(_mon["tool"], code, local)
    site.ends_on = True


def _monitoring_move(old_key, site, code):
    """replace_code with sys.monitoring: local events on the new code object too, the site found
    under both keys (calls already running the old code still end through it), and both keys
    dropped when the last probe goes (remove() drops every key of the site)."""
    mon, tool = sys.monitoring, _mon["tool"]
    old_code = site.code
    events = mon.get_local_events(tool, old_code)
    _point_at(site, code)
    _sites[_key(site.target)] = site
    mon.set_local_events(tool, code, events)
    site.replaced_codes.append(old_code)  # keeps id(old_code) from being reused while it is a key


def _monitoring_uninstall(site):
    mon = sys.monitoring
    tool = _mon["tool"]
    if tool is None:
        return
    mon.set_local_events(tool, site.code, 0)
    for code in site.replaced_codes:
        try:
            mon.set_local_events(tool, code, 0)
        except ValueError:
            pass
    site.live.clear()
    if not _sites:
        mon.set_events(tool, 0)
        for event in (mon.events.PY_START, mon.events.PY_RETURN, mon.events.PY_YIELD, mon.events.PY_RESUME,
                      mon.events.PY_UNWIND, mon.events.PY_THROW):
            mon.register_callback(tool, event, None)
        mon.free_tool_id(tool)
        _mon["tool"] = None


def _mon_start(code, offset):
    site = _sites.get(id(code))
    if site is None or not site.probes or _get_ident() in AGENT_THREADS:
        return
    frame = _getframe(1)
    if site.needs_args:
        try:
            if site._reader_code is code:   # args_from_frame(), inlined
                args, kwargs = site._reader(frame.f_locals)
            else:
                args, kwargs = site.args_from_frame(frame)
        except BaseException:   # never into the application (an exception here would be raised in it)
            return
    else:
        args = kwargs = None
    entered = None
    for p in site.probes:   # _enter(), inlined: this runs on every call of the function
        try:
            token = p.enter(args, kwargs, frame)
        except BaseException:
            token = None
        if token is not None:
            if entered is None:
                entered = [(p, token)]
            else:
                entered.append((p, token))
    if entered is not None:
        site.live[id(frame)] = (frame, entered)
        if not site.ends_on:
            try:
                _monitoring_follow_ends(site, code)
            except BaseException:
                pass


def _mon_return(code, offset, retval):
    site = _sites.get(id(code))
    if site is None or not site.live:
        return
    item = site.live.pop(id(sys._getframe(1)), None)
    if item is not None:
        _leave(item[1], retval, None, offset)


def _mon_unwind(code, offset, exc):
    site = _sites.get(id(code))
    if site is None or not site.live:
        return
    item = site.live.pop(id(sys._getframe(1)), None)
    if item is not None:
        _leave(item[1], None, exc)


def _mon_yield(code, offset, value):
    site = _sites.get(id(code))
    if site is None or not site.live:
        return
    item = site.live.get(id(sys._getframe(1)))
    if item is not None:
        _each(item[1], "suspend")


def _mon_resume(code, offset):
    site = _sites.get(id(code))
    if site is None or not site.live:
        return
    item = site.live.get(id(sys._getframe(1)))
    if item is not None:
        _each(item[1], "resume")


def _mon_resume_throw(code, offset, exc):
    site = _sites.get(id(code))
    if site is None or not site.live:
        return
    item = site.live.get(id(sys._getframe(1)))
    if item is not None:
        _each(item[1], "resume")


# ---------------------------------------------------------------------------------------------
# Python <= 3.11: the C frame evaluator (hook.c)

_hook = {"module": None, "why": None}
# 3.11 runs Python-to-Python calls without C recursion, unless a frame evaluator is set: then each
# level takes C stack (measured: 20,000 levels fit an 8 MB stack, 50,000 crash). So on 3.11 the
# evaluator is used only where every recursion level the target allows has this much stack in the
# stacks its threads get; elsewhere the trampoline (which adds C stack only to the instrumented
# function's own recursion) is used instead.
C_STACK_PER_LEVEL_311 = 1024


def _hook_module():
    """hook.c's module, loaded at the first use; None (and _hook["why"] says why) when it cannot
    load: Python 3.12+, a debug (Py_TRACE_REFS) build whose objects are laid out differently, not
    built, FLIGHT_MCP_TRAMPOLINE=1 in the target's environment, or 3.11 where the evaluator's C
    stack could overflow a thread (_stack_too_small_311). Decided once: sites are keyed by what the
    mechanism hooks."""
    if _hook["module"] is not None or _hook["why"] is not None:
        return _hook["module"]
    if MONITORING:
        _hook["why"] = "Python >= 3.12 uses sys.monitoring"
    elif hasattr(sys, "getobjects"):
        _hook["why"] = "debug (Py_TRACE_REFS) interpreter"
    elif os.environ.get("FLIGHT_MCP_TRAMPOLINE") == "1":
        _hook["why"] = "FLIGHT_MCP_TRAMPOLINE=1 in the target's environment"
    else:
        module, why = native.extension("_flight_mcp_hook")
        if module is not None and sys.version_info[:2] == (3, 11):
            why = _stack_too_small_311(module)
        if why is None:
            _hook["module"] = module
            return module
        _hook["why"] = why
    return None


def _stack_too_small_311(module):
    """Why, on 3.11, the evaluator could overflow a thread's stack here (None when it cannot): the
    target's recursion limit times C_STACK_PER_LEVEL_311 against the stack its threads get, set by
    threading.stack_size() or else RLIMIT_STACK (glibc's default for new threads and the main
    thread's own limit)."""
    import resource
    levels = sys.getrecursionlimit()
    size = module.thread_stack_size()
    where = "threading.stack_size()"
    if not size:
        size, where = resource.getrlimit(resource.RLIMIT_STACK)[0], "the stack limit (ulimit -s)"
    if size < 0 or size >= levels * C_STACK_PER_LEVEL_311:   # (RLIM_INFINITY is -1)
        return None
    return ("on Python 3.11 a frame evaluator makes every Python call use C stack, and %s gives threads "
            "%d KiB for a recursion limit of %d" % (where, size // 1024, levels))


def mechanism():
    """How calls are intercepted, as the answer names it (with why, when it is the fallback)."""
    if MONITORING:
        return "sys.monitoring"
    if _hook_module() is not None:
        return "frame evaluator"
    return ("code trampoline (the frame evaluator could not load: %s; the trampoline's frames show in "
            "the application's stacks)" % _hook["why"])


def _slots(code):
    """Where each parameter's value sits among the fast locals of a frame about to run code:
    ~index when it may be in a cell there (3.8-3.10 move a cell parameter into its cell slot before
    the frame runs; 3.11 turns its own slot into a cell in the generator prologue)."""
    n = code.co_argcount + code.co_kwonlyargcount + bool(code.co_flags & CO_VARARGS) + \
        bool(code.co_flags & CO_VARKEYWORDS)
    out = []
    for i, name in enumerate(code.co_varnames[:n]):
        if name not in code.co_cellvars:
            out.append(i)
        elif sys.version_info < (3, 11):
            out.append(~(code.co_nlocals + code.co_cellvars.index(name)))
        else:
            out.append(~i)
    return tuple(out)


_START = """def start(%s):
    probes = site.probes
    if not probes or _get_ident() in AGENT_THREADS:
        return None
    if site.needs_args:
        try:
            args, kwargs = %s
        except BaseException:
            return None
    else:
        args = kwargs = None
    entered = None
    for p in probes:
        try:
            token = p.enter(args, kwargs, None)
        except BaseException:
            token = None
        if token is not None:
            if entered is None:
                entered = [(p, token)]
            else:
                entered.append((p, token))
    return entered
"""


def _hook_start(site):
    """start(*values) for hook.c: the probes' enter (_enter(), inlined), on every call of the site.
    Generated with one parameter per parameter of the code (p0, p1, ...), so the values hook.c
    reads are bound by the call itself and the arguments are built in the same frame: this is a
    watch's whole cost per call when its filter never matches."""
    names = site.code.co_varnames[:len(_slots(site.code))]
    position = dict((n, "p%d" % i) for i, n in enumerate(names))
    namespace = {"site": site, "_get_ident": _get_ident, "AGENT_THREADS": AGENT_THREADS,
                 "__builtins__": __builtins__}
    source = _START % (", ".join(position[n] for n in names), site.args_source(position.get))
    # Compiled as this file: trace's recorder leaves out the agent's frames by their file, and a
    # probe's enter starts a recording while start() still runs (its later C calls are ours).
    exec(compile(source, __file__, "exec"), namespace)
    return namespace["start"]


def _hook_event(entered, what, value, offset=-1):
    """event(entered, what, value, offset) for hook.c: 0 returned (at offset), 1 raised, 2 suspended,
    3 resumed."""
    if what == 0:
        _leave(entered, value, None, offset)
    elif what == 1:
        _leave(entered, None, value)
    else:
        _each(entered, "suspend" if what == 2 else "resume")


def _hook_publish():
    """Hands hook.c the sites that have probes (it installs or removes itself to match)."""
    table, seen = [], set()
    for site in list(_sites.values()):
        if site.probes and id(site) not in seen and getattr(site, "hook_entry", None) is not None:
            seen.add(id(site))
            table.append(site.hook_entry)
    _hook["module"].set_sites(tuple(table))


def _hook_install(site):
    code = site.code
    site.live.clear()
    site.hook_entry = (code, _hook_start(site), _hook_event, site.target.kind != "function", _slots(code),
                       site.live)
    _sites.setdefault(id(code), site)   # after a reload: found under the new code's key too
    site.undo = _hook_publish
    _hook_publish()


def _trampoline_install(site):
    """Installs site on <= 3.11 (replace_code calls it again after it replaced the code)."""
    if _hook_module() is not None:
        _hook_install(site)
    else:
        _code_swap_install(site)


# ---------------------------------------------------------------------------------------------
# Python <= 3.11 fallback: code trampoline

_serial = [0]
_HOOK_LOCAL = "__flight_mcp_hook__"


def _trampoline_code(code, hook, closure_getter):
    """A code object with code's parameters, freevars, name, file and line, whose body forwards the
    bound arguments to hook: hook(*positional, *varargs, kwonly=..., **varkw). With closure_getter,
    the first argument is a lambda whose __closure__ holds the caller's own cells (see _nested_hook)."""
    site = _Site(Target(None, code, False, ""))
    if _HOOK_LOCAL in code.co_varnames:
        raise AgentError("unsupported", "the function uses the reserved name %s" % _HOOK_LOCAL)
    co_posonly = getattr(code, "co_posonlyargcount", 0)
    params = list(site.posnames)
    if co_posonly:
        params.insert(co_posonly, "/")
    if site.varargs:
        params.append("*" + site.varargs)
    elif site.kwonames:
        params.append("*")
    params.extend(site.kwonames)
    if site.varkw:
        params.append("**" + site.varkw)
    call = list(site.posnames)
    if site.varargs:
        call.append("*" + site.varargs)
    call.extend("%s=%s" % (k, k) for k in site.kwonames)
    if site.varkw:
        call.append("**" + site.varkw)
    free = code.co_freevars
    if closure_getter and free:
        call.insert(0, "lambda: (%s,)" % ", ".join(free))
    elif closure_getter:
        call.insert(0, "None")
    _serial[0] += 1
    sentinel = "__flight_mcp_hook_%d__" % _serial[0]
    flags = code.co_flags
    if flags & (CO_COROUTINE | CO_ITERABLE_COROUTINE):
        head, ret = "async def", "return await %s(%s)"
    elif flags & CO_GENERATOR:
        head, ret = "def", "return (yield from %s(%s))"
    else:
        head, ret = "def", "return %s(%s)"
    src = ("def __flight_outer__(%s):\n"
           "    %s __flight_inner__(%s):\n"
           "        %s = %r\n"
           "        " + ret + "\n"
           "        (%s)\n"
           "    return __flight_inner__\n") % (
        ", ".join(free), head, ", ".join(params), _HOOK_LOCAL, sentinel, _HOOK_LOCAL, ", ".join(call),
        ", ".join(free) + "," if free else "None")
    outer = compile(src, code.co_filename, "exec").co_consts
    outer = [c for c in outer if isinstance(c, types.CodeType)][0]
    tramp = [c for c in outer.co_consts if isinstance(c, types.CodeType) and c.co_name == "__flight_inner__"][0]
    consts = tuple(hook if isinstance(c, str) and c == sentinel else c for c in tramp.co_consts)
    changes = {"co_consts": consts, "co_name": code.co_name, "co_firstlineno": code.co_firstlineno}
    if hasattr(code, "co_qualname"):
        changes["co_qualname"] = code.co_qualname
    tramp = tramp.replace(**changes)
    assert tramp.co_freevars == free
    TRAMPOLINE_CODES[tramp] = code
    return tramp


def _call_plain(site, orig, args, kwargs):
    if not site.probes or _get_ident() in AGENT_THREADS:
        return orig(*args, **kwargs)
    entered = _enter(site, args, kwargs, None)
    if entered is None:
        return orig(*args, **kwargs)
    return _call_entered(entered, orig, args, kwargs)


def _call_entered(entered, orig, args, kwargs):
    try:
        result = orig(*args, **kwargs)
    except BaseException as e:
        _leave(entered, None, e)
        raise
    _leave(entered, result, None)
    return result


def _plain_hook(site, orig):
    """The hook of a plain function: what runs on every call, so _enter() is inlined."""
    def hook(*args, **kwargs):
        probes = site.probes
        if probes and _get_ident() not in AGENT_THREADS:
            entered = None
            for p in probes:
                try:
                    token = p.enter(args, kwargs, None)
                except BaseException:
                    token = None
                if token is not None:
                    if entered is None:
                        entered = [(p, token)]
                    else:
                        entered.append((p, token))
            if entered is not None:
                return _call_entered(entered, orig, args, kwargs)
        return orig(*args, **kwargs)
    return hook


def _drive(site, it, entered):
    """Runs generator/coroutine `it` step by step so probes see each suspension and resumption
    (what `yield from` / `await` would do, including send, throw and close)."""
    send, exc = None, None
    while True:
        try:
            if exc is not None:
                value = it.throw(exc)
            else:
                value = it.send(send)
        except StopIteration as stop:
            _leave(entered, stop.value, None)
            return stop.value
        except BaseException as e:
            _leave(entered, None, e)
            raise
        _each(entered, "suspend")
        try:
            send, exc = (yield value), None
        except GeneratorExit:
            _each(entered, "resume")
            try:
                it.close()
            finally:
                _leave(entered, None, GeneratorExit())
            raise
        except BaseException as e:
            send, exc = None, e
        _each(entered, "resume")


class _Await(object):
    __slots__ = ("gen",)

    def __init__(self, gen):
        self.gen = gen

    def __await__(self):
        return self.gen


def _make_hook(site, orig_for):
    """The hook the trampoline calls. orig_for(first_arg) -> the original function to run."""
    kind = site.target.kind
    if kind == "function":
        if site.target.outer is None:
            return _plain_hook(site, orig_for(None))
        else:
            def hook(getter, /, *args, **kwargs):
                return _call_plain(site, orig_for(getter), args, kwargs)
        return hook

    def start(orig, args, kwargs):
        it = orig(*args, **kwargs)
        if kind == "coroutine":
            it = it.__await__()
        if not site.probes or _get_ident() in AGENT_THREADS:
            return None, it
        return _enter(site, args, kwargs, None), it

    def run(orig, args, kwargs):
        entered, it = start(orig, args, kwargs)
        if not entered:
            return (yield from it)
        return (yield from _drive(site, it, entered))

    if kind == "coroutine":
        if site.target.outer is None:
            orig = orig_for(None)

            def hook(*args, **kwargs):
                return _Await(run(orig, args, kwargs))
        else:
            def hook(getter, /, *args, **kwargs):
                return _Await(run(orig_for(getter), args, kwargs))
    else:
        if site.target.outer is None:
            orig = orig_for(None)

            def hook(*args, **kwargs):
                return run(orig, args, kwargs)
        else:
            def hook(getter, /, *args, **kwargs):
                return run(orig_for(getter), args, kwargs)
    return hook


def _code_swap_install(site):
    target = site.target
    code = target.code
    if target.outer is None:
        func = target.func
        # Runs the original code with the same globals and cells; defaults are not needed since
        # the trampoline already bound every parameter and passes it explicitly.
        orig = types.FunctionType(code, func.__globals__, func.__name__, None, func.__closure__)
        orig.__qualname__ = func.__qualname__
        tramp = _trampoline_code(code, _make_hook(site, lambda getter: orig), False)
        func.__code__ = tramp
        site.orig_func = orig

        def undo():
            if func.__code__ is tramp:
                func.__code__ = site.code   # site.code: a nested instrumentation's undo may update it
        site.undo = undo
        return

    outer = target.outer
    for s in list(_sites.values()):
        if s.target.func is outer and s.undo is not None:
            raise AgentError("busy", "%s is itself being traced or watched right now; on Python <= 3.11 its "
                             "nested function cannot be instrumented at the same time. Retry when that "
                             "command ends." % outer.__qualname__)
    globs = outer.__globals__
    free = code.co_freevars

    def orig_for(getter):
        closure = None
        if getter is not None:
            cells = dict(zip(getter.__code__.co_freevars, getter.__closure__))
            closure = tuple(cells[n] for n in free)
        return types.FunctionType(code, globs, code.co_name, None, closure)

    tramp = _trampoline_code(code, _make_hook(site, orig_for), True)
    outer_code = outer.__code__
    patched = outer_code.replace(co_consts=tuple(tramp if c is code else c for c in outer_code.co_consts))
    outer.__code__ = patched

    def undo():
        # Inner functions created meanwhile keep the trampoline: with no probes it only passes through.
        if outer.__code__ is patched:
            outer.__code__ = outer_code
            return
        # The outer function got instrumented after us: its trampoline runs `patched` and puts it
        # back when it ends. Both must hold the outer code without our inner trampoline now.
        for s in list(_sites.values()):
            if s.target.func is outer and s.code is patched and getattr(s, "orig_func", None) is not None:
                s.code = outer_code
                s.orig_func.__code__ = outer_code
    site.undo = undo


def pass_through_codes():
    """Code objects of the call path between the application and the original function (hooks,
    trampolines, monitoring callbacks): a trace tree skips them but keeps what they call. Every
    other agent frame (probes, expressions they evaluate) is hidden with what it calls."""
    codes = set(TRAMPOLINE_CODES)
    for fn in (_call_plain, _call_entered, _drive, _mon_start, _mon_return, _mon_unwind, _mon_yield, _mon_resume,
               _mon_resume_throw, _Await.__await__):
        codes.add(fn.__code__)
    for maker in (_make_hook, _plain_hook):
        for c in maker.__code__.co_consts:
            if isinstance(c, types.CodeType):
                codes.add(c)
    return codes

