"""source on real targets, every pyenv Python 3.8-3.13: the text and line numbers of a function, a
method, a decorated method, a nested function and a class as the file holds them; a file edited
after the target loaded it is reported as differing (and as moved when only lines shifted); a
function changed by reload is reported as reloaded; built-in, C extension and generated code get
their own answer; over MCP the tool answers on a read-only server."""
import json
import re
from pathlib import Path

import anyio
import pytest

from .conftest import flight_cli, version_params
from .mcp_client import mcp_session, text_of

pytestmark = pytest.mark.timeout(240)

SOURCE = (Path(__file__).parent / "targets" / "source_target.py").read_text()


def run(pid, cmd, *extra):
    r = flight_cli(*extra, str(pid), "--cmd", cmd, "--no-color")
    assert r.returncode == 0, f"{cmd}: {r.stdout}\n{r.stderr}"
    return r.stdout


def facts(pid, cmd):
    return json.loads(run(pid, cmd, "--json"))


def def_span(text, header, indent=""):
    """(first, last) line numbers of the block starting at the line `header` (decorators above it
    included), found by reading the file the test wrote."""
    lines = text.splitlines()
    i = next(n for n, line in enumerate(lines) if line.strip().startswith(header))
    first = i
    while first > 0 and lines[first - 1].strip().startswith("@"):
        first -= 1
    base = len(lines[i]) - len(lines[i].lstrip())
    last = i
    for j in range(i + 1, len(lines)):
        if lines[j].strip() and len(lines[j]) - len(lines[j].lstrip()) <= base:
            break
        if lines[j].strip():
            last = j
    return first + 1, last + 1


def check_block(got, text, header):
    first, last = def_span(text, header)
    assert got["first_line"] == first and got["total_lines"] == last - first + 1, (got, first, last)
    assert got["lines"] == text.splitlines()[first - 1:last]
    assert got["elided"] == 0


@pytest.mark.parametrize("version", version_params())
def test_function_method_class_nested_with_their_line_numbers(spawn, version):
    t = spawn(version, SOURCE)
    text = t.script.read_text()
    for cmd, header, kind in [
        ("source __main__ plain", "def plain(", "function"),
        ("source __main__ Shop price", "def price(", "method"),
        ("source __main__ Shop decorated", "def decorated(", "decorated method"),
        ("source __main__ Shop helper", "def helper(", "staticmethod"),
        ("source __main__ Shop outer -nm inner", "def inner(", "nested function"),
        ("source __main__ Shop", "class Shop(", "class"),
        ("source __main__ Shop -n 1000", "class Shop(", "class"),
    ]:
        got = facts(t.pid, cmd)
        assert got["kind"] == kind and got["file"] == str(t.script), (cmd, got)
        assert got["disk"] == "same" and got["origin"] == "file" and not got["reloaded"], (cmd, got)
        check_block(got, text, header)
    got = facts(t.pid, "source __main__ Shop outer -nm inner")
    assert got["qualname"] == "Shop.outer.<locals>.inner"
    # the text layout: header with file:line, the note, numbered lines
    out = run(t.pid, "source __main__ Shop price")
    first, _ = def_span(text, "def price(")
    assert out.splitlines()[0] == f"method Shop.price  {t.script}:{first}"
    assert "# the file on disk matches the running code" in out
    assert f"{first}      def price(self, n):" in out
    # limit: a module cut at 3 lines says how many are left
    got = facts(t.pid, "source __main__ -n 3")
    assert got["kind"] == "module" and got["lines"] == text.splitlines()[:3]
    assert got["elided"] == len(text.splitlines()) - 3 and got["disk"] == "same"
    out = run(t.pid, "source __main__ -n 3")
    assert f"... {len(text.splitlines()) - 3} more lines" in out


