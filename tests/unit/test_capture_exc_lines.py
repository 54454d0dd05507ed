"""Where calls raised and returned (issue 12, item 10), without a process: the C recorder, run on
this interpreter's own calls, marks the sub-calls that ended by an exception (kept however cheap,
with the type when an exception it sees later shows it), tree_facts and the host's Node carry it
and the text says it; the agent's line facts (line_at, raise_line) and how watch and tt render them."""
import os
import sys

import pytest

from flight_mcp.agent import capture, native, recording
from flight_mcp.tools import trace, tt, watch

AGENT_DIR = os.path.dirname(recording.__file__)
DRIVER = compile('''
def drive(rec, fn):
    rec.activate(getprofile())
    try:
        fn()
    finally:
        rec.deactivate()
    return rec.finish()
''', os.path.join(AGENT_DIR, "test_exc_driver.py"), "exec")
_scope = {"getprofile": sys.getprofile}
exec(DRIVER, _scope)
drive = _scope["drive"]

C_MODULE, WHY = native.extension()
needs_c = pytest.mark.skipif(C_MODULE is None, reason=str(WHY))


class OutOfStock(KeyError):
    pass


def reserve(stock, sku):
    return stock[sku]                      # raises KeyError here


def reserve_line():
    return reserve.__code__.co_firstlineno + 1


def caught_and_used():
    try:
        reserve({}, "pear")
    except KeyError as e:
        len(e.args)                         # a call in the handler: the recorder sees the exception


def caught_silently():
    try:
        reserve({}, "pear")
    except KeyError:
        pass


def c_call_raises():
    try:
        {}.pop("pear")
    except KeyError as e:
        len(e.args)


def fine():
    reserve({"apple": 1}, "apple")
    len([1])


def raise_out():
    raise OutOfStock("pear")


def propagates():
    raise_out()


def _record(fn, interval_ms=0.1):
    rec = C_MODULE.Recording(fn.__code__, None, "[yield]", recording._kind, sys.setprofile, interval_ms / 1000.0,
                             -1, recording.MAX_NODES, False)
    try:
        drive(rec, fn)
    except BaseException as e:
        rec.resolve(e)
    assert sys.getprofile() is None
    return recording.tree_facts(rec, -1, interval_ms)[0]


def _nodes(root):
    out, todo = [], [root]
    while todo:
        node = todo.pop(0)
        out.append(node)
        todo.extend(node["children"])
    return out


@needs_c
def test_a_cheap_sub_call_that_raised_is_kept_with_its_type_and_line():
    root = _record(caught_and_used, interval_ms=100.0)   # far above what reserve() costs
    [node] = [n for n in _nodes(root) if n["name"] == "reserve"]
    assert (node["raised"], node["exception"], node["raised_at"]) == (True, "KeyError", reserve_line())
    assert not root.get("raised")
    text = trace.render_tree(trace.Node.model_validate(root), False)
    assert text[1].startswith("└─ [") or text[1].startswith("├─ [")
    assert text[1].endswith("] reserve test_capture_exc_lines.py:%d raised KeyError at line %d"
                            % (reserve.__code__.co_firstlineno, reserve_line())), text


@needs_c
def test_an_exception_never_seen_again_is_said_without_a_type():
    root = _record(caught_silently)
    [node] = [n for n in _nodes(root) if n["name"] == "reserve"]
    # this interpreter has no frame evaluator telling the recorder, and no code ran in the handler
    assert (node["raised"], node["exception"], node["raised_at"]) == (True, None, reserve_line())
    line = trace.render_tree(trace.Node.model_validate(root), False)[1]
    assert line.endswith(" raised an exception at line %d" % reserve_line()), line


@needs_c
def test_a_builtin_that_raised_gets_its_type_from_its_callers_handler():
    root = _record(c_call_raises)
    [node] = [n for n in _nodes(root) if n["name"] == "pop"]
    assert (node["kind"], node["raised"], node["exception"]) == ("builtin", True, "KeyError")
    line = trace.render_tree(trace.Node.model_validate(root), False)[1]
    assert line.endswith("] dict.pop <built-in> raised KeyError"), line   # a built-in has no line of its own


