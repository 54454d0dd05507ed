"""The value tools' agent commands called in-process, on objects of this interpreter, with exactly the
request the host sends (params.agent_args()): their answers are the Result models' facts, their
errors carry catalogue codes and name arguments as {arg:NAME}; the agent keeps no defaults."""
import importlib.util
import re
import sys
import textwrap
from pathlib import Path

import pytest

from flight_mcp.agent import cmd_getglobal, cmd_module, cmd_reload, cmd_vmtool, instrument
from flight_mcp.agent.codes import CODES
from flight_mcp.agent.registry import AgentError
from flight_mcp.tools.getglobal import GetGlobalParams, GetGlobalResult
from flight_mcp.tools.module import ModuleParams, ModuleResult
from flight_mcp.tools.reload import ReloadParams, ReloadResult, finish
from flight_mcp.tools.vmtool import VmtoolParams, VmtoolResult

HERE = __name__
CONFIG = {"db": {"host": "h", "port": 5432}, "debug": False}


class Box:
    def __init__(self, name, size):
        self.name, self.size = name, size


class BigBox(Box):
    pass


BOXES = [Box("a", 1), Box("b", 2), Box("c", 2), BigBox("big", 9)]


class Stand:
    """The handlers need no context; anything they touched on it would fail here."""


def request(params, allow_mutating=False):
    """What Call.request sends: the Params' own dump plus the gate's flag."""
    return dict(params.agent_args(), allow_mutating=allow_mutating, may_change_target=allow_mutating)


def test_getglobal_value_and_listing_are_result_facts():
    got = cmd_getglobal.getglobal(request(GetGlobalParams(pid=1, module=HERE, field="CONFIG", expr="target['db']")),
                                  Stand())
    r = GetGlobalResult(**got)
    assert r.owner == HERE and r.view.kind == "mapping" and r.view.len == 2
    assert {c.name for c in r.view.children} == {"'host'", "'port'"}
    listing = GetGlobalResult(**cmd_getglobal.getglobal(request(GetGlobalParams(pid=1, module=HERE, cls="Box")),
                                                        Stand()))
    assert listing.mode == "listing" and [e.name for e in listing.entries] == []  # dunders only, not verbose
    listing = GetGlobalResult(**cmd_getglobal.getglobal(
        request(GetGlobalParams(pid=1, module=HERE, cls="Box", verbose=True)), Stand()))
    assert "__init__" in [e.name for e in listing.entries]


class Ledger:
    region = "eu"

    def post(self, account, amount, /, currency="EUR", *, memo=None, **extra):
        raise AssertionError("listing ran the target's method")

    @classmethod
    def open(cls, name):
        raise AssertionError("listing ran the target's classmethod")

    @staticmethod
    def fee(amount, rate=0.01):
        raise AssertionError("listing ran the target's staticmethod")

    @property
    def balance(self):
        raise AssertionError("listing ran the target's property")


def rate_parcel(weight_kg, distance_km, service="ground", *options):
    raise AssertionError("listing ran the target's function")


def test_getglobal_listings_show_parameters_and_each_class_s_methods():
    """One listing answers 'what can I watch, with which parameters': functions with their
    parameters, classes with their methods' (self/cls left out), read from code, nothing run."""
    from flight_mcp.tools.getglobal import render
    r = GetGlobalResult(**cmd_getglobal.getglobal(request(GetGlobalParams(pid=1, module=HERE)), Stand()))
    entries = {e.name: e for e in r.entries}
    assert entries["rate_parcel"].signature == "(weight_kg, distance_km, service='ground', *options)"
    ledger = entries["Ledger"]
    assert [(m.name, m.kind, m.signature) for m in ledger.methods] == [
        ("post", "method", "(account, amount, /, currency='EUR', *, memo=None, **extra)"),
        ("open", "classmethod", "(name)"), ("fee", "staticmethod", "(amount, rate=0.01)"),
        ("balance", "property", None)]
    assert ledger.fields == ["region"]
    text = render(r, False)
    assert "rate_parcel(weight_kg, distance_km, service='ground', *options)" in text
    assert "methods: post(account, amount, /, currency='EUR', *, memo=None, **extra), open(name)" in text
    assert "balance (property)" in text and "fields: region" in text
    members = GetGlobalResult(**cmd_getglobal.getglobal(request(GetGlobalParams(pid=1, module=HERE, cls="Ledger")),
                                                        Stand()))
    assert {e.name: (e.kind, e.signature) for e in members.entries}["fee"] == ("staticmethod", "(amount, rate=0.01)")