@pytest.mark.parametrize("version", version_params(["3.8", "3.13"]))  # this file's core test runs on every version
def test_builtin_c_extension_and_generated_code(spawn, version):
    t = spawn(version, SOURCE)
    got = facts(t.pid, "source __main__ length")
    assert got["no_source"] == "builtin" and got["lines"] == [], got
    got = facts(t.pid, "source _json")
    assert got["no_source"] in ("c_extension", "builtin"), got
    if got["no_source"] == "c_extension":
        assert got["file"].endswith(".so")
    got = facts(t.pid, "source __main__ made")
    assert got["no_source"] == "generated" and got["file"] == "<string>", got
    out = run(t.pid, "source __main__ made")
    assert "no source for this function (<string>): it was compiled from a string" in out
    out = run(t.pid, "source __main__ length")
    assert "no source for this builtin function" in out and "Traceback (most recent call last)" not in out
    r = flight_cli(str(t.pid), "--cmd", "source __main__ Shop nothing_here", "--no-color")
    assert r.returncode == 1 and "[method_not_found]" in r.stderr


@pytest.mark.parametrize("version", version_params())
def test_edited_file_differs_and_reloaded_function_is_reported(spawn, version):
    t = spawn(version, SOURCE)
    path = t.script
    original = path.read_text()
    first, _ = def_span(original, "def plain(")
    # an edit of the body: differs; the file's current def is shown, and said not to be what runs
    path.write_text(original.replace("    return a + b\n", "    return a + b + 100\n"))
    got = facts(t.pid, "source __main__ plain")
    assert got["disk"] == "differs" and got["origin"] == "file" and got["running_line"] == first, got
    assert "    return a + b + 100" in got["lines"]
    out = run(t.pid, "source __main__ plain")
    assert "DIFFERS from the running code" in out and "the running code's own text is not available" in out
    got = facts(t.pid, "source __main__ Shop")  # its methods are unchanged
    assert got["disk"] == "same", got
    got = facts(t.pid, "source __main__")
    assert got["disk"] == "differs" and got["differing"] == ["plain"], got
    # reload installs the edit: the answer says reloaded, shows the text reload compiled, and the file
    # now matches the running code
    run(t.pid, "reload __main__ plain")
    got = facts(t.pid, "source __main__ plain")
    assert got["reloaded"] and got["origin"] == "reload" and got["disk"] == "same", got
    assert got["reloaded_at"] is not None and "    return a + b + 100" in got["lines"]
    out = run(t.pid, "source __main__ plain")
    assert out.splitlines()[1].startswith("# RELOADED at ")
    assert facts(t.pid, "source __main__")["reloaded_functions"] == ["plain"]
    # two lines added at the top: the same code at other lines (moved), the file's numbers shown
    path.write_text("# one\n# two\n" + path.read_text())
    got = facts(t.pid, "source __main__ Shop price")
    price_first, _ = def_span(original, "def price(")
    assert got["disk"] == "moved" and got["disk_line"] == price_first + 2 and got["running_line"] == price_first, got
    assert got["first_line"] == price_first + 2 and got["lines"][0].strip() == "def price(self, n):"
    # the file gone
    path.unlink()
    got = facts(t.pid, "source __main__ Shop price")
    assert got["no_source"] == "file_missing" and got["disk"] == "file_missing", got


@pytest.mark.parametrize("version", version_params(("3.12",)))
def test_source_over_mcp_on_a_read_only_server(spawn, version):
    t = spawn(version, SOURCE)

    async def main():
        async with mcp_session() as s:
            res = await s.call_tool("source", {"pid": t.pid, "module": "__main__", "cls": "Shop", "method": "price"})
            assert not res.isError if hasattr(res, "isError") else not res.is_error
            text = text_of(res)
            assert re.search(r"^method Shop\.price  .*:\d+$", text.splitlines()[0]), text
            return res

    res = anyio.run(main)
    data = getattr(res, "structured_content", None) or getattr(res, "structuredContent", None)
    assert data["disk"] == "same" and data["kind"] == "method"
