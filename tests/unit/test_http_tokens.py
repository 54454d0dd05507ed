"""The HTTP transport's bearer token (flight_mcp/tokens.py): where it comes from, the file and folder
checks before it is trusted, and generation on first start. Real files under tmp_path, no process."""
import os
import stat

import pytest

from flight_mcp import statedir, tokens
from flight_mcp.errors import FlightError

TOKEN = "a" * 20 + "-_" + "b" * 21
UID = os.getuid()


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv(tokens.ENV, raising=False)
    return tmp_path / "state" / "flight-mcp"


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_state_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert tokens.default_path() == str(tmp_path / "flight-mcp" / "http-token")
    monkeypatch.setenv("XDG_STATE_HOME", "relative/dir")   # ignored, as the XDG spec says
    assert statedir.root() == os.path.join(os.path.expanduser("~"), ".local", "state", "flight-mcp")


def test_generated_on_first_start_then_reused(state):
    first = tokens.resolve(None, environ={})
    assert first.created and first.source == str(state / "http-token")
    assert len(first.value) >= 40 and first.value.isprintable()
    assert mode(state) == 0o700 and mode(state / "http-token") == 0o600
    assert (state / "http-token").read_text().strip() == first.value
    again = tokens.resolve(None, environ={})
    assert not again.created and again.value == first.value
    assert first.value not in repr(first)   # never the secret in a repr (tracebacks, logs)


def test_sources_in_order(state, tmp_path):
    given = tmp_path / "given"
    given.write_text(TOKEN + "\n")
    given.chmod(0o600)
    t = tokens.resolve(str(given), environ={tokens.ENV: "e" * 30})
    assert (t.value, t.source, t.created) == (TOKEN, str(given), False)
    t = tokens.resolve(None, environ={tokens.ENV: " " + "e" * 30 + "\n"})
    assert (t.value, t.source) == ("e" * 30, "$FLIGHT_MCP_TOKEN")
    assert not state.exists(), "a token was given: nothing is generated"


@pytest.mark.parametrize("bits", [0o640, 0o604, 0o660, 0o602, 0o620])
def test_token_file_open_to_others_is_refused(tmp_path, bits):
    f = tmp_path / "token"
    f.write_text(TOKEN)
    f.chmod(bits)
    with pytest.raises(FlightError) as e:
        tokens.read_token_file(str(f))
    assert e.value.code == "unsafe_token_file" and f"{bits:04o}" in e.value.message
    assert f"chmod 600 {f}" in e.value.hint and TOKEN not in e.value.message + e.value.hint


def test_token_file_through_a_link_is_checked_at_its_end(tmp_path):
    """A Kubernetes Secret volume is made of links (token -> ..data/token): they are followed, and
    the file they end at is what is checked."""
    real = tmp_path / "..data"
    real.mkdir()
    (real / "token").write_text(TOKEN)
    (real / "token").chmod(0o400)
    (tmp_path / "token").symlink_to("..data/token")
    assert tokens.read_token_file(str(tmp_path / "token")).value == TOKEN
    (real / "token").chmod(0o444)
    with pytest.raises(FlightError, match="0444"):
        tokens.read_token_file(str(tmp_path / "token"))


@pytest.mark.skipif(UID != 0, reason="giving a file to another user needs root")
def test_token_file_of_another_user_is_refused(tmp_path):
    f = tmp_path / "token"
    f.write_text(TOKEN)
    f.chmod(0o600)
    os.chown(f, 4242, -1)
    with pytest.raises(FlightError, match="belongs to uid 4242") as e:
        tokens.read_token_file(str(f))
    assert e.value.code == "unsafe_token_file"


def test_not_a_token(tmp_path):
    f = tmp_path / "token"
    for content, why in (("", "empty"), ("short-token", "at least 16"), ("two words but long enough", "spaces"),
                         (b"\xff" * 20, "not ASCII"), ("x" * 5000, "larger than")):
        f.write_bytes(content if isinstance(content, bytes) else content.encode())
        f.chmod(0o600)
        with pytest.raises(FlightError, match=why) as e:
            tokens.read_token_file(str(f))
        assert e.value.code == "bad_token"
    with pytest.raises(FlightError, match="cannot open") as e:
        tokens.read_token_file(str(tmp_path / "absent"))
    os.mkfifo(tmp_path / "fifo", 0o600)   # opened without blocking, refused as not a regular file
    with pytest.raises(FlightError, match="not a regular file"):
        tokens.read_token_file(str(tmp_path / "fifo"))
    with pytest.raises(FlightError, match="at least 16"):
        tokens.resolve(None, environ={tokens.ENV: "short"})


def test_generated_file_loosened_or_replaced_is_not_used(state):
    tokens.resolve(None, environ={})
    path = state / "http-token"
    path.chmod(0o644)
    with pytest.raises(FlightError, match="open to other users") as e:
        tokens.resolve(None, environ={})
    assert e.value.code == "unsafe_token_file" and f"rm {path}" in e.value.hint
    path.unlink()
    elsewhere = state.parent / "planted"
    elsewhere.write_text(TOKEN)
    elsewhere.chmod(0o600)
    path.symlink_to(elsewhere)   # a link where our file should be: not followed
    with pytest.raises(FlightError, match="symbolic link"):
        tokens.resolve(None, environ={})
    path.unlink()
    os.link(elsewhere, path)   # a second name of someone's file
    with pytest.raises(FlightError, match="hard links"):
        tokens.resolve(None, environ={})


def test_state_dir_open_to_others_or_a_link_is_not_used(state, tmp_path):
    state.mkdir(parents=True, mode=0o700)
    state.chmod(0o755)
    with pytest.raises(FlightError) as e:
        tokens.resolve(None, environ={})
    assert e.value.code == "unsafe_token_file" and "0755" in e.value.message and f"chmod 700 {state}" in e.value.hint
    assert not (state / "http-token").exists()
    state.rmdir()
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    state.symlink_to(other)
    with pytest.raises(FlightError, match="symbolic link"):
        tokens.resolve(None, environ={})
    assert not (other / "http-token").exists()


def test_constant_time_match():
    t = tokens.Token(TOKEN, "x")
    assert t.matches(TOKEN.encode())
    assert not t.matches(TOKEN[:-1].encode()) and not t.matches((TOKEN + "x").encode()) and not t.matches(b"")
