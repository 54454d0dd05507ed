"""RuntimeDir against hostile runtime directories, on a stand-in for the target's /tmp (no process).

Runs as root (it plays the other local user with chown); the target's uid is 4242 and the
attacker's 12345: a root flight-mcp must never adopt, chown or chmod what someone else put at
/tmp/flight-mcp-<uid>, must say what is there and whose it is, and must clean up after dead targets.
"""
import fcntl
import os
import socket
import stat
import time

import pytest

from flight_mcp.attach import bootstrap
from flight_mcp.attach.bootstrap import RuntimeDir
from flight_mcp.errors import FlightError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="plays other users with chown: needs root")

TARGET_UID, ATTACKER = 4242, 12345


@pytest.fixture
def tmp(tmp_path):
    d = tmp_path / "tmp"
    d.mkdir()
    d.chmod(0o1777)
    return d


def rdir(tmp, uid=TARGET_UID):
    return RuntimeDir(os.getpid(), uid, uid, tmp=str(tmp))


def refused(r):
    with pytest.raises(FlightError) as e:
        r.ensure()
    assert e.value.kind == "unsafe_runtime_dir", e.value.message
    assert r.target in e.value.message and "rm -rf" in e.value.message
    return e.value.message


def mode_owner(path):
    st = os.lstat(path)
    return stat.S_IMODE(st.st_mode), st.st_uid


_dir_fds = []


@pytest.fixture(autouse=True)
def _close_dir_fds():
    yield
    while _dir_fds:
        os.close(_dir_fds.pop())


def short(path):
    """pytest's tmp paths are too long for AF_UNIX: reach the file through its directory's fd."""
    fd = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY)
    _dir_fds.append(fd)
    return f"/proc/self/fd/{fd}/{os.path.basename(path)}"


def dead_pid():
    pid = 4_000_000
    while os.path.exists(f"/proc/{pid}"):
        pid -= 1
    return pid


def test_fresh_directory_is_private_and_the_targets(tmp):
    r = rdir(tmp)
    old = os.umask(0)  # a lax umask must not leak into the directory's mode
    try:
        r.ensure()
    finally:
        os.umask(old)
    assert mode_owner(r.host) == (0o700, TARGET_UID)
    r.ensure()  # what it made, it uses again


@pytest.mark.parametrize("uid", [TARGET_UID, 0])
def test_planted_directory_is_refused_and_left_alone(tmp, uid):
    r = rdir(tmp, uid)
    planted = tmp / r.name
    (planted / "agent-x").mkdir(parents=True)
    (planted / "agent-x" / "__init__.py").write_text("open('/tmp/PWNED', 'w')\n")
    for p in (planted, planted / "agent-x", planted / "agent-x" / "__init__.py"):
        os.chown(p, ATTACKER, ATTACKER)
    planted.chmod(0o777)
    msg = refused(r)
    assert f"uid {ATTACKER}" in msg and f"not to uid {uid}" in msg
    assert mode_owner(planted) == (0o777, ATTACKER)
    with pytest.raises(FlightError):
        r.install_agent()  # nothing else goes through it either


