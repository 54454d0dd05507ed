"""`help` and `help CMD`: built from each tool's description, Params and skill, so every command and
every flag is there (flight_profiler's help tests look for NAME/DESCRIPTION and USAGE)."""
import pytest

from flight_mcp import cli
from flight_mcp.cmdline import spellings
from flight_mcp.errors import FlightError
from flight_mcp.help import help_text
from flight_mcp.tools import all_tools

TOOLS = all_tools()


def test_overview_lists_every_command_with_its_first_sentence():
    lines = help_text(["help"], TOOLS, False).splitlines()
    assert "NAME" in lines[0] and "DESCRIPTION" in lines[0]
    for name, tool in TOOLS.items():
        row = next(line for line in lines if line.startswith(name + " "))
        assert tool.description.split(":")[0].split(".")[0][:40] in row


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_command_help_shows_usage_and_every_flag(name):
    text = help_text(["help", name], TOOLS, False)
    assert text.startswith("USAGE\n  " + name)
    for field, slot, flags in spellings(TOOLS[name].params):
        if field != "pid" and (flags or slot):
            assert (", ".join(flags) if slot is None else field.upper()) in text, field


def test_help_by_alias_and_examples_from_the_skill():
    assert help_text(["help", "ps"], TOOLS, False) == help_text(["help", "list_processes"], TOOLS, False)
    assert 'EXAMPLES\n  flight-mcp PID --cmd "watch ' in help_text(["help", "watch"], TOOLS, False)


def test_unknown_command_is_a_usage_error_naming_the_commands(capsys):
    with pytest.raises(FlightError) as e:
        help_text(["help", "nope"], TOOLS, False)
    assert e.value.code == "usage" and "watch" in e.value.message
    assert cli.main(["1", "--cmd", "help nope"]) == 2 and "no command 'nope'" in capsys.readouterr().err
    assert cli.main(["help", "stack", "--no-color"]) == 0 and "USAGE" in capsys.readouterr().out


def test_every_command_word_loads_only_its_own_tool_module():
    """The CLI imports one tool module per command (start-up time): every name and alias finds it."""
    for name, tool in TOOLS.items():
        for word in (name, *tool.aliases):
            assert name in cli._tools_for(word, lambda: {}), word   # its module (attach.py holds detach too)
