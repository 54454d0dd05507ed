"""Files the target needs to start the agent, in a directory no other user can reach.

Everything lives in /tmp/flight-mcp-<uid>/ as the *target* sees it (through /proc/PID/root, so a
containerised target sees it too), owned by the target's uid with mode 0700, so a non-root target
can read it when we run as root and nobody else can. The agent package is copied there, so the
target needs neither flight-mcp installed nor read access to our install directory. In a container
the target is given every path as it sees it (/tmp/..., never our /proc/PID/root/...: a pid namespace
of its own has another /proc), and uids as its user namespace numbers them (target_uids); names in
the directory carry pids as we see them (pidns.py translates what the agent reports).

/tmp is every local user's, so nothing found there is trusted without proof (a planted
/tmp/flight-mcp-0 was root code execution): RuntimeDir creates its directory atomically and uses
it only through descriptors, after checking that it is a real directory of the target's uid with
no group/other bits; it never chowns or chmods anything it did not just create; it creates every
file fresh (O_EXCL, never through a link); the bootstrap script carries the content hash of every
file the target will load and checks it right before loading (trusted_files.py, whose source the
script embeds). RuntimeDir is the one place that knows the names of the files in that directory,
and it removes the files of targets that are gone.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import glob
import hashlib
import os
import re
import secrets
import socket
import stat
import subprocess
import time

from .. import procfs
from ..errors import FlightError
from . import trusted_files
from .trusted_files import AGENT_MODULE, Untrusted

_PKG = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AGENT_SRC = os.path.join(_PKG, "agent")

# The checks (trusted_files.py) as the bootstrap's first lines: from the bytecode that the target's own
# interpreter compiled into the agent folder (its hash recorded by the host right after), else from their
# source. Compiling them in the target was ~5-10 ms of every attach.
_CHECKS = '''
def _flight_mcp_checks(pyc, source):
    import marshal
    import sys
    external = sys.modules.get("_frozen_importlib_external")
    code = None
    if pyc is not None and pyc[:4] == getattr(external, "MAGIC_NUMBER", None):
        try:
            code = marshal.loads(pyc[16:])
        except Exception:
            code = None
    if type(code) is not type(_flight_mcp_checks.__code__):
        code = compile(source, globals().get("__flight_mcp_bootstrap__", "<flight-mcp bootstrap>"), "exec")
    exec(code, globals())
_flight_mcp_checks({pyc!r}, {source!r})
del _flight_mcp_checks
'''
# trusted_files.py's name in the agent folder, where precompile() compiles it with the agent's modules
CHECKS_FILE = "_trusted_files.py"

_START = '''
def _flight_mcp_start():
    try:
        os.unlink(__flight_mcp_bootstrap__)  # read: the server now knows this injection is no longer pending
    except BaseException:
        pass
    try:
        load_agent({module!r}, {agent_dir!r}, {agent_uid!r}, {manifest!r},
                   lambda agent: agent.start({sock!r}, {host_uid!r}, {build!r}))
    except BaseException as e:  # a SystemExit here must never end the target
        report({errfile!r}, e)
_flight_mcp_start()
'''

# Files of dead targets older than this go: younger ones may belong to a flight-mcp in another
# pid namespace (the names carry pids as each flight-mcp sees them) that is using them right now.
_STALE_S = 60.0
_OWNED_BY_PID = re.compile(r"^(?:agent-(\d+)\.|inject-(\d+)-)")
_AGENT_FOLDER = re.compile(r"^agent-[0-9a-f]+$")
_HALF_MADE = re.compile(r"^(?:agent-[0-9a-f]+\.tmp-|\.trash-)[0-9a-f]+$")
# Where our own code shows in a target (frames, mapped files): the agent folder and staged payloads.
OWN_PATH = re.compile(r"/flight-mcp-\d+/(agent-[0-9a-f]+/|inject-\d+-[0-9a-f]+\.(so|py))")
PAYLOAD_FILE = re.compile(r"(^|/)inject-\d+-[0-9a-f]+\.so")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def payload_library() -> str:
    found = sorted(glob.glob(os.path.join(_PKG, "payload", "_flight_payload*.so")))
    if not found:
        raise FlightError("install_broken", "the payload library is missing: reinstall flight-mcp with "
                          "`pip install .` on a machine with a C compiler (gcc).")
    return found[0]


@functools.lru_cache(maxsize=1)
def agent_sources() -> tuple[str, tuple[tuple[str, bytes], ...]]:
    """(build, ((name, content), ...)): the agent's modules and its C extensions (stable-ABI
    `_flight_mcp_*.so`, one build for any target). The build names the agent folder and is what
    a host compares with a running agent's to find one left by another flight-mcp."""
    files = [(CHECKS_FILE, _checks_source().encode())]
    for name in sorted(os.listdir(AGENT_SRC)):
        if name.endswith(".py") or (name.startswith("_flight_mcp_") and name.endswith(".so")):
            with open(os.path.join(AGENT_SRC, name), "rb") as f:
                files.append((name, f.read()))
    files.sort()
    digest = hashlib.sha256()
    for name, data in files:
        digest.update(name.encode() + b"\0" + trusted_files.sha256(data).encode())
    return digest.hexdigest()[:16], tuple(files)


