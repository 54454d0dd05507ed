"""Files of the runtime directory, used only when they are provably what flight-mcp put there.

One implementation for both sides: the host checks a directory with it before reusing it, and the
bootstrap script that the target runs embeds this very source, so the checks made right before the
target loads a file are these lines. Hence: standard library only, Python 3.8 syntax, no
`from __future__`, no threading, nothing done at import time beyond definitions.

The rule: a directory is used only when it is a real directory (never a link) owned by the
expected uid and not writable by group or others (the runtime directory itself: no group/other
bits at all); a file only when it is a regular file with a single link, owned by that uid, not
writable by group or others, and (for what the target loads) its content has the SHA-256 the host
recorded when it wrote it. Every path is opened relative to a checked directory's descriptor,
without following links, and code is compiled from the very bytes that were hashed, so nothing
can be swapped between the check and the use.
"""
import _thread
import errno
import os
import stat
import sys

AGENT_MODULE = "_flight_mcp_agent"  # prefix of the private module name of every agent build
MAX_FILE = 32 << 20

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO planted under a file's name must not hang whoever opens it.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class Untrusted(Exception):
    """What is at a path is not provably ours; the message names the path, what is there, whose."""


class AgentConflict(Exception):
    """An agent of another flight-mcp build is running in the process."""


# Every system call and every hash of 2 KiB or more lets the GIL go, and in a target whose threads all
# want it, getting it back takes a switch interval or more (measured ~20-30 ms, 3.8 and 3.12): the agent's
# start made ~400 of them, ~10 s before its first answer. So files are read in one read(), hashed in
# pieces below hashlib's threshold, and the agent folder is opened once per load (AgentFiles.hold).
_HASH_PIECE = 2047


def sha256(data):
    h = _sha256()()
    view = memoryview(data)
    for start in range(0, len(view), _HASH_PIECE):
        h.update(view[start:start + _HASH_PIECE])
    return h.hexdigest()


_SHA256 = []


def _sha256():
    """hashlib.sha256 when the process has hashlib already; else the interpreter's own SHA-256 module:
    importing hashlib (OpenSSL) cost a bare target ~7 ms of every attach."""
    if not _SHA256:
        hashlib = sys.modules.get("hashlib")
        if hashlib is not None:
            _SHA256.append(hashlib.sha256)
        else:
            for name in ("_sha2", "_sha256"):   # 3.12+, before
                try:
                    _SHA256.append(__import__(name).sha256)
                    break
                except (ImportError, AttributeError):
                    pass
            else:
                import hashlib
                _SHA256.append(hashlib.sha256)
    return _SHA256[0]


