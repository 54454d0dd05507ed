"""The --cmd language (flight_mcp/cmdline.py) in-process: every flag and positional slot of every
tool's Params, and each usage error. Tables come from the Params models, so a renamed field or a new
flag is covered without editing this file. vmtool is left out: its -c syntax is being redesigned."""
from __future__ import annotations

import typing

import pytest
from pydantic import AfterValidator, BaseModel

from flight_mcp import cmdline
from flight_mcp.errors import FlightError
from flight_mcp.tools import all_tools

TOOLS = all_tools()
TESTED = sorted(name for name in TOOLS if name != "vmtool")
PID = 4242


def parse(cmd: str, pid: int | None = PID):
    return cmdline.parse(cmdline.split(cmd), TOOLS, pid)


def usage_error(cmd: str) -> str:
    with pytest.raises(FlightError) as e:
        parse(cmd)
    assert e.value.code == "usage", e.value.message
    return e.value.message


def _base(annotation):
    """The value type of a field: Optional, Annotated and Union with None stripped."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if args and typing.get_origin(annotation) is not typing.Literal and len(args) == 1:
        return _base(args[0])
    return annotation


def sample(model: type[BaseModel], field: str) -> tuple[str | None, object]:
    """(word to type, value the field must then hold); word None for a bool flag."""
    info = model.model_fields[field]
    kind = _base(info.annotation)
    schema = model.model_json_schema()["properties"][field]
    schema = next((s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"), schema)
    if kind is bool:
        return None, True
    if typing.get_origin(kind) is typing.Literal:
        choice = typing.get_args(kind)[-1]
        return str(choice), choice
    if kind in (int, float):
        low = schema.get("minimum", schema.get("exclusiveMinimum", 0))
        high = schema.get("maximum", low + 10)
        value = kind(min(max(low + 1, 1), high))
        return str(value), value
    if any(isinstance(m, AfterValidator) for m in info.metadata):  # an expression: its names are checked
        return "str(0)", "str(0)"
    return f"{field}_value", f"{field}_value"


def required_positionals(model: type[BaseModel]) -> list[tuple[str, str]]:
    return [(n, f"{n}_word") for n in cmdline.positional_of(model) if model.model_fields[n].is_required()]


# tt is left out here: its flags choose an action, and -t/-p need another argument with them
# (tests/unit/test_tt_render.py types every tt flag with what it needs).
CASES = [(name, flag) for name in TESTED if name != "tt" for flag in cmdline.flags_of(TOOLS[name].params)]


@pytest.mark.parametrize("name,flag", CASES, ids=[f"{n}{f}" for n, f in CASES])
def test_every_flag_sets_its_field(name, flag):
    model = TOOLS[name].params
    field = cmdline.flags_of(model)[flag]
    word, value = sample(model, field)
    others = [(slot, w) for slot, w in required_positionals(model) if slot != field]
    pos = " ".join(w for _, w in others)  # a slot given by its flag takes no word
    typed = flag if word is None else f"{flag} {word}"
    tool, params = parse(f"{name} {pos} {typed}")
    assert tool is TOOLS[name]
    assert getattr(params, field) == value
    for slot, w in others:
        assert getattr(params, slot) == w
    if word is not None:  # --flag=value is the same as --flag value
        assert parse(f"{name} {pos} {flag}={word}")[1] == params


@pytest.mark.parametrize("name", TESTED)
def test_defaults_are_the_params_defaults(name):
    """Only what was typed is set: the rest is the model's own default (the agent keeps none)."""
    model = TOOLS[name].params
    pos = required_positionals(model)
    _, params = parse(" ".join([name, *(w for _, w in pos)]))
    given = {slot for slot, _ in pos} | ({"pid"} if "pid" in model.model_fields else set())
    for field, info in model.model_fields.items():
        if field not in given and not info.is_required():
            assert getattr(params, field) == info.get_default(call_default_factory=True), field


@pytest.mark.parametrize("name", TESTED)
def test_the_pid_comes_from_the_command_line_not_from_cmd(name):
    model = TOOLS[name].params
    pos = " ".join(w for _, w in required_positionals(model))
    _, params = parse(f"{name} {pos}", pid=PID)
    if "pid" in model.model_fields:
        assert params.pid == PID


@pytest.mark.parametrize("name", [n for n in TESTED if len(cmdline.positional_of(TOOLS[n].params)) > 1
                                  and not getattr(TOOLS[n].params, "cli_trailing_optional", False)])  # own tests
def test_positional_slots_fill_left_to_right_skipping_optional_ones_first(name):
    model = TOOLS[name].params
    slots = cmdline.positional_of(model)
    required = [s for s in slots if model.model_fields[s].is_required()]
    optional = [s for s in slots if s not in required]
    # as few words as required slots: the required slots, in order
    _, params = parse(" ".join([name, *(f"w{i}" for i in range(len(required)))]))
    assert [getattr(params, s) for s in required] == [f"w{i}" for i in range(len(required))]
    assert all(getattr(params, s) is None for s in optional)
    # one word per slot: every slot, in order
    _, params = parse(" ".join([name, *(f"w{i}" for i in range(len(slots)))]))
    assert [getattr(params, s) for s in slots] == [f"w{i}" for i in range(len(slots))]
    # a slot given by its flag is no longer filled by position
    flag = next(f for f, field in cmdline.flags_of(model).items() if field == slots[0])
    _, params = parse(" ".join([name, flag, "byflag", *(f"w{i}" for i in range(len(slots) - 1))]))
    assert getattr(params, slots[0]) == "byflag"
    assert [getattr(params, s) for s in slots[1:]] == [f"w{i}" for i in range(len(slots) - 1)]


