"""The runtime directory against another local user, and agents left by another flight-mcp, end to
end on Python 3.8 and 3.13 (the checks are the host's, and the agent's and its bootstrap's plain stdlib
Python, alike on every version; attaching itself is tested on every version elsewhere): real root
targets, real injection, the real CLI.

Each target runs in a mount namespace of its own with a private /tmp (a tmpfs, mode 1777), so the
hostile user (uid 12345, played by a forked child of the test) plants into *that* /tmp through
/proc/PID/root/tmp, exactly as flight-mcp stages files, and the shared /tmp/flight-mcp-0 of this
machine is never touched.
"""
import hashlib
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import time

import pytest

from flight_mcp.agent import AGENT_VERSION
from flight_mcp.attach import bootstrap

from .conftest import PYTHONS, Target, flight_cli, version_params

pytestmark = [pytest.mark.timeout(240),
              pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                                 reason="needs root and unshare for a target with a private /tmp")]

ATTACKER = 12345
PLANTED = "open('/tmp/PWNED', 'w').close()\n"  # what planted code does when it runs in the target

# Stays on a blocking read of stdin (a safe point) and answers the test's questions.
TARGET = r'''
import os, sys
def old_agent(folder):
    # What the bootstrap of an older flight-mcp did: the agent under a fixed name, on the usual socket.
    import importlib.util
    os.makedirs("/tmp/flight-mcp-0", 0o700, exist_ok=True)
    spec = importlib.util.spec_from_file_location("_flight_mcp_agent", folder + "/__init__.py",
                                                  submodule_search_locations=[folder])
    mod = sys.modules["_flight_mcp_agent"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.start("/tmp/flight-mcp-0/agent-%d.sock" % os.getpid(), 0)
print("READY", flush=True)
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "modules":
        print(" ".join(sorted(k for k in sys.modules if k.startswith("_flight_mcp"))) or "-", flush=True)
    elif cmd[0] == "old":
        old_agent(cmd[1])
        print("OLD", flush=True)
    elif cmd[0] == "hold":
        import ctypes
        print("HOLDING", flush=True)
        # Blocked in read(2) *with* the GIL (PyDLL keeps it): an agent injected now waits for it.
        ctypes.PyDLL(None).read(0, ctypes.create_string_buffer(64), 64)
        print("RELEASED", flush=True)
'''


@pytest.fixture
def private_tmp_target():
    started = []

    def start(version):
        exe = PYTHONS.get(version)
        if exe is None:
            pytest.skip(f"Python {version} is not installed under pyenv")
        proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c",
                                 'mount -t tmpfs -o mode=1777 tmpfs /tmp && exec "$0" -u -c "$1"', exe, TARGET],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        t = Target(proc, version, None)
        started.append(t)
        assert t.read_line(timeout=20) == "READY"
        return t

    yield start
    for t in started:
        t.kill()


def ask(t, question):
    t.proc.stdin.write(question + "\n")
    t.proc.stdin.flush()
    return t.read_line()


def as_attacker(pid, action):
    """Runs action() as uid 12345 with the target's /tmp as working directory."""
    child = os.fork()
    if child == 0:
        code = 1
        try:
            os.chdir(f"/proc/{pid}/root/tmp")
            os.setgroups([])
            os.setgid(ATTACKER)
            os.setuid(ATTACKER)
            action()
            code = 0
        finally:
            os._exit(code)
    assert os.waitpid(child, 0)[1] == 0, "the attacker's step failed"


def agent_folder_names():
    """Names flight-mcp may load the agent from: the current one and the one before builds were checked."""
    files = sorted(f for f in os.listdir(bootstrap.AGENT_SRC)
                   if f.endswith(".py") or (f.startswith("_flight_mcp_recorder") and f.endswith(".so")))
    digest = hashlib.sha1()
    for name in files:
        with open(os.path.join(bootstrap.AGENT_SRC, name), "rb") as f:
            digest.update(name.encode() + b"\0" + f.read())
    names = ["agent-" + digest.hexdigest()[:12]]
    if hasattr(bootstrap, "agent_build"):
        names.append("agent-" + bootstrap.agent_build())
    return names


