"""Answers while one thread holds the GIL for seconds inside a single C call (issue 16).

Targets (real processes, pyenv Pythons): a worker thread that every few seconds runs a catastrophically
backtracking regular expression (tests/targets/gil_regex_stall.py), or sorts a big list of tuples
(tests/targets/gil_sort_stall.py). Each stall is announced by a marker file the worker creates right
before it (stall-N) and right after it (done-N): the tests synchronise on those, never on the clock. A
call counts as "outside a stall" only if no stall began before its answer came back (else it is retried
in the next gap), and "during a stall" when it is sent after stall-N appeared and before done-N did.
"""
from __future__ import annotations

import anyio
import pytest

from .conftest import version_params
from .mcp_client import mcp_session, text_of

pytestmark = pytest.mark.timeout(240)

REGEX = "gil_regex_stall"
SORT = "gil_sort_stall"
STALL_S, GAP_S = "3", "2"


def _count(markers, kind: str) -> int:
    return sum(1 for p in markers.iterdir() if p.name.startswith(kind + "-"))


async def _until(predicate, what: str, timeout: float = 90.0) -> None:
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.005)


async def _in_a_gap(s, markers, tool: str, args: dict):
    """The answer to a call made and answered between two stalls."""
    for _ in range(4):
        await _until(lambda: _count(markers, "stall") == _count(markers, "done"), "the end of a stall")
        began = _count(markers, "stall")
        r = await s.call_tool(tool, args)
        if _count(markers, "stall") == began:
            assert not r.is_error, text_of(r)
            return r
    raise AssertionError(f"{tool} never fitted between two stalls")


async def _in_a_stall(s, markers, tool: str, args: dict):
    """The answer to a call sent while a stall runs (right after its marker appeared)."""
    k = _count(markers, "stall") + 1
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


def _check_unchanged_stack(r) -> None:
    out = r.structured_content
    assert out["source"] == "agent" and out["agent_error"] is None and out["gil_wait"] is None, out
    assert "GIL" not in text_of(r).splitlines()[0]


@pytest.mark.parametrize("version", version_params())
def test_stack_during_a_regex_stall_reads_the_holder_from_outside(spawn, version, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    t = spawn(version, REGEX, args=[str(markers), STALL_S, GAP_S])

    async def go():
        async with mcp_session() as s:
            args = {"pid": t.pid, "timeout_s": 60}
            calm = await _in_a_gap(s, markers, "stack", args)  # attaches; the agent answers
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
    markers = tmp_path / "markers"
    markers.mkdir()
    t = spawn(version, REGEX, args=[str(markers), STALL_S, GAP_S])

    async def go():
        async with mcp_session() as s:
            args = {"pid": t.pid, "module": "__main__", "field": "config", "timeout_s": 60}
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
    markers = tmp_path / "markers"
    markers.mkdir()
    t = spawn(version, SORT, args=[str(markers), STALL_S, GAP_S])

    async def go():
        async with mcp_session() as s:
            args = {"pid": t.pid, "timeout_s": 60}
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
