"""trace's recorder: the call tree under one invocation, recorded on the thread running it.

A recording starts when the traced call starts and hands the thread back what it had when the call
ends or suspends. The recorder is the C one (recorder.c) when it loads, else PyRecording below:
same interface, same tree. Its events come from a profile function on that thread (so other
threads pay nothing) or, on 3.12+, from a sys.monitoring tool of ours that is on only while some
call is being recorded (other threads then pay a C callback per call, as with any profiler there).

The API trace uses:
  Recorder(interval_ms, depth)      one command's recorder (the C or Python one; holds the events)
    .start(code, frame, gap_label)  a recording of one invocation: activate(prev), deactivate(),
                                    suspend(), resume(), finish() -> cost in seconds, stop()
    .foreign(prev)                  whether prev (sys.getprofile()) is a profiler trace cannot hand back
    .close()                        the command ended
  tree_facts(recording, depth, interval_ms) -> (root node facts, hidden, elided)
  forget_recorders()                in a forked child (atfork.py)
"""
import _thread
import os
import sys
import time

from . import instrument, native, objstate, qualnames

_perf = time.perf_counter
_AGENT_DIR = os.path.dirname(os.path.abspath(__file__))
MAX_NODES = 100000      # recorded per invocation; deeper/later calls are counted, not kept
MAX_SHOWN = 500         # nodes sent back per invocation (a tree is read by a person or a model)
MAX_LEVELS = 100        # levels sent back (deep recursion): JSON validators refuse much deeper nesting

_kinds = {}
_pass = {"codes": None, "n": -1}
USER, PASS, HIDE = 0, 1, 2


def _kind(code):
    """USER: shown. PASS: the hook path (trampolines, hooks) is skipped but what it calls is shown.
    HIDE: the agent's own work (probes, the expressions they evaluate) is left out entirely."""
    k = _kinds.get(code)
    if k is None:
        if _pass["n"] != len(instrument.TRAMPOLINE_CODES):
            _pass["codes"] = instrument.pass_through_codes()
            _pass["n"] = len(instrument.TRAMPOLINE_CODES)
        if code in _pass["codes"]:
            k = PASS
        elif code.co_filename.startswith(_AGENT_DIR):
            k = HIDE
        else:
            k = USER
        if len(_kinds) < 50000:
            _kinds[code] = k
    return k


class PyRecording(object):
    """One invocation's tree, recorded by a Python profile function (3-6 us per call: the fallback
    when the C recorder cannot load). A node is [label, start, children, cost, raised, exception
    type, line]; label is a code object, a builtin callable, or a marker string ("[await]").
    interval and depth are applied by tree_facts. A Python profile function cannot tell a call that
    raised from one that returned None: its nodes never say raised."""

    hidden = 0

    def __init__(self, code, frame, gap_label, classify, setprofile, interval_s, depth, max_nodes, monitoring=False):
        self.root = [code, _perf(), [], None, False, None, None]
        self.stack = [self.root]
        self.root_code = code
        self.root_frame = frame      # None with the trampoline: bound at the first call of code
        self.agent_depth = 0         # depth inside agent frames
        self.nodes = 1
        self.max_nodes = max_nodes
        self.dropped = 0
        self.gap_label = gap_label
        self.gap = None
        self.prev = None
        self.chain = None
        self.stopped = False

    def activate(self, prev):
        if prev == self.prof:
            return
        self.prev = prev
        self.chain = prev if isinstance(getattr(prev, "__self__", None), PyRecording) else None
        sys.setprofile(self.prof)

    def deactivate(self):
        if sys.getprofile() == self.prof:
            sys.setprofile(self.prev)

    def stop(self):
        self.stopped = True

    def prof(self, frame, event, arg):
        if self.stopped:   # the command ended while this call still runs: stop recording it
            self.deactivate()
            return
        if self.chain is not None:   # another trace of this thread records too (two clients)
            if self.chain.__self__.stopped:
                self.chain = None
            else:
                self.chain(frame, event, arg)
        if event == "call":
            if frame is self.root_frame:
                return
            code = frame.f_code
            k = _kind(code)
            if k == HIDE:
                self.agent_depth += 1
                return
            if self.agent_depth or k == PASS:
                return
            if self.root_frame is None and code is self.root_code and len(self.stack) == 1:
                self.root_frame = frame
                return
            self._push(code)
        elif event == "return":
            if frame is self.root_frame:
                return
            k = _kind(frame.f_code)
            if k == HIDE:
                if self.agent_depth:
                    self.agent_depth -= 1
                return
            if not self.agent_depth and k == USER:
                self._pop()
        elif not self.agent_depth and _kind(frame.f_code) == USER:
            if event == "c_call":
                self._push(arg)
            else:  # c_return, c_exception
                self._pop()

    def _push(self, label):
        parent = self.stack[-1]
        if parent is None or self.nodes >= self.max_nodes:
            self.stack.append(None)
            self.dropped += 1
            return
        node = [label, _perf(), [], None, False, None, None]
        parent[2].append(node)
        self.stack.append(node)
        self.nodes += 1

    def _pop(self):
        if len(self.stack) > 1:
            node = self.stack.pop()
            if node is not None:
                node[3] = _perf() - node[1]

    def suspend(self):
        del self.stack[1:]   # frames that suspend with the root already sent their returns
        self.gap = [self.gap_label, _perf(), [], None, False, None, None]
        self.root[2].append(self.gap)

    def resume(self):
        if self.gap is not None:
            self.gap[3] = _perf() - self.gap[1]
            self.gap = None

    def finish(self):
        end = _perf()
        for node in self.stack:
            if node is not None and node[3] is None:
                node[3] = end - node[1]
        self.root[3] = end - self.root[1]
        self.stack = self.root_frame = self.chain = None
        self.stopped = True   # still installed or chained somewhere: it steps aside at the next event
        return self.root[3]

    def tree(self):
        return self.root

    def resolve(self, exc):
        pass


