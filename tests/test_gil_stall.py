"""Answers while one thread holds the GIL for seconds inside a single C call (issue 16).

Targets (real processes, pyenv Pythons): a worker thread that, when the test asks (a go-N file), runs a
catastrophically backtracking regular expression (tests/targets/gil_regex_stall.py), or sorts a big list
of tuples (tests/targets/gil_sort_stall.py). Each stall is announced by a marker file the worker creates
right before it (stall-N) and right after it (done-N): the tests synchronise on those, never on the clock.
A call counts as "outside a stall" when no stall runs from its start to its answer (none is asked for
meanwhile), and "during a stall" when it is sent after stall-N appeared and before done-N did.
"""
from __future__ import annotations

import anyio
import pytest

from .conftest import TARGET_SEES_INSTRUMENTATION, TARGETS_DIR, flight_cli, version_params
from .mcp_client import mcp_session, text_of

pytestmark = pytest.mark.timeout(240)

REGEX = "gil_regex_stall"
SORT = "gil_sort_stall"
# Seconds of CPU time (calibrated by the targets; at least that long in wall time on a loaded machine):
# long enough for an overdue request (attach/client.STALL_BUDGET_S, 0.5 s) to be read from outside
# (~0.3-1.5 s) while the stall still runs.
STALL_S = "2.5"
# A first attach reads as a stall only after session/gil.START_BUDGET_S (2.5 s), then from outside (up to
# ~1.5 s): the regex stall outlasts both; FIRST_ATTACH_TIMEOUT_S leaves that time to a getglobal, whose
# deadline must pass during the sort's stall.
FIRST_ATTACH_REGEX_S, FIRST_ATTACH_SORT_S, FIRST_ATTACH_TIMEOUT_S = "4.5", "6", 4.5


def _count(markers, kind: str) -> int:
    return sum(1 for p in markers.iterdir() if p.name.startswith(kind + "-"))


async def _until(predicate, what: str, timeout: float = 90.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.005)


def _ask_stall(markers, when: str = "") -> int:
    """Asks the target for its next stall (when="hooked": once mark() is instrumented); returns its N."""
    k = _count(markers, "go") + 1
    (markers / f"go-{k}").write_text(when)
    return k


async def _attach(s, pid: int) -> None:
    """Attaches before the calls under test: a first attach to a target on a loaded machine may read as a
    stall (the agent not started within session/gil.START_BUDGET_S); test_first_attach_during_a_stall is
    about that."""
    r = await s.call_tool("attach", {"pid": pid, "timeout_s": 60})
    assert not r.is_error, text_of(r)


async def _in_a_gap(s, markers, tool: str, args: dict):
    """The answer to a call made and answered while no stall runs (the last one over, none asked for)."""
    await _until(lambda: _count(markers, "stall") == _count(markers, "go") == _count(markers, "done"),
                 "the end of a stall")
    r = await s.call_tool(tool, args)
    assert _count(markers, "stall") == _count(markers, "done"), "a stall began during the call"
    assert not r.is_error, text_of(r)
    return r


async def _in_a_stall(s, markers, tool: str, args: dict):
    """The answer to a call sent while a stall runs (right after its marker appeared)."""
    k = _ask_stall(markers)
    await _until(lambda: (markers / f"stall-{k}").exists(), f"stall {k}")
    assert not (markers / f"done-{k}").exists(), "the stall ended before the call could be sent"
    r = await s.call_tool(tool, args)
    assert not r.is_error, text_of(r)
    return r


def _holder(out: dict) -> dict:
    holders = [t for t in out["threads"] if t["holds_gil"]]
    assert len(holders) == 1, [(t["name"], t["holds_gil"]) for t in out["threads"]]
    return holders[0]


