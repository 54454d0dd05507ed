"""trace on real targets, every pyenv Python 3.8-3.13: the seed's examples through the real CLI,
recursion, generators, async, classmethod/staticmethod, decorators, bad input, and cleanup.

Costs are checked against the demo's sleeps with generous bounds (never as speed figures).
"""
import json
import re
import time

import pytest

from .conftest import DEMO as DEMO_PATH, flight_cli, version_params

pytestmark = pytest.mark.timeout(240)

TITLE = re.compile(r"^🔍 \d{4}-\d\d-\d\d \d\d:\d\d:\d\d:\d{3} thread=order-worker tid=\d+ daemon=True "
                   r"cost=\d+\.\d{3}ms$")
LINE = re.compile(r"^(?P<prefix>(?:[│ ]  )*(?:├─ |└─ )?)\[(?P<ms>\d+(?:\.\d+)?)ms\] (?P<name>\S+)(?: (?P<where>\S+))?$")


def trace(pid, cmd, *extra):
    r = flight_cli(str(pid), "--cmd", cmd, "--no-color", *extra)
    assert r.returncode == 0, f"{cmd}: {r.stdout}\n{r.stderr}"
    return r.stdout


def trace_ok(pid, cmd):
    """The demo's process_order raises for every 7th order (negative id): retry such a capture
    (a CLI run can last about 7 of the demo's loops, so the same residue may come back a few times)."""
    for _ in range(10):
        out = trace(pid, cmd)
        if "raised ValueError" not in out:
            return out
    raise AssertionError(out)


def trees(out, qualified=False):
    """Each invocation as (title, [(depth, name, where, ms)]); names without their class (the text
    shows Class.method) unless qualified."""
    blocks = []
    for line in out.splitlines():
        if line.startswith("🔍"):
            blocks.append((line, []))
            continue
        m = LINE.match(line)
        if m and blocks:
            depth = len(m.group("prefix")) // 3
            name = m.group("name") if qualified else m.group("name").rsplit(".", 1)[-1]
            blocks[-1][1].append((depth, name, m.group("where"), float(m.group("ms"))))
    return blocks


def shape(nodes):
    """The tree without the demo's cheap C calls (list.append, round): on a loaded machine one of
    them can pass the 0.1 ms threshold now and then; the sleeps and Python calls are the shape."""
    return [(d, n, w.split(":")[0] if w else None) for d, n, w, _ in nodes
            if not (w == "<built-in>" and n != "sleep")]


DEMO = "demo_target.py"
PROCESS_ORDER = [(0, "process_order", DEMO), (1, "validate", DEMO), (2, "sleep", "<built-in>"),
                 (1, "compute_price", DEMO), (2, "sleep", "<built-in>"), (2, "apply_discount", DEMO),
                 (3, "sleep", "<built-in>"), (1, "save_to_db", DEMO), (2, "sleep", "<built-in>")]


@pytest.mark.parametrize("version", version_params())
def test_seed_examples(spawn, version):
    t = spawn(version, "demo")
    out = trace_ok(t.pid, "trace __main__ OrderService process_order -n 1")
    [(title, nodes)] = trees(out)
    assert TITLE.match(title), title
    assert out.splitlines()[0] == "─" * 60
    # methods are named with their class on every Python (3.8-3.10 code has no co_qualname)
    [(_, qualified)] = trees(out, qualified=True)
    assert [n for d, n, _, _ in qualified if d <= 1 and n != "sleep"] == [
        "OrderService.process_order", "OrderService.validate", "OrderService.compute_price",
        "OrderService.save_to_db"], qualified
    assert shape(nodes) == PROCESS_ORDER, out
    ms = {n: v for _, n, _, v in nodes if n != "sleep"}
    assert 75 <= ms["process_order"] < 1000 and 4 <= ms["validate"] and 45 <= ms["save_to_db"]
    assert ms["compute_price"] >= ms["apply_discount"] >= 9
    assert float(re.search(r"cost=([\d.]+)ms", title).group(1)) == pytest.approx(ms["process_order"], abs=0.001)
    assert "1 of 1 captured" in out and "stopped because the limit of 1 was reached" in out

    [(_, nodes)] = trees(trace(t.pid, "trace __main__ compute -n 1"))
    assert shape(nodes) == [(0, "compute", DEMO), (1, "sleep", "<built-in>"), (1, "helper", DEMO),
                            (2, "sleep", "<built-in>"), (1, "helper", DEMO), (2, "sleep", "<built-in>")]

    [(_, nodes)] = trees(trace_ok(t.pid, "trace __main__ OrderService process_order -d 2 -n 1"))
    assert shape(nodes) == [(0, "process_order", DEMO), (1, "validate", DEMO), (1, "compute_price", DEMO),
                            (1, "save_to_db", DEMO)]

    # -i 10 hides validate (5 ms) and its sleep; -d ignores -i
    [(_, nodes)] = trees(trace_ok(t.pid, "trace __main__ OrderService process_order -i 10 -n 1"))
    assert [n for _, n, _, _ in nodes] == ["process_order", "compute_price", "sleep", "apply_discount", "sleep",
                                           "save_to_db", "sleep"]
    [(_, nodes)] = trees(trace_ok(t.pid, "trace __main__ OrderService process_order -i 1000 -d 2 -n 1"))
    assert [n for _, n, _, _ in nodes] == ["process_order", "validate", "compute_price", "save_to_db"]

    [(_, nodes)] = trees(trace(t.pid, "trace __main__ OrderService nested_outer -nm inner_work -n 1"))
    assert shape(nodes) == [(0, "inner_work", DEMO), (1, "sleep", "<built-in>")]
    assert nodes[0][3] >= 11

    [(_, nodes)] = trees(trace(t.pid, "trace __main__ OrderService deep_call_a -n 1"))
    assert shape(nodes) == [(0, "deep_call_a", DEMO), (1, "deep_call_b", DEMO), (2, "deep_call_c", DEMO),
                            (3, "sleep", "<built-in>")]

    out = trace(t.pid, "trace __main__ compute -f 'args[0]>=1' -n 2")
    assert len(trees(out)) == 2
    m = re.search(r"(\d+) calls seen, (\d+) matched", out)
    assert int(m.group(1)) >= int(m.group(2)) == 2

    out = trace_ok(t.pid, "trace __main__ OrderService process_order -et 50 -n 1")
    assert len(trees(out)) == 1 and trees(out)[0][1][0][3] >= 50
    assert t.alive()


