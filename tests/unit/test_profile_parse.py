"""profile's reading of py-spy: real py-spy 0.4 output captured from tests/unit/data's target
(a CPU-bound Pricing.compute on the main thread, a thread hashing with the GIL released, a
thread that sleeps), on Python 3.12 (py-spy knows OS thread ids and states) and 3.8 (it names
threads by pthread_t and marks every sample running)."""
from __future__ import annotations

import xml.dom.minidom
from pathlib import Path

import pytest
from pydantic import ValidationError

from flight_mcp import profiling
from flight_mcp.tools import profile

DATA = Path(__file__).parent / "data"
PID312, PID38 = 3242, 3334  # the captured targets' pids (their main threads' OS ids)


def _runs(tag: str) -> dict[str, profiling.SamplerRun]:
    return {kind: profiling.SamplerRun(kind, profiling.parse_raw((DATA / f"profile_{tag}_{kind}.txt").read_text()))
            for kind in ("active", "all", "gil")}


def _log_samples(tag: str, kind: str) -> int:
    import re
    return int(re.search(r"Samples: (\d+)", (DATA / f"profile_{tag}_{kind}.log").read_text()).group(1))


@pytest.mark.parametrize("tag", ["py312", "py38"])
@pytest.mark.parametrize("kind", ["active", "all", "gil"])
def test_every_sample_py_spy_counted_is_parsed(tag, kind):
    stacks = _runs(tag)[kind].stacks
    assert profiling.samples(stacks) == _log_samples(tag, kind)
    assert all(s.thread is not None and s.frames for s in stacks)


def test_frames_and_threads_as_py_spy_names_them():
    f = profiling.parse_frame("Pricing.compute (cap_target.py:7)")
    assert (f.name, f.file, f.line) == ("Pricing.compute", "cap_target.py", 7)
    assert profiling.parse_frame("<lambda> (a (b).py:3)").name == "<lambda>"
    assert profiling.parse_frame("<lambda> (a (b).py:3)").file == "a (b).py"
    assert profiling.parse_frame("run (x.py)") == profiling.FrameKey("run", "x.py", None)
    t = profiling.parse_thread("thread (3242): MainThread")
    assert (t.native_id, t.name, t.pthread_id) == (3242, "MainThread", None)
    t = profiling.parse_thread("thread (0x7F4BF9B7FB80): MainThread")
    assert (t.native_id, t.pthread_id) == (None, 0x7F4BF9B7FB80)
    assert profiling.parse_thread("thread (77)").name is None
    assert profiling.parse_thread("<module> (x.py:1)") is None


def test_functions_rank_the_hot_function_first_with_self_and_total():
    counts = profiling.functions(_runs("py312")["active"].stacks)
    top = counts[0]
    assert (top.name, top.file) == ("hash_block", "cap_target.py") or top.name == "Pricing.compute"
    by = {c.name: c for c in counts}
    assert by["Pricing.compute"].self_samples == 139 + 60 and by["Pricing.compute"].line == 7
    assert by["<module>"].self_samples == 0 and by["<module>"].total_samples == 199
    # a recursive function counts once per sample in total
    rec = profiling.parse_raw("thread (1): M;f (a.py:1);f (a.py:2);g (a.py:9) 5\n")
    f = {c.name: c for c in profiling.functions(rec)}["f"]
    assert (f.self_samples, f.total_samples) == (0, 5)


def _result(tag: str, pid: int, os_state: bool = True, runnable=None, **params):
    runs = _runs(tag)
    rec = profiling.Recording(runs, 2.2, None, os_state=os_state, runnable=runnable or {})
    return profile.summarize(profile.ProfileParams(pid=pid, **params), rec)


def test_summary_tells_running_idle_and_gil_apart_per_thread():
    r, running = _result("py312", PID312)
    threads = {t.name: t for t in r.threads}
    main, hasher, sleepy = threads["MainThread"], threads["hasher"], threads["sleepy"]
    assert r.threads[0] is main and main.main and main.native_id == PID312
    assert main.functions[0].name == "Pricing.compute" and main.functions[0].self_share == 1.0
    assert sleepy.active_samples == 0 and sleepy.idle_samples == sleepy.samples == 199
    assert sleepy.idle_in[0].name == "sleeper"
    assert hasher.active_samples == 148 and hasher.gil_samples == 0  # works with the GIL released
    assert main.gil_samples == 189 == r.gil_samples
    assert r.intervals == 199 and r.samples == 199 * 3
    assert r.idle_samples == sum(t.idle_samples for t in r.threads)
    assert r.gil_functions[0].name == "Pricing.compute"
    assert {f.name for f in r.functions[:2]} == {"Pricing.compute", "hash_block"}
    assert profiling.samples(running) == r.active_samples == 347