def agent_build() -> str:
    return agent_sources()[0]


@functools.lru_cache(maxsize=1)
def _checks_source() -> str:
    with open(trusted_files.__file__, encoding="utf-8") as f:
        return f.read()


def bootstrap_script(*, module: str, agent_dir: str, agent_uid: int, manifest: dict, sock: str, host_uid: int,
                     build: str, errfile: str, checks: bytes | None = None) -> str:
    """The script the payload runs in a fresh namespace of the target, on a new thread. checks: the
    bytecode of trusted_files.py compiled for the target (CHECKS_FILE's), if there is one."""
    return _CHECKS.format(pyc=checks, source=_checks_source()) + _START.format(module=module, agent_dir=agent_dir, agent_uid=agent_uid,
                                             manifest=manifest, sock=sock, host_uid=host_uid, build=build,
                                             errfile=errfile)


class RuntimeDir:
    """One target's runtime directory: its paths in our view (`host`) and the target's (`target`),
    and every file in it. `tmp` replaces the target's /tmp (tests)."""

    def __init__(self, pid: int, uid: int, gid: int, tmp: str | None = None):
        self.pid, self.uid, self.gid = pid, uid, gid
        self.name = f"flight-mcp-{uid}"
        self.target = f"/tmp/{self.name}"
        self.tmp = tmp or procfs.root(pid, "/tmp")
        self.host = os.path.join(self.tmp, self.name)

    @classmethod
    def of(cls, pid: int) -> "RuntimeDir":
        """The runtime directory of running pid (its owner's); no_such_process when it is gone."""
        try:
            uid, gid = procfs.owner(pid)
        except FileNotFoundError:
            raise FlightError("no_such_process", f"pid {pid} exited while attaching.")
        return cls(pid, uid, gid)

    # -- names ---------------------------------------------------------------------------------
    def to_target(self, host_path: str) -> str:
        """A path under our view of the runtime dir, as the target sees it."""
        return self.target + host_path[len(self.host):]

    def sock(self, view: str) -> str:
        return os.path.join(getattr(self, view), f"agent-{self.pid}.sock")

    def errfile(self, view: str) -> str:
        return os.path.join(getattr(self, view), f"agent-{self.pid}.error")

    def _lock_name(self) -> str:
        return f"agent-{self.pid}.lock"

    def staged_prefix(self) -> str:
        """Start of the names of the payload copies and bootstrap scripts staged for this pid
        (also how a mapped payload shows in /proc/PID/maps)."""
        return f"inject-{self.pid}-"

    def has_socket(self) -> bool:
        """The agent's socket is there (maybe left by an earlier process with this pid)."""
        return os.path.exists(self.sock("host"))

    def payload_mapped(self, maps: "list[procfs.Mapping] | None" = None) -> bool:
        """A payload staged for this pid is mapped in the process: an agent was injected into this very
        process (not into an earlier one with the same pid)."""
        mine = f"/{self.staged_prefix()}"
        return any(mine in m.path for m in (procfs.maps(self.pid) if maps is None else maps) or ())

    def pending_injection(self) -> bool:
        """A payload of ours is mapped in pid and its bootstrap has not run yet (the bootstrap deletes
        its own script first thing; the library file goes as soon as the injector has mapped it)."""
        scripts = {n[:-3] for n in self.staged() if n.endswith(".py")}
        if not scripts:
            return False
        return any(f"/{stem}.so" in m.path for m in procfs.maps(self.pid) or () for stem in scripts)

    def staged(self) -> list[str]:
        try:
            names = os.listdir(self.host)
        except OSError:
            return []
        return [n for n in names if n.startswith(self.staged_prefix())]

    def _ours_too(self) -> bool:
        """Whether the target's /tmp is ours as well (no mount namespace of its own)."""
        try:
            return os.path.samestat(os.stat(self.tmp), os.stat("/tmp"))
        except OSError:
            return False

    def _shown(self) -> str:
        """The directory as the target names it, and as we reach it when that differs."""
        return self.target if self._ours_too() else f"{self.target} (seen from here as {self.host})"

    def target_uids(self) -> tuple[int, int]:
        """(the owner of the runtime dir, our uid) as the target's user namespace numbers them: what the
        bootstrap checks the files against, and whom the agent lets connect (SO_PEERCRED tells it uids in
        its namespace). A target in a user namespace where our uid has no number would see our
        connections as the overflow uid (nobody's): refused."""
        ranges = procfs.id_map(self.pid)
        if ranges is None:  # gone, or an old kernel: ids are ours
            return self.uid, os.geteuid()
        owner, us = procfs.map_inside(ranges, self.uid), procfs.map_inside(ranges, os.geteuid())
        if owner is None or us is None:
            shown = "; ".join(f"{i} -> {o} (x{n})" for i, o, n in ranges[:4]) or "empty"
            who = f"{os.geteuid()} (flight-mcp's)" if us is None else f"{self.uid} (its owner's)"
            raise FlightError("unmapped_user", f"pid {self.pid} runs in a user namespace where uid {who} has no "
                              f"id (its uid_map, inside -> outside: {shown}): its agent could not tell flight-mcp's "
                              f"connections from anyone's, so nothing was staged or loaded. Run flight-mcp as a uid "
                              f"mapped there (uid {self.uid}, the target's owner), or inside the container.")
        return owner, us

    # -- the directory ----------------------------------------------------------------------------
    def ensure(self) -> None:
        """Creates the directory when missing (atomically, 0700, the target's uid), refuses anything
        else found there, and removes the files of targets that are gone."""
        if os.geteuid() not in (0, self.uid):
            raise FlightError("permission_denied", f"pid {self.pid} runs as uid {self.uid} and flight-mcp as uid "
                              f"{os.geteuid()}: the target could not read files staged by us. Run flight-mcp as "
                              "the target's user or as root.")
        self.target_uids()  # refused before anything is written in its /tmp
        parent = self._open_tmp()
        try:
            try:
                os.mkdir(self.name, 0o700, dir_fd=parent)
                fd = os.open(self.name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=parent)
                try:
                    # Ours: nobody else may rename or replace an entry of ours in a sticky /tmp.
                    if os.fstat(fd).st_uid == os.geteuid():
                        os.fchmod(fd, 0o700)  # whatever the umask
                        if self.uid != os.geteuid():
                            os.fchown(fd, self.uid, self.gid)
                finally:
                    os.close(fd)
            except FileExistsError:
                pass  # checked below like anything else found there
            except OSError as e:
                raise FlightError("permission_denied", f"cannot create {self._shown()} for pid {self.pid}: {e}. "
                                  "Run flight-mcp as the target's user or as root.")
            fd = self._open_checked(parent)
        finally:
            os.close(parent)
        try:
            with self._failing("list the files of dead targets"):
                self._remove_dead(fd)
        finally:
            os.close(fd)

    def _open_tmp(self) -> int:
        try:
            return os.open(self.tmp, _DIR_FLAGS)
        except FileNotFoundError:
            raise FlightError("no_such_process", f"pid {self.pid} exited, or has no /tmp ({self.tmp}) where "
                              "flight-mcp could stage its agent.")
        except PermissionError as e:
            raise FlightError("permission_denied", f"cannot reach the /tmp of pid {self.pid} ({e}). Run flight-mcp "
                              "as the target's user or as root (in a container: CAP_SYS_PTRACE).")

    def _open_checked(self, parent: int) -> int:
        try:
            return trusted_files.open_dir(self.name, self.uid, parent, private=True, shown=self._shown())
        except FileNotFoundError:
            raise FlightError("unsafe_runtime_dir", f"{self._shown()} vanished while attaching (removed by "
                              "someone else); retry.")
        except Untrusted as e:
            raise FlightError("unsafe_runtime_dir", f"{e}. flight-mcp stages the code it loads into pid {self.pid} "
                              "there, so it never uses, adopts, chowns or chmods a path it did not create: remove "
                              f"it (as root: `rm -rf {self.target if self._ours_too() else self.host}`) and retry.")

    def _open_dir(self) -> int:
        parent = self._open_tmp()
        try:
            return self._open_checked(parent)
        finally:
            os.close(parent)

    @contextlib.contextmanager
    def _failing(self, doing: str):
        """A file-system error while `doing` something in the directory, told as such (a full or
        read-only /tmp, a file removed under us), never as a traceback."""
        try:
            yield
        except OSError as e:
            raise FlightError("runtime_dir_failed", f"could not {doing} in {self._shown()} for pid {self.pid}: "
                              f"{e.strerror or e}. Check that the target's /tmp is writable and not full, then "
                              "retry.") from None

    @contextlib.contextmanager
    def _opened(self, doing: str):
        """The checked directory's descriptor, to be `doing` something with."""
        fd = self._open_dir()
        try:
            with self._failing(doing):
                yield fd
        finally:
            os.close(fd)

    def _give(self, fd: int) -> None:
        """What we just created goes to the target's uid (a non-root target must read it)."""
        if os.geteuid() == 0 and self.uid != 0:
            os.fchown(fd, self.uid, self.gid)

    def _write_new(self, dir_fd: int, name: str, data: bytes) -> None:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        try:
            self._give(fd)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)

    def _remove_dead(self, dir_fd: int) -> None:
        """Sockets, locks, error files and staged payloads of pids that no longer exist, and the
        half-made agent folders of a flight-mcp killed while installing one."""
        for name in os.listdir(dir_fd):
            m = _OWNED_BY_PID.match(name)
            pid = int(m.group(1) or m.group(2)) if m else None
            try:
                if _HALF_MADE.match(name):
                    if time.time() - os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mtime >= _STALE_S:
                        _remove_tree(dir_fd, name)
                    continue
                if pid is None or pid == self.pid or procfs.exists(pid):
                    continue
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    continue
                if stat.S_ISSOCK(st.st_mode):
                    if _listened(dir_fd, name):
                        continue  # an agent that another pid namespace's flight-mcp attached
                elif name.endswith(".lock"):
                    _remove_free_lock(dir_fd, name)
                    continue
                elif time.time() - st.st_mtime < _STALE_S:
                    continue
                os.unlink(name, dir_fd=dir_fd)
            except OSError:
                continue

    @contextlib.contextmanager
    def lock(self, deadline: float):
        """One injection per target at a time across every flight-mcp process: flock on a file that
        its holder removes before releasing it, so none accumulate; a waiter that got the lock of a
        removed file starts again."""
        name = self._lock_name()
        dir_fd = self._open_dir()
        try:
            with self._failing("take the attach lock"):
                fd = self._acquire(dir_fd, name, deadline)
            try:
                yield
            finally:
                try:
                    os.unlink(name, dir_fd=dir_fd)
                except OSError:
                    pass
                os.close(fd)  # releases the lock
        finally:
            os.close(dir_fd)

    def _acquire(self, dir_fd: int, name: str, deadline: float) -> int:
        while True:
            fd = self._open_lockfile(dir_fd, name)
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            raise FlightError("attach_busy", f"another flight-mcp process is attaching to pid "
                                              f"{self.pid} and did not finish in time; retry in a moment.")
                        time.sleep(0.005)
                try:
                    current = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                except FileNotFoundError:
                    current = None
                if current is not None and os.path.samestat(current, os.fstat(fd)):
                    return fd
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)  # its holder removed it meanwhile: lock the file now in place

    def _open_lockfile(self, dir_fd: int, name: str) -> int:
        while True:
            try:
                fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                             dir_fd=dir_fd)
                self._give(fd)
                return fd
            except FileExistsError:
                pass
            try:
                fd = os.open(name, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
            except FileNotFoundError:
                continue  # its holder just removed it
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENXIO, errno.EACCES):
                    raise
                fd = None
            if fd is not None and stat.S_ISREG(os.fstat(fd).st_mode):
                return fd
            if fd is not None:
                os.close(fd)
            try:
                os.unlink(name, dir_fd=dir_fd)  # not a lock file of ours: a link, a FIFO, another's file
            except FileNotFoundError:
                pass

    def remove(self, host_path: str) -> None:
        """Removes one of our files (the path may be gone already). Through the checked directory's
        descriptor: a path through /tmp could be redirected by whoever owns the directory entry."""
        with self._opened("remove a file") as dir_fd:
            try:
                os.unlink(os.path.basename(host_path), dir_fd=dir_fd)
            except FileNotFoundError:
                pass

    def remove_private(self) -> bool:
        """After a detach: a target with a /tmp of its own (a container's) is left as it was, without
        our runtime directory, unless it still serves another agent or an attach is under way there (a
        socket, a lock, a staged file). Our own /tmp keeps its agent folder for the next attach.
        Whether it was removed; never raises (the detach is done)."""
        if self._ours_too():
            return False
        try:
            parent = self._open_tmp()
            try:
                fd = self._open_checked(parent)
                try:
                    if not all(_AGENT_FOLDER.match(n) for n in os.listdir(fd)):
                        return False
                finally:
                    os.close(fd)
                _remove_tree(parent, self.name)
                return True
            finally:
                os.close(parent)
        except (OSError, FlightError):
            return False

    # -- the agent's error file -----------------------------------------------------------------
    def clear_error(self) -> None:
        self.remove(self.errfile("host"))

    def read_error(self) -> str | None:
        """The last line of what the bootstrap wrote when the agent did not start (`Kind: message`),
        or None when it has not written it (yet)."""
        if not os.path.lexists(self.errfile("host")):
            return None
        with self._opened("read the agent's error file") as dir_fd:
            try:
                data = trusted_files.read_file(dir_fd, os.path.basename(self.errfile("host")), limit=1 << 16)
            except (OSError, Untrusted) as e:
                return f"unreadable error file: {e}"
        if not data.endswith(b"\n"):
            # report() creates the file, then writes it whole, ending with a newline: seen between
            # the two (a loaded machine), the error is not there yet; the caller asks again.
            return None
        return data.decode("utf-8", "replace").strip().splitlines()[-1]

    # -- what the target loads -------------------------------------------------------------------
    def install_agent(self, version: tuple[int, int] | None = None) -> tuple[str, dict]:
        """The agent folder (copied once per content) in the target's view, and the manifest of what
        the target may load from it: name -> sha256, with the bytecode compiled for `version`."""
        build, files = agent_sources()
        name = "agent-" + build
        manifest = {n: trusted_files.sha256(data) for n, data in files}
        with self._opened("install the agent") as dir_fd:
            if not self._intact(dir_fd, name, manifest):
                self._install(dir_fd, name, files, manifest)
            self.precompile(os.path.join(self.host, name), version)
            manifest.update(self._bytecode(dir_fd, name, manifest, version))
        return os.path.join(self.target, name), manifest

    def _intact(self, dir_fd: int, name: str, manifest: dict) -> bool:
        files = trusted_files.AgentFiles(os.path.join(self.host, name), self.uid, manifest)
        try:
            files.verify_all()
            return True
        except (OSError, Untrusted):
            return False

    def _install(self, dir_fd: int, name: str, files, manifest: dict) -> None:
        if _exists(dir_fd, name):
            _remove_tree(dir_fd, name)  # altered: replaced, never repaired
        tmp = f"{name}.tmp-{secrets.token_hex(4)}"
        os.mkdir(tmp, 0o700, dir_fd=dir_fd)
        tmp_fd = os.open(tmp, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=dir_fd)
        try:
            for fname, data in files:
                self._write_new(tmp_fd, fname, data)
            self._give(tmp_fd)
        finally:
            os.close(tmp_fd)
        try:
            os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError:
            _remove_tree(dir_fd, tmp)  # another attach won the race: use its copy, once checked
            if not self._intact(dir_fd, name, manifest):
                raise FlightError("unsafe_runtime_dir", f"{self._shown()}/{name} changed while flight-mcp installed "
                                  "it; retry.")

    def _bytecode(self, dir_fd: int, name: str, manifest: dict, version) -> dict:
        """Hashes of the bytecode precompile() wrote for the target's Python, for those files that pass
        the ownership rule (any other is left out: the target then compiles the checked source)."""
        self._checks_pyc = None
        if version is None:
            return {}
        out = {}
        tag = "cpython-%d%d" % version
        try:
            agent_fd = trusted_files.open_dir(name, self.uid, dir_fd)
            try:
                cache = trusted_files.open_dir("__pycache__", self.uid, agent_fd)
            finally:
                os.close(agent_fd)
        except (OSError, Untrusted):
            return {}
        try:
            for src in manifest:
                if src.endswith(".py"):
                    pyc = f"{src[:-3]}.{tag}.pyc"
                    try:
                        data = trusted_files.read_file(cache, pyc, self.uid)
                    except (OSError, Untrusted):
                        continue
                    out["__pycache__/" + pyc] = trusted_files.sha256(data)
                    if src == CHECKS_FILE:
                        self._checks_pyc = data   # embedded in the bootstrap (bootstrap_script)
        finally:
            os.close(cache)
        return out

    def precompile(self, dest: str, version: tuple[int, int] | None) -> None:
        """Writes the agent's bytecode for the target's Python, once per content and version.

        Without it the target compiles every agent module on every injection when it cannot
        write bytecode (PYTHONDONTWRITEBYTECODE=1 is common in container images): measured
        ~50-100 ms of the agent's start. Only for a plain `pythonX.Y` executable on our own
        filesystem view (not an embedding program, not a container's binary); any failure just
        leaves the target compiling as before. It runs as the target's user, so what it writes is
        that user's without any chown (the bootstrap loads it only if its hash was recorded)."""
        if version is None or os.path.exists(os.path.join(dest, "__pycache__",
                                                          "__init__.cpython-%d%d.pyc" % version)):
            return
        exe = procfs.path(self.pid, "exe")
        try:
            if not os.path.basename(procfs.exe(self.pid)).startswith("python") or \
                    os.path.realpath(procfs.root(self.pid)) != "/":
                return
            target_dir = os.path.join(self.target, os.path.basename(dest))
            # The target's binary may be its user's to write: run it as that user, never as root.
            as_target = {"user": self.uid, "group": self.gid, "extra_groups": []} \
                if os.geteuid() == 0 and self.uid != 0 else {}
            subprocess.run([exe, "-S", "-c", "import compileall, sys; "
                            "compileall.compile_dir(sys.argv[1], ddir=sys.argv[2], quiet=2)", dest, target_dir],
                           capture_output=True, timeout=10, env={"PATH": os.environ.get("PATH", "/usr/bin")},
                           umask=0o077, **as_target)
        except (OSError, subprocess.SubprocessError):
            pass

    def stage_injection(self, version: tuple[int, int] | None = None) -> tuple[str, str]:
        """A unique copy of the payload (dlopen of a loaded path would not rerun its constructor)
        and its bootstrap script beside it. Returns (library path to inject, as the target sees it;
        our path of the script). remove() and check_staged() take either view."""
        agent_dir, manifest = self.install_agent(version)
        stem = f"{self.staged_prefix()}{secrets.token_hex(6)}"
        with open(payload_library(), "rb") as f:
            payload = f.read()
        agent_uid, host_uid = self.target_uids()
        script = bootstrap_script(module=f"{AGENT_MODULE}_{agent_build()}", agent_dir=agent_dir, agent_uid=agent_uid,
                                  manifest=manifest, sock=self.sock("target"), host_uid=host_uid,
                                  build=agent_build(), errfile=self.errfile("target"), checks=self._checks_pyc)
        with self._opened("stage the payload and its bootstrap script") as dir_fd:
            self._write_new(dir_fd, stem + ".so", payload)
            self._write_new(dir_fd, stem + ".py", script.encode())
        self._payload_sha = trusted_files.sha256(payload)
        # The target's dlopen() opens the library: by the path the target sees (the injector passes an
        # absolute path as it is). Ours (/proc/PID/root/...) fails in a pid namespace of its own, whose
        # /proc has no entry under our number for it.
        return os.path.join(self.target, stem + ".so"), os.path.join(self.host, stem + ".py")

    def check_staged(self, lib: str) -> None:
        """Just before the target maps the payload: still the file we wrote."""
        with self._opened("check the staged payload") as dir_fd:
            try:
                trusted_files.read_verified(dir_fd, os.path.basename(lib), self.uid, self._payload_sha, lib)
            except (OSError, Untrusted) as e:
                raise FlightError("unsafe_runtime_dir", f"{e}; nothing was loaded into pid {self.pid}. Retry.")


