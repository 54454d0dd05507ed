"""Views, listings, lookups and vmtool's reads run none of the target's code (in-process).

Every method a target class could use to run code when read (metaclass __getattribute__/__eq__/
__hash__, __class__ and __dict__ properties, slots shadowed by properties, __getattr__, __repr__,
__len__, __iter__, items()/keys() overrides, __eq__/__hash__/__lt__ on keys, exception __str__,
module __getattr__) records its name in RAN once the objects are built; the views must come out
with the objects' state and RAN empty. raw runs a __repr__ only on an agent thread, within its
budget, and never leaves more than timebox.MAX_STUCK threads behind.
"""
import collections
import sys
import threading
import time
import types

import pytest

from flight_mcp.agent import cmd_getglobal, cmd_vmtool, lookup, objview, timebox
from flight_mcp.agent.registry import AgentError

pytestmark = pytest.mark.timeout(60)

RAN = []
ARMED = [False]


def hit(name):
    if ARMED[0]:
        RAN.append(name)


class Meta(type):
    def __getattribute__(cls, name):
        hit("metaclass __getattribute__ %s" % name)
        return type.__getattribute__(cls, name)

    def __eq__(cls, other):
        hit("metaclass __eq__")
        return type.__eq__(cls, other)

    def __hash__(cls):
        hit("metaclass __hash__")
        return type.__hash__(cls)

    def __repr__(cls):
        hit("metaclass __repr__")
        return "Meta!"

    @property
    def extra(cls):
        hit("metaclass property")
        return 1


class Hostile(metaclass=Meta):
    __slots__ = ("slot", "__dict__", "__weakref__")

    def __init__(self, **state):
        for k, v in state.items():
            setattr(self, k, v)
        Hostile.slot.__set__(self, "slot-value")

    def __repr__(self):
        hit("__repr__")
        return "H"

    def __str__(self):
        hit("__str__")
        return "H"

    def __getattr__(self, name):
        hit("__getattr__ %s" % name)
        raise AttributeError(name)

    def __getattribute__(self, name):
        if ARMED[0]:
            hit("__getattribute__ %s" % name)
        return object.__getattribute__(self, name)

    @property
    def __class__(self):
        hit("__class__ property")
        return int

    def __eq__(self, other):
        hit("__eq__")
        return self is other

    def __hash__(self):
        hit("__hash__")
        return 7

    def __lt__(self, other):
        hit("__lt__")
        return True

    def __len__(self):
        hit("__len__")
        return 3

    def __iter__(self):
        hit("__iter__")
        return iter(())


class Shadowed(Hostile):
    """A property named like the base's slot, and a __dict__ property: neither may run."""

    @property
    def slot(self):
        hit("slot property")
        return "from the property"

    @property
    def __dict__(self):
        hit("__dict__ property")
        return {"fake": 1}


class HostileDict(dict):
    def items(self):
        hit("dict items()")
        return []

    def keys(self):
        hit("dict keys()")
        return []

    def __iter__(self):
        hit("dict __iter__")
        return iter(())

    def __len__(self):
        hit("dict __len__")
        return 0

    def __getitem__(self, k):
        hit("dict __getitem__")
        return None

    def __repr__(self):
        hit("dict __repr__")
        return "{}"


class HostileList(list):
    def __iter__(self):
        hit("list __iter__")
        return iter(())

    def __len__(self):
        hit("list __len__")
        return 0

    def __getitem__(self, i):
        hit("list __getitem__")
        return None

    def __repr__(self):
        hit("list __repr__")
        return "[]"


class HostileSet(set):
    def __iter__(self):
        hit("set __iter__")
        return iter(())

    def __len__(self):
        hit("set __len__")
        return 0


class HostileStr(str):
    def __repr__(self):
        hit("str __repr__")
        return "S"

    def __len__(self):
        hit("str __len__")
        return 0

    def __getitem__(self, i):
        hit("str __getitem__")
        return ""

    def __eq__(self, other):
        hit("str __eq__")
        return False

    def __hash__(self):
        hit("str __hash__")
        return 1

    def __lt__(self, other):
        hit("str __lt__")
        return True


