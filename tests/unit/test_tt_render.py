"""tt's command lines (flight_profiler's, unchanged) and its text: the table with the header words
flight_profiler's tests look for, an expanded record, the sentences in the caller's language."""
import pytest

from flight_mcp import cmdline
from flight_mcp.errors import FlightError
from flight_mcp.models import ExceptionFact, Frame, ValueView
from flight_mcp.tools import all_tools
from flight_mcp.tools.base import Call
from flight_mcp.tools.tt import Arg, Recording, Row, Shown, TtParams, TtResult, render

TOOLS = all_tools()


def parse(cmd):
    return cmdline.parse(cmdline.split(cmd), TOOLS, 1)[1]


@pytest.mark.parametrize("cmd, expected", [
    ("tt -t __main__ func", dict(time_tunnel=True, module="__main__", cls=None, method="func")),
    ("tt -t __main__ A hello", dict(time_tunnel=True, module="__main__", cls="A", method="hello")),
    ("tt -t __main__ A nested_func -nm nested_inner", dict(module="__main__", cls="A", method="nested_func",
                                                           nested_method="nested_inner")),
    ('tt -t "__main__ A hello" -n 3', dict(module="__main__", cls="A", method="hello", limit=3)),
    ("tt -t __main__ func -n 100000000", dict(limit=100000000)),
    ("tt -t __main__ func -f \"return_obj['success']==True and cost>10\"",
     dict(filter_expr="return_obj['success']==True and cost>10")),
    ("tt -l", dict(list_records=True)),
    ("tt -l -m __main__.A.hello", dict(list_records=True, method_filter="__main__.A.hello")),
    ("tt -i 1000", dict(index=1000, play=False)),
    ("tt -i 1000 -x 3", dict(index=1000, expand=3)),
    ("tt -i 1000 -p", dict(index=1000, play=True)),
    ("tt -d 1000", dict(delete=1000)),
    ("tt -da", dict(delete_all=True)),
])
def test_flight_profiler_command_lines(cmd, expected):
    p = parse(cmd)
    assert {k: getattr(p, k) for k in expected} == expected


@pytest.mark.parametrize("cmd, action", [
    ("tt", "list_records"), ("tt -x 3", "list_records"), ("tt __main__ func", "time_tunnel"),
    ("tt --mod m --func f", "time_tunnel"), ("tt -t m f", "time_tunnel"), ("tt -i 1000 -p", "index")])
def test_the_request_names_its_action(cmd, action):
    """No action flag: a named function is recorded, else the table is listed; the request says which."""
    p = parse(cmd)
    assert p.chosen() == [action]
    args = p.agent_args()
    assert args["time_tunnel"] is (action == "time_tunnel") and args["list_records"] is (action == "list_records")
    assert getattr(TtParams(pid=1), "list_records") is False   # the field keeps its default


def test_every_tt_flag_with_what_it_needs():
    model = TOOLS["tt"].params
    needs = {"time_tunnel": "m f", "play": "-i 1000", "method_filter": "-l", "module": "-t f",
             "method": "-t --mod m", "cls": "-t m f", "nested_method": "-t m f"}
    values = {int: "3", str: "str", float: "3"}   # "str": a word that is also an expression's name (a builtin)
    for flag, field in cmdline.flags_of(model).items():
        info = model.model_fields[field]
        kind = next((t for t in (bool, int, float, str) if t is info.annotation or t in getattr(
            info.annotation, "__args__", ())), str)
        typed = flag if kind is bool else f"{flag} {values[kind]}"
        p = parse(f"tt {typed} {needs.get(field, '')}")
        assert getattr(p, field) == (True if kind is bool else kind(values[kind])), flag