def _kind(st):
    for test, name in ((stat.S_ISLNK, "symbolic link"), (stat.S_ISDIR, "directory"), (stat.S_ISREG, "regular file"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device")):
        if test(st.st_mode):
            return name
    return "special file"


def _owner(uid):
    try:
        import pwd
        return "uid %d (%s)" % (uid, pwd.getpwuid(uid).pw_name)
    except (ImportError, KeyError):
        return "uid %d" % uid


def problem(st, uid, want_dir, forbidden_bits):
    """Why st is not usable (a phrase), or None."""
    if want_dir != stat.S_ISDIR(st.st_mode) or not (want_dir or stat.S_ISREG(st.st_mode)):
        return "is a %s owned by %s, not a %s" % (_kind(st), _owner(st.st_uid),
                                                  "directory" if want_dir else "regular file")
    if st.st_uid != uid:
        return "belongs to %s, not to %s" % (_owner(st.st_uid), _owner(uid))
    if st.st_mode & forbidden_bits:
        return "has mode %04o (owner %s): %s" % (stat.S_IMODE(st.st_mode), _owner(st.st_uid),
                                                "open to other users" if forbidden_bits == 0o077
                                                else "writable by other users")
    if not want_dir and st.st_nlink != 1:
        return "has %d hard links (owner %s)" % (st.st_nlink, _owner(st.st_uid))
    return None


def _open(name, flags, dir_fd, shown):
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except OSError as e:
        if e.errno not in (errno.ELOOP, errno.ENOTDIR, errno.ENXIO, errno.EMLINK):
            raise
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            raise e
        want = "directory" if flags & os.O_DIRECTORY else "regular file"
        if stat.S_ISLNK(st.st_mode):
            raise Untrusted("%s is a symbolic link owned by %s (to %s), not a %s" % (
                shown, _owner(st.st_uid), os.readlink(name, dir_fd=dir_fd), want))
        raise Untrusted("%s is a %s owned by %s, not a %s" % (shown, _kind(st), _owner(st.st_uid), want))


def open_dir(name, uid, dir_fd=None, private=False, shown=None):
    """A descriptor of directory `name` (relative to dir_fd) after checking it; `private`: no
    group/other bits at all (the directory that gates every other user's reach)."""
    fd = _open(name, _DIR_FLAGS, dir_fd, shown or name)
    why = problem(os.fstat(fd), uid, True, 0o077 if private else 0o022)
    if why:
        os.close(fd)
        raise Untrusted("%s %s" % (shown or name, why))
    return fd


def read_file(dir_fd, name, uid=None, shown=None, limit=MAX_FILE):
    """The bytes of regular file `name`; with uid, only when it passes the ownership rule."""
    shown = shown or name
    fd = _open(name, _FILE_FLAGS, dir_fd, shown)
    try:
        st = os.fstat(fd)
        why = problem(st, uid, False, 0o022) if uid is not None else (
            None if stat.S_ISREG(st.st_mode) else "is a %s, not a regular file" % _kind(st))
        if why:
            raise Untrusted("%s %s" % (shown, why))
        if st.st_size > limit:
            raise Untrusted("%s is %d bytes, more than flight-mcp ever writes there" % (shown, st.st_size))
        chunks, left = [], limit + 1
        want = min(st.st_size + 1, left)   # one read, unless the file grew since fstat
        while left > 0:
            chunk = os.read(fd, want)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
            if len(chunk) < want:   # a regular file's read is short only at its end
                break
            want = min(left, 1 << 20)
        return b"".join(chunks)[:limit]
    finally:
        os.close(fd)


def read_verified(dir_fd, name, uid, digest, shown=None):
    data = read_file(dir_fd, name, uid, shown)
    if sha256(data) != digest:
        raise Untrusted("%s differs from the file flight-mcp installed (content hash mismatch)" % (shown or name))
    return data


class AgentFiles(object):
    """Path-entry finder and loader of the agent package: a module's code comes from bytes whose
    hash is in the manifest the host wrote into the bootstrap (name -> sha256; bytecode under
    `__pycache__/` when the host compiled it for this interpreter), read through checked directory
    descriptors at the moment the module is imported (commands are imported on first use)."""

    def __init__(self, root, uid, manifest):
        self.root = root.rstrip("/")  # .../flight-mcp-<uid>/agent-<build>, as this process sees it
        self.uid = uid
        self.manifest = manifest
        # while loading: {"root": fd, "pycache": fd or None, "sources": name -> verified bytes, "thread": ident},
        # used by the loading thread only (another one, e.g. a command arriving during the start, opens
        # its own: these descriptors close when the load ends)
        self._held = None

    def hold(self):
        """Opens the folder once for a whole load (verify_all, then the imports of the agent's start),
        keeping the sources verify_all read: a module's code then costs no re-opening of the folder."""
        root = self.open_root()
        try:
            pycache = open_dir("__pycache__", self.uid, root) if any(
                n.startswith("__pycache__/") for n in self.manifest) else None
        except (OSError, Untrusted):
            pycache = None   # its bytecode is then skipped for the verified sources, as in _bytecode
        self._held = {"root": root, "pycache": pycache, "sources": {}, "thread": _thread.get_ident()}

    def release(self):
        held, self._held = self._held, None
        if held is not None:
            for fd in (held["root"], held["pycache"]):
                if fd is not None:
                    os.close(fd)

    def _mine(self):
        """What the load this thread runs holds, or None."""
        held = self._held
        return held if held is not None and held["thread"] == _thread.get_ident() else None

    def open_root(self):
        top = os.path.dirname(self.root)
        # The system's /tmp (or the test's stand-in) may itself be a link; what follows may not.
        base = os.open(os.path.dirname(top), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = open_dir(os.path.basename(top), self.uid, base, private=True, shown=top)
        finally:
            os.close(base)
        try:
            return open_dir(os.path.basename(self.root), self.uid, fd, shown=self.root)
        finally:
            os.close(fd)

    def verify_all(self):
        """Every file of the manifest but the optional bytecode, and no file beside them: a tampered
        folder is refused at attach, not at a command's first use."""
        held = self._mine()
        fd = held["root"] if held is not None else self.open_root()
        try:
            names = set(n for n in self.manifest if "/" not in n)
            extra = sorted(set(os.listdir(fd)) - names - {"__pycache__"})
            if extra:
                raise Untrusted("%s holds files flight-mcp did not install: %s" % (self.root, ", ".join(extra[:5])))
            for name in sorted(names):
                data = read_verified(fd, name, self.uid, self.manifest[name], self.root + "/" + name)
                if held is not None:
                    held["sources"][name] = data
        finally:
            if held is None:
                os.close(fd)

    def find_spec(self, fullname, target=None):
        name = fullname.rpartition(".")[2] + ".py"
        if name not in self.manifest:
            return None
        return _importlib()[1].spec_from_file_location(fullname, self.root + "/" + name, loader=self)

    def invalidate_caches(self):
        pass

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        exec(self.code(os.path.basename(module.__spec__.origin)), module.__dict__)

    def code(self, name):
        held = self._mine()
        fd = held["root"] if held is not None else self.open_root()
        try:
            code = self._bytecode(fd, name, held)
            if code is not None:
                return code
            path = self.root + "/" + name
            source = held["sources"].get(name) if held is not None else None
            if source is None:
                source = read_verified(fd, name, self.uid, self.manifest[name], path)
            return compile(source, path, "exec", dont_inherit=True)
        finally:
            if held is None:
                os.close(fd)

    def _bytecode(self, fd, name, held):
        # Only bytecode whose hash the host recorded right after compiling it; anything else
        # (another interpreter's, stale, altered) is skipped for the verified source.
        pyc = "%s.%s.pyc" % (name[:-3], sys.implementation.cache_tag)
        digest = self.manifest.get("__pycache__/" + pyc)
        if digest is None:
            return None
        import marshal
        try:
            if held is not None:
                if held["pycache"] is None:
                    return None
                data = read_verified(held["pycache"], pyc, self.uid, digest)
            else:
                cfd = open_dir("__pycache__", self.uid, fd)
                try:
                    data = read_verified(cfd, pyc, self.uid, digest)
                finally:
                    os.close(cfd)
        except (OSError, Untrusted):
            return None
        if data[:4] != _importlib()[1].MAGIC_NUMBER:
            return None
        return marshal.loads(data[16:])


def _listening(agent):
    probe = getattr(agent, "listening", None)
    if probe is not None:
        return probe()
    state = getattr(getattr(agent, "_server", None), "_state", None)  # agents before 0.2.0
    return isinstance(state, dict) and state.get("listener") is not None


def _unload(name):
    agent = sys.modules.get(name)
    if getattr(agent, "unload", None) is not None:
        agent.unload()
        return
    for key in [k for k in list(sys.modules) if k == name or k.startswith(name + ".")]:  # agents before 0.2.0
        sys.modules.pop(key, None)


def _importlib():
    """(importlib._bootstrap, importlib._bootstrap_external): loaded in every interpreter, where
    importlib.util cost a bare target ~5 ms of imports on every attach."""
    boot, external = sys.modules.get("_frozen_importlib"), sys.modules.get("_frozen_importlib_external")
    if not (hasattr(boot, "module_from_spec") and hasattr(external, "spec_from_file_location")
            and hasattr(external, "MAGIC_NUMBER")):
        import importlib.util
        return importlib.util, importlib.util
    return boot, external


def load_agent(module, agent_dir, uid, manifest, then=None):
    """The agent package of this build, loaded once per process (of two racing bootstraps exactly one
    loads it: setdefault is atomic under the GIL). An agent of another build that still listens is
    refused (its host must detach it first); one that was detached is unloaded. With `then`, returns
    then(agent) instead, the folder still open for the modules it imports (the agent's start)."""
    files = AgentFiles(agent_dir, uid, manifest)
    files.hold()
    try:
        mod = _load(module, agent_dir, files)
        return mod if then is None else then(mod)
    finally:
        files.release()


def _load(module, agent_dir, files):
    import time
    files.verify_all()
    for name in [k for k in list(sys.modules) if k.startswith(AGENT_MODULE) and "." not in k and k != module]:
        other = sys.modules.get(name)
        if _listening(other):
            raise AgentConflict("the agent of another flight-mcp (version %s) is running in this process and "
                                "still listens; detach it first" % getattr(other, "AGENT_VERSION", "unknown"))
        _unload(name)
    boot, external = _importlib()
    spec = external.spec_from_file_location(module, agent_dir + "/__init__.py", loader=files,
                                            submodule_search_locations=[agent_dir])
    fresh = boot.module_from_spec(spec)
    mod = sys.modules.setdefault(module, fresh)
    if mod is fresh:
        sys.path_importer_cache[agent_dir] = files  # the package's submodules come through `files` too
        try:
            files.exec_module(mod)
        except BaseException:
            sys.modules.pop(module, None)
            sys.path_importer_cache.pop(agent_dir, None)
            raise
    else:
        deadline = time.monotonic() + 10
        while not hasattr(mod, "start") and time.monotonic() < deadline:
            time.sleep(0.005)  # the other bootstrap is still loading it
    return mod


def report(errfile, exc):
    """Writes why the agent did not start for the host to read; its last line is `Kind: message`."""
    try:
        import traceback
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        if isinstance(exc, (Untrusted, AgentConflict)):
            text = ""
        text += "%s: %s\n" % (type(exc).__name__, exc)
        fd = os.open(errfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, text.encode("utf-8", "replace"))
        finally:
            os.close(fd)
    except BaseException:
        pass