class HostileInt(int):
    def __repr__(self):
        hit("int __repr__")
        return "I"

    def bit_length(self):
        hit("int bit_length")
        return 0


class Boom(Exception):
    def __str__(self):
        hit("exception __str__")
        return "boom"

    def __repr__(self):
        hit("exception __repr__")
        return "Boom"


Point = collections.namedtuple("Point", "x y")


def _hostile_world():
    h = Hostile(name="ann", balance=10)
    s = Shadowed(name="bob")
    d = HostileDict(alpha=1)
    d[Hostile()] = "user key"
    keyed = {Hostile(): 1, Hostile(): 2, "plain": 3}
    dd = collections.defaultdict(list, a=[1])
    world = {
        "h": h, "shadowed": s, "hd": d, "hl": HostileList([h, 1, 2]), "hs": HostileSet([1, 2]),
        "keyed": keyed, "dd": dd, "od": collections.OrderedDict(z=h), "counter": collections.Counter(a=2),
        "nt": Point(1, h), "dq": collections.deque([h, 2]), "exc": Boom(h), "cls": Hostile,
        "method": h.__len__, "frozen": frozenset([1]), "big": 10 ** 5000, "long": "x" * 100000,
        "strkeys": {HostileStr("b"): HostileStr("x" * 500), HostileStr("a"): HostileInt(7)},
    }
    return world, h, s, dd


@pytest.fixture
def armed():
    RAN.clear()
    ARMED[0] = True
    yield RAN
    ARMED[0] = False


def _strings(view):
    out = [view.get("repr", "")]
    for kid in view.get("children", []):
        out.append(kid["name"])
        out.extend(_strings(kid["view"]))
    return out


def test_views_read_state_without_running_target_code(armed):
    ARMED[0] = False
    world, h, s, dd = _hostile_world()
    ARMED[0] = True
    view = objview.view(world, expand=3, verbose=True)
    text = objview.short_repr(world, 4000)
    assert RAN == [], RAN
    kids = {k["name"]: k["view"] for k in view["children"]}
    assert kids["'h'"]["type"].endswith("Hostile") and "'name': 'ann'" in kids["'h'"]["repr"]
    assert {k["name"] for k in kids["'h'"]["children"]} >= {"'name'", "'balance'", "'slot'"}
    # the slot's own storage and the real instance dict, not the properties that shadow them
    shadow = {k["name"]: k["view"]["repr"] for k in kids["'shadowed'"]["children"]}
    assert shadow["'slot'"] == "'slot-value'" and shadow["'name'"] == "'bob'" and "'fake'" not in shadow
    # dict/list/set subclasses through the base type's own methods, not their overrides
    assert kids["'hd'"]["len"] == 2 and "'alpha': 1" in kids["'hd'"]["repr"]
    assert kids["'hl'"]["len"] == 3 and len(kids["'hl'"]["children"]) == 3
    assert kids["'hs'"]["len"] == 2
    assert [k["name"] for k in kids["'nt'"]["children"]] == ["x", "y"]
    assert kids["'keyed'"]["len"] == 3  # user keys: never sorted, hashed or compared
    assert "<int of" in kids["'big'"]["repr"] and "(100000 chars)" in kids["'long'"]["repr"]
    assert kids["'exc'"]["repr"].startswith("Boom(Hostile(")
    strkeys = kids["'strkeys'"]  # str/int subclasses: their base's own methods, never sorted
    assert [k["name"] for k in strkeys["children"]] == ["'b'", "'a'"]
    assert strkeys["children"][1]["view"]["repr"] == "7" and "(500 chars)" in strkeys["children"][0]["view"]["repr"]
    assert kids["'cls'"]["repr"] == "<class '%s.Hostile'>" % __name__
    assert kids["'method'"]["repr"].startswith("<bound method Hostile.__len__ of <")
    assert "'ann'" in text and "H" not in text.replace("Hostile", "")
    assert dict.__len__(dd) == 1  # no key was inserted by __missing__


