"""The value tools' text, in-process, from hand-made Results: the host words every fact the agent
sends (flight_profiler's layout), and a fact no model holds is an error, not a silent loss."""
import pytest
from pydantic import ValidationError

from flight_mcp.models import ValueView
from flight_mcp.tools.getglobal import TOOL as GETGLOBAL
from flight_mcp.tools.getglobal import GetGlobalResult
from flight_mcp.tools.module import TOOL as MODULE
from flight_mcp.tools.module import ModuleResult
from flight_mcp.tools.reload import TOOL as RELOAD
from flight_mcp.tools.reload import ReloadResult
from flight_mcp.tools.vmtool import TOOL as VMTOOL
from flight_mcp.tools.vmtool import VmtoolResult


def _list_view():
    return {"type": "list", "kind": "sequence", "len": 2, "repr": "['a', 'b']",
            "children": [{"view": {"type": "str", "kind": "leaf", "repr": "'a'"}},
                         {"view": {"type": "str", "kind": "leaf", "repr": "'b'"}}]}


def test_getglobal_value_in_the_expr_type_value_layout():
    r = GetGlobalResult(mode="value", owner="__main__", field="NAMES", expr="target", view=_list_view())
    text = GETGLOBAL.text(r, False)
    assert text.splitlines() == ["  EXPR:       target", "  TYPE:       <class 'list'>", "  VALUE:      [",
                                 '                "a",', '                "b"', "              ]"]


def test_getglobal_listing_with_elided_names():
    r = GetGlobalResult(mode="listing", owner="__main__.Settings", elided=3,
                        entries=[{"name": "region", "type": "str", "value": "'eu'"},
                                 {"name": "retries", "type": "int", "value": "3"}])
    lines = GETGLOBAL.text(r, False).splitlines()
    assert lines[0] == "__main__.Settings: 2 names"
    assert lines[1].split() == ["region", "str", "'eu'"] and lines[-1].startswith("  ... 3 more names (300 are listed): name the field")


def test_vmtool_get_instances_words_the_facts():
    r = VmtoolResult(action="getInstances", module="__main__", cls="Box", expr="instances", total=5, shown=2,
                     limit=2, subclasses=True, search_ms=1.5, untracked_kind=None, view=_list_view(),
                     count_by={"expr": "target.size", "counts": [{"key": "1", "count": 4}, {"key": "2", "count": 1}],
                               "distinct": 3, "failed": 2,
                               "first_error": {"type": "AttributeError", "message": "no size"}},
                     referrers=[{"referrer": "module __main__, global BOX", "count": 1}], referrers_elided=2)
    text = VMTOOL.text(r, False)
    assert "found 5 instance(s) of __main__.Box and subclasses on the GC heap in 1.5 ms; 2 in `instances` " \
           "(cut to limit 2)" in text
    assert "COUNT BY target.size: 3 distinct key(s)" in text and "  4  1" in text and "... 1 more keys" in text
    assert "2 instance(s) failed: the key expression 'target.size' raised AttributeError: no size" in text
    assert "REFERRERS of the 2 instance(s) in `instances`, by who holds them:" in text and "... 2 more owner paths" in text


def test_vmtool_untracked_note_and_no_referrers():
    r = VmtoolResult(action="getInstances", module="builtins", cls="dict", expr="len(instances)", total=3, shown=3,
                     limit=10, search_ms=0.1, untracked_kind="dict", view={"type": "int", "kind": "leaf", "repr": "3"},
                     referrers=[])
    text = VMTOOL.text(r, False)
    assert "note: dict objects holding only atomic values are untracked by the GC and not listed." in text
    assert "none found among GC-tracked objects" in text and "cut to limit" not in text


def test_vmtool_force_gc():
    r = VmtoolResult(action="forceGc", collected=12, gc_enabled=False, garbage_added=1, count_after=[0, 0, 0],
                     cost_ms=2.0, generations=[{"generation": g, "collected": 4, "count_before": 7, "collections": 1,
                                                "collected_total_after": 4, "uncollectable_total_after": 0}
                                               for g in range(3)])
    lines = VMTOOL.text(r, False).splitlines()
    assert lines[0] == "Gc execute successfully, totally 12 unreachable objects are freed."
    assert lines[1] == "  gen0: gc.collect(0) collected 4 (pending allocations before: 7)"
    assert "  1 uncollectable objects were added to gc.garbage." in lines
    assert "  note: automatic GC is disabled in this process (gc.disable())." in lines


def test_reload_text():
    r = ReloadResult(module="app", qualname="Box.bump", kind="method", file="/srv/app.py", old_span=[10, 12],
                     new_span=[10, 13], changed=True, code_changed=True, defaults_changed=False,
                     diff="--- a\n+++ b\n-    return 1\n+    return 2", old_source_known=True, instrumentation_kept=1)
    text = RELOAD.text(r, False)
    assert text.startswith("Reload is done successfully.\nLocated file path: /srv/app.py\n")
    assert "Function: app.Box.bump (method), lines 10-13 (running code was lines 10-12)" in text
    assert "1 active trace/watch instrumentation(s) now run on the new code." in text
    assert "+    return 2" in text
    same = r.model_copy(update={"changed": False, "code_changed": False, "diff": None, "instrumentation_kept": 0})
    assert RELOAD.text(same, False).startswith("Method source has not changed")


def test_module_text():
    r = ModuleResult(filepath="/a/app.py", realpath="/a/app.py", modules=["app", "__main__"])
    assert MODULE.text(r, False) == "app\nalso imported as: __main__"


@pytest.mark.parametrize("model, fields", [
    (GetGlobalResult, {"mode": "value", "owner": "m", "notes": []}),
    (VmtoolResult, {"action": "getInstances", "notes": ["old agent"]}),
    (VmtoolResult, {"action": "getInstances", "count_by": {"expr": "x", "counts": [], "distinct": 0, "failed": 1,
                                                          "first_error": "text, not a fact"}}),
    (ReloadResult, {"module": "m", "qualname": "f", "kind": "function", "file": "f", "old_span": [1, 1],
                    "new_span": [1, 1], "changed": False, "code_changed": False, "defaults_changed": False,
                    "old_source_known": True, "surprise": 1}),
])
def test_a_fact_no_model_holds_is_an_error(model, fields):
    with pytest.raises(ValidationError):
        model(**fields)


def test_views_are_value_views():
    r = GetGlobalResult(mode="value", owner="m", view=_list_view())
    assert isinstance(r.view, ValueView) and r.view.children[0].view.repr == "'a'"
    with pytest.raises(ValidationError):
        ValueView(type="int", kind="leaf", repr="1", notes="x")