def test_symlink_is_refused_and_its_target_untouched(tmp, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    victim.chmod(0o755)
    r = rdir(tmp)
    os.symlink(victim, tmp / r.name)
    os.lchown(tmp / r.name, ATTACKER, ATTACKER)
    msg = refused(r)
    assert "symbolic link" in msg and f"uid {ATTACKER}" in msg
    assert mode_owner(victim) == (0o755, 0)
    # A link to a directory that would pass every check is refused all the same.
    victim.chmod(0o700)
    os.chown(victim, TARGET_UID, TARGET_UID)
    assert "symbolic link" in refused(r)


@pytest.mark.parametrize("make", ["file", "fifo", "socket"])
def test_other_things_at_the_path_are_refused_without_a_traceback(tmp, make):
    r = rdir(tmp)
    path = tmp / r.name
    if make == "file":
        path.write_text("x")
    elif make == "fifo":
        os.mkfifo(path)
    else:
        s = socket.socket(socket.AF_UNIX)
        s.bind(short(path))
        s.close()
    os.lchown(path, ATTACKER, ATTACKER)
    msg = refused(r)
    assert {"file": "regular file", "fifo": "FIFO", "socket": "socket"}[make] in msg and f"uid {ATTACKER}" in msg


@pytest.mark.parametrize("mode", [0o755, 0o770, 0o701, 0o1777])
def test_directory_of_the_right_user_with_lax_bits_is_refused_not_chmodded(tmp, mode):
    r = rdir(tmp)
    os.mkdir(r.host)
    os.chown(r.host, TARGET_UID, TARGET_UID)
    os.chmod(r.host, mode)
    assert "%04o" % mode in refused(r)
    assert mode_owner(r.host) == (mode, TARGET_UID)


def test_directory_of_another_user_is_not_adopted_even_if_private(tmp):
    r = rdir(tmp)
    os.mkdir(r.host, 0o700)  # root's (ours), but not created by this flight-mcp for uid 4242
    assert "uid 0" in refused(r)
    assert mode_owner(r.host) == (0o700, 0)


def test_files_of_dead_targets_are_removed_and_the_rest_kept(tmp):
    r = rdir(tmp)
    r.ensure()
    dead, live = dead_pid(), os.getpid() - 1 if os.path.exists(f"/proc/{os.getpid() - 1}") else 1
    names = {}

    def made(name, kind="file", age=3600.0):
        p = os.path.join(r.host, name)
        if kind == "socket":
            s = socket.socket(socket.AF_UNIX)
            s.bind(short(p))
            if age == "listening":
                s.listen(1)
                names[name] = s  # kept open: an agent that another pid namespace's flight-mcp attached
            else:
                s.close()
        else:
            open(p, "w").close()
        if isinstance(age, float):
            os.utime(p, (time.time() - age,) * 2, follow_symlinks=False)
        return p

    gone = [made(f"agent-{dead}.sock", "socket"), made(f"agent-{dead}.lock"), made(f"agent-{dead}.error"),
            made(f"inject-{dead}-0a1b.py"), made(f"inject-{dead}-0a1b.so"), made(f"agent-{dead}.sock.{dead}.tmp", "socket")]
    kept = [made(f"agent-{live}.sock", "socket"), made(f"agent-{live}.lock"), made(f"inject-{dead}-fresh.py", age=1.0),
            made(f"agent-{dead + 1}.sock", "socket", age="listening"), made(f"agent-{dead + 2}.lock")]
    build = bootstrap.agent_build()
    for name, age in ((f"agent-{build}.tmp-0a1b2c3d", 3600.0), (".trash-0a1b2c3d", 3600.0),
                      (f"agent-{build}.tmp-11111111", 1.0)):  # killed installs; one under way
        os.makedirs(os.path.join(r.host, name, "__pycache__"))
        os.utime(os.path.join(r.host, name), (time.time() - age,) * 2)
        (gone if age > 60 else kept).append(os.path.join(r.host, name))
    held = os.open(kept[4], os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)  # a lock somebody holds is never removed
    try:
        r.ensure()
    finally:
        os.close(held)
        for s in names.values():
            s.close()
    assert [p for p in gone if os.path.lexists(p)] == []
    assert [p for p in kept if not os.path.lexists(p)] == []


def test_lock_is_exclusive_and_leaves_no_file(tmp):
    r = rdir(tmp)
    r.ensure()
    lock_path = os.path.join(r.host, f"agent-{r.pid}.lock")
    with r.lock(time.monotonic() + 1):
        assert os.stat(lock_path).st_uid == TARGET_UID  # a non-root flight-mcp of that user can lock it too
        with pytest.raises(FlightError) as e:
            with rdir(tmp).lock(time.monotonic() + 0.1):
                pass
        assert e.value.kind == "attach_busy"
    assert not os.path.exists(lock_path)
    os.symlink("/etc/passwd", lock_path)  # planted: never opened through, replaced by a lock of ours
    with r.lock(time.monotonic() + 1):
        assert stat.S_ISREG(os.lstat(lock_path).st_mode)
    assert not os.path.lexists(lock_path)


def test_agent_folder_is_checked_before_reuse_and_replaced_when_altered(tmp, tmp_path):
    r = rdir(tmp)
    r.ensure()
    target_dir, manifest = r.install_agent()
    build, files = bootstrap.agent_sources()
    assert target_dir == f"{r.target}/agent-{build}"
    assert set(manifest) == {n for n, _ in files}
    assert {n for n in os.listdir(bootstrap.AGENT_SRC) if n.startswith("_flight_mcp_") and n.endswith(".so")} \
        <= set(manifest), "every C extension built in the agent folder is shipped"
    folder = os.path.join(r.host, f"agent-{build}")
    for n in manifest:
        assert mode_owner(os.path.join(folder, n)) == (0o600, TARGET_UID), n
    assert mode_owner(folder) == (0o700, TARGET_UID)

    victim = tmp_path / "victim.py"
    victim.write_text("VICTIM\n")
    with open(os.path.join(folder, "server.py"), "a") as f:
        f.write("\nopen('/tmp/PWNED', 'w')\n")
    os.unlink(os.path.join(folder, "registry.py"))
    os.symlink(victim, os.path.join(folder, "registry.py"))
    (tmp / r.name / f"agent-{build}" / "cmd_evil.py").write_text("x = 1\n")
    r.install_agent()
    for n, data in files:
        with open(os.path.join(folder, n), "rb") as f:
            assert f.read() == data, n
    assert not os.path.exists(os.path.join(folder, "cmd_evil.py"))
    assert victim.read_text() == "VICTIM\n" and mode_owner(victim)[1] == 0
    assert not [n for n in os.listdir(r.host) if n.startswith((".trash", f"agent-{build}.tmp"))]


def test_agent_error_is_read_only_once_written_whole(tmp):
    """report() creates the error file, then writes it: a host that looks in between (a loaded
    machine) must keep waiting, not report "unknown error"."""
    r = rdir(tmp)
    r.ensure()
    path = r.errfile("host")
    for partial in (b"", b"Traceback (most recent call last):\n  File"):
        with open(path, "wb") as f:
            f.write(partial)
        assert r.read_error() is None
    with open(path, "wb") as f:
        f.write(b"Traceback (most recent call last):\nUntrusted: cmd_admin.py was altered\n")
    assert r.read_error() == "Untrusted: cmd_admin.py was altered"