def _check_stall_stack(r, worker: str, fn: str, native_word: str) -> None:
    """stack read from outside because the GIL was held: the holder inside the C call, named."""
    out, text = r.structured_content, text_of(r)
    assert out["source"] == "external", text
    assert out["agent_error"] == "gil_held", out["agent_error"]
    h = _holder(out)
    assert h["name"] == worker, h["name"]  # the threading name, not the OS's "python3.x"
    py = [i for i, f in enumerate(h["frames"]) if f["kind"] == "python"]
    inner = h["frames"][py[-1]]
    assert inner["name"] == fn and inner["source"].endswith("# STALL-HERE"), inner
    below = [f["name"] for f in h["frames"][py[-1] + 1:] if f["kind"] == "native"]
    assert any(native_word in n.lower() for n in below), below  # inside the C call
    others = [t for t in out["threads"] if t is not h]
    assert others and all(f["kind"] == "python" for t in others for f in t["frames"])  # native: the holder's only
    wait = out["gil_wait"]
    assert wait["request"] == "stack" and wait["holder"]["name"] == worker and wait["holder"]["native_id"] == h["native_id"]
    assert wait["waited_ms"] >= 500 and wait["seen_after_ms"] >= 500
    assert "because the GIL was held" in out["notes"][0], out["notes"]
    first = text.splitlines()[0]
    assert first.startswith("note: ") and worker in first and f"in {fn} (" in first, first
    assert f"({worker}) [holds the GIL]" in text


def _stalling(spawn, version, script, folder, stall_s=STALL_S):
    """A target that stalls for stall_s when asked, with the folder of its go/stall/done markers. The
    regex target gets flight_mcp_hooks pasted in front of it (it waits for mark() to be instrumented
    when asked so)."""
    folder.mkdir()
    source = TARGET_SEES_INSTRUMENTATION + (TARGETS_DIR / f"{REGEX}.py").read_text() if script == REGEX else script
    return spawn(version, source, args=[str(folder), stall_s]), folder


def _check_unchanged_stack(r) -> None:
    out = r.structured_content
    assert out["source"] == "agent" and out["agent_error"] is None and out["gil_wait"] is None, out
    assert "GIL" not in text_of(r).splitlines()[0]


@pytest.mark.parametrize("version", version_params())
def test_stack_during_a_regex_stall_reads_the_holder_from_outside(spawn, version, tmp_path):
    t, markers = _stalling(spawn, version, REGEX, tmp_path / "markers")

    async def go():
        async with mcp_session() as s:
            args = {"pid": t.pid, "timeout_s": 60}
            await _attach(s, t.pid)
            calm = await _in_a_gap(s, markers, "stack", args)
            stalled = await _in_a_stall(s, markers, "stack", args)
            calm_again = await _in_a_gap(s, markers, "stack", args)
            return calm, stalled, calm_again

    calm, stalled, calm_again = anyio.run(go)
    _check_unchanged_stack(calm)
    _check_stall_stack(stalled, "regex-worker", "backtrack", "sre")
    _check_unchanged_stack(calm_again)
    worker = [th for th in calm.structured_content["threads"] if th["name"] == "regex-worker"]
    assert worker and worker[0]["native_id"] == _holder(stalled.structured_content)["native_id"]


@pytest.mark.parametrize("version", version_params(("3.8", "3.13")))
def test_getglobal_during_a_stall_reports_the_wait_and_the_holder(spawn, version, tmp_path):
    t, markers = _stalling(spawn, version, REGEX, tmp_path / "markers")

    async def go():
        async with mcp_session() as s:
            args = {"pid": t.pid, "module": "__main__", "field": "config", "timeout_s": 60}
            await _attach(s, t.pid)
            calm = await _in_a_gap(s, markers, "getglobal", args)
            stalled = await _in_a_stall(s, markers, "getglobal", args)
            return calm, stalled

    calm, stalled = anyio.run(go)
    assert calm.structured_content["gil_wait"] is None
    assert not text_of(calm).startswith("note:")
    wait = stalled.structured_content["gil_wait"]
    assert wait is not None, text_of(stalled)
    assert wait["request"] == "getglobal" and wait["waited_ms"] >= 500 and wait["requests"] == 1
    assert wait["holder"]["name"] == "regex-worker"
    assert wait["holder"]["frames"][-1]["name"] == "backtrack"
    first, *rest = text_of(stalled).splitlines()
    assert first.startswith("note: this answer waited") and "(regex-worker)" in first and "in backtrack (" in first
    assert '"service": "regex"' in "\n".join(rest)  # the answer itself, as without the wait