def _c_recorder():
    """(the C recorder's module, None), or (None, why the Python recorder records instead)."""
    if os.environ.get("FLIGHT_MCP_PY_RECORDER") == "1":
        return None, "FLIGHT_MCP_PY_RECORDER=1 is set in the target's environment; unset it for the C recorder"
    return native.extension()


class MonitoringEvents(object):
    """Python >= 3.12: the C recorder takes its events from a sys.monitoring tool of its own rather
    than from a profile function, which there is a shim over sys.monitoring that builds a frame
    object per call (a third of a trace's overhead). The tool is held while trace commands run;
    its events are on only while some call is being recorded (the recorder switches them)."""

    def __init__(self, module):
        ev = sys.monitoring.events
        self.callbacks = ((ev.PY_START, module.mon_begins), (ev.PY_RESUME, module.mon_begins),
                          (ev.PY_THROW, module.mon_begins), (ev.PY_RETURN, module.mon_ends),
                          (ev.PY_YIELD, module.mon_ends), (ev.PY_UNWIND, module.mon_unwinds),
                          (ev.CALL, module.mon_call), (ev.C_RETURN, module.mon_c_ends),
                          (ev.C_RAISE, module.mon_c_raises))
        self.events = 0
        for event, _ in self.callbacks:
            self.events |= event
        self.tool = None
        self.users = 0
        self.lock = _thread.allocate_lock()
        self.module = module
        module.configure_monitoring(self.switch, type(len), type(list.append))

    def acquire(self):
        """False when every tool id is taken (debuggers, coverage, profilers): then the profile
        function records instead."""
        mon = sys.monitoring
        with self.lock:
            if self.users == 0:
                free = [t for t in (5, 3, 1, 2, 0, 4) if mon.get_tool(t) is None]
                if len(free) < (1 if instrument.monitoring_tool() is not None else 2):
                    return False   # the last free id is for the probes themselves
                mon.use_tool_id(free[0], "flight-mcp trace")
                for event, fn in self.callbacks:
                    mon.register_callback(free[0], event, fn)
                self.tool = free[0]
                if self.module.monitoring_needed():   # a thread left recording (e.g. it never ran again)
                    mon.set_events(self.tool, self.events)
            self.users += 1
            return True

    def release(self):
        mon = sys.monitoring
        with self.lock:
            self.users -= 1
            if self.users or self.tool is None:
                return
            tool, self.tool = self.tool, None
            mon.set_events(tool, 0)
            for event, _ in self.callbacks:
                mon.register_callback(tool, event, None)
            mon.free_tool_id(tool)

    def switch(self, on):
        tool = self.tool
        if tool is not None:
            sys.monitoring.set_events(tool, self.events if on else 0)


_recorders = []
_recorders_lock = _thread.allocate_lock()


def recorder():
    """(recorder type, MonitoringEvents or None, why the Python recorder records or None), loaded
    once: two traces starting together must share one type, or each would take the other's
    recording for a foreign profiler."""
    with _recorders_lock:
        if not _recorders:
            module, fallback = _c_recorder()
            events = None
            if module is not None and hasattr(sys, "monitoring"):
                try:
                    events = MonitoringEvents(module)
                except Exception:
                    events = None
            elif module is not None:
                try:
                    _hear_raises(module)
                except Exception:
                    pass   # sub-calls that raised are shown without their exception's type
            _recorders.append((module.Recording if module is not None else PyRecording, events, fallback))
    return _recorders[0]


def forget_recorders():
    """In a forked child (atfork.py), which freed the monitoring tool cached here: the next trace
    there loads its recorder afresh. A fresh lock: the parent's may have been held at the fork."""
    global _recorders_lock
    _recorders_lock = _thread.allocate_lock()
    del _recorders[:]