@pytest.mark.parametrize("version", version_params())
def test_entrance_time_and_json(spawn, version):
    t = spawn(version, "demo")
    # Nothing costs 10 s: every call is skipped, does not count, and the answer says why.
    out = trace(t.pid, "trace __main__ OrderService validate -et 10000 -n 1 --timeout 1.5")
    assert not trees(out)
    assert "0 of 1 captured" in out and "deadline" in out and "-et" in out, out
    assert re.search(r"(\d+) calls seen", out) and "via " in out

    out = trace(t.pid, "trace __main__ OrderService process_order -n 1 -d 3 -f 'args[0] > 0'", "--json")
    result = json.loads(out)
    assert result["captured"] == 1 and result["stopped"] == "limit" and result["seen"] >= 1
    assert result["target"] == "__main__.OrderService.process_order"
    inv = result["invocations"][0]
    assert inv["thread"] == "order-worker" and inv["daemon"] is True and isinstance(inv["tid"], int)
    root = inv["root"]
    assert set(root) == {"name", "qualname", "file", "line", "kind", "source", "library", "cost_ms", "raised",
                         "exception", "raised_at", "children"}
    assert root["kind"] == "python"
    assert root["qualname"].endswith("process_order") and root["file"].endswith(DEMO)
    assert isinstance(root["cost_ms"], float) and root["line"] > 0
    compute = root["children"][1]
    assert compute["name"] == "compute_price" and [c["name"] for c in compute["children"]] == ["sleep", "apply_discount"]
    sleep = compute["children"][0]
    assert sleep["kind"] == "builtin" and sleep["file"] == "" and sleep["children"] == []
    assert compute["children"][1]["children"] == []   # -d 3 cuts below the third level


DEMO_DIR = DEMO_PATH.parent
EXTRAS = "trace_extras"  # tests/targets/trace_extras.py


@pytest.mark.parametrize("version", version_params())
def test_recursion_generator_async_class_static_decorated(spawn, version):
    t = spawn(version, EXTRAS)
    [(_, nodes)] = trees(trace(t.pid, "trace __main__ fib -n 1 -i 0"))
    # fib(6) makes 25 calls: the outermost is the invocation, the recursion is its tree
    assert [n for _, n, _, _ in nodes] == ["fib"] * 25
    assert max(d for d, _, _, _ in nodes) == 5

    [(_, nodes)] = trees(trace(t.pid, "trace __main__ numbers -n 1 -i 0"))
    assert [n for _, n, _, _ in nodes] == ["numbers", "sleep", "[yield]", "sleep", "[yield]", "sleep", "[yield]"]

    [(title, nodes)] = trees(trace(t.pid, "trace __main__ fetch -n 1"))
    names = [n for d, n, _, _ in nodes if d == 1]
    assert "thread=async-loop" in title
    assert "[await]" in names and names[-1] == "sleep", nodes
    awaited = [ms for d, n, _, ms in nodes if n == "[await]"]
    # asyncio.sleep(0.005) suspended the coroutine: the gap runs from the suspension to the
    # resumption (the timer was set a little earlier, inside the traced sleep() call)
    assert len(awaited) == 1 and awaited[0] >= 0.5
    assert nodes[0][3] >= 5

    # a huge tree is bounded, and says so
    out = trace(t.pid, "trace __main__ chatty -n 1 -i 0")
    [(_, nodes)] = trees(out)
    assert 100 < len(nodes) <= 501 and "more sub-calls not shown (size bound)" in out

    for cmd, name in (("trace __main__ Pricing rate -n 1", "rate"), ("trace __main__ Pricing tax -n 1", "tax"),
                      ("trace __main__ decorated -n 1", "decorated")):
        [(_, nodes)] = trees(trace(t.pid, cmd))
        assert shape(nodes) == [(0, name, "trace_extras.py"), (1, "sleep", "<built-in>")], cmd
    assert t.alive()


