"""attach -> stack / module / getglobal -> detach against real targets, on every Python 3.8-3.13.

Through the real CLI (`--json` for the structured result). Covers: idle, busy with a second
thread, 50 threads; idempotent attach; the agent's own threads and frames left out of stack;
nothing printed by the agent into the target; detach closes the socket and a re-attach injects
afresh; the target's threading still knows its real main thread after attach (3.11/3.12 trap).
"""
import json
import os
import re

import pytest

from .conftest import TARGETS_DIR, flight_cli, version_params

pytestmark = pytest.mark.timeout(180)


def cli_json(pid, cmd):
    r = flight_cli(str(pid), "--cmd", cmd, "--json")
    assert r.returncode == 0, f"{cmd}: exit {r.returncode}\n{r.stderr}"
    assert "Traceback (most recent call last)" not in r.stderr
    return json.loads(r.stdout)


def socket_path(pid):
    return f"/tmp/flight-mcp-{os.stat(f'/proc/{pid}').st_uid}/agent-{pid}.sock"


def assert_no_agent_traces(stack):
    for t in stack["threads"]:
        assert not t["name"].startswith("flight-mcp"), t["name"]
        for f in t["frames"]:
            assert "/flight-mcp-" not in f["file"] and "flight_mcp" not in f["file"], f


def finish(target):
    """Kills the target and returns (stdout after READY, stderr): what the agent may have printed."""
    target.kill()
    return target.proc.stdout.read(), target.proc.stderr.read()


@pytest.mark.parametrize("version", version_params())
def test_idle_attach_stack_module_getglobal_detach_reattach(spawn, version):
    t = spawn(version, "idle")
    first = cli_json(t.pid, "attach")
    assert first["injection"]["method"] == "pyinjector"
    assert first["python_version"].startswith(version + ".")
    assert first["pid"] == t.pid and first["thread_count"] == 1
    assert os.path.exists(socket_path(t.pid))

    again = cli_json(t.pid, "attach")
    assert again["injection"] == {"method": "already attached"}

    stack = cli_json(t.pid, "stack")
    assert len(stack["threads"]) == 1, [th["name"] for th in stack["threads"]]  # the agent's are left out
    main = stack["threads"][0]
    assert main["main"] and main["name"] == "MainThread"
    assert main["frames"][-1]["file"] == str(TARGETS_DIR / "idle.py")
    assert main["frames"][-1]["source"] == "time.sleep(0.1)"
    assert_no_agent_traces(stack)

    assert cli_json(t.pid, f"module {TARGETS_DIR / 'idle.py'}")["modules"][0] == "__main__"
    value = cli_json(t.pid, "getglobal __main__ CONFIG -x 2")["view"]
    assert value["type"] == "dict" and "'port': 5432" in value["repr"]
    assert cli_json(t.pid, "getglobal __main__ Settings region")["view"]["repr"] == "'eu-west'"
    listing = cli_json(t.pid, "getglobal __main__ --cls Settings")
    assert {e["name"] for e in listing["entries"]} == {"region", "limits"}

    done = cli_json(t.pid, "detach")
    assert done["detached"] is True
    assert not os.path.exists(socket_path(t.pid)), "detach must close the agent's socket"
    assert cli_json(t.pid, "detach")["detached"] is False  # nothing left to detach

    back = cli_json(t.pid, "attach")
    assert back["injection"]["method"] == "pyinjector", "a re-attach after detach injects afresh"
    assert cli_json(t.pid, "getglobal __main__ CONFIG -e \"target['retries']\"")["view"]["repr"] == "3"
    cli_json(t.pid, "detach")
    assert t.alive()
    out, err = finish(t)
    assert out == "" and err == "", f"the agent printed into the target: {out!r} {err!r}"


@pytest.mark.parametrize("version", version_params())
def test_busy_target_borrows_the_napping_thread(spawn, version):
    t = spawn(version, "busy")
    att = cli_json(t.pid, "attach")
    assert att["injection"]["method"] == "pyinjector"
    assert att["injection"]["thread"] != t.pid, "the main thread never blocks: only the napper is safe"
    stack = cli_json(t.pid, "stack")
    by_name = {th["name"]: th for th in stack["threads"]}
    assert set(by_name) == {"MainThread", "napper"}, set(by_name)
    assert by_name["MainThread"]["frames"][-1]["name"] == "spin"
    assert by_name["napper"]["frames"][-1]["name"] == "napping"
    assert by_name["napper"]["daemon"] is True and by_name["MainThread"]["daemon"] is False
    assert_no_agent_traces(stack)
    before = int(cli_json(t.pid, "getglobal __main__ COUNTER -e target[0]")["view"]["repr"])
    after = int(cli_json(t.pid, "getglobal __main__ COUNTER -e target[0]")["view"]["repr"])
    assert after > before, "the busy loop must keep running while attached"
    cli_json(t.pid, "detach")
    assert t.alive()
    out, err = finish(t)
    assert out == "" and err == ""


