"""tt on real targets, every pyenv Python 3.8-3.13: record, list, show, delete, replay (its effect
seen in the target; refused over MCP without --allow-mutating), the table's bound, the function's
own code back after recording, what records hold freed on delete and on detach."""
import re
import time

import anyio
import pytest

from .conftest import flight_cli, version_params
from .mcp_client import mcp_session, text_of

pytestmark = pytest.mark.timeout(300)

ROW = re.compile(r"^ (\d+)\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d:\d{3}\s+(\d+\.\d{3})\s+(True|False)\s+(True|False)\s+"
                 r"(\S+)\s+(\S+)(?: \(replay of (\d+)\))?\s+(\S+)$")


def run(pid, cmd, *extra, ok=True):
    r = flight_cli(*extra, str(pid), "--cmd", cmd, "--no-color")
    if ok:
        assert r.returncode == 0, f"{cmd}: {r.stdout}\n{r.stderr}"
        return r.stdout
    assert r.returncode != 0, f"{cmd} should have failed: {r.stdout}"
    return r.stdout + r.stderr


def rows(out):
    """(index, is_ret, is_exp, module, method, thread) of each table row."""
    found = [ROW.match(line) for line in out.splitlines()]
    return [(int(m.group(1)), m.group(3), m.group(4), m.group(5), m.group(6), m.group(8)) for m in found if m]


def header_ok(out):
    head = next(line for line in out.splitlines() if "INDEX" in line)
    return all(word in head for word in ("INDEX", "COST", "MODULE", "METHOD"))


def getglobal(pid, field, expr="target"):
    return run(pid, f"getglobal __main__ {field} -e '{expr}'").strip().splitlines()[-1].split()[-1]


def oid_of(out):
    return int(re.search(r'"oid": (\d+)', out).group(1))


def wait_intact(pid):
    """The target checks after each loop that charge runs its own code, with no monitoring events."""
    deadline = time.monotonic() + 10
    while getglobal(pid, "INTACT") != "True":
        assert time.monotonic() < deadline, "charge did not get its own code back"
        time.sleep(0.2)


@pytest.mark.parametrize("version", version_params())
def test_record_list_show_replay_delete_detach(spawn, version):
    t = spawn(version, "tt_target")
    out = run(t.pid, "tt -t __main__ charge -n 3 -f 'args[0].amount < 0'")
    assert header_ok(out), out
    recorded = rows(out)
    assert [r[0] for r in recorded] == [1000, 1001, 1002], out
    assert all(r[1:] == ("False", "True", "__main__", "charge", "charger") for r in recorded), out
    assert "3 of 3 captured" in out and "The table holds 3 records (at most 1000" in out
    wait_intact(t.pid)

    out = run(t.pid, "tt -t __main__ Shop sell -n 2")
    assert [r[0] for r in rows(out)] == [1003, 1004] and rows(out)[0][4] == "Shop.sell", out
    wait_intact(t.pid)

    listing = run(t.pid, "tt -l")
    assert header_ok(listing) and [r[0] for r in rows(listing)] == [1000, 1001, 1002, 1003, 1004], listing
    assert [r[0] for r in rows(run(t.pid, "tt -l -m __main__.Shop.sell"))] == [1003, 1004]
    assert [r[0] for r in rows(run(t.pid, "tt -l -f 'return_obj is not None'"))] == [1003, 1004]

    shown = run(t.pid, "tt -i 1000")
    assert " IS_EXCEPTION        True" in shown and "ValueError: negative amount -1" in shown, shown
    assert re.search(r"^ ARGS\s+order=Order\(\{$", shown, re.M) and " KWARGS              note=" in shown, shown
    assert "flight_mcp" not in shown

    shown = run(t.pid, "tt -i 1003 -x 1")
    assert re.search(r'^ TARGET\s+Shop\(\{$', shown, re.M) and '"main-shop"' in shown, shown
    assert re.search(r'"total": 9', shown), shown
    oid = oid_of(shown)
    assert getglobal(t.pid, "ALIVE", f"{oid} in target") == "True"      # the record holds its argument
    assert getglobal(t.pid, "CHARGED", f"target[{oid}]") == "1"

    # replay: typed on the CLI it runs; the function runs again with the recorded arguments
    out = run(t.pid, "tt -i 1003 -p")
    assert "Replayed record 1003 as record 1005:" in out and " REPLAY_OF           1003" in out, out
    assert "flight-mcp-replay" in out and f'"oid": {oid}' in out
    assert getglobal(t.pid, "CHARGED", f"target[{oid}]") == "2"
    assert rows(run(t.pid, "tt -l"))[-1][0] == 1005

    # delete frees what a record holds (the replay's record holds the same order)
    assert "Index 1003 is deleted successfully." in run(t.pid, "tt -d 1003")
    assert "record_not_found" in run(t.pid, "tt -i 1003", ok=False)
    assert "record_not_found" in run(t.pid, "tt -d 1003", ok=False)
    assert getglobal(t.pid, "ALIVE", f"{oid} in target") == "True"
    run(t.pid, "tt -d 1005")
    assert getglobal(t.pid, "ALIVE", f"{oid} in target") == "False"

    # detach empties the table: the recorded orders are freed, a new agent starts with no records
    kept = oid_of(run(t.pid, "tt -i 1000"))
    assert getglobal(t.pid, "ALIVE", f"{kept} in target") == "True"
    run(t.pid, "detach")
    assert getglobal(t.pid, "ALIVE", f"{kept} in target") == "False"
    assert "No records" in run(t.pid, "tt -l")
    assert t.proc.poll() is None