@needs_c
def test_an_exception_out_of_the_traced_call_names_every_call_it_left():
    root = _record(propagates)
    [node] = [n for n in _nodes(root) if n["name"] == "raise_out"]
    assert (node["raised"], node["exception"]) == (True, "OutOfStock")   # the class's qualified name


@needs_c
def test_calls_that_returned_say_nothing_of_exceptions():
    root = _record(fine, interval_ms=0.0)
    assert [n["name"] for n in _nodes(root)] == ["fine", "reserve", "len"]
    assert not any(n.get("raised") for n in _nodes(root))
    assert all(" raised" not in line for line in trace.render_tree(trace.Node.model_validate(root), False))


@needs_c
def test_cheap_raises_kept_are_bounded():
    def many():
        for _ in range(100):
            try:
                {}.pop(1)
            except KeyError as e:
                len(e.args)
    root = _record(many, interval_ms=100.0)
    kept = [n for n in _nodes(root) if n.get("raised")]
    assert len(kept) == 20 and all(n["exception"] == "KeyError" for n in kept)


def test_line_at_finds_the_return_statement():
    import dis

    def two_returns(x):
        if x:
            return 1
        y = x + 1
        return y
    first = two_returns.__code__.co_firstlineno
    offsets = [i.offset for i in dis.get_instructions(two_returns) if i.opname.startswith("RETURN")]
    assert [capture.line_at(two_returns.__code__, o) for o in offsets] == [first + 2, first + 4]
    assert capture.line_at(two_returns.__code__, -1) is None


def test_raise_line_is_the_functions_own_entry():
    try:
        caught_and_used_outer()
    except KeyError as e:
        tb = e.__traceback__
    assert capture.raise_line(tb, reserve.__code__) == reserve_line()
    assert capture.raise_line(tb, caught_and_used_outer.__code__) == caught_and_used_outer.__code__.co_firstlineno + 1


def caught_and_used_outer():
    reserve({}, "x")


RECORD = dict(time=1.0, cost_ms=0.5, thread="w", tid=1)


def test_watch_header_says_the_line():
    ret = watch.Record(is_exp=False, line=42, **RECORD)
    raised = watch.Record(is_exp=True, line=57, **RECORD)
    unknown = watch.Record(is_exp=False, **RECORD)
    assert watch.render_record(ret, "m.f", "args", False)[1].endswith(" thread=w returned at line 42 result={")
    assert watch.render_record(raised, "m.f", "args", False)[1].endswith(" thread=w raised at line 57 result={")
    assert watch.render_record(unknown, "m.f", "args", False)[1].endswith(" thread=w result={")
    assert watch.Record.model_validate(ret.model_dump()).line == 42


def test_tt_shows_the_line():
    row = dict(index=1000, module="m", method="f", target="m.f", **RECORD)
    lines = tt.shown_lines(tt.Shown(is_exp=True, line=57, **row), False)
    assert " LINE                raised at line 57" in lines
    assert not any(line.startswith(" LINE") for line in tt.shown_lines(tt.Shown(is_exp=False, **row), False))


def test_a_return_inside_a_with_block_is_at_its_own_line_not_the_with_line():
    """3.10+ give the code leaving a `with` the with statement's line: the return line is the last
    line the block ran (an agent once read 'returned at line 54' for a return on line 57)."""
    import dis
    import textwrap
    src = textwrap.dedent('''
        def get(d, k, lock, f):
            with lock:
                if k in d:
                    return d[k]
                v = 1
            return v
        def nested(lock, f):
            with lock:
                with f:
                    x = 1
                    return x
        def one(lock):
            with lock: return 1
    ''')
    ns = {}
    exec(compile(src, "<with>", "exec"), ns)

    def return_lines(fn):
        code = fn.__code__
        return sorted(set(capture.line_at(code, i.offset) for i in dis.get_instructions(code)
                          if i.opname in ("RETURN_VALUE", "RETURN_CONST")))
    assert return_lines(ns["get"]) == [5, 7]
    assert return_lines(ns["nested"]) == [12]
    assert return_lines(ns["one"]) == [14]
