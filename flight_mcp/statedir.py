"""The user's own state directory: $XDG_STATE_HOME/flight-mcp, else ~/.local/state/flight-mcp (the XDG
default; a relative XDG_STATE_HOME is ignored, as the spec says). It holds the interactive history,
the HTTP bearer token and the thread names last seen per target, and is private: a directory of this
user, not a symlink, 0700."""
import os
import stat


def root(env=None) -> str:
    env = os.environ if env is None else env
    base = env.get("XDG_STATE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(env.get("HOME") or os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "flight-mcp")


def private(path: str) -> str:
    """path (under root()), created 0700 when absent; OSError when it is a symlink, not a directory
    or not this user's. A looser mode on a directory of ours is tightened."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
        raise OSError(f"{path} is a symlink or not a directory of this user")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path