@pytest.mark.parametrize("version", version_params(["3.8", "3.13"]))  # this file's core test runs on every version
def test_the_table_is_bounded(spawn, version):
    t = spawn(version, "tt_target")
    out = run(t.pid, "tt -t __main__ tick -n 100000000 --timeout 60")
    assert "capped at 1000" in out and "1000 of 1000 captured" in out, out[-600:]
    out = run(t.pid, "tt -t __main__ tick -n 50")
    assert "The table holds 1000 records (at most 1000" in out and "50 dropped so far" in out, out[-600:]
    listing = rows(run(t.pid, "tt -l"))
    assert len(listing) == 1000 and listing[0][0] == 1050 and listing[-1][0] == 2049
    assert "All time fragments are deleted (1000 records)." in run(t.pid, "tt -da")
    assert [r[0] for r in rows(run(t.pid, "tt -t __main__ tick -n 1"))] == [1000]


@pytest.mark.parametrize("version", version_params(["3.8", "3.13"]))  # this file's core test runs on every version
def test_mcp_replay_needs_allow_mutating(spawn, version):
    t = spawn(version, "tt_target")

    async def go():
        async with mcp_session() as s:
            rec = await s.call_tool("tt", {"pid": t.pid, "time_tunnel": True, "module": "__main__",
                                           "cls": "Shop", "method": "sell", "limit": 1})
            shown = await s.call_tool("tt", {"pid": t.pid, "index": 1000, "expand": 1})
            refused = await s.call_tool("tt", {"pid": t.pid, "index": 1000, "play": True})
        async with mcp_session("--allow-mutating") as s:
            played = await s.call_tool("tt", {"pid": t.pid, "index": 1000, "play": True})
        return rec, shown, refused, played

    rec, shown, refused, played = anyio.run(go)
    assert not rec.is_error, text_of(rec)
    recording = rec.structured_content["recording"]
    assert recording["captured"] == 1 and recording["records"][0]["index"] == 1000
    assert recording["records"][0]["target"] == "__main__.Shop.sell" and "INDEX" in text_of(rec)
    record = shown.structured_content["record"]
    assert record["instance"]["type"] == "__main__.Shop" and record["args"][0]["name"] == "order"
    oid = int(next(c["view"]["repr"] for c in record["args"][0]["view"]["children"] if "oid" in c["name"]))
    assert refused.is_error and refused.structured_content["error"]["code"] == "read_only", text_of(refused)
    assert "--allow-mutating" in text_of(refused)
    assert not played.is_error, text_of(played)
    assert played.structured_content["replay_of"] == 1000 and played.structured_content["record"]["index"] == 1001
    assert getglobal(t.pid, "CHARGED", f"target[{oid}]") == "2"   # once by the application, once by the replay
