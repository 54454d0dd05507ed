"""The interactive session's history: where it lives, who may read it, what it keeps, `history -n/-c`."""
import os
import stat

import pytest

from flight_mcp.errors import FlightError
from flight_mcp.interactive import History, history_command, history_path


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_path_follows_xdg_state_home_else_home(tmp_path):
    assert history_path({"XDG_STATE_HOME": str(tmp_path), "HOME": "/h"}) == tmp_path / "flight-mcp" / "history"
    # unset, empty or relative: the XDG default under HOME
    for env in ({"HOME": "/h"}, {"XDG_STATE_HOME": "", "HOME": "/h"}, {"XDG_STATE_HOME": "rel/dir", "HOME": "/h"}):
        assert str(history_path(env)) == "/h/.local/state/flight-mcp/history"


def test_lines_persist_privately_across_sessions(tmp_path):
    path = tmp_path / "state" / "flight-mcp" / "history"
    first = History(path)
    assert not path.parent.exists()  # reading an absent history creates nothing
    for line in ("stack", "stack", "  ", "watch __main__ f -n 1  ", "stack"):
        first.add(line)
    assert first.lines == ["stack", "watch __main__ f -n 1", "stack"]  # no blank, no repeat of the one before
    assert mode(path.parent) == 0o700 and mode(path) == 0o600
    assert History(path).lines == ["stack", "watch __main__ f -n 1", "stack"]
    assert first.problem is None


def test_loose_permissions_of_our_own_files_are_tightened(tmp_path):
    d = tmp_path / "flight-mcp"
    d.mkdir(mode=0o777)
    os.chmod(d, 0o777)
    (d / "history").write_text("stack\n")
    os.chmod(d / "history", 0o644)
    h = History(d / "history")
    assert h.lines == ["stack"] and mode(d) == 0o700 and mode(d / "history") == 0o600


@pytest.mark.parametrize("planted", ["file", "dir"])
def test_symlinks_are_refused_and_the_history_stays_in_memory(tmp_path, planted):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "history").write_text("secret\n")
    d = tmp_path / "flight-mcp"
    if planted == "dir":
        d.symlink_to(elsewhere)
    else:
        d.mkdir()
        (d / "history").symlink_to(elsewhere / "history")
    h = History(d / "history")
    assert h.lines == [] and "history not kept on disk" in h.problem
    h.add("stack")
    assert h.lines == ["stack"]
    assert (elsewhere / "history").read_text() == "secret\n"  # nothing written through the link


def test_the_file_is_cut_back_when_it_doubles(tmp_path, monkeypatch):
    monkeypatch.setattr(History, "KEEP", 3)
    path = tmp_path / "h" / "history"
    h = History(path)
    for i in range(6):
        h.add(f"cmd {i}")
    assert h.lines == ["cmd 3", "cmd 4", "cmd 5"]
    assert len(path.read_text().splitlines()) == 6
    h.add("cmd 6")  # the file held 2 * KEEP lines: rewritten with the last KEEP
    assert path.read_text().splitlines() == ["cmd 4", "cmd 5", "cmd 6"]
    assert History(path).lines == ["cmd 4", "cmd 5", "cmd 6"] and mode(path) == 0o600


def test_history_command_numbers_the_last_n_and_clears(tmp_path):
    path = tmp_path / "h" / "history"
    h = History(path)
    for i in range(1, 13):
        h.add(f"cmd {i}")
    assert history_command(h, ["-n", "2"]).splitlines() == ["  11  cmd 11", "  12  cmd 12"]
    assert history_command(h, ["--limits=1"]).splitlines() == ["  12  cmd 12"]
    assert len(history_command(h, []).splitlines()) == 12  # fewer than the default 20
    # a --cmd's own line is shown last (it is not recorded)
    assert history_command(h, ["-n", "1"], current="history -n 1").splitlines() == ["  13  history -n 1"]
    assert history_command(h, ["-c"]) == ""
    assert h.lines == [] and path.read_text() == "" and History(path).lines == []


def test_history_lines_are_escaped(tmp_path):
    h = History(None)
    h.add("getglobal m x\x1b[2J")
    assert "\x1b" not in history_command(h, []) and "\\x1b[2J" in history_command(h, [])


@pytest.mark.parametrize("args", [["-n", "0"], ["-n"], ["-n", "x"], ["--bogus"], ["3"]])
def test_bad_history_arguments_say_the_usage(args):
    with pytest.raises(FlightError) as e:
        history_command(History(None), args)
    assert e.value.code == "usage" and "history [-n N] [-c]" in e.value.message