@pytest.mark.parametrize("version", version_params(("3.8", "3.13")))
def test_sort_stall_in_stack_and_list_processes(spawn, version, tmp_path):
    t, markers = _stalling(spawn, version, SORT, tmp_path / "markers")

    async def go():
        async with mcp_session() as s:
            args = {"pid": t.pid, "timeout_s": 60}
            await _attach(s, t.pid)
            calm = await _in_a_gap(s, markers, "stack", args)
            stalled = await _in_a_stall(s, markers, "stack", args)
            ps_calm = await _in_a_gap(s, markers, "list_processes", {"filter": str(t.pid)})
            ps_stalled = await _in_a_stall(s, markers, "list_processes", {"filter": str(t.pid)})
            return calm, stalled, ps_calm, ps_stalled

    calm, stalled, ps_calm, ps_stalled = anyio.run(go)
    _check_unchanged_stack(calm)
    _check_stall_stack(stalled, "sort-worker", "sort_orders", "sort")
    [quiet] = ps_calm.structured_content["processes"]
    assert quiet["agent_attached"] and quiet["gil_stalled"] is False and quiet["gil_holder"] is None
    [busy] = ps_stalled.structured_content["processes"]
    assert busy["gil_stalled"] is True, text_of(ps_stalled)
    assert busy["gil_holder"]["name"] == "sort-worker" and busy["gil_holder"]["frames"][-1]["name"] == "sort_orders"
    assert "GIL stalled now: thread" in text_of(ps_stalled) and "GIL" not in text_of(ps_calm)


# -- a first attach during a stall ------------------------------------------------------------------------------

@pytest.mark.parametrize("version", version_params(("3.8", "3.13")))
def test_first_attach_during_a_stall(spawn, version, tmp_path):
    """No agent yet: stack reads from outside as soon as the loaded agent has not started (it needs the GIL),
    the agent starts by itself after the stall; getglobal waits out its deadline and its error names the holder."""
    t, regex = _stalling(spawn, version, REGEX, tmp_path / "regex", FIRST_ATTACH_REGEX_S)
    u, sort = _stalling(spawn, version, SORT, tmp_path / "sort", FIRST_ATTACH_SORT_S)

    async def go():
        async with mcp_session() as s:
            args = {"pid": t.pid, "timeout_s": 60}
            first = await _in_a_stall(s, regex, "stack", args)
            later = await _in_a_gap(s, regex, "stack", args)
            k = _ask_stall(sort)  # no command has attached to u yet
            await _until(lambda: (sort / f"stall-{k}").exists(), f"stall {k}")
            failed = await s.call_tool("getglobal", {"pid": u.pid, "module": "__main__", "field": "orders",
                                                     "timeout_s": FIRST_ATTACH_TIMEOUT_S})
            stalled = not (sort / f"done-{k}").exists()
            return first, later, failed, stalled

    first, later, failed, stalled = anyio.run(go)
    out, text = first.structured_content, text_of(first)
    assert out["source"] == "external" and out["agent_error"] == "gil_held", text
    assert "the agent, loaded" in out["notes"][0] and "could not start yet" in out["notes"][0], out["notes"]
    h = _holder(out)
    inner = [f for f in h["frames"] if f["kind"] == "python"][-1]
    assert inner["name"] == "backtrack" and inner["source"].endswith("# STALL-HERE"), inner
    wait = out["gil_wait"]
    assert wait["still_waiting"] and wait["holder"]["native_id"] == h["native_id"], wait
    assert later.structured_content["source"] == "agent", (later.structured_content["agent_error"], later.structured_content["notes"])
    _check_unchanged_stack(later)  # the agent started by itself once the GIL was free
    assert "regex-worker" in [th["name"] for th in later.structured_content["threads"]]
    err = text_of(failed)
    if stalled:  # the deadline passed during the stall: the error names the thread holding the GIL, and where
        assert failed.is_error and "agent_timeout" in err, err
        assert "still waited when this answer was given: thread " in err and "in sort_orders (" in err, err


