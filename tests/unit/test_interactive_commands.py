"""The interactive session's own words (help, CMD -h, history, exit) and its errors, which need no
target: a line that fails is shown, marks the session failed, and the session goes on."""
import pytest

from flight_mcp.interactive import Session


@pytest.fixture
def session(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    s = Session(999999, color=False, allow_mutating=False, tty=False)
    yield s
    s.sessions.close()


def test_help_lists_the_commands_and_the_session_words(session, capsys):
    assert session.execute("help")
    out = capsys.readouterr().out
    assert "NAME" in out and "DESCRIPTION" in out and "watch" in out
    assert "history [-n N] [-c]" in out and "exit, quit, stop" in out and "Tab" in out


@pytest.mark.parametrize("line", ["help watch", "watch -h", "watch --help"])
def test_help_of_one_command(session, capsys, line):
    assert session.execute(line)
    out = capsys.readouterr().out
    assert "USAGE" in out and "watch module [cls] method" in out


def test_help_of_the_session_words(session, capsys):
    session.execute("help history")
    session.execute("help exit")
    out = capsys.readouterr().out
    assert "history [-n N] [-c]" in out and "exit: leaves the session" in out
    assert not session.failed


def test_a_failing_line_is_shown_and_the_session_goes_on(session, capsys):
    assert session.execute("bogus 1")
    assert session.execute("watch __main__ f -f 'open quote")
    assert session.execute("help nosuch")
    err = capsys.readouterr().err
    assert "unknown command 'bogus'" in err and "close every quote" in err and "no command 'nosuch'" in err
    assert session.failed


def test_blank_lines_pass_and_exit_quit_or_stop_end_the_session(session):
    assert session.execute("") and session.execute("   ")
    assert not session.failed
    assert all(session.execute(word) is False for word in ("exit", "quit", "stop", " exit "))
    assert session.execute("exit now")  # not a word of its own: an unknown command
    assert session.failed


@pytest.mark.parametrize("piped", ["", "\n  \n"])
def test_nothing_piped_in_is_a_usage_error_before_any_attach(session, monkeypatch, piped):
    import io

    from flight_mcp.errors import FlightError
    monkeypatch.setattr("sys.stdin", io.StringIO(piped))
    with pytest.raises(FlightError) as e:
        session.run()   # pid 999999: an attach would fail with another error
    assert e.value.code == "usage" and "give a command" in e.value.message and "echo stack |" in e.value.message


def test_history_shows_the_typed_lines_but_piped_lines_are_not_recorded(session, capsys, tmp_path):
    (tmp_path / "flight-mcp").mkdir(mode=0o700)
    (tmp_path / "flight-mcp" / "history").write_text("stack\n")
    piped = Session(999999, color=False, allow_mutating=False, tty=False)
    piped.execute("history")
    assert capsys.readouterr().out == "  1  stack\n"
    assert (tmp_path / "flight-mcp" / "history").read_text() == "stack\n"
    piped.sessions.close()
