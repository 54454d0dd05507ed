"""The thread names last seen per target, kept in our private state directory for readings from
outside during a GIL stall: a round trip, keyed by the process's start time, and nothing trusted
that is not a plain file of ours."""
import json
import os

import pytest

from flight_mcp import statedir
from flight_mcp.session import names_cache


@pytest.fixture
def state(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    return tmp_path / "flight-mcp" / "threads"


def test_names_round_trip_in_a_private_directory(state):
    pid = os.getpid()
    assert names_cache.load(pid) == {}
    names_cache.save(pid, {101: "regex-worker", 102: "MainThread"})
    assert names_cache.load(pid) == {101: "regex-worker", 102: "MainThread"}
    assert oct(os.stat(state).st_mode & 0o777) == "0o700"
    [f] = [p for p in state.iterdir()]
    assert oct(f.stat().st_mode & 0o777) == "0o600" and f.name.startswith(f"{pid}-")


def test_another_process_with_the_same_pid_gets_no_names(state):
    pid = os.getpid()
    names_cache.save(pid, {1: "a"})
    [f] = list(state.iterdir())
    f.rename(state / f"{pid}-1.json")    # what an earlier process with this pid left
    assert names_cache.load(pid) == {}


def test_a_link_or_bad_content_is_ignored(state, tmp_path):
    pid = os.getpid()
    names_cache.save(pid, {1: "a"})
    [f] = list(state.iterdir())
    elsewhere = tmp_path / "planted.json"
    elsewhere.write_text(json.dumps({"1": "planted"}))
    f.unlink()
    f.symlink_to(elsewhere)
    assert names_cache.load(pid) == {}
    f.unlink()
    f.write_text(json.dumps({"1": ["not", "a", "name"], "x": "y", "2": "ok"}))
    assert names_cache.load(pid) == {2: "ok"}


def test_a_state_directory_not_ours_is_not_used(state, tmp_path):
    os.makedirs(state.parent, exist_ok=True)
    os.symlink(tmp_path, state)   # the threads directory is a link: refused, nothing written
    names_cache.save(os.getpid(), {1: "a"})
    assert names_cache.load(os.getpid()) == {} and not any(p.suffix == ".json" for p in tmp_path.iterdir())
    with pytest.raises(OSError):
        statedir.private(str(state))


def test_a_planted_state_root_is_not_followed(tmp_path, monkeypatch):
    """A `flight-mcp` state folder that is a symlink (planted where XDG_STATE_HOME is shared, say) is
    refused for every folder under it, not only for itself: nothing is written where it points."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "flight-mcp").symlink_to(elsewhere)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    names_cache.save(os.getpid(), {1: "a"})
    assert not list(elsewhere.iterdir())
    for folder in (statedir.root(), os.path.join(statedir.root(), "threads")):
        with pytest.raises(OSError):
            statedir.private(folder)
    assert not list(elsewhere.iterdir())