def remove_private(pid: int) -> bool:
    """RuntimeDir.remove_private() of pid's runtime directory; False when pid is gone."""
    try:
        return RuntimeDir.of(pid).remove_private()
    except FlightError:
        return False


def _listened(dir_fd: int, name: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(0.2)
    try:
        s.connect(f"/proc/self/fd/{dir_fd}/{name}")
        return True
    except OSError as e:
        return e.errno not in (errno.ECONNREFUSED, errno.ENOENT)
    finally:
        s.close()


def _remove_free_lock(dir_fd: int, name: str) -> None:
    """Removes a lock file nobody holds, while holding it: a process that opened it meanwhile gets
    the lock only after the removal, sees its file gone, and starts again (RuntimeDir.lock)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass  # held: its target may be alive in another pid namespace
    finally:
        os.close(fd)


def _exists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        return True
    except FileNotFoundError:
        return False


def _remove_tree(dir_fd: int, name: str, depth: int = 0) -> None:
    """Removes name (relative to dir_fd) without following any link: renamed aside first, so
    nobody can put something else under the name while we descend."""
    if depth == 0:
        aside = f".trash-{secrets.token_hex(4)}"
        os.rename(name, aside, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        name = aside
    if not stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
        os.unlink(name, dir_fd=dir_fd)
        return
    if depth > 8:
        raise OSError(errno.ELOOP, "nested too deep", name)
    fd = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=dir_fd)
    try:
        for entry in os.listdir(fd):
            _remove_tree(fd, entry, depth + 1)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=dir_fd)
