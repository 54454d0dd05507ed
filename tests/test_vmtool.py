"""vmtool on real targets: getInstances with filters, subclasses, method calls, counts and referrers;
forceGc on a heap of reference cycles; bad input."""
import json

import anyio
import pytest

from .conftest import flight_cli, version_params
from .mcp_client import mcp_session, text_of

pytestmark = pytest.mark.timeout(240)


async def _vm(s, pid, **args):
    return await s.call_tool("vmtool", {"pid": pid, **args})


@pytest.mark.parametrize("version", version_params())
def test_get_instances_filters_methods_counts_referrers(spawn, version):
    t = spawn(version, "mutable_state")

    async def go():
        async with mcp_session("--allow-mutating") as s:
            r = await _vm(s, t.pid, module="__main__", cls="Box")
            assert not r.is_error, text_of(r)
            out = r.structured_content
            assert out["total"] == 3 and out["shown"] == 3 and out["view"]["type"] == "list"
            r = await _vm(s, t.pid, module="__main__", cls="Box", subclasses=True, limit=2,
                          expr="sorted(i.name for i in instances)")
            out = r.structured_content
            assert out["total"] == 4 and out["shown"] == 2 and out["subclasses"] is True
            r = await _vm(s, t.pid, module="__main__", cls="Box", limit=10000,
                          expr="sorted([i.name for i in instances if i.size > 1])")
            assert r.structured_content["view"]["repr"] == "['b', 'c']", text_of(r)
            # a method of the target's class, allowed with --allow-mutating
            r = await _vm(s, t.pid, module="__main__", cls="BigBox", expr="instances[0].stats()")
            assert not r.is_error, text_of(r)
            assert r.structured_content["view"]["repr"] == "{'name': 'big', 'size': 9}"
            r = await _vm(s, t.pid, module="__main__", cls="Box", count_by="target.size", expr="len(instances)")
            counts = {c["key"]: c["count"] for c in r.structured_content["count_by"]["counts"]}
            assert counts == {"2": 2, "1": 1}
            r = await _vm(s, t.pid, module="__main__", cls="Box", referrers=True, expr="len(instances)")
            assert not r.is_error, text_of(r)
            # grouped by owner path: each place that holds them, with how many it holds
            refs = {x["referrer"]: x["count"] for x in r.structured_content["referrers"]}
            assert refs.get("__main__.BOX") == 1, refs
            assert refs.get("__main__.BOXES[*]") == 3 and refs.get("Registry.boxes[*]") == 2, refs
            assert refs.get("Registry.by_name[*]") == 1, refs
            assert "REFERRERS of the 3 instance(s)" in text_of(r) and "held in Registry.boxes[*]" in text_of(r)
    anyio.run(go)


@pytest.mark.parametrize("version", version_params())
def test_force_gc_frees_reference_cycles(spawn, version):
    t = spawn(version, "mutable_state")

    async def go():
        async with mcp_session("--allow-mutating") as s:
            r = await _vm(s, t.pid, module="__main__", cls="Node", expr="len(instances)")
            assert r.structured_content["total"] == 1000
            r = await _vm(s, t.pid, action="forceGc")
            assert not r.is_error, text_of(r)
            out = r.structured_content
            assert out["collected"] >= 1000
            assert [g["generation"] for g in out["generations"]] == [0, 1, 2]
            assert sum(g["collected"] for g in out["generations"]) == out["collected"]
            assert out["gc_enabled"] is False
            assert text_of(r).startswith(f"Gc execute successfully, totally {out['collected']} unreachable")
            r = await _vm(s, t.pid, module="__main__", cls="Node", expr="len(instances)")
            assert r.structured_content["total"] == 0
    anyio.run(go)


@pytest.mark.parametrize("version", version_params(("3.8", "3.13")))  # checked on the host, mostly
def test_bad_input(spawn, version):
    t = spawn(version, "mutable_state")

    async def go():
        async with mcp_session() as s:
            r = await _vm(s, t.pid, module="__main__", cls="NotLoaded")
            assert r.is_error and "class 'NotLoaded' not found in __main__" in text_of(r)
            r = await _vm(s, t.pid, module="nosuchmodule", cls="Thing")
            assert r.is_error and "not imported in the target" in text_of(r)
            r = await _vm(s, t.pid, module="builtins", cls="int")
            assert r.is_error and "not tracked by the garbage collector" in text_of(r)
            r = await _vm(s, t.pid, module="builtins", cls="str")
            assert r.is_error and "not tracked by the garbage collector" in text_of(r)
            r = await _vm(s, t.pid, cls="Box")
            assert r.is_error and "getInstances needs the class: module and cls" in text_of(r), text_of(r)
            r = await _vm(s, t.pid, module="__main__", cls="Box", expr="instances[0].size / 0")
            assert r.is_error and "ZeroDivisionError" in text_of(r) and "`instances` is the list of 3" in text_of(r)
            r = await _vm(s, t.pid, module="__main__", cls="Box", expr="instances[")
            assert r.is_error and "syntax error" in text_of(r)
            r = await _vm(s, t.pid)
            assert r.is_error and "module and cls" in text_of(r), text_of(r)
            # a C type whose instances ARE tracked works, and says what it may miss
            r = await _vm(s, t.pid, module="builtins", cls="dict", expr="len(instances)", limit=10000)
            assert not r.is_error and r.structured_content["total"] > 10
            assert r.structured_content["untracked_kind"] == "dict" and "untracked by the GC" in text_of(r)
    anyio.run(go)
    assert t.alive()


@pytest.mark.parametrize("version", version_params(["3.8", "3.13"]))
def test_cli_spelling_of_flight_profiler(spawn, version):
    t = spawn(version, "mutable_state")
    r = flight_cli(str(t.pid), "--cmd", "vmtool -a getInstances -c __main__ Box -e len(instances)")
    assert r.returncode == 0, r.stderr
    assert "EXPR:" in r.stdout and "len(instances)" in r.stdout and "found 3 instance(s) of __main__.Box" in r.stdout
    r = flight_cli(str(t.pid), "--cmd", "vmtool -a getInstances -c '__main__ Box' -n 1 --count-by target.size")
    assert r.returncode == 0, r.stderr
    assert "1 in `instances`" in r.stdout and "COUNT BY target.size: 2 distinct key(s)" in r.stdout
    # typed by a person, forceGc runs (as in flight_profiler); its expressions stay read-only
    r = flight_cli(str(t.pid), "--cmd", "vmtool -a forceGc")
    assert r.returncode == 0 and "unreachable objects are freed" in r.stdout, r.stderr
    r = flight_cli(str(t.pid), "--cmd", "vmtool -a getInstances -c __main__ Box -e 'instances.clear()'")
    assert r.returncode == 1 and "--allow-mutating" in r.stderr, r.stdout + r.stderr


@pytest.mark.parametrize("version", version_params(["3.11"]))
def test_raw_and_expand(spawn, version):
    t = spawn(version, "mutable_state")
    r = flight_cli(str(t.pid), "--cmd", "vmtool -a getInstances -c __main__ BigBox -r")
    assert r.returncode == 0 and "<__main__.BigBox object at 0x" in r.stdout, r.stdout + r.stderr
    r = flight_cli(str(t.pid), "--json", "--cmd", "vmtool -a getInstances -c __main__ BigBox -e instances[0] -x 1")
    assert r.returncode == 0, r.stderr
    view = json.loads(r.stdout)["view"]
    assert {c["name"].strip("'\"") for c in view["children"]} == {"name", "size", "bumps"}