def test_listing_lookup_and_type_names_run_no_target_code(armed):
    ARMED[0] = False
    mod = types.ModuleType("hostile_mod")
    world, h, s, dd = _hostile_world()
    mod.__dict__.update(world)
    mod.__dict__["__getattr__"] = lambda name: hit("module __getattr__ %s" % name)
    ARMED[0] = True
    sys.modules["hostile_mod"] = mod
    try:
        entries, elided = cmd_getglobal._listing(mod, False, False)
        names = {e["name"]: e for e in entries}
        assert names["h"]["type"].endswith(".Hostile") and "'ann'" in names["h"]["value"]
        assert lookup.attribute(mod, "h", "field") is h
        with pytest.raises(AgentError) as e:
            lookup.attribute(mod, "computed", "field")
        assert "__getattr__" in e.value.message and "does not run" in e.value.message
        assert lookup.klass(mod, "cls", "hostile_mod") is Hostile
        with pytest.raises(AgentError) as e:
            lookup.attribute(Hostile, "extra", "field")
        assert "metaclass" in e.value.message
        assert lookup.attribute(Hostile, "__qualname__", "field") == "Hostile"
        assert lookup.file_to_module("/nonexistent.py") == []
        assert RAN == [], RAN
    finally:
        del sys.modules["hostile_mod"]


def test_vmtool_counts_and_referrers_run_no_target_code(armed):
    ARMED[0] = False
    world, h, s, dd = _hostile_world()
    only_here = Hostile(n=3)
    holder = Shadowed(item=only_here)   # a __dict__ property: the real dict is read, the property never runs
    found = [Hostile(n=1), Hostile(n=2), "a", "a"]  # the keys --count-by computed: user objects and plain data
    code = compile("target", "<count>", "eval")
    ARMED[0] = True
    counted = cmd_vmtool._count_by(found, code, "target.key")
    everywhere, _ = cmd_vmtool._referrers([h], [id(found)])   # held in every kind of hostile container
    refs, _ = cmd_vmtool._referrers([only_here], [id(found)])
    assert RAN == [], RAN
    assert everywhere, everywhere
    counts = {c["key"]: c["count"] for c in counted["counts"]}
    assert counts["'a'"] == 2 and counted["distinct"] == 3 and counted["failed"] == 0
    assert any("Shadowed.item" in r["referrer"] for r in refs), refs
    del holder, world


def test_deep_data_ends_with_a_message_on_a_small_stack():
    deep = []
    for _ in range(5000):
        deep = [deep]
    nested = {}
    for _ in range(5000):
        nested = {"k": nested}
    out = {}

    def run():
        out["views"] = [objview.view(x, expand=50, verbose=True) for x in (deep, nested)]
        out["texts"] = [objview.short_repr(x, 4000, raw=True) for x in (deep, nested)]
    old = threading.stack_size(256 * 1024)
    try:
        t = threading.Thread(target=run)
        t.start()
        t.join(30)
    finally:
        threading.stack_size(old)
    assert "views" in out and "texts" in out, "the view crashed or did not end"
    assert "...(1 items)" in out["views"][0]["repr"] and "...(1 items)" in out["texts"][1]
    depth, node = 0, out["views"][0]
    while node.get("children"):
        node, depth = node["children"][0]["view"], depth + 1
    assert depth == objview.MAX_EXPAND


class Blocking(object):
    def __init__(self, gate):
        self.gate = gate

    def __repr__(self):
        self.gate.acquire()
        self.gate.release()
        return "Blocking()"


class Raising(object):
    def __repr__(self):
        raise ValueError("repr is broken on purpose")


