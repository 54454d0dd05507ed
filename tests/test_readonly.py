"""Read-only mode is really read-only: a corpus of hostile expressions, each refused, none with any
effect in the target (checked afterwards); the gate on reload/forceGc; the tool annotations."""
import select

import anyio
import pytest

from flight_mcp.tools import all_tools

from .conftest import version_params
from .mcp_client import mcp_session, text_of

pytestmark = pytest.mark.timeout(300)

# (tool, field-or-class, expression). getglobal: `target` is STATE (a dict) or BOX (a Box); vmtool:
# `instances` are the Box instances. Every one must be refused in read-only mode.
HOSTILE = [
    # method calls on target objects and containers
    ("STATE", "target.clear()"), ("STATE", "target.update(counter=1)"), ("STATE", "target.pop('counter')"),
    ("STATE", "target.setdefault('x', 1)"), ("STATE", "target['items'].append(4)"),
    ("STATE", "target['items'].extend([9])"), ("STATE", "target['items'].sort()"),
    ("STATE", "target['items'].reverse()"), ("STATE", "target['items'].insert(0, 1)"),
    ("STATE", "target['items'].remove(1)"), ("STATE", "target.get('items').append(5)"),
    ("STATE", "target['items'].__iadd__([9])"), ("BOX", "target.bump()"), ("BOX", "target.stats()"),
    ("BOX", "f'{target.bump()}'"), ("BOX", "'%s' % target.bump()"), ("BOX", "[target.bump() for _ in range(3)]"),
    ("BOX", "target.bump() if True else 0"),
    # binding names, creating code
    ("STATE", "(x := target)"), ("STATE", "[(y := 1) for _ in range(1)]"), ("STATE", "lambda: target.clear()"),
    ("STATE", "(lambda: 1)()"),
    # the dangerous builtins
    ("STATE", "__import__('xml.dom')"), ("STATE", "__builtins__"), ("STATE", "exec('STATE.clear()')"),
    ("STATE", "eval('1')"), ("STATE", "compile('1', 'x', 'eval')"), ("STATE", "open('/tmp/flight-hostile', 'w')"),
    ("BOX", "getattr(target, 'bump')()"), ("BOX", "getattr(target, 'na' + 'me')"), ("BOX", "setattr(target, 'size', 0)"),
    ("BOX", "delattr(target, 'size')"), ("STATE", "globals()"), ("STATE", "locals()"), ("BOX", "vars()"),
    ("STATE", "breakpoint()"), ("STATE", "input()"), ("STATE", "print('hi')"), ("STATE", "exit()"),
    ("STATE", "quit()"), ("STATE", "help()"), ("STATE", "dir()"), ("STATE", "iter(target['gen'])"),
    ("STATE", "next(target['gen'])"), ("STATE", "memoryview(b'x')"), ("STATE", "staticmethod(print)"),
    ("STATE", "print"), ("STATE", "__loader__"),
    # dunder escapes
    ("STATE", "().__class__.__bases__"), ("STATE", "().__class__.__bases__[0].__subclasses__()"),
    ("STATE", "object.__subclasses__()"), ("BOX", "target.__init__('z', 0)"),
    ("BOX", "target.__class__.__init__(target, 'z', 0)"), ("BOX", "target.bump.__func__"),
    ("BOX", "target.bump.__globals__"), ("BOX", "type(target).__dict__['bump'](target)"),
    ("BOX", "target.__dict__.update(size=5)"), ("BOX", "target.__dict__.clear()"),
    ("BOX", "target.__setattr__('size', 5)"), ("BOX", "target.__reduce_ex__(2)"),
    ("BOX", "'{0.__class__.__init__.__globals__}'.format(target)"),
    ("BOX", "getattr(target, '__globals__')"), ("BOX", "hasattr(target, 'na' + 'me')"),
    ("BOX", "super(type(target), target).__init__()"),
    # calling values, classes, key functions
    ("BOX", "type(target)('x', 1)"), ("BOX", "target()"), ("STATE", "type('X', (object,), {})"),
    ("STATE", "sorted(target['items'], key=target['items'].append)"), ("STATE", "max([1], key=print)"),
    ("STATE", "min([1, 2], key=lambda v: target.clear())"),
    # consuming the target's iterators
    ("STATE", "list(target['gen'])"), ("STATE", "[i for i in target['gen']]"), ("STATE", "1 in target['gen']"),
    ("STATE", "sum(target['gen'])"), ("STATE", "any(target['gen'])"), ("STATE", "dict(target['gen'])"),
    ("STATE", "[*target['gen']]"),
    # unbounded cost
    ("STATE", "10 ** 10 ** 10"), ("STATE", "2 ** target['counter']"), ("STATE", "1 << 100000"),
]
VMTOOL_HOSTILE = ["instances[0].bump()", "[i.bump() for i in instances]", "instances.clear()", "instances.pop()",
                  "instances[0].__dict__.clear()", "instances[0].stats()", "any(i.bump() for i in instances)"]