def test_the_seed_spellings_of_flight_profiler():
    _, p = parse("trace __main__ OrderService process_order -n 1 -f 'args[0] > 1' -d 2")
    assert (p.module, p.cls, p.method, p.filter_expr, p.depth) == (
        "__main__", "OrderService", "process_order", "args[0] > 1", 2)
    _, p = parse("trace __main__ work")
    assert (p.module, p.cls, p.method) == ("__main__", None, "work")
    _, p = parse("getglobal __main__ CONFIG -x 2")
    assert (p.module, p.cls, p.field, p.expand) == ("__main__", None, "CONFIG", 2)
    _, p = parse("getglobal __main__ OrderService region")
    assert (p.module, p.cls, p.field) == ("__main__", "OrderService", "region")
    _, p = parse("stack -a")
    assert p.async_tasks is True
    _, p = parse("watch __main__ Svc apply -e")
    assert p.exception is True and p.method == "apply"


def test_ps_is_list_processes():
    tool, params = parse("ps python", pid=None)
    assert tool is TOOLS["list_processes"] and params.filter == "python"


def test_a_negative_number_is_a_value_not_a_flag():
    model = TOOLS["trace"].params
    flag = next(f for f, field in cmdline.flags_of(model).items() if field == "depth")
    message = usage_error(f"trace m f {flag} -5")  # read as the value of the flag, then range-checked
    assert "unknown option" not in message


# ---- errors: each names the cause and shows the usage ---------------------------------------

def test_empty_command():
    with pytest.raises(FlightError) as e:
        cmdline.parse([], TOOLS, PID)
    assert e.value.code == "usage" and "empty command" in e.value.message and "stack" in e.value.message


def test_unknown_command_lists_the_commands():
    message = usage_error("stakc")
    assert "unknown command 'stakc'" in message
    assert all(name in message for name in TESTED)


@pytest.mark.parametrize("name", TESTED)
def test_unknown_option_shows_the_usage(name):
    message = usage_error(f"{name} --bogus")
    assert f"{name}: unknown option '--bogus'. Usage: {cmdline.usage(TOOLS[name])}" in message


@pytest.mark.parametrize("name,flag", [(n, f) for n, f in CASES if sample(TOOLS[n].params,
                                                                            cmdline.flags_of(TOOLS[n].params)[f])[0]])
def test_an_option_that_needs_a_value_at_the_end(name, flag):
    pos = " ".join(w for _, w in required_positionals(TOOLS[name].params))
    message = usage_error(f"{name} {pos} {flag}")
    assert f"{name}: option {flag} needs a value" in message and "Usage: " in message


@pytest.mark.parametrize("name", [n for n in TESTED if any(TOOLS[n].params.model_fields[s].is_required()
                                                           for s in cmdline.positional_of(TOOLS[n].params))])
def test_a_missing_required_positional(name):
    message = usage_error(name)
    assert message.startswith(f"{name}: ") and f"Usage: {cmdline.usage(TOOLS[name])}" in message
    missing = next(s for s in cmdline.positional_of(TOOLS[name].params)
                   if TOOLS[name].params.model_fields[s].is_required())
    assert missing.upper() in message  # named as the CLI shows it


def test_unquoted_expression_names_the_flag_that_was_typed():
    message = usage_error("getglobal __main__ CONFIG -e target['db'] + 1")
    assert "unexpected argument(s) ['+', '1']" in message or "unexpected argument(s) ['1']" in message
    assert "quote the whole expression as one word" in message and "-e 'target[" in message
    message = usage_error("trace m C f --filter args[0] > 1")
    assert "--filter 'target[" in message


def test_a_value_out_of_range_names_the_flag():
    model = TOOLS["getglobal"].params
    message = usage_error("getglobal __main__ CONFIG -x 99")
    flags = "/".join(f for f, field in cmdline.flags_of(model).items() if field == "expand")
    assert flags in message and "Usage: getglobal" in message


def test_a_value_of_the_wrong_type_names_the_flag():
    message = usage_error("trace m f -n many")
    assert "-n" in message and "Usage: trace" in message


def test_unclosed_quote():
    with pytest.raises(FlightError) as e:
        cmdline.split("getglobal __main__ CONFIG -e 'target")
    assert e.value.code == "usage"
    assert "cannot split the command" in e.value.message and "close every quote" in e.value.message


def test_split_keeps_a_quoted_expression_one_word():
    assert cmdline.split("trace m f -f 'args[0] > 1'") == ["trace", "m", "f", "-f", "args[0] > 1"]