def test_before_3_11_the_running_share_comes_from_the_os_state_sampler():
    runs = _runs("py38")
    assert profiling.samples(runs["active"].stacks) == 597  # py-spy counted the sleeper as running
    # what identify_threads gives (the captured pthread_t -> OS ids) and StateSampler measured
    ids = {0x7F4BF9B7FB80: PID38, 0x7F4BF3FFF6C0: PID38 + 3, 0x7F4BF8DFF6C0: PID38 + 2}
    for run in runs.values():
        for s in run.stacks:
            tid = ids[s.thread.pthread_id]
            s.thread = profiling.ThreadKey(f"thread ({tid}): {s.thread.name}", tid, s.thread.name)
    rec = profiling.Recording(runs, 2.2, None, os_state=False,
                              runnable={PID38: 0.97, PID38 + 3: 0.9, PID38 + 2: 0.02})
    r, running = profile.summarize(profile.ProfileParams(pid=PID38), rec)
    threads = {t.name: t for t in r.threads}
    assert threads["sleepy"].idle_samples > 0.9 * threads["sleepy"].samples
    assert threads["MainThread"].functions[0].name == "compute"
    assert threads["MainThread"].active_samples == round(0.97 * 199)
    assert r.functions[0].name == "compute"
    assert any("3.10 or older" in n for n in r.notes)


def test_running_share_gives_the_budget_to_gil_holding_stacks_first():
    stacks = profiling.parse_raw("thread (1): M;main (a.py:1);work (a.py:5) 50\n"
                                 "thread (1): M;main (a.py:1);wait (a.py:9) 50\n")
    gil = profiling.parse_raw("thread (1): M;main (a.py:1);work (a.py:5) 40\n")
    out = {s.frames[-1].name: s.count for s in profiling.running_share(stacks, gil, 55)}
    assert out == {"work": 50, "wait": 5}
    assert profiling.running_share(stacks, gil, 0) == []
    assert sorted(profiling.apportion(10, [1, 1, 1], [5, 5, 5])) == [3, 3, 4]
    assert profiling.apportion(10, [1, 0], [4, 9]) == [4, 0]
    assert profiling.apportion(7, [3, 1], [100, 100]) == [5, 2]


def test_collapsed_stacks_are_bounded_and_most_frequent_first(monkeypatch):
    monkeypatch.setattr(profile, "COLLAPSED_LINES", 2)
    r, _ = _result("py312", PID312, collapsed=True)
    assert len(r.collapsed) == 2 and r.collapsed_left_out == 1
    counts = [int(line.rsplit(" ", 1)[1]) for line in r.collapsed]
    assert counts == sorted(counts, reverse=True)
    assert any("left out" in n for n in r.notes)
    r, _ = _result("py312", PID312, collapsed=True, idle=True)
    assert any("sleepy" in line for line in r.collapsed)


def test_limit_bounds_the_tables():
    r, _ = _result("py312", PID312, limit=1)
    assert len(r.functions) == 1 and r.functions_seen > 1
    assert all(len(t.functions) <= 1 for t in r.threads)


def test_text_names_the_hot_function_and_confirms_the_flame_graph():
    r, _ = _result("py312", PID312)
    r.flamegraph_file, r.flamegraph_samples = "/tmp/x.svg", 347
    text = profile.TOOL.text(r, False)
    assert "Flamegraph data has been successfully written to /tmp/x.svg" in text
    first = text.split("Top functions", 1)[1].splitlines()[2]
    assert "Pricing.compute" in first or "hash_block" in first
    assert 'Thread "sleepy"' in text and "idle in sleeper" in text


def test_flame_graph_is_valid_svg_with_escaped_names():
    stacks = _runs("py312")["active"].stacks
    svg = profiling.flamegraph_svg(stacks, "pid <1> & more")
    doc = xml.dom.minidom.parseString(svg)
    titles = [t.firstChild.data for t in doc.getElementsByTagName("title")]
    assert any(t.startswith("<module> (cap_target.py:27)") for t in titles)
    assert any(t.startswith("Pricing.compute (cap_target.py:7) (139 samples") for t in titles)
    widths = {t.parentNode.getElementsByTagName("rect")[0].getAttribute("width") for t in
              doc.getElementsByTagName("title") if t.firstChild.data.startswith("thread (3242)")}
    assert widths  # the main thread's tower is drawn


@pytest.mark.parametrize("name, code", [("not_python", "not_python"), ("no_process", "no_such_process"),
                                        ("permission", "permission_denied")])
def test_py_spy_errors_become_specific_codes(name, code):
    err = profiling._error_from(1234, (DATA / f"profile_err_{name}.txt").read_text(), 1)
    assert err.code == code and "1234" in err.message
    assert "Stack backtrace" not in err.message


def test_sampler_log_figures():
    errors, exited, late = profiling._stats((DATA / "profile_py312_all.log").read_text())
    assert (errors, exited, late) == (0, False, False)
    assert profiling._stats("py-spy> Stopped sampling because process exited\n"
                            "Wrote raw flamegraph data to 'x'. Samples: 3 Errors: 2")[:2] == (2, True)


def test_params():
    with pytest.raises(ValidationError):
        profile.ProfileParams(pid=1, rate=0)
    assert profile.ProfileParams(pid=1, duration=30).timeout_s is None
    assert profile.TOOL.aliases == ("perf",)
    assert set(profile.ProfileParams.model_fields) - profile.ProfileParams.host_only == set()