def plant_agent_dir():
    os.mkdir("flight-mcp-0")
    os.chmod("flight-mcp-0", 0o777)
    for name in agent_folder_names():
        os.mkdir(f"flight-mcp-0/{name}")
        with open(f"flight-mcp-0/{name}/__init__.py", "w") as f:
            f.write(PLANTED)


def refused(pid, *expected):
    r = flight_cli(str(pid), "--cmd", "attach")
    assert r.returncode == 1, r.stdout
    assert "Traceback (most recent call last)" not in r.stderr and "/tmp/flight-mcp-0" in r.stderr and "rm -rf" in r.stderr, r.stderr
    for phrase in expected:
        assert phrase in r.stderr, r.stderr
    return r.stderr


def mode_owner(path):
    st = os.lstat(path)
    return stat.S_IMODE(st.st_mode), st.st_uid


def remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def cli_json(pid, cmd):
    r = flight_cli(str(pid), "--cmd", cmd, "--json")
    assert r.returncode == 0 and "Traceback (most recent call last)" not in r.stderr, f"{cmd}: {r.stderr}"
    return json.loads(r.stdout)


def dead_pid():
    pid = 4_000_000
    while os.path.exists(f"/proc/{pid}"):
        pid -= 1
    return pid


def plant_stale_files(rdir, pid):
    """What dead targets leave (a socket nobody serves, a lock, an error file, a staged payload)."""
    fd = os.open(rdir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        s = socket.socket(socket.AF_UNIX)
        s.bind(f"/proc/self/fd/{fd}/agent-{pid}.sock")
        s.close()
    finally:
        os.close(fd)
    names = [f"agent-{pid}.sock", f"agent-{pid}.lock", f"agent-{pid}.error", f"inject-{pid}-0a1b2c.py"]
    for name in names[1:]:
        open(os.path.join(rdir, name), "w").close()
    for name in names:
        os.utime(os.path.join(rdir, name), (time.time() - 3600,) * 2, follow_symlinks=False)
    return [os.path.join(rdir, n) for n in names]


@pytest.mark.parametrize("version", version_params(("3.8", "3.13")))
def test_hostile_runtime_dir_is_refused_and_ours_is_checked_and_cleaned(private_tmp_target, version):
    t = private_tmp_target(version)
    tmp = f"/proc/{t.pid}/root/tmp"
    rdir, pwned = f"{tmp}/flight-mcp-0", f"{tmp}/PWNED"
    victim = f"{tmp}/victim"
    os.mkdir(victim)
    os.chmod(victim, 0o755)

    # Another user got there first: a world-writable directory with an agent folder in it.
    as_attacker(t.pid, plant_agent_dir)
    refused(t.pid, f"uid {ATTACKER}")
    assert mode_owner(rdir) == (0o777, ATTACKER), "never adopted, chowned or chmodded"
    remove(rdir)
    # A link to a directory of root's: neither followed nor its target changed.
    as_attacker(t.pid, lambda: os.symlink("/tmp/victim", "flight-mcp-0"))
    refused(t.pid, "symbolic link", f"uid {ATTACKER}")
    assert mode_owner(victim) == (0o755, 0)
    remove(rdir)
    # A plain file: an error that says whose it is, no traceback.
    as_attacker(t.pid, lambda: open("flight-mcp-0", "w").close())
    refused(t.pid, "regular file", f"uid {ATTACKER}")
    remove(rdir)
    # The right owner but open to others: anyone could have planted files in it.
    os.mkdir(rdir)
    os.chmod(rdir, 0o777)
    refused(t.pid, "0777")
    assert mode_owner(rdir) == (0o777, 0)
    assert not os.path.exists(pwned) and t.alive()

    # A proper directory: stale files of dead targets go, the attach works, no lock file stays.
    os.chmod(rdir, 0o700)
    stale = plant_stale_files(rdir, dead_pid())
    assert cli_json(t.pid, "attach")["injection"]["method"] == "pyinjector"
    assert [p for p in stale if os.path.lexists(p)] == []
    assert not os.path.exists(f"{rdir}/agent-{t.pid}.lock")
    assert ask(t, "modules").startswith("_flight_mcp_agent")

    # detach unloads the agent's modules.
    assert cli_json(t.pid, "detach")["detached"] is True
    assert ask(t, "modules") == "-"

    # The agent folder altered after flight-mcp checked it, while the injected agent waits for the
    # GIL: the target's own check, right before loading, refuses it; the next attach replaces it.
    def payloads():
        with open(f"/proc/{t.pid}/maps") as f:
            return set(re.findall(r"inject-\d+-[0-9a-f]+\.so", f.read()))

    earlier = payloads()  # a mapped payload stays mapped after detach
    assert ask(t, "hold") == "HOLDING"
    cli = subprocess.Popen([sys.executable, "-m", "flight_mcp.cli", str(t.pid), "--cmd", "attach --timeout 60"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not payloads() - earlier:
            assert time.monotonic() < deadline and cli.poll() is None, cli.communicate()
            time.sleep(0.01)
        [folder] = [os.path.join(rdir, n) for n in os.listdir(rdir) if n.startswith("agent-") and "." not in n]
        with open(os.path.join(folder, "cmd_admin.py"), "a") as f:
            f.write(PLANTED)
        t.proc.stdin.write("go\n")
        t.proc.stdin.flush()
        assert t.read_line() == "RELEASED"
        out, err = cli.communicate(timeout=60)
    finally:
        cli.kill()
    assert cli.returncode == 1 and "Traceback (most recent call last)" not in err, (out, err)
    assert "cmd_admin.py differs from the file flight-mcp installed" in err, err
    assert ask(t, "modules") == "-"
    assert cli_json(t.pid, "attach")["injection"]["method"] == "pyinjector"
    with open(os.path.join(folder, "cmd_admin.py"), "rb") as f, \
            open(os.path.join(bootstrap.AGENT_SRC, "cmd_admin.py"), "rb") as g:
        assert f.read() == g.read()
    assert cli_json(t.pid, "detach")["detached"] is True
    assert not os.path.exists(pwned) and t.alive()


def agent_info(sock_path):
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(sock_path)
        s.sendall(b'{"id": 1, "cmd": "info", "args": {}}\n')
        return json.loads(s.makefile().readline())["result"]


@pytest.mark.parametrize("version", version_params(("3.8", "3.13")))
def test_agent_left_by_another_flight_mcp_is_replaced_or_refused(private_tmp_target, version):
    t = private_tmp_target(version)
    tmp = f"/proc/{t.pid}/root/tmp"
    os.mkdir(f"{tmp}/old-agent")
    for name in os.listdir(bootstrap.AGENT_SRC):
        if name.endswith(".py"):
            with open(os.path.join(bootstrap.AGENT_SRC, name)) as f:
                text = f.read().replace(f'AGENT_VERSION = "{AGENT_VERSION}"', 'AGENT_VERSION = "0.0.9-old"')
            with open(f"{tmp}/old-agent/{name}", "w") as f:
                f.write(text)
    assert ask(t, "old /tmp/old-agent") == "OLD"
    sock = f"{tmp}/flight-mcp-0/agent-{t.pid}.sock"

    # While it serves another client, it is not pulled from under that client: a clear refusal.
    other = socket.socket(socket.AF_UNIX)
    other.connect(sock)
    r = flight_cli(str(t.pid), "--cmd", "attach")
    assert r.returncode == 1 and "Traceback (most recent call last)" not in r.stderr, r.stderr
    assert "version 0.0.9-old" in r.stderr and f"flight-mcp {t.pid} --cmd detach" in r.stderr, r.stderr
    other.close()
    deadline = time.monotonic() + 5
    while agent_info(sock)["connections"] > 1 and time.monotonic() < deadline:
        time.sleep(0.02)

    # Idle: replaced by this flight-mcp's agent, whose replies fit its models.
    att = cli_json(t.pid, "attach")
    assert att["agent_version"] == AGENT_VERSION and att["injection"]["replaced"].startswith("0.0.9-old")
    assert att["injection"]["method"] == "pyinjector"
    loaded = ask(t, "modules").split()
    assert "_flight_mcp_agent" not in loaded and all(m.startswith("_flight_mcp_agent_") for m in loaded), loaded
    assert "3." in cli_json(t.pid, "getglobal sys version")["view"]["repr"]
    assert cli_json(t.pid, "attach")["injection"]["method"] == "already attached"
    assert cli_json(t.pid, "detach")["detached"] is True
    assert ask(t, "modules") == "-"
    assert t.alive()
