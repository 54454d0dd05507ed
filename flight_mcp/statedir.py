"""The user's own state directory: $XDG_STATE_HOME/flight-mcp, else ~/.local/state/flight-mcp (the XDG
default; a relative XDG_STATE_HOME is ignored, as the spec says). It holds the interactive history,
the HTTP bearer token and the thread names last seen per target, and is private: a directory of this
user, not a symlink, 0700."""
import os
import stat

NAME = "flight-mcp"


def root(env=None) -> str:
    env = os.environ if env is None else env
    base = env.get("XDG_STATE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(env.get("HOME") or os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, NAME)


def private(path: str) -> str:
    """path: root() or a folder under it (any other folder is checked alone). Each folder from root() down to path is created 0700 when
    absent, and must be a directory of this user, not a symlink (OSError otherwise): checking path alone
    would let a planted `flight-mcp` symlink lead every write under it elsewhere. A looser mode on a
    folder of ours is tightened."""
    chain = [path]
    while os.path.basename(chain[-1]) != NAME:   # up to root(), which always ends in NAME
        parent = os.path.dirname(chain[-1])
        if parent == chain[-1]:   # a folder chosen elsewhere (a test's): itself only
            chain = [path]
            break
        chain.append(parent)
    os.makedirs(os.path.dirname(chain[-1]), exist_ok=True)   # the XDG base (~/.local/state): not ours to judge
    for folder in reversed(chain):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            pass
        st = os.lstat(folder)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            raise OSError(f"{folder} is a symlink or not a directory of this user")
        if st.st_mode & 0o077:
            os.chmod(folder, 0o700)
    return path