def test_getglobal_errors_name_the_argument():
    with pytest.raises(AgentError) as e:
        cmd_getglobal.getglobal(request(GetGlobalParams(pid=1, module=HERE, field="CONFIG", expr="target['x']")),
                                Stand())
    assert e.value.kind == "expression_failed" and e.value.arg == "expr"
    assert "{arg:expr} expression" in e.value.message and "-e" not in e.value.message
    with pytest.raises(AgentError) as e:
        cmd_getglobal.getglobal(request(GetGlobalParams(pid=1, module=HERE, field="CONFIG", expr="target[")), Stand())
    assert e.value.kind == "bad_expression" and "{arg:expr}" in e.value.message
    with pytest.raises(AgentError) as e:
        cmd_getglobal.getglobal(request(GetGlobalParams(pid=1, module=HERE, field="CONFIGS")), Stand())
    assert e.value.kind == "field_not_found" and e.value.arg == "field" and "CONFIG" in e.value.message
    with pytest.raises(AgentError) as e:
        cmd_getglobal.getglobal(request(GetGlobalParams(pid=1, module="no_such_module_here")), Stand())
    assert e.value.kind == "module_not_found" and e.value.arg == "module"
    with pytest.raises(AgentError) as e:
        cmd_getglobal.getglobal(request(GetGlobalParams(pid=1, module=HERE, cls="CONFIG")), Stand())
    assert e.value.kind == "not_a_class" and e.value.arg == "cls"


def test_vmtool_instances_counts_referrers():
    p = VmtoolParams(pid=1, module=HERE, cls="Box", subclasses=True, limit=2, referrers=True,
                     count_by="target.size", expr="sorted(i.name for i in instances)")
    r = VmtoolResult(**cmd_vmtool.vmtool(request(p), Stand()))
    assert (r.module, r.cls, r.total, r.shown, r.limit, r.subclasses) == (HERE, "Box", 4, 2, 2, True)
    assert r.untracked_kind is None and r.view.kind == "sequence" and r.view.len == 2
    assert {c.key: c.count for c in r.count_by.counts} == {"1": 1, "2": 2, "9": 1}
    assert r.count_by.expr == "target.size" and r.count_by.failed == 0 and r.count_by.first_error is None
    assert r.referrers and all(x.count >= 1 for x in r.referrers)
    exact = VmtoolResult(**cmd_vmtool.vmtool(request(VmtoolParams(pid=1, module=HERE, cls="Box",
                                                                  expr="len(instances)")), Stand()))
    assert exact.total == 3 and exact.view.repr == "3"


def test_vmtool_count_by_failures_are_exception_facts():
    p = VmtoolParams(pid=1, module=HERE, cls="Box", subclasses=True, count_by="target.size // (target.size - 1)")
    r = VmtoolResult(**cmd_vmtool.vmtool(request(p), Stand()))
    assert r.count_by.failed == 1 and r.count_by.first_error.type == "ZeroDivisionError"
    assert "division" in r.count_by.first_error.message


def test_vmtool_untracked_and_not_tracked():
    r = VmtoolResult(**cmd_vmtool.vmtool(request(VmtoolParams(pid=1, module="builtins", cls="dict",
                                                              expr="len(instances)")), Stand()))
    assert r.untracked_kind == "dict" and r.total > 10 and r.shown == 10
    with pytest.raises(AgentError) as e:
        cmd_vmtool.vmtool(request(VmtoolParams(pid=1, module="builtins", cls="int")), Stand())
    assert e.value.kind == "not_tracked" and e.value.arg == "cls"


