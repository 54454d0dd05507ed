"""The application's own thread never runs the target's code for us, and views run none at all
(every pyenv Python 3.8-3.13, real injection, the real CLI).

The target's worker thread holds HELD for ever while it calls transfer() in a loop; every method of
Account/Boom that flight-mcp could be tempted to call (__repr__, __str__, __eq__, __len__, __iter__, a
property, the worker Thread's `name` property) waits for HELD, so it blocks for ever on any thread, and
deadlocks the worker if run inside its call. SLOW's __repr__ sleeps 10 s.
"""
import json
import time

import pytest

from .conftest import flight_cli, version_params

pytestmark = pytest.mark.timeout(240)

TARGET = r'''
import threading
import time

HELD = threading.Lock()
COUNT = 0


def blocked():
    HELD.acquire()  # the worker holds it for ever


class Account(object):
    def __init__(self, owner, balance):
        self.owner = owner
        self.balance = balance

    def __repr__(self):
        blocked()
        return "Account(%r)" % self.owner

    def __str__(self):
        blocked()
        return "account"

    def __eq__(self, other):
        blocked()
        return False

    __hash__ = object.__hash__

    def __len__(self):
        blocked()
        return 1

    def __iter__(self):
        blocked()
        return iter(())

    @property
    def total(self):
        blocked()
        return 0


class Boom(Exception):
    def __str__(self):
        blocked()
        return "boom"


class Slow(object):
    def __repr__(self):
        time.sleep(10)
        return "Slow()"


class AppThread(threading.Thread):
    @property
    def name(self):
        blocked()
        return "never"


def transfer(acct, amount):
    return acct.balance + amount


def transfer_fail(acct):
    raise Boom(acct)


def work():
    global COUNT
    HELD.acquire()
    while True:
        transfer(ACCT, 5)
        try:
            transfer_fail(ACCT)
        except Boom:
            pass
        COUNT += 1
        time.sleep(0.005)


ACCT = Account("ann", 10)
SLOW = Slow()
DEEP = []
for _ in range(5000):
    DEEP = [DEEP]
AppThread(target=work, name="app-worker", daemon=True).start()
print("READY", flush=True)
while True:
    time.sleep(0.1)
'''

TIMED_OUT = "timed out after 200 ms>"


def cli_json(pid, cmd, timeout=60):
    started = time.monotonic()
    r = flight_cli(str(pid), "--cmd", cmd, "--json", timeout=timeout)
    assert r.returncode == 0 and "Traceback (most recent call last)" not in r.stderr, f"{cmd}: {r.stdout}\n{r.stderr}"
    return json.loads(r.stdout), time.monotonic() - started


def count(pid):
    return int(cli_json(pid, "getglobal __main__ COUNT")[0]["view"]["repr"])


@pytest.mark.parametrize("version", version_params())
def test_application_thread_runs_no_target_code(spawn, version):
    t = spawn(version, TARGET)
    before = count(t.pid)

    # watch: the record arrives, built from the state; the worker is never blocked inside its call
    out, took = cli_json(t.pid, "watch __main__ transfer -n 1 --timeout 15")
    assert out["captured"] == 1 and took < 12, (out, took)
    rec = out["records"][0]
    acct = rec["view"]["children"][0]["view"]["children"][0]["view"]
    assert acct["type"] == "__main__.Account" and "'owner': 'ann'" in acct["repr"], acct
    assert rec["thread"] == "app-worker", rec["thread"]  # the Thread's own field, not its property
    # -r: the target's own __repr__, on an agent thread, shown as timed out
    out, _ = cli_json(t.pid, "watch __main__ transfer -n 1 -r --timeout 15")
    assert out["captured"] == 1 and "<repr of Account: " + TIMED_OUT in out["records"][0]["view"]["repr"], out
    # an exception whose __str__ blocks: message shown as timed out, traceback from the files
    out, _ = cli_json(t.pid, "watch __main__ transfer_fail -e -n 1 --timeout 15")
    rec = out["records"][0]
    assert out["captured"] == 1 and rec["exception"]["type"] == "Boom", rec
    assert rec["exception"]["message"] == "<str of Boom: " + TIMED_OUT, rec
    frames = rec["exception"]["frames"]
    assert any(f["name"] == "transfer_fail" and f["source"] == "raise Boom(acct)" for f in frames), frames

    # a module listing: every global comes at once, the sleeping one without its __repr__ ...
    out, took = cli_json(t.pid, "getglobal __main__")
    entries = {e["name"]: e for e in out["entries"]}
    assert took < 10 and {"ACCT", "SLOW", "COUNT", "transfer"} <= set(entries), (took, entries)
    assert entries["SLOW"]["value"] == "Slow({})" and "'owner': 'ann'" in entries["ACCT"]["value"]
    # ... and with -r, the slow and blocked ones say so while the rest still comes
    out, took = cli_json(t.pid, "getglobal __main__ -r")
    entries = {e["name"]: e["value"] for e in out["entries"]}
    assert took < 10 and TIMED_OUT in entries["SLOW"] and TIMED_OUT in entries["ACCT"], (took, entries)
    assert entries["COUNT"].isdigit() and entries["transfer"].startswith("<function transfer at 0x")

    # vmtool: the instance's state; -r says the repr could not run (timed out, or blocked threads left)
    out, _ = cli_json(t.pid, "vmtool -a getInstances -c '__main__ Account' -x 2")
    assert out["total"] == 1 and "'owner': 'ann'" in out["view"]["children"][0]["view"]["repr"], out
    out, took = cli_json(t.pid, "vmtool -a getInstances -c '__main__ Account' -r")
    text = out["view"]["repr"]
    assert (TIMED_OUT in text or "still blocked" in text) and took < 10, text

    # deep data: the view and the raw line end with a note instead of recursing
    for flags in ("-x 6", "-r"):
        out, _ = cli_json(t.pid, "getglobal __main__ DEEP " + flags)
        assert "...(1 items)" in out["view"]["repr"], out["view"]["repr"][:300]

    # the application kept going all along
    assert count(t.pid) > before and t.alive()
