"""Files the target needs to start the agent, placed where the target can read them.

Everything lives in /tmp/flight-mcp-<uid>/ as the *target* sees it (through /proc/PID/root, so a
containerised target sees it too), 0700 and owned by the target's uid, so a non-root target can
read it when we run as root and nobody else can. The agent package is copied there, so the target
needs neither flight-mcp installed nor read access to our install directory.
"""
from __future__ import annotations

import glob
import hashlib
import os
import secrets
import shutil
import subprocess

from ..errors import FlightError

_PKG = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AGENT_SRC = os.path.join(_PKG, "agent")
AGENT_MODULE = "_flight_mcp_agent"

BOOTSTRAP = '''\
# flight-mcp bootstrap: runs once in a fresh namespace of the target, on a new thread.
def _flight_mcp_start():
    import os, sys
    try:
        os.unlink(__flight_mcp_bootstrap__)  # read: the server now knows this injection is no longer pending
    except BaseException:
        pass
    agent_dir, sock, uid, errfile = {agent_dir!r}, {sock!r}, {uid!r}, {errfile!r}
    try:
        import importlib.util, time
        spec = importlib.util.spec_from_file_location(
            {module!r}, agent_dir + "/__init__.py", submodule_search_locations=[agent_dir])
        fresh = importlib.util.module_from_spec(spec)
        # setdefault is atomic under the GIL: of two racing bootstraps exactly one loads the agent.
        mod = sys.modules.setdefault({module!r}, fresh)
        if mod is fresh:
            try:
                spec.loader.exec_module(mod)
            except BaseException:
                del sys.modules[{module!r}]
                raise
        else:
            deadline = time.monotonic() + 10
            while not hasattr(mod, "start") and time.monotonic() < deadline:
                time.sleep(0.005)  # the other bootstrap is still loading it
        mod.start(sock, uid)
    except BaseException as e:  # a SystemExit here must never end the target
        try:
            import traceback
            with open(errfile, "w") as f:
                f.write("".join(traceback.format_exception(type(e), e, e.__traceback__)))
        except BaseException:
            pass
_flight_mcp_start()
'''


def payload_library() -> str:
    found = sorted(glob.glob(os.path.join(_PKG, "payload", "_flight_payload*.so")))
    if not found:
        raise FlightError("install_broken", "the payload library is missing: reinstall flight-mcp with "
                          "`pip install .` on a machine with a C compiler (gcc).")
    return found[0]