def test_vmtool_read_only_gate_and_expression_errors():
    with pytest.raises(AgentError) as e:
        cmd_vmtool.vmtool(request(VmtoolParams(pid=1, action="forceGc")), Stand())
    assert e.value.kind == "read_only" and "--allow-mutating" not in e.value.message
    with pytest.raises(AgentError) as e:
        cmd_vmtool.vmtool(request(VmtoolParams(pid=1, module=HERE, cls="Box", expr="instances[0].size / 0")),
                          Stand())
    assert e.value.kind == "expression_failed" and "`instances` is the list of 3" in e.value.message
    with pytest.raises(AgentError) as e:
        cmd_vmtool.vmtool(request(VmtoolParams(pid=1, module=HERE, cls="Box", count_by="target.size(")), Stand())
    assert e.value.kind == "bad_expression" and "{arg:count_by}" in e.value.message
    r = VmtoolResult(**cmd_vmtool.vmtool(request(VmtoolParams(pid=1, action="forceGc"), True), Stand()))
    assert [g.generation for g in r.generations] == [0, 1, 2] and r.collected >= 0


def test_module_maps_this_file():
    r = ModuleResult(**cmd_module.module(request(ModuleParams(pid=1, filepath=__file__)), Stand()))
    assert HERE in r.modules
    with pytest.raises(AgentError) as e:
        cmd_module.module(request(ModuleParams(pid=1, filepath="/no/such/file.py")), Stand())
    assert e.value.kind == "not_imported" and e.value.arg == "filepath"


@pytest.mark.parametrize("handler, params", [
    (cmd_getglobal.getglobal, GetGlobalParams(pid=1, module=HERE, field="CONFIG")),
    (cmd_vmtool.vmtool, VmtoolParams(pid=1, module=HERE, cls="Box")),
])
def test_the_agent_keeps_no_defaults(handler, params):
    """Every argument the handler reads comes from the request: one left out is a KeyError, never a
    default of the agent's own."""
    full = request(params)
    handler(full, Stand())
    read = []
    for name in full:
        try:
            handler({k: v for k, v in full.items() if k != name}, Stand())
        except KeyError as e:
            assert e.args[0] == name
            read.append(name)
    # may_change_target gates only the commands that change the target (forceGc), not these reads
    assert set(read) == set(full) - {"may_change_target"}


def test_agent_sources_hold_no_defaults_or_flag_spellings():
    agent = Path(cmd_vmtool.__file__).parent
    for name in ("cmd_getglobal.py", "cmd_vmtool.py", "cmd_module.py", "cmd_reload.py"):
        text = (agent / name).read_text()
        assert "args.get(" not in text, name
        assert not re.search(r'"-[a-z]/--|--allow-mutating', text), name


def test_every_code_raised_by_the_value_commands_is_in_the_catalogue():
    agent = Path(cmd_vmtool.__file__).parent
    for name in ("cmd_getglobal.py", "cmd_vmtool.py", "cmd_module.py", "cmd_reload.py", "lookup.py",
                 "instrument.py", "safety.py"):
        for code in re.findall(r'(?:AgentError|_refuse)\(\s*"([a-z_]+)"', (agent / name).read_text()):
            assert code in CODES, (name, code)