def _hear_raises(module):
    """Python <= 3.11: the frame evaluator (hook.c) tells the C recorder the type of each exception
    a frame ends by, which its profile function is not given."""
    hook = instrument._hook_module()
    note = getattr(module, "raise_note", None)
    if hook is not None and note is not None and hasattr(hook, "set_raise_note"):
        hook.set_raise_note(note)


class Recorder(object):
    """The recorder of one trace command: the loaded recording type, and the sys.monitoring events
    it holds while the command runs (None: each recording sets a profile function instead)."""

    def __init__(self, interval_ms, depth):
        self.type, events, self.fallback = recorder()
        self.events = events if events is not None and events.acquire() else None
        self.name = "python" if self.type is PyRecording else "c"
        self.interval_s = interval_ms / 1000.0
        self.depth = depth

    def start(self, code, frame, gap_label):
        """A recording of one invocation of code (frame: its frame, or None to bind it at its first
        call); not recording until activate(sys.getprofile())."""
        return self.type(code, frame, gap_label, _kind, sys.setprofile, self.interval_s, self.depth, MAX_NODES,
                         self.events is not None)

    @property
    def profile_function(self):
        """The recordings take their events from a profile function on the recorded thread."""
        return self.events is None

    def foreign(self, prev):
        """Whether prev, the thread's profile function, is another profiler that could not be handed
        back after the call: a C-level one (cProfile on <= 3.11) shows up as a non-callable object,
        and sys.setprofile(it) would raise into the application at its next event."""
        return prev is not None and not callable(prev) and type(prev) is not self.type

    def close(self):
        events, self.events = self.events, None
        if events is not None:
            events.release()


def _label(label):
    """A node's facts (models.Frame) from its label: a code object, a builtin callable, or a gap's marker."""
    if isinstance(label, str):
        return {"name": label, "qualname": label, "file": "", "line": None, "kind": "gap"}
    if hasattr(label, "co_name"):
        return {"name": label.co_name, "qualname": qualnames.qualname(label),
                "file": label.co_filename, "line": label.co_firstlineno, "kind": "python"}
    name = getattr(label, "__name__", None) or type(label).__name__
    owner = getattr(label, "__self__", None)
    qual = getattr(label, "__qualname__", name)
    if owner is not None and not isinstance(owner, type(sys)) and "." not in qual:
        qual = "%s.%s" % (type(owner).__name__, name)
    return {"name": name, "qualname": qual, "file": "", "line": None, "kind": "builtin"}


def exception_type_name(t):
    """An exception class's qualified name (`Inventory.OutOfStock`), read from type's own fields."""
    return objstate.qualname_of(t) or objstate.short_name(t)


def tree_facts(rec, depth, interval_ms):
    """The recorded tree as node facts (models.Frame + cost_ms, children), cut by depth (levels,
    root = 1) or else by interval (hide sub-calls cheaper than interval_ms: the C recorder already
    dropped those), bounded to MAX_SHOWN nodes and MAX_LEVELS levels. Returns (root, hidden, elided)."""
    budget = [MAX_SHOWN]
    elided = [0]
    hidden = [rec.hidden]

    def raised_within(node):
        """A call in this subtree raised (the C recorder kept it however cheap: shown). Cheap only
        there: it keeps a cheap call for nothing else, and a cheap call's subtree is cheaper still."""
        if isinstance(rec, PyRecording):
            return False   # its nodes never say raised, and it keeps every cheap call
        todo = [node]
        while todo:
            n = todo.pop()
            if len(n) > 4 and n[4]:
                return True
            todo.extend(n[2])
        return False

    def shown(node):
        return depth > 0 or (node[3] or 0.0) * 1000.0 >= interval_ms or raised_within(node)

    def shown_size(node):
        """Nodes of a subtree that interval would show (what the size bounds leave out)."""
        count, todo = 0, [node]
        while todo:
            n = todo.pop()
            count += 1
            todo.extend(c for c in n[2] if shown(c))
        return count

    def convert(node, level):
        out = _label(node[0])
        out["cost_ms"] = round((node[3] or 0.0) * 1000.0, 3)
        if len(node) > 4 and node[4]:   # (a recorder .so of an earlier agent, still loaded, has no exceptions)
            out["raised"] = True
            out["exception"] = exception_type_name(node[5]) if node[5] is not None else None
            out["raised_at"] = node[6]
        kids = []
        for child in node[2]:
            if depth > 0 and level >= depth:
                hidden[0] += 1
                continue
            if not shown(child):
                hidden[0] += 1
                continue
            if budget[0] <= 0 or level >= MAX_LEVELS:
                elided[0] += shown_size(child)
                continue
            budget[0] -= 1
            kids.append(convert(child, level + 1))
        out["children"] = kids
        return out

    root = convert(rec.tree(), 1)
    return root, hidden[0], elided[0]