class RuntimeDir:
    """Paths of one target's runtime directory, in our view (`host`) and in the target's (`target`)."""

    def __init__(self, pid: int, uid: int, gid: int):
        self.pid, self.uid, self.gid = pid, uid, gid
        self.target = f"/tmp/flight-mcp-{uid}"
        self.host = f"/proc/{pid}/root{self.target}"

    def to_target(self, host_path: str) -> str:
        """A path under our view of the runtime dir, as the target sees it."""
        return self.target + host_path[len(self.host):]

    def sock(self, view: str) -> str:
        return os.path.join(getattr(self, view), f"agent-{self.pid}.sock")

    def lockfile(self) -> str:
        return os.path.join(self.host, f"agent-{self.pid}.lock")

    def errfile(self, view: str) -> str:
        return os.path.join(getattr(self, view), f"agent-{self.pid}.error")

    def ensure(self) -> None:
        try:
            os.makedirs(self.host, mode=0o700, exist_ok=True)
            st = os.lstat(self.host)
            if st.st_uid != self.uid:
                if os.geteuid() != 0:
                    raise FlightError("unsafe_runtime_dir", f"{self.target} belongs to uid {st.st_uid}, not to "
                                      f"the target's uid {self.uid}; remove it and retry.")
                os.chown(self.host, self.uid, self.gid)
            os.chmod(self.host, 0o700)
        except PermissionError as e:
            raise FlightError("permission_denied", f"cannot create {self.target} for pid {self.pid}: {e}. "
                              "Run flight-mcp as the target's user or as root.")

    def _own(self, path: str) -> None:
        if os.geteuid() == 0:
            os.chown(path, self.uid, self.gid)

    def precompile(self, dest: str, version: tuple[int, int] | None) -> None:
        """Writes the agent's bytecode for the target's Python, once per content and version.

        Without it the target compiles every agent module on every injection when it cannot
        write bytecode (PYTHONDONTWRITEBYTECODE=1 is common in container images): measured
        ~50-100 ms of the agent's start. Only for a plain `pythonX.Y` executable on our own
        filesystem view (not an embedding program, not a container's binary); any failure just
        leaves the target compiling as before."""
        if version is None or os.path.exists(os.path.join(dest, "__pycache__",
                                                          "__init__.cpython-%d%d.pyc" % version)):
            return
        exe = f"/proc/{self.pid}/exe"
        try:
            if not os.path.basename(os.readlink(exe)).startswith("python") or \
                    os.path.realpath(f"/proc/{self.pid}/root") != "/":
                return
            target_dir = os.path.join(self.target, os.path.basename(dest))
            # The target's binary may be its user's to write: run it as that user, never as root.
            as_target = {"user": self.uid, "group": self.gid, "extra_groups": []} \
                if os.geteuid() == 0 and self.uid != 0 else {}
            subprocess.run([exe, "-S", "-c", "import compileall, sys; "
                            "compileall.compile_dir(sys.argv[1], ddir=sys.argv[2], quiet=2)", dest, target_dir],
                           capture_output=True, timeout=10, env={"PATH": os.environ.get("PATH", "/usr/bin")},
                           **as_target)
            cache = os.path.join(dest, "__pycache__")
            if os.path.isdir(cache):
                self._own(cache)
                for f in os.listdir(cache):
                    self._own(os.path.join(cache, f))
        except (OSError, subprocess.SubprocessError):
            pass

    def install_agent(self) -> str:
        """Copies the agent package (once per content) and returns its path in the target's view."""
        digest = hashlib.sha1()
        # The agent's modules and trace's C recorder (a stable-ABI extension: one build for any target).
        files = sorted(f for f in os.listdir(AGENT_SRC)
                       if f.endswith(".py") or (f.startswith(("_flight_mcp_recorder", "_flight_mcp_hook")) and f.endswith(".so")))
        for name in files:
            with open(os.path.join(AGENT_SRC, name), "rb") as f:
                digest.update(name.encode() + b"\0" + f.read())
        name = "agent-" + digest.hexdigest()[:12]
        dest = os.path.join(self.host, name)
        if not os.path.isdir(dest):
            tmp = dest + f".tmp{secrets.token_hex(4)}"
            os.makedirs(tmp, mode=0o700)
            for f in files:
                shutil.copyfile(os.path.join(AGENT_SRC, f), os.path.join(tmp, f))
                self._own(os.path.join(tmp, f))
            self._own(tmp)
            try:
                os.rename(tmp, dest)
            except OSError:
                shutil.rmtree(tmp, ignore_errors=True)  # another attach won the race
        return os.path.join(self.target, name)

    def stage_injection(self, version: tuple[int, int] | None = None) -> tuple[str, str]:
        """A unique copy of the payload (dlopen of a loaded path would not rerun its constructor)
        and its bootstrap script beside it. Returns (library path to inject, host path of the script)."""
        agent_dir = self.install_agent()
        self.precompile(os.path.join(self.host, os.path.basename(agent_dir)), version)
        stem = f"inject-{self.pid}-{secrets.token_hex(6)}"
        lib_host = os.path.join(self.host, stem + ".so")
        script_host = os.path.join(self.host, stem + ".py")
        shutil.copyfile(payload_library(), lib_host)
        with open(script_host, "w") as f:
            f.write(BOOTSTRAP.format(agent_dir=agent_dir, sock=self.sock("target"), uid=os.geteuid(),
                                     errfile=self.errfile("target"), module=AGENT_MODULE))
        for p in (lib_host, script_host):
            os.chmod(p, 0o600)
            self._own(p)
        # The injector opens the library by the path *it* sees, ours: same file as the target's view.
        return lib_host, script_host