def fails(pid, cmd):
    r = flight_cli(str(pid), "--cmd", cmd, "--no-color")
    assert r.returncode != 0, f"{cmd} should fail: {r.stdout}"
    assert "Traceback (most recent call last)" not in r.stderr, r.stderr
    return r.stderr


@pytest.mark.parametrize("version", version_params(("3.8", "3.13")))  # checked on the host, mostly
def test_bad_input(spawn, version):
    t = spawn(version, "demo")
    pid = t.pid
    assert "module 'nosuch' is not imported" in fails(pid, "trace nosuch compute")
    # a real stdlib module the demo never imported: named, never imported by us
    assert "'xml.dom.minidom' is not imported" in fails(pid, "trace xml.dom.minidom parse -n 1")
    assert "NoSuchClass" in fails(pid, "trace __main__ NoSuchClass process_order")
    err = fails(pid, "trace __main__ OrderService proces_order")
    assert "'proces_order' not found" in err and "process_order" in err   # suggests the close name
    err = fails(pid, "trace __main__ OrderService nested_outer -nm nope")
    assert "no nested function 'nope'" in err and "inner_work" in err
    err = fails(pid, "trace time sleep -n 1")
    assert "built-in (C) function" in err and "caller" in err
    assert "depth" in fails(pid, "trace __main__ compute -d 0")
    assert "limits" in fails(pid, "trace __main__ compute -n -1")
    assert "limits" in fails(pid, "trace __main__ compute -n many")
    assert "interval" in fails(pid, "trace __main__ compute -i fast")
    err = fails(pid, "trace __main__ compute -f 'args[0'")
    assert "syntax error in -f/--filter_expr/--filter expression" in err and "^" in err
    # a filter that raises on some calls: those calls do not match, reported once, target unaffected
    out = trace(pid, "trace __main__ compute -f '1 / args[0] > 0' -n 3")  # compute(0) every 3rd call
    assert len(trees(out)) == 3
    assert "warning: -f/--filter_expr/--filter expression '1 / args[0] > 0' raised ZeroDivisionError" in out
    assert out.count("ZeroDivisionError") == 1
    # a method that raises: captured, with the exception named
    out = trace(pid, "trace __main__ OrderService validate -f 'args[0] < 0' -n 1")
    assert "raised ValueError: negative order id" in out
    # still healthy, and nothing got imported
    r = flight_cli(str(pid), "--cmd", "getglobal sys modules -e \"'xml.dom.minidom' in target\"")
    assert r.returncode == 0 and "False" in r.stdout, r.stdout + r.stderr
    assert t.alive()
    [(_, nodes)] = trees(trace(pid, "trace __main__ compute -n 1"))
    assert nodes[0][1] == "compute"


def trace_json(pid, cmd):
    return json.loads(trace(pid, cmd, "--json"))


@pytest.mark.parametrize("version", version_params())
def test_python_recorder_fallback_gives_the_same_trees(spawn, version):
    """The native recorder is what runs normally; the Python one (used when the native one cannot
    load) records the same trees. FLIGHT_MCP_PY_RECORDER=1 in the target selects it."""
    native = spawn(version, "demo")
    fallback = spawn(version, "demo", env={"FLIGHT_MCP_PY_RECORDER": "1"})
    shapes = []
    for t, recorder in ((native, "c"), (fallback, "python")):
        out = trace_json(t.pid, "trace __main__ OrderService process_order -n 1 -f 'args[0] > 0'")
        assert out["recorder"] == recorder, out
        [(_, nodes)] = trees(trace_ok(t.pid, "trace __main__ OrderService process_order -n 1 -f 'args[0] > 0'"))
        shapes.append(shape(nodes))
    assert shapes[0] == shapes[1] == PROCESS_ORDER
    for t in (native, fallback):
        out = trace_json(t.pid, "trace __main__ OrderService process_order -n 1 -d 2 -f 'args[0] > 0'")
        root = out["invocations"][0]["root"]
        assert [c["name"] for c in root["children"]] == ["validate", "compute_price", "save_to_db"]
        assert all(c["children"] == [] for c in root["children"])
        assert out["invocations"][0]["hidden_nodes"] >= 4   # the sleeps and apply_discount, cut by -d 2
        assert t.alive()