# ---- reload, in-process: a module of our own, edited on disk ---------------------------------------
@pytest.fixture
def app(tmp_path):
    path = tmp_path / "values_reload_app.py"
    path.write_text(textwrap.dedent("""\
        class Box:
            def bump(self, n=1):
                return n + 1

        def helper():
            return "old"
        """))
    spec = importlib.util.spec_from_file_location("values_reload_app", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    yield mod, path
    del sys.modules[spec.name]


def test_reload_swaps_the_code_and_answers_facts(app):
    mod, path = app
    alias, box = mod.helper, mod.Box()
    path.write_text(path.read_text().replace('return "old"', 'return "new"').replace("n=1", "n=10"))
    p = ReloadParams(pid=1, module=mod.__name__, method="helper")
    assert "verbose" not in p.agent_args()  # the host keeps or drops the sources
    answer = cmd_reload.reload(request(p, True), Stand())
    assert answer["old_source"] is None and not answer["old_source_known"]  # edited before any copy was kept
    assert answer["new_source"] == 'def helper():\n    return "new"\n'
    r = finish(answer, verbose=False)
    assert r.changed and r.code_changed and r.kind == "function" and r.instrumentation_kept == 0
    assert alias() == "new" and r.new_source is None and r.old_source is None and r.diff is None
    path.write_text(path.read_text().replace('return "new"', 'return "newer"'))
    r = finish(cmd_reload.reload(request(p, True), Stand()), verbose=False)  # the last reload's copy: a diff
    assert '-    return "new"' in r.diff and '+    return "newer"' in r.diff and "(running before)" in r.diff
    assert alias() == "newer"
    r = finish(cmd_reload.reload(request(ReloadParams(pid=1, module=mod.__name__, cls="Box", method="bump",
                                                      verbose=True), True), Stand()), verbose=True)
    assert r.kind == "method" and r.defaults_changed and box.bump() == 11 and "n=10" in r.new_source
    again = finish(cmd_reload.reload(request(p, True), Stand()), verbose=False)
    assert not again.changed and again.diff == ""


def test_reload_refusals_leave_the_code(app):
    mod, path = app
    with pytest.raises(AgentError) as e:
        cmd_reload.reload(request(ReloadParams(pid=1, module=mod.__name__, method="helper")), Stand())
    assert e.value.kind == "read_only"
    path.write_text(path.read_text().replace('return "old"', 'return ('))
    with pytest.raises(AgentError) as e:
        cmd_reload.reload(request(ReloadParams(pid=1, module=mod.__name__, method="helper"), True), Stand())
    assert e.value.kind == "syntax_error" and e.value.kind in CODES and e.value.arg == "method"
    assert mod.helper() == "old"


def test_replace_code_without_instrumentation_and_current_code():
    def f():
        return 1

    def g():
        return 2
    assert instrument.current_code(f) is f.__code__
    assert instrument.replace_code(f, g.__code__) == 0 and f() == 2


def test_views_are_exactly_value_views():
    """objview's keys are ValueView's: a view of every kind validates against the model (which
    forbids unknown fields), cycles, elisions and errors included."""
    from flight_mcp.agent import objview
    from flight_mcp.models import ValueView

    cyc = [1]
    cyc.append(cyc)
    world = {"list": list(range(30)), "tuple": (1, "a"), "set": {1, 2}, "box": BOXES[0], "cls": Box, "cyc": cyc,
             "deep": [[[[["x"]]]]], "none": None, "str": "s" * 5000, "big": 10 ** 5000, "module": sys.modules[HERE]}
    for expand in (0, 1, 3, 6):
        for verbose in (False, True):
            v = ValueView.model_validate(objview.view(world, expand=expand, verbose=verbose))
            assert v.kind == "mapping" and v.len == len(world)
    v = ValueView.model_validate(objview.view(list(range(30)), expand=1))
    assert v.elided == 20 and v.elided_at == 5 and all(c.name is None for c in v.children)
    v = ValueView.model_validate(objview.view(cyc, expand=3))
    assert v.children[1].view.cycle


class _Probe(object):
    needs_args = True

    def __init__(self):
        self.calls = []

    def enter(self, args, kwargs, frame):
        self.calls.append(args)
        return len(self.calls)

    def leave(self, token, result, exc):
        self.calls.append(("left", result))

    def suspend(self, token):
        pass

    def resume(self, token):
        pass


def test_replace_code_moves_an_active_instrumentation():
    """reload asks the engine: the probe keeps seeing calls, now of the new code, and ending it leaves
    the new code in place (whatever mechanism this interpreter gets: evaluator, trampoline, monitoring)."""
    def f(x):
        return x + 1

    def g(x):
        return x + 100
    probe = _Probe()
    remove = instrument.add(instrument.Target(f, f.__code__, False, "f"), probe)
    try:
        assert f(1) == 2 and probe.calls == [(1,), ("left", 2)]
        assert instrument.current_code(f).co_name == "f"
        assert instrument.replace_code(f, g.__code__) == 1
        assert f(1) == 101 and probe.calls[-2:] == [(1,), ("left", 101)]
        assert instrument.current_code(f) is g.__code__
    finally:
        remove()
    assert f(2) == 102 and len(probe.calls) == 4
    assert instrument.current_code(f) is g.__code__ and not instrument._sites_on(f)