def test_raw_runs_repr_on_an_agent_thread_with_a_budget_and_bounded_threads():
    gate = threading.Lock()
    gate.acquire()  # every Blocking repr waits for it
    me = threading.get_ident()
    seen = []

    class Where(object):
        def __repr__(self):
            seen.append(threading.get_ident())
            return "Where()"
    try:
        started = time.monotonic()  # (1 s per call: a loaded machine must not time Where() out)
        text = objview.short_repr([Blocking(gate), 1, Where(), Raising()], 1000, raw=True,
                                  budget=timebox.Budget(per_call_s=1.0))
        assert time.monotonic() - started < 3
        assert text == ("[<repr of Blocking: timed out after 1000 ms>, 1, Where(), "
                        "<repr failed: ValueError: repr is broken on purpose>]"), text
        assert seen and me not in seen, "a user __repr__ ran on the calling thread"
        # abandoned threads stay bounded: once MAX_STUCK are blocked, no further one starts
        for _ in range(timebox.MAX_STUCK + 2):
            objview.short_repr(Blocking(gate), raw=True)
        assert timebox.stuck() == timebox.MAX_STUCK
        started = time.monotonic()
        text = objview.short_repr(Blocking(gate), raw=True)
        assert "still blocked" in text and time.monotonic() - started < 0.5, text
        # a listing with raw: the slow value says so, the others come
        mod = types.ModuleType("slow_mod")
        mod.SLOW, mod.N = Blocking(gate), 5
        entries = {e["name"]: e["value"] for e in cmd_getglobal._listing(mod, False, True)[0]}
        assert entries["N"] == "5" and "Blocking" in entries["SLOW"], entries
    finally:
        gate.release()
    deadline = time.monotonic() + 5
    while timebox.stuck() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert timebox.stuck() == 0, "threads that returned are no longer counted"
    budget = timebox.Budget(total_s=0.0)
    assert "spent" in objview.short_repr(Raising(), raw=True, budget=budget)


def test_watch_record_is_finished_on_another_thread_with_budgets():
    """What WatchProbe.leave keeps (references) is turned into text by finish(): the exception's
    __str__ runs on an agent thread within its budget, the traceback is read from the files, the
    thread's name from the Thread's own field (its `name` property is not run)."""
    from flight_mcp.agent import cmd_watch
    gate = threading.Lock()
    gate.acquire()
    where = []

    class Stuck(Exception):
        def __str__(self):
            where.append(threading.get_ident())
            gate.acquire()
            return "never"

    class Named(threading.Thread):
        @property
        def name(self):
            hit("thread name property")
            return "never"

    def transfer():
        raise Stuck(Hostile(owner="ann"))

    try:
        transfer()
    except Stuck as e:
        exc = e
    thread = Named(name="app-worker")
    record = {"time": "t", "cost_ms": 1.0, "is_exp": True, "tid": 1,
              "_pending": {"exc": (exc, exc.__traceback__), "value": [Hostile(owner="bob")], "thread": thread}}
    RAN.clear()
    ARMED[0] = True
    try:
        started = time.monotonic()
        cmd_watch.finish(record, {"expand": 1, "verbose": False, "raw": True}, timebox.Budget(per_call_s=1.0))
        took = time.monotonic() - started
    finally:
        ARMED[0] = False
        gate.release()
    assert took < 3 and where and threading.get_ident() not in where
    assert record["exception"]["type"] == "Stuck", record
    assert record["exception"]["message"] == "<str of Stuck: timed out after 1000 ms>", record
    [frame] = [f for f in record["exception"]["frames"] if f["name"] == "transfer"]
    assert frame["source"] == "raise Stuck(Hostile(owner=\"ann\"))", frame
    assert record["thread"] == "app-worker" and "_pending" not in record
    assert "timed out" not in record["view"]["repr"]  # Hostile.__repr__ returned: no gate
    assert RAN == ["__repr__"], RAN  # raw asked for Hostile's own __repr__, and nothing else ran
    assert cmd_watch.finish(record, {}, None) is record  # idempotent