@pytest.mark.parametrize("version", version_params())
@pytest.mark.parametrize("mode", ["python", "cprofile"])
def test_a_profiler_already_running_keeps_running(spawn, version, mode, tmp_path):
    """trace sets its own profile function on the thread of each traced call and must hand the
    thread back its own profiler. A Python one is restored; a C-level one (cProfile on <= 3.11)
    cannot be restored from Python, so those calls are counted as not recorded, never broken."""
    counts = tmp_path / "count"
    t = spawn(version, "profiled", args=[mode, str(counts)])
    out = trace_json(t.pid, "trace __main__ work -n 2 -i 0 --timeout 5")
    if mode == "cprofile" and int(version.split(".")[1]) <= 11:   # 3.12+ cProfile uses sys.monitoring
        assert out["captured"] == 0 and out["profiler_busy"] >= 1, out
        assert "another profiler" in trace(t.pid, "trace __main__ work -n 1 --timeout 1")
    else:
        assert out["captured"] == 2 and out["profiler_busy"] == 0, out
        root = out["invocations"][0]["root"]
        assert root["name"] == "work" and root["children"][0]["name"] == "sum"
        genexpr = root["children"][0]["children"][0]   # sum() resumes the generator, which calls step()
        assert genexpr["name"] == "<genexpr>" and genexpr["children"][0]["name"] == "step", root
    before = int(counts.read_text())
    time.sleep(0.5)
    assert int(counts.read_text()) > before, "the target's own profiler stopped counting after the trace"
    assert t.alive()


@pytest.mark.parametrize("version", version_params())
def test_deep_recursion_tree(spawn, version):
    """A call chain far deeper than the recorder's initial stack: recorded whole, shown to 100 levels
    (clients' JSON validators refuse much deeper nesting), and the rest counted."""
    t = spawn(version, """
        import sys, time
        def down(n):
            return n if n == 0 else down(n - 1)
        print("READY", flush=True)
        while True:
            down(300)
            time.sleep(0.01)
    """)
    out = trace_json(t.pid, "trace __main__ down -n 1 -i 0")
    node, levels = out["invocations"][0]["root"], 1
    while node["children"]:
        (node,) = node["children"]
        levels += 1
    assert levels == 100 and node["name"] == "down"
    assert out["invocations"][0]["elided_nodes"] == 201, out["invocations"][0]   # the 101st level and below
    assert out["invocations"][0]["hidden_nodes"] == 0
    assert t.alive()


@pytest.mark.parametrize("version", version_params(["3.12", "3.13"]))
@pytest.mark.parametrize("taken", [(0, 1, 2, 3), (0, 1, 2, 3, 5)])
def test_scarce_monitoring_tool_ids(spawn, version, taken):
    """On 3.12+ the recorder takes its events from a sys.monitoring tool of its own when a second
    free tool id exists, else from a profile function; either way the tree is the same, and the
    target's own tools keep their ids."""
    t = spawn(version, f"""
        import sys
        sys.path.insert(0, {str(DEMO_DIR)!r})
        import demo_target
        TOOLS_TAKEN = {list(taken)!r}
        for tool in TOOLS_TAKEN:
            sys.monitoring.use_tool_id(tool, "the application's own")
        demo_target.main()
    """)
    cmd = "trace demo_target OrderService process_order -n 1 -f 'args[0] > 0'"
    [(_, nodes)] = trees(trace_ok(t.pid, cmd))
    assert shape(nodes) == PROCESS_ORDER
    out = trace(t.pid, "getglobal __main__ sys -e '[target.monitoring.get_tool(i) for i in range(6)]'",
                "--allow-mutating")   # get_tool() is a method call: the read-only checker refuses it
    assert out.count("the application's own") == len(taken), out


@pytest.mark.parametrize("version", version_params())
def test_concurrent_coroutines_traced_twice(spawn, version):
    """Coroutines still suspended when a trace ends must leave nothing behind: the next trace of the
    same function records full trees (on 3.12+ its events must come back on)."""
    t = spawn(version, """
        import asyncio, time
        async def job(i):
            time.sleep(0.001)
            await asyncio.sleep(0.005 + i / 1000)
            time.sleep(0.001)
        async def main():
            print("READY", flush=True)
            while True:
                await asyncio.gather(*(job(i) for i in range(5)))
        asyncio.run(main())
    """)
    for _ in range(3):
        out = trace_json(t.pid, "trace __main__ job -n 2")
        for inv in out["invocations"]:
            names = [c["name"] for c in inv["root"]["children"]]
            assert names[0] == "sleep" and "[await]" in names and names[-1] == "sleep", inv["root"]
    assert t.alive()