NOT_EVEN_PARSED = ["import os", "STATE['counter'] = 1", "del target['items']", "await target", "(yield)"]
STILL_ALLOWED = [
    ("BOX", "vars(target)", "'name': 'a'"),   # what target.__dict__ reads: harmless
    ("STATE", "target['counter']", "0"), ("STATE", "sorted(target['items'], reverse=True)", "[3, 2, 1]"),
    ("STATE", "target.get('counter', 5)", "0"), ("STATE", "len(target['items']) * 2", "6"),
    ("STATE", "[k.upper() for k in sorted(target) if k != 'gen']", "['COUNTER', 'DD', 'ITEMS']"),
    ("STATE", "target['dd']['a']", "[1]"),
    ("BOX", "f'{target.name!r:>5}'", "'a'"), ("BOX", "hasattr(target, 'name')", "True"),
    ("BOX", "type(target).__name__", "Box"), ("BOX", "isinstance(target, object) and target.size > 0", "True"),
    ("STATE", "max(target['items'], key=abs)", "3"), ("STATE", "any(x > 2 for x in target['items'])", "True"),
]


def _refused(text):
    return "read-only mode refused" in text and "--allow-mutating" in text


async def _getglobal(s, pid, field, expr):
    return await s.call_tool("getglobal", {"pid": pid, "module": "__main__", "field": field, "expr": expr})


