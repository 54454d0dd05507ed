"""source's agent command called in-process on a module loaded from a file this test writes, with
exactly the request the host sends: line numbers, the file compared with the running code (same,
moved, differs, missing), no-source answers, errors with their codes; and the text rendering."""
import importlib.util
import sys
import textwrap
import uuid

import pytest

from flight_mcp.agent import cmd_source
from flight_mcp.agent.registry import AgentError
from flight_mcp.errors import FlightError
from flight_mcp.tools.base import Tool
from flight_mcp.tools.source import TOOL, SourceParams, SourceResult

TEXT = textwrap.dedent('''\
    import os


    def plain(a):
        return a + 1


    class Shop:
        rate = 2

        def price(self, n):
            return n * self.rate

        def outer(self):
            def inner(v):
                return v
            return inner

        @property
        def total(self):
            return 1

        @classmethod
        def make(cls): return cls()


    if os.sep:
        def conditional():
            return os.getpid()
    ''')


class Stand:
    cancelled = False


@pytest.fixture
def mod(tmp_path):
    name = "src_unit_%s" % uuid.uuid4().hex[:8]
    path = tmp_path / (name + ".py")
    path.write_text(TEXT)
    spec = importlib.util.spec_from_file_location(name, path)
    m = importlib.util.module_from_spec(spec)
    sys.modules[name] = m
    spec.loader.exec_module(m)
    yield m
    sys.modules.pop(name, None)


def ask(module, cls=None, method=None, nested=None, limit=400):
    p = SourceParams(pid=1, module=module, cls=cls, method=method, nested_method=nested, limit=limit)
    return SourceResult(**cmd_source.source(dict(p.agent_args(), allow_mutating=False, may_change_target=False),
                                            Stand()))


def test_function_method_nested_class_with_line_numbers(mod):
    lines = TEXT.splitlines()
    r = ask(mod.__name__, method="plain")
    assert (r.kind, r.first_line, r.lines, r.disk, r.origin) == ("function", 4, lines[3:5], "same", "file")
    r = ask(mod.__name__, cls="Shop", method="price")
    assert (r.kind, r.first_line, r.lines) == ("method", 11, lines[10:12])
    r = ask(mod.__name__, cls="Shop", method="outer", nested="inner")
    assert (r.kind, r.qualname, r.first_line, r.lines) == ("nested function", "Shop.outer.<locals>.inner", 15,
                                                           lines[14:16])
    r = ask(mod.__name__, method="Shop")  # `module Class` names the class
    assert (r.kind, r.first_line, r.total_lines, r.compared, r.disk) == ("class", 8, 17, 4, "same")
    r = ask(mod.__name__, cls="Shop", method="total")
    assert (r.kind, r.first_line, r.lines, r.disk) == ("property", 19, lines[18:21], "same")
    r = ask(mod.__name__, cls="Shop", method="make")  # a def on one line
    assert (r.kind, r.first_line, r.lines, r.disk) == ("classmethod", 23, lines[22:24], "same")
    r = ask(mod.__name__, method="conditional")  # inside an `if` at module level
    assert (r.kind, r.first_line, r.lines, r.disk) == ("function", 28, lines[27:29], "same")
    r = ask(mod.__name__, limit=2)
    assert (r.kind, r.lines, r.elided, r.total_lines) == ("module", lines[:2], len(lines) - 2, len(lines))


def test_edits_are_told_apart(mod):
    path = mod.__file__
    with open(path, "w") as f:
        f.write("# a comment line\n" + TEXT)
    r = ask(mod.__name__, cls="Shop", method="price")
    assert (r.disk, r.disk_line, r.running_line, r.first_line) == ("moved", 12, 11, 12)
    with open(path, "w") as f:
        f.write(TEXT.replace("return a + 1", "return a + 2"))
    r = ask(mod.__name__, method="plain")
    assert r.disk == "differs" and r.lines[-1].strip() == "return a + 2" and r.origin == "file"
    assert ask(mod.__name__, cls="Shop").disk == "same"
    m = ask(mod.__name__)
    assert m.disk == "differs" and m.differing == ["plain"]
    with open(path, "w") as f:
        f.write(TEXT.replace("def plain(a)", "def renamed(a)"))
    r = ask(mod.__name__, method="plain")
    assert r.disk == "missing" and r.no_source == "not_in_file"
    text = TOOL.render(r, False)
    assert "its file no longer holds a def of that name" in text


def test_no_source_answers(mod):
    r = ask("os", method="getpid")
    assert r.no_source == "builtin" and r.kind == "builtin function" and r.lines == []
    ns = {}
    exec(compile("def made():\n    return 1\n", "<string>", "exec"), ns)
    mod.made = ns["made"]
    r = ask(mod.__name__, method="made")
    assert r.no_source == "generated" and r.file == "<string>"
    r = ask("sys")
    assert r.no_source == "builtin" and r.kind == "module"
    assert "no source for this module: it is built into the interpreter" in TOOL.render(r, False)


def test_errors_name_the_argument(mod):
    with pytest.raises(AgentError) as e:
        ask(mod.__name__, cls="Shop", method="outer", nested="nope")
    assert e.value.kind == "nested_method_not_found" and e.value.arg == "nested_method" and "inner" in e.value.message
    with pytest.raises(AgentError) as e:
        ask(mod.__name__, method="rate_x")
    assert e.value.kind == "method_not_found"
    mod.VALUE = 3
    with pytest.raises(AgentError) as e:
        ask(mod.__name__, method="VALUE")
    assert e.value.kind == "not_a_function" and e.value.arg == "method"


def test_nested_without_method_is_refused_on_the_host():
    class NoCall:
        on_cli = True

        def request(self, *a, **k):
            raise AssertionError("no request may be sent")

    with pytest.raises(FlightError) as e:
        Tool.invoke(TOOL, SourceParams(pid=1, module="m", nested_method="x"), NoCall())
    assert e.value.code == "usage" and "-nm" in e.value.message


def test_render_notes():
    base = dict(target="m.f", kind="function", qualname="f", file="/x/m.py", first_line=10,
                lines=["def f():", "    pass"], total_lines=2, elided=0, origin="file", reloaded=False)
    text = TOOL.render(SourceResult(**base, disk="same"), False)
    assert text.splitlines() == ["function f  /x/m.py:10", "# the file on disk matches the running code",
                                 "10  def f():", "11      pass"]
    text = TOOL.render(SourceResult(**dict(base, origin="reload", reloaded=True), disk="same",
                                    reloaded_at=0.0), False)
    assert text.splitlines()[1].startswith("# RELOADED at ")
    text = TOOL.render(SourceResult(**base, disk="differs", running_line=9, file_mtime=0.0), False)
    assert "DIFFERS" in text and "the running code starts at line 9" in text
    text = TOOL.render(SourceResult(**dict(base, elided=5, total_lines=7), disk="same"), False)
    assert text.splitlines()[-1].startswith("... 5 more lines (of 7)")
