"""reload on real targets: edit a copy of the source, reload, see the new behaviour; under an active
trace; and every bad input (syntax error, deleted file, lambda, builtin, ...) leaves the old code."""
import json
import subprocess
import sys
import textwrap
import time

import anyio
import pytest

from .conftest import DEMO, flight_cli, version_params
from .mcp_client import mcp_session, text_of

pytestmark = pytest.mark.timeout(240)

OLD_SAVE = "        ORDERS_SEEN.append(order_id)\n"


INSTRUMENTED = ("getglobal sys modules -e \"sum(len(m._sites) for k, m in target.items() "
                "if k.endswith('.instrument') and hasattr(m, '_sites')) > 0\"")


def _poll(pid, cmd, want, timeout=30.0):
    """Runs a read-only command until its output contains want; returns the last output."""
    deadline = time.monotonic() + timeout
    while True:
        r = flight_cli(str(pid), "--cmd", cmd)
        if want in r.stdout or time.monotonic() > deadline:
            return r.stdout + r.stderr
        time.sleep(0.2)


def _value(pid, cmd) -> int:
    """An int the target holds, read through getglobal --json."""
    r = flight_cli(str(pid), "--cmd", cmd, "--json")
    assert r.returncode == 0, r.stderr
    return int(json.loads(r.stdout)["view"]["repr"])


@pytest.mark.parametrize("version", version_params())
def test_reload_edited_copy_of_the_demo(spawn, version):
    t = spawn(version, DEMO.read_text())
    src = t.script.read_text()
    assert OLD_SAVE in src
    t.script.write_text(src.replace(OLD_SAVE, "        ORDERS_SEEN.append(-1000000 - order_id)\n"))
    assert "True" in _poll(t.pid, "getglobal __main__ ORDERS_SEEN -e 'len(target) > 0'", "True")  # READY comes first
    last = _value(t.pid, "getglobal __main__ ORDERS_SEEN -e 'target[-1]'")
    assert "True" in _poll(t.pid, f"getglobal __main__ ORDERS_SEEN -e 'target[-1] > {last}'", "True")  # calls since
    r = flight_cli(str(t.pid), "--cmd", "getglobal __main__ ORDERS_SEEN -e 'min(target) >= 0'")
    assert "VALUE:" in r.stdout and "True" in r.stdout, r.stdout + r.stderr  # an edit alone: old code still runs

    # A person typing reload means it: the CLI runs it without --allow-mutating (MCP needs the flag:
    # test_readonly.test_gate_refuses_reload_and_force_gc_and_annotations_say_so).
    r = flight_cli(str(t.pid), "--cmd", "reload __main__ OrderService save_to_db")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Reload is done successfully.")
    assert f"Located file path: {t.script}" in r.stdout
    first = src.splitlines().index("    def save_to_db(self, order_id, price):") + 1
    assert f"Function: __main__.OrderService.save_to_db (method), lines {first}-{first + 3}" in r.stdout
    out = _poll(t.pid, "getglobal __main__ ORDERS_SEEN -e 'min(target) < -1000000'", "True")
    assert "True" in out, out

    # a second edit: now the running source is known, so the diff shows exactly the change
    t.script.write_text(src.replace(OLD_SAVE, "        ORDERS_SEEN.append(-2000000 - order_id)\n"))
    r = flight_cli("--allow-mutating", str(t.pid), "--cmd", "reload __main__ OrderService save_to_db -v")
    assert r.returncode == 0, r.stderr
    assert "-        ORDERS_SEEN.append(-1000000 - order_id)" in r.stdout
    assert "+        ORDERS_SEEN.append(-2000000 - order_id)" in r.stdout
    assert "Extracted method source:\n    def save_to_db(self, order_id, price):" in r.stdout
    out = _poll(t.pid, "getglobal __main__ ORDERS_SEEN -e 'min(target) < -2000000'", "True")
    assert "True" in out, out
    # the same file again: nothing to do
    r = flight_cli("--allow-mutating", str(t.pid), "--cmd", "reload __main__ OrderService save_to_db")
    assert r.returncode == 0 and r.stdout.startswith("Method source has not changed"), r.stdout + r.stderr
    assert t.alive()