@pytest.mark.parametrize("cmd, says", [
    ("tt -l -da", "got -l/--list, -da/"),
    ("tt -p", "give exactly one of"),
    ("tt -t __main__", "give MODULE and METHOD"),
    ("tt -i 1000 -x 9", "-x/--expand"),
])
def test_bad_command_lines_say_why(cmd, says):
    with pytest.raises(FlightError) as e:
        parse(cmd)
    assert e.value.code == "usage" and says in e.value.message, e.value.message


def row(index, **over):
    base = dict(index=index, time=1700000000.25, cost_ms=1.5, is_exp=False, thread="worker", tid=7, daemon=True,
                module="__main__", cls="A", method="hello", target="__main__.A.hello")
    base.update(over)
    return base


def test_table_header_carries_flight_profiler_words():
    rec = Recording(target="__main__.A.hello", kind="function", file="x.py", line=3, mechanism="sys.monitoring",
                    started=1.0, duration_s=2.0, seen=5, matched=2, captured=2, limit=2, stopped="limit",
                    records=[Row(**row(1000)), Row(**row(1001, is_exp=True, replay_of=1000))])
    text = render(TtResult(action="record", recording=rec, table_size=2, kept=1000), False)
    lines = text.splitlines()
    assert all(w in lines[0] for w in ("INDEX", "COST", "MODULE", "METHOD"))
    assert lines[2].split()[0] == "1000" and "A.hello" in lines[2] and lines[2].split()[-1] == "worker"
    assert "True    False" in lines[2] and "False   True" in lines[3] and "(replay of 1000)" in lines[3]
    assert "2 of 2 captured" in text and "at most 1000" in text
    # the caller's language: argument names over MCP, flags on the CLI
    assert "index 1000" in text and "list_records" in text
    cli = TtResult(action="record", recording=rec, table_size=2, kept=1000)
    cli.spoken_in(Call(None, on_cli=True))
    assert "-i/--index 1000" in render(cli, False)


def test_capped_limit_and_empty_recording_say_so():
    rec = Recording(target="m.f", kind="function", file="x.py", line=3, mechanism="sys.monitoring", started=1.0,
                    duration_s=10.0, seen=0, matched=0, captured=0, limit=1000, stopped="deadline", records=[])
    text = render(TtResult(action="record", recording=rec, table_size=0, kept=1000, limit_asked=5000), False)
    assert "limit 5000 was capped at 1000" in text and "No call of m.f" in text


def test_shown_record_layout():
    leaf = lambda r: ValueView(type="int", kind="leaf", repr=r)  # noqa: E731
    shown = Shown(**row(1002, is_exp=True), instance=ValueView(type="__main__.A", kind="object", repr="<A>"),
                  args=[Arg(name="x", view=leaf("1")), Arg(name=None, view=leaf("2"))],
                  kwargs=[Arg(name="tag", view=ValueView(type="str", kind="leaf", repr="'t'"))],
                  exception=ExceptionFact(type="ValueError", message="bad", frames=[
                      Frame(file="x.py", line=4, name="hello", source="raise ValueError('bad')")]))
    text = render(TtResult(action="show", record=shown, table_size=3, kept=1000), False)
    lines = text.splitlines()
    assert lines[0] == " INDEX               1002"
    assert " ARGS                x=1" in lines and "                     2" in lines
    assert ' KWARGS              tag="t"' in lines or " KWARGS              tag='t'" in lines
    assert " RAISE-EXCEPTION     Traceback (most recent call last):" in lines
    assert lines[-1].strip() == "ValueError: bad" and "RETURN_OBJ" not in text


def test_delete_and_replay_still_running_sentences():
    assert "Index 1003 is deleted successfully." in render(TtResult(action="delete", index=1003, table_size=1,
                                                                    kept=1000), False)
    assert "(5 records)" in render(TtResult(action="delete_all", deleted=5, table_size=0, kept=1000), False)
    text = render(TtResult(action="replay", replay_of=1000, running=True, timeout_s=3.0, table_size=1, kept=1000),
                  False)
    assert "had not ended after 3.0s" in text and "list_records" in text