@pytest.mark.parametrize("version", version_params())
def test_fifty_threads(spawn, version):
    t = spawn(version, "threads50")
    stack = cli_json(t.pid, "stack")
    names = sorted(th["name"] for th in stack["threads"])
    assert names == sorted(["MainThread"] + ["parked-%02d" % i for i in range(50)])
    for th in stack["threads"]:
        assert th["native_id"] is None or th["native_id"] > 0
        if th["name"].startswith("parked-"):
            assert any(f["name"] == "parked" for f in th["frames"]), th
    assert_no_agent_traces(stack)
    assert cli_json(t.pid, "attach")["thread_count"] == 51
    cli_json(t.pid, "detach")
    assert t.alive()


@pytest.mark.parametrize("version", version_params())
def test_main_thread_stays_main_after_attach(spawn, version, tmp_path):
    """The target imports threading only after we attached and ran commands: threading must still
    take its main thread for the main thread (importing threading first from the agent's thread
    would make that thread 'main' on 3.11/3.12)."""
    trigger = tmp_path / "go"
    t = spawn(version, "no_threading", args=[str(trigger)])
    assert cli_json(t.pid, "attach")["injection"]["method"] == "pyinjector"
    stack = cli_json(t.pid, "stack")
    assert [th["name"] for th in stack["threads"]] == ["MainThread"]
    # as threading would say it: not a daemon, its OS thread id is the pid
    assert stack["threads"][0]["daemon"] is False and stack["threads"][0]["native_id"] == t.pid
    record = cli_json(t.pid, "watch __main__ tick -n 1")["records"][0]
    assert (record["thread"], record["daemon"]) == ("MainThread", False), record
    inv = cli_json(t.pid, "trace __main__ tick -n 1")["invocations"][0]
    assert (inv["thread"], inv["daemon"]) == ("MainThread", False), inv
    assert "threading" not in {e["name"] for e in cli_json(t.pid, "getglobal __main__")["entries"]}
    cli_json(t.pid, f"module {TARGETS_DIR / 'no_threading.py'}")
    assert cli_json(t.pid, "attach")["injection"]["method"] == "already attached"
    trigger.write_text("go")  # the agent is still attached while the target imports threading
    assert t.read_line() == "MAIN_IS_CURRENT True"
    assert t.read_line() == "MAIN_NAME MainThread"
    # The script ends there: with the agent still attached, it must exit as usual.
    assert t.proc.wait(timeout=10) == 0, t.proc.stderr.read()
    assert t.proc.stderr.read() == ""


@pytest.mark.parametrize("version", version_params(["3.8", "3.12"]))
def test_two_processes_attaching_at_once_share_one_agent(spawn, version):
    """A CLI and another CLI (or a server) racing to a fresh target: one injects, the other finds
    its agent; both answer, and exactly one agent listens."""
    import subprocess
    import sys

    t = spawn(version, "idle")
    cmd = [sys.executable, "-m", "flight_mcp.cli", str(t.pid), "--json", "--cmd", "attach"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    methods = sorted(json.loads(o[0])["injection"]["method"] for o in outs)
    assert methods.count("already attached") == 2, methods
    r = flight_cli(str(t.pid), "--cmd", "stack")
    assert r.returncode == 0 and "time.sleep(0.1)" in r.stdout, r.stderr
    assert flight_cli(str(t.pid), "--cmd", "detach").returncode == 0
    assert t.alive()


@pytest.mark.parametrize("version", version_params(["3.10", "3.13"]))
def test_target_holding_the_gil_gets_one_payload_however_often_we_ask(spawn, version):
    """While an injected agent waits for the GIL, another attach waits for it instead of queueing a
    second payload behind it; the error says why and what to do."""
    t = spawn(version, "gil_stuck")
    for _ in range(2):
        r = flight_cli(str(t.pid), "--cmd", "getglobal __main__ --timeout 1.5")
        assert r.returncode == 1 and "waits for the GIL" in r.stderr and "native=true" in r.stderr, r.stderr
        with open(f"/proc/{t.pid}/maps") as f:
            payloads = set(re.findall(r"inject-\d+-[0-9a-f]+\.so", f.read()))
        assert len(payloads) == 1, payloads
    assert t.alive()