# -- CLI: names from an earlier command, and a watch across a stall --------------------------------------------

def _cli_in_a_gap(markers, *args: str):
    assert _count(markers, "go") == 0, "the first command of the test, before any stall"
    r = flight_cli(*args)
    assert _count(markers, "stall") == 0, "a stall began during the call"
    assert r.returncode == 0, r.stderr
    return r


def _cli_in_a_stall(markers, *args: str):
    import time
    k = _ask_stall(markers)
    deadline = time.monotonic() + 90
    while not (markers / f"stall-{k}").exists():
        assert time.monotonic() < deadline, f"no stall {k}"
        time.sleep(0.005)
    r = flight_cli(*args)
    assert r.returncode == 0, r.stderr
    return r


@pytest.mark.parametrize("version", version_params(("3.8", "3.13")))
def test_cli_names_threads_during_a_stall_and_a_watch_reports_the_stall_it_spanned(spawn, version, tmp_path):
    t, markers = _stalling(spawn, version, REGEX, tmp_path / "markers")
    pid = str(t.pid)
    assert flight_cli(pid, "--cmd", "attach --timeout 60").returncode == 0  # see _attach
    calm = _cli_in_a_gap(markers, pid, "--cmd", "getglobal __main__ config", "--no-color")
    assert '"service": "regex"' in calm.stdout and "GIL" not in calm.stdout
    # a fresh command line during a stall: the names the agent gave the earlier command
    stack = _cli_in_a_stall(markers, pid, "--cmd", "stack", "--no-color")
    assert "(regex-worker) [holds the GIL]" in stack.stdout, stack.stdout
    assert "thread names of" in stack.stdout and "(MainThread)" in stack.stdout
    assert stack.stdout.startswith("note: GIL held: `stack`") and "(regex-worker) holds it" in stack.stdout
    # a watch started in a gap, lasting past the next stall: mark() runs before and after each stall
    watch = _cli_in_a_stall_window(markers, pid)
    lines = watch.stdout.splitlines()
    assert any(line.startswith("GIL held ") and "no other thread ran Python code" in line for line in lines), lines
    [note] = [line for line in lines if line.startswith("note: the GIL was held")]
    assert "(regex-worker) held it when read from outside, in backtrack (" in note, note
    assert "method=__main__.mark" in watch.stdout


def _cli_in_a_stall_window(markers, pid: str):
    """A watch of mark() started after a stall ended, during which the target stalls once more: the stall
    is asked for at once, and the target begins it once mark() is instrumented. mark() runs right before
    and right after the stall, and nowhere else: the watch ends with that second call (-n 2)."""
    import time
    k = _count(markers, "go")
    deadline = time.monotonic() + 90
    while not (markers / f"done-{k}").exists():
        assert time.monotonic() < deadline, f"no end of stall {k}"
        time.sleep(0.005)
    _ask_stall(markers, "hooked")
    r = flight_cli(pid, "--cmd", "watch __main__ mark -n 2 --timeout 60", "--no-color")
    assert r.returncode == 0, r.stderr
    assert (markers / f"done-{k + 1}").exists(), "the watch ended before the stall did"
    assert f"stall-{k + 1}" in r.stdout and f"done-{k + 1}" in r.stdout, r.stdout
    return r