KINDS = textwrap.dedent('''
    import functools
    import os
    import sys
    import time
    from time import sleep

    def deco(f):
        @functools.wraps(f)
        def wrapper(*a, **k):
            return f(*a, **k)
        return wrapper

    class Base(object):
        def hello(self):
            return "base"

    class Svc(Base):
        def hello(self):
            return "svc"

        @classmethod
        def make(cls):
            return "make-1"

        @staticmethod
        def util(x=1):
            return x

    @deco
    def decorated(x):
        return x + 1

    def work(i):
        return helper_old(i)

    def helper_old(i):
        return "old"

    def helper_new(i):
        return "new"

    lam = lambda: 1
    ALIAS = decorated
    SVC = Svc()
    HELLO = SVC.hello
    RESULT = {}
    CALLS = [0]
    TRIGGER = sys.argv[1] if len(sys.argv) > 1 else ""

    def main():
        print("READY", flush=True)
        i = 0
        while True:
            i += 1
            RESULT.update(hello=HELLO(), make=Svc.make(), util=Svc.util(), alias=ALIAS(1), work=work(i))
            CALLS[0] = i
            time.sleep(0.05)

    main()
''')


def _reload(s, pid, *words):
    args = {"pid": pid, "module": words[0]}
    if len(words) == 3:
        args["cls"] = words[1]
    args["method"] = words[-1]
    return s.call_tool("reload", args)


async def _result(s, pid):
    r = await s.call_tool("getglobal", {"pid": pid, "module": "__main__", "field": "RESULT",
                                        "expr": "sorted(target.items())"})
    return r.structured_content["view"]["repr"]


OLD_RESULT = "[('alias', 2), ('hello', 'svc'), ('make', 'make-1'), ('util', 1), ('work', 'old')]"


@pytest.mark.parametrize("version", version_params())
def test_reload_every_kind_and_every_bad_input(spawn, version):
    t = spawn(version, KINDS)
    path = t.script
    src = path.read_text()

    async def expect_error(s, words, *wanted):
        r = await _reload(s, t.pid, *words)
        assert r.is_error, (words, text_of(r))
        for w in wanted:
            assert w in text_of(r), (words, text_of(r))
        assert "The running code is unchanged." in text_of(r)

    async def go():
        async with mcp_session("--allow-mutating") as s:
            await anyio.sleep(0.2)
            assert await _result(s, t.pid) == OLD_RESULT
            # bad input first: each leaves the old code running
            await expect_error(s, ("__main__", "lam"), "is a lambda")
            await expect_error(s, ("__main__", "sleep"), "is a builtin")
            await expect_error(s, ("builtins", "len"), "is a builtin")
            path.write_text(src.replace('return "svc"', 'return "svc" +'))
            line = src.splitlines().index('        return "svc"') + 1
            await expect_error(s, ("__main__", "Svc", "hello"), f"syntax error at line {line}")
            path.write_text(src.replace("def work(i):", "def work_renamed(i):"))
            await expect_error(s, ("__main__", "work"), "no longer defines work")
            path.write_text(src.replace('return "svc"', 'return super().hello() + "-svc"'))
            await expect_error(s, ("__main__", "Svc", "hello"), "closure variables", "__class__", "super()")
            path.write_text(src.replace('def helper_old(i):\n    return "old"', 'def helper_old(i):\n    yield 1'))
            await expect_error(s, ("__main__", "helper_old"), "generator function")
            path.unlink()
            await expect_error(s, ("__main__", "work"), "no longer exists")
            await anyio.sleep(0.2)
            assert await _result(s, t.pid) == OLD_RESULT

            # every kind of function, reached through aliases and bound methods
            path.write_text(src.replace('return "svc"', 'return "svc-2"')
                            .replace('return "make-1"', 'return "make-2"')
                            .replace("def util(x=1):", "def util(x=2):")
                            .replace("return x + 1", "return x + 100")
                            .replace("return helper_old(i)", "return helper_new(i)"))
            for words in (("__main__", "Svc", "hello"), ("__main__", "Svc", "make"), ("__main__", "Svc", "util"),
                          ("__main__", "decorated"), ("__main__", "work")):
                r = await _reload(s, t.pid, *words)
                assert not r.is_error, (words, text_of(r))
                assert r.structured_content["changed"] is True
            kinds = []
            for words in (("__main__", "Svc", "make"), ("__main__", "Svc", "util"), ("__main__", "ALIAS")):
                r = await _reload(s, t.pid, *words)
                kinds.append(r.structured_content["kind"])
                assert r.structured_content["changed"] is False  # already reloaded: nothing to do
            assert kinds == ["classmethod", "staticmethod", "decorated function"]
            await anyio.sleep(0.3)
            assert await _result(s, t.pid) == \
                "[('alias', 101), ('hello', 'svc-2'), ('make', 'make-2'), ('util', 2), ('work', 'new')]"
    anyio.run(go)
    assert t.alive()


