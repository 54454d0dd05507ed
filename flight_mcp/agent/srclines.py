"""Source lines of the target's files for frames (stack, gilstat, a captured exception's traceback),
read by the agent itself rather than through linecache: linecache imports tokenize and re into a target
that has not loaded them (on 3.12+ a bare target has not: ~20-40 ms of its CPU, and in a target whose
threads all want the GIL each import's ~12 system calls wait to get it back), and it keeps every file it
read in the target's own cache for good. Here a file costs four system calls, is decoded as the
interpreter decodes source (BOM, PEP 263 coding cookie), and is kept only by the Lines of one command.
"""
import os
import stat
import sys

MAX_BYTES = 8 << 20   # a larger "source" is not read (its lines show empty)
_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK   # O_NONBLOCK: a FIFO under a file's name never blocks us


class Lines(object):
    """The lines of the files one command shows, each file read once."""

    def __init__(self):
        self._files = {}

    def get(self, filename, lineno):
        """Line lineno (1-based) of filename, stripped; "" when unknown (no such file or line, or a
        name such as <string>)."""
        if type(lineno) is not int or lineno < 1:
            return ""
        lines = self._files.get(filename)
        if lines is None:
            lines = self._files[filename] = _read(filename)
        return lines[lineno - 1].strip() if lineno <= len(lines) else ""


def _read(filename):
    if type(filename) is not str or not filename or filename.startswith("<"):
        return ()
    fd = _open(filename)
    if fd is None:
        return ()
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_BYTES:
            return ()
        data = os.read(fd, st.st_size + 1)   # one read: a regular file's is short only at its end
    except OSError:
        return ()
    finally:
        os.close(fd)
    text = decode(data)
    # universal newlines, as the interpreter numbers lines (str.splitlines would also split at \f, \x1c...)
    return tuple(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))


def _open(filename):
    """A descriptor of the file, or None. A relative name (a script started by a relative path on 3.8) is
    also looked for along sys.path, as linecache does: the process may have changed its directory since."""
    places = [filename]
    if not os.path.isabs(filename):
        places += [os.path.join(d, filename) for d in sys.path if type(d) is str and d]
    for path in places:
        try:
            return os.open(path, _FLAGS)
        except (OSError, ValueError):
            continue
    return None


def decode(data):
    """Source bytes as text: UTF-8 with or without a BOM, or the encoding a coding cookie in the first
    two lines names (PEP 263); undecodable bytes replaced."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", "replace")
    encoding = "utf-8"
    for line in data.split(b"\n", 2)[:2]:
        name = _cookie(line)
        if name is not None:
            encoding = name
            break
        if line.strip() and not line.lstrip().startswith(b"#"):
            break   # code before the cookie line: a cookie after it does not count
    try:
        return data.decode(encoding, "replace")
    except LookupError:   # an encoding Python does not know: the interpreter itself refuses such a file
        return data.decode("utf-8", "replace")


def _cookie(line):
    """The encoding a `# -*- coding: NAME -*-` comment line names, or None."""
    stripped = line.lstrip(b" \t\f")
    if not stripped.startswith(b"#"):
        return None
    at = stripped.find(b"coding")
    while at >= 0:
        rest = stripped[at + 6:]
        if rest[:1] in (b":", b"="):
            rest = rest[1:].lstrip(b" \t")
            end = 0
            while end < len(rest) and (rest[end:end + 1].isalnum() or rest[end:end + 1] in b"-_."):
                end += 1
            if end:
                return rest[:end].decode("ascii", "replace")
        at = stripped.find(b"coding", at + 6)
    return None
