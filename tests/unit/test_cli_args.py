"""The command line's own arguments and mistakes, in-process (cli.main with capsys; no process started):
--version, --help listing the commands, per-command help by `help CMD` and by `-h` inside --cmd, --timeout
in usage, a word that is not a pid, --stdio with a command, install-skills onto a file, and quotes that the
word splitting of --cmd takes off a name inside an expression."""
import os

import pytest

from flight_mcp import __version__, cli, cmdline
from flight_mcp.errors import FlightError
from flight_mcp.tools import all_tools

TOOLS = all_tools()


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"flight-mcp {__version__}"


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "--version" in out and "commands (flight-mcp PID --cmd" in out
    for name, tool in TOOLS.items():
        assert any(line.startswith(f"  {name}") for line in out.splitlines()), name
        for alias in tool.aliases:
            assert f"({alias})" in out
    assert max(len(line) for line in out.split("commands (")[1].splitlines()) <= 100


@pytest.mark.parametrize("how", [["help", "trace"], ["1", "--cmd", "trace -h"], ["1", "--cmd", "trace --help"],
                                 ["1", "--cmd", "help trace"]])
def test_command_help_shows_flags_with_their_meaning(capsys, how):
    assert cli.main([*how, "--no-color"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("USAGE\n  trace module [cls] method")
    assert "[--timeout SECONDS]" in out.split("\n\n")[0]
    depth = TOOLS["trace"].params.model_fields["depth"].description
    assert "-d, --depth" in out and " ".join(depth.split()[:4]) in " ".join(out.split())


def test_dash_h_as_an_option_value_is_a_value_not_help():
    with pytest.raises(FlightError) as e:   # not HelpAsked: the expression `-h` reads a name h
        cmdline.parse(["watch", "__main__", "f", "--expr", "-h"], TOOLS, 1)
    assert "'h' is not defined" in e.value.message


def test_no_command_uses_dash_h():
    """`-h` inside --cmd means help only because no command has a flag spelled so."""
    for tool in TOOLS.values():
        assert not {"-h", "--help"} & set(cmdline.flags_of(tool.params)), tool.name


def test_timeout_in_every_timed_commands_usage():
    timed = [t for t in TOOLS.values() if "timeout_s" in t.params.model_fields]
    assert timed
    for tool in timed:
        assert cmdline.usage(tool).endswith("[--timeout SECONDS]"), tool.name


@pytest.mark.parametrize("word, said", [
    ("abc", "'abc' is not a pid (a process id: digits) nor one of ps, demo, help, install-skills"),
    ("stack", "'stack' is not a pid but a command: run it in a process with flight-mcp PID --cmd \"stack ...\""),
    ("12a", "'12a' is not a pid"),
])
def test_not_a_pid(capsys, word, said):
    assert cli.main([word, "--cmd", "stack"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {said}") and err.count("\n") == 1 and "usage:" not in err


def test_no_target_says_what_to_give(capsys):
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert 'give a pid and a command: flight-mcp PID --cmd "stack"' in err


@pytest.mark.parametrize("argv", [["--stdio", "--cmd", "stack"], ["--stdio", "123"]])
def test_stdio_with_a_command_is_refused(capsys, argv):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --stdio serves MCP on stdin/stdout and runs nothing else") and err.count("\n") == 1


def test_install_skills_onto_a_file_is_one_error_line(capsys, tmp_path):
    file = tmp_path / "a-file"
    file.write_text("x")
    assert cli.main(["install-skills", "--dir", str(file)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: install-skills: {file} exists and is not a folder: give --dir a folder (it is created when missing)\n"
    assert cli.main(["install-skills", "--dir", str(file / "below")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: install-skills: cannot write {file / 'below'} (") and err.count("\n") == 1
    assert file.read_text() == "x"


def test_install_skills_into_a_folder(capsys, tmp_path):
    assert cli.main(["install-skills", "--dir", str(tmp_path / "skills")]) == 0
    assert (tmp_path / "skills" / "flight-mcp-watch" / "SKILL.md").is_file()
    assert "installed flight-mcp-watch" in capsys.readouterr().out


@pytest.mark.parametrize("cmd, word, name", [
    ("watch __main__ f --expr args[0]['user']", "args[0][user]", "user"),
    ('watch __main__ f --expr args[0]["user"] -n 1', "args[0][user]", "user"),
    ("watch __main__ f -f x=='b'", "x==b", "b"),
])
def test_quotes_taken_off_a_name_are_detected(cmd, word, name):
    words = cmdline.split(cmd)
    assert word in words
    with pytest.raises(FlightError) as e:
        cmdline.check_quoting(cmd, words)
    assert e.value.code == "usage"
    assert f"leaving {word}, which reads a variable {name}" in e.value.message
    assert "quote the whole expression, with the other quotes inside" in e.value.message
    assert f'\\"{name}\\"' in e.value.message   # the fix, as typed inside --cmd "..."


@pytest.mark.parametrize("cmd", [
    "watch __main__ f --expr \"args[0]['user']\"",
    "watch __main__ f --expr 'args[0][\"user\"]'",
    "watch __main__ f -f 'args[0] > 1'",
    "getglobal __main__ 'CONFIG'",
    "vmtool --action getInstances --className my'Class'",   # a name, quoted in part, is still a name
    "watch __main__ f --expr args,return_obj",
])
def test_quotes_that_survive_or_do_not_matter_pass(cmd):
    cmdline.check_quoting(cmd, cmdline.split(cmd))


def test_quoting_checked_by_the_cli_before_any_attach(capsys):
    pid = str(os.getpid())   # never attached: the error comes first
    assert cli.main([pid, "--cmd", "watch __main__ f --expr args[0]['user'] -n 1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the quotes around 'user' in args[0]['user'] are removed") and err.count("\n") == 1
    assert "--cmd \"... 'args[0][\\\"user\\\"]' ...\"" in err


def test_quoting_checked_when_the_name_happens_to_be_defined(capsys):
    """`params` is a name expressions see: the stripped quotes make a valid expression, still not the meant one."""
    assert cli.main([str(os.getpid()), "--cmd", "watch __main__ f --expr args[0]['params'] -n 1"]) == 2
    assert "error: the quotes around 'params' in args[0]['params'] are removed" in capsys.readouterr().err


def test_a_plainer_mistake_is_said_first(capsys):
    assert cli.main([str(os.getpid()), "--cmd", "getglobal __main__ CONFIG -e target['db'] + 1"]) == 2
    assert "unexpected argument(s) ['1']" in capsys.readouterr().err