def _calls_after(pid, more=0):
    """Waits until the target's main loop made more than `more` calls from now."""
    calls = _value(pid, "getglobal __main__ CALLS -e 'target[0]'")
    assert "True" in _poll(pid, f"getglobal __main__ CALLS -e 'target[0] > {calls + more}'", "True")


def _reload_during(t, capture):
    """Runs `capture` (a trace or watch of work) in a CLI process; once it instruments work and the old
    code ran a few calls, edits work to call helper_new and reloads it. Returns the capture's output
    and the reload's."""
    src = t.script.read_text()
    assert "False" in _poll(t.pid, INSTRUMENTED, "False")  # attached first: no two injections race
    proc = subprocess.Popen([sys.executable, "-m", "flight_mcp.cli", str(t.pid), "--cmd", capture],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "True" in _poll(t.pid, INSTRUMENTED, "True"), "the capture never started"
        _calls_after(t.pid, 3)  # the old code ran under the capture
        t.script.write_text(src.replace("return helper_old(i)", "return helper_new(i)"))
        reload = flight_cli("--allow-mutating", str(t.pid), "--cmd", "reload __main__ work")
        assert reload.returncode == 0, reload.stderr
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    return out, reload.stdout


@pytest.mark.parametrize("version", version_params())
def test_reload_under_an_active_trace(spawn, version):
    t = spawn(version, KINDS)
    out, said = _reload_during(t, "trace __main__ work -n 10000 -i 0 --timeout 10")
    assert "1 active trace/watch instrumentation(s) now run on the new code." in said, said
    assert "helper_old" in out and "helper_new" in out, out[-2000:]
    # calls of the new code were captured after the old ones, and the trace ended by its deadline
    assert out.rindex("helper_old") < out.rindex("helper_new")
    # ending the trace did not put the old code back: calls made after it still run the new code
    _calls_after(t.pid)
    r = flight_cli(str(t.pid), "--cmd", "getglobal __main__ RESULT -e \"target['work'] == 'new'\"")
    assert "VALUE:" in r.stdout and "True" in r.stdout, r.stdout + r.stderr
    # and a new trace sees the new code too
    r = flight_cli(str(t.pid), "--cmd", "trace __main__ work -n 1 -i 0")
    assert r.returncode == 0 and "helper_new" in r.stdout and "helper_old" not in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("version", version_params(["3.8", "3.12"]))
def test_reload_under_an_active_watch(spawn, version):
    t = spawn(version, KINDS)
    out, said = _reload_during(t, "watch __main__ work --expr return_obj -n 10000 --timeout 10")
    assert "now run on the new code" in said, said
    values = [line.split("VALUE:", 1)[1].strip() for line in out.splitlines() if "VALUE:" in line]
    olds, news = values.count('"old"'), values.count('"new"')
    assert olds and news and values == ['"old"'] * olds + ['"new"'] * news, values  # every "new" after every "old"
    r = flight_cli(str(t.pid), "--cmd", "getglobal __main__ RESULT -e \"target['work'] == 'new'\"")
    assert "True" in r.stdout, r.stdout + r.stderr
