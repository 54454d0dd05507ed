"""mem on real targets, every Python 3.8-3.13: summary shows types and the RSS; diff on a real leak
(tests/targets/leaky_registry.py) names the leaking type AND who holds it; flight-mcp's own objects
appear neither as types nor as owners; flight_profiler's command lines work unchanged."""
import json

import anyio
import pytest

from .conftest import flight_cli, version_params
from .mcp_client import mcp_session, text_of

pytestmark = pytest.mark.timeout(240)

# the agent's module prefix and its classes: none may show as a type or in an owner path
OUR_CLASSES = {"CommandContext", "Connection", "_Sizes", "_Scan", "Reader", "Layout", "_Namer", "Capture"}


def _ours(text):
    """Whether a type name or owner path names the agent's module or one of its classes."""
    words = text.replace("[", ".").replace("(", ".").replace(" ", ".").split(".")
    return "flight_mcp" in text or any(w in OUR_CLASSES for w in words)


def _cli(pid, cmd, *extra):
    r = flight_cli(*extra, str(pid), "--cmd", cmd, "--no-color")
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


@pytest.mark.parametrize("version", version_params(["3.8", "3.13"]))  # this file's core test runs on every version
def test_summary_shows_types_and_rss_and_not_ours(spawn, version):
    t = spawn(version, "leaky_registry")
    out = _cli(t.pid, "mem summary --limit 3 --order descending")
    lines = out.splitlines()
    assert lines[0].startswith("RSS ") and "GC-tracked objects" in lines[0], out
    head = next(i for i, line in enumerate(lines) if line.split("|")[0].strip() == "types")
    rows = lines[head + 2:head + 5]
    assert len(rows) == 3 and all(row.count("|") == 2 for row in rows), out
    assert "more types" in lines[head + 5], out

    full = json.loads(_cli(t.pid, "mem summary --limit 100000", "--json"))
    assert full["rss_bytes"] > 1_000_000 and full["tracked_objects"] > 1000
    names = [r["type"] for r in full["types"]]
    assert len(names) == full["types_total"]
    assert "__main__.Subscription" in names and "__main__.SubscriptionRegistry" in names and "dict" in names
    assert not [n for n in names if _ours(n)], names
    assert full["excluded_own"] > 0
    sizes = [r["size"] for r in full["types"]]
    assert sizes == sorted(sizes, reverse=True)
    registry = next(r for r in full["types"] if r["type"] == "__main__.SubscriptionRegistry")
    assert registry["count"] == 1 and registry["size"] > 0

    up = json.loads(_cli(t.pid, "mem summary --limit 5 --order ascending", "--json"))
    small = [r["size"] for r in up["types"]]
    assert small == sorted(small) and len(small) == 5 and small[-1] <= sizes[0]


@pytest.mark.parametrize("version", version_params())
def test_diff_names_the_leak_and_its_owner(spawn, version):
    t = spawn(version, "leaky_registry")

    async def go():
        async with mcp_session() as s:
            r = await s.call_tool("mem", {"pid": t.pid, "action": "diff", "interval": 2, "limit": 10})
            assert not r.is_error, text_of(r)
            out = r.structured_content
            growers = {g["type"]: g for g in out["growers"]}
            assert "__main__.Subscription" in growers, text_of(r)
            sub = growers["__main__.Subscription"]
            assert sub["count_delta"] >= 10 and sub["new_found"] >= 10, sub
            assert sub["owners"][0]["path"] == "SubscriptionRegistry._by_topic[*][*]", sub
            assert sub["owners"][0]["count"] == sub["sampled"], sub
            text = text_of(r)
            assert f"+{sub['count_delta']} __main__.Subscription, held in SubscriptionRegistry._by_topic[*][*]" in text
            # the callbacks leak with them, held by each Subscription
            fn = growers.get("function")
            assert fn is not None and fn["owners"][0]["path"] == "Subscription.callback", text
            for g in out["growers"]:
                assert not _ours(g["type"]), g
                for o in g["owners"]:
                    assert o["path"] is None or not _ours(o["path"]), g
            assert not [row for row in out["rows"] if _ours(row["type"])], out["rows"]
            assert out["snapshot_bytes"] == 8 * out["tracked_before"] or out["snapshot_bytes"] > 0
    anyio.run(go)


@pytest.mark.parametrize("version", version_params(["3.8", "3.13"]))  # this file's core test runs on every version
def test_flight_profiler_command_lines(spawn, version):
    t = spawn(version, "leaky_registry")
    out = _cli(t.pid, "mem diff --interval 1 --limit 3 --order descending")
    assert "types |" in out and "WHO HOLDS THE NEW OBJECTS" in out, out
    assert "held in SubscriptionRegistry._by_topic[*][*]" in out, out
    r = flight_cli(str(t.pid), "--cmd", "mem sizes")
    assert r.returncode != 0 and "summary" in (r.stdout + r.stderr)