@pytest.mark.parametrize("version", version_params())
def test_hostile_expressions_are_refused_and_change_nothing(spawn, tmp_path, version):
    sentinel = tmp_path / "sentinel"
    t = spawn(version, "mutable_state", args=[str(sentinel)])
    assert len(HOSTILE) + len(VMTOOL_HOSTILE) >= 50

    async def go():
        problems = []
        async with mcp_session() as s:
            for field, expr in HOSTILE:
                r = await _getglobal(s, t.pid, field, expr)
                if not (r.is_error and _refused(text_of(r))):
                    problems.append(("getglobal", expr, text_of(r)[:300]))
            for expr in VMTOOL_HOSTILE:
                r = await s.call_tool("vmtool", {"pid": t.pid, "module": "__main__", "cls": "Box", "expr": expr, "limit": 10000})
                if not (r.is_error and _refused(text_of(r))):
                    problems.append(("vmtool", expr, text_of(r)[:300]))
            for expr in NOT_EVEN_PARSED:
                r = await _getglobal(s, t.pid, "STATE", expr)
                if not (r.is_error and "syntax error" in text_of(r)):
                    problems.append(("syntax", expr, text_of(r)[:300]))
            # Nothing happened: counters, lists, bumps, imports.
            r = await _getglobal(s, t.pid, "STATE", "[target['counter'], target['items'], len(target)]")
            assert not r.is_error, text_of(r)
            assert r.structured_content["view"]["repr"] == "[0, [1, 2, 3], 4]"
            # d[k] on a defaultdict would insert k: read-only mode raises KeyError instead
            r = await _getglobal(s, t.pid, "STATE", "target['dd']['missing']")
            assert r.is_error and "KeyError" in text_of(r), text_of(r)
            r = await _getglobal(s, t.pid, "STATE", "sorted(dict(target['dd']).items())")
            assert r.structured_content["view"]["repr"] == "[('a', [1])]", text_of(r)
            r = await s.call_tool("vmtool", {"pid": t.pid, "module": "__main__", "cls": "Box", "subclasses": True, "limit": 10000,
                                             "expr": "sorted([(i.name, i.size, i.bumps) for i in instances])"})
            assert not r.is_error, text_of(r)
            assert r.structured_content["view"]["repr"] == \
                "[('a', 1, 0), ('b', 2, 0), ('big', 9, 0), ('c', 2, 0)]"
            r = await s.call_tool("getglobal", {"pid": t.pid, "module": "sys", "field": "modules",
                                                "expr": "'xml.dom' in target"})
            assert r.structured_content["view"]["repr"] == "False"
            # Still useful: reads pass.
            for field, expr, want in STILL_ALLOWED:
                r = await _getglobal(s, t.pid, field, expr)
                if r.is_error or want not in r.structured_content["view"]["repr"]:
                    problems.append(("allowed", expr, text_of(r)[:300]))
        async with mcp_session("--allow-mutating") as s:
            # the generator was not advanced by any refused expression
            r = await _getglobal(s, t.pid, "STATE", "next(target['gen'])")
            assert r.structured_content["view"]["repr"] == "0", text_of(r)
        return problems

    problems = anyio.run(go)
    assert problems == []
    assert not sentinel.exists()
    assert select.select([t.proc.stdout], [], [], 0.2)[0] == [], "the target printed something"
    assert t.alive()


@pytest.mark.parametrize("version", version_params(["3.8", "3.12"]))
def test_trace_and_watch_filters_are_checked_too(spawn, tmp_path, version):
    sentinel = tmp_path / "sentinel"
    t = spawn(version, "mutable_state", args=[str(sentinel)])
    tools = [n for n in ("trace", "watch") if n in all_tools()]
    assert "trace" in tools

    async def go():
        async with mcp_session() as s:
            cases = [(name, "filter_expr") for name in tools] + [("watch", "expr")] * ("watch" in tools)
            for name, field in cases:
                r = await s.call_tool(name, {"pid": t.pid, "module": "__main__", "cls": "Box", "method": "stats",
                                             field: "target.bump()", "timeout_s": 5})
                assert r.is_error and _refused(text_of(r)), (name, field, text_of(r))
    anyio.run(go)
    assert not sentinel.exists()


@pytest.mark.parametrize("version", version_params(["3.11"]))
def test_gate_refuses_reload_and_force_gc_and_annotations_say_so(spawn, version):
    t = spawn(version, "mutable_state")

    async def go():
        async with mcp_session() as s:
            listed = {tool.name: tool for tool in (await s.list_tools()).tools}
            assert listed["reload"].annotations.read_only_hint is False
            assert listed["reload"].annotations.destructive_hint is True
            assert listed["vmtool"].annotations.read_only_hint is False
            assert listed["getglobal"].annotations.read_only_hint is True
            r = await s.call_tool("reload", {"pid": t.pid, "module": "__main__", "cls": "Box", "method": "bump"})
            assert r.is_error and "reload changes the target" in text_of(r) and "--allow-mutating" in text_of(r)
            r = await s.call_tool("vmtool", {"pid": t.pid, "action": "forceGc"})
            assert r.is_error and "forceGc" in text_of(r) and "--allow-mutating" in text_of(r)
            # the cycles made with automatic GC off are all still there
            r = await s.call_tool("vmtool", {"pid": t.pid, "module": "__main__", "cls": "Node", "expr": "len(instances)"})
            assert r.structured_content["total"] == 1000, text_of(r)
    anyio.run(go)
