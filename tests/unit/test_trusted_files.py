"""What the bootstrap checks right before the target loads the agent (trusted_files, whose source the
bootstrap embeds): run in-process on a runtime-dir-shaped folder, loading a small package."""
import ast
import hashlib
import importlib.util
import itertools
import marshal
import os
import sys
import types

import pytest

from flight_mcp.attach import bootstrap, trusted_files
from flight_mcp.attach.trusted_files import AgentConflict, AgentFiles, Untrusted, load_agent

UID = os.geteuid()
_names = itertools.count()

SOURCES = {
    "__init__.py": "from . import helper\nSTARTED = []\ndef start(*a):\n    STARTED.append(a)\n"
                   "def listening():\n    return bool(STARTED)\n",
    "helper.py": "VALUE = 'from source'\n",
    "cmd_lazy.py": "LAZY = True\n",
}


def sha(data):
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def agent(tmp_path):
    """(module name, agent dir, manifest) of a package laid out like an installed agent."""
    top = tmp_path / f"flight-mcp-{UID}"
    folder = top / "agent-b1"
    folder.mkdir(parents=True)
    top.chmod(0o700)
    folder.chmod(0o700)
    manifest = {}
    for name, text in SOURCES.items():
        (folder / name).write_text(text)
        (folder / name).chmod(0o600)
        manifest[name] = sha(text.encode())
    module = f"{trusted_files.AGENT_MODULE}_test{next(_names)}"
    yield module, str(folder), manifest
    for key in [k for k in sys.modules if k == module or k.startswith(module + ".")]:
        del sys.modules[key]
    sys.path_importer_cache.pop(str(folder), None)


def test_loads_only_the_recorded_bytes_each_module_checked_when_imported(agent):
    module, folder, manifest = agent
    mod = load_agent(module, folder, UID, manifest)
    assert sys.modules[module] is mod and mod.helper.VALUE == "from source"
    assert load_agent(module, folder, UID, manifest) is mod  # a second bootstrap finds it
    # Altered after the agent started: the module imported later is refused, not run.
    with open(os.path.join(folder, "cmd_lazy.py"), "a") as f:
        f.write("import os; os._exit(3)\n")
    with pytest.raises(Untrusted, match="cmd_lazy.py differs"):
        importlib.import_module(module + ".cmd_lazy")
    # A module the host did not ship is not found at all.
    open(os.path.join(folder, "cmd_planted.py"), "w").close()
    with pytest.raises(ImportError):
        importlib.import_module(module + ".cmd_planted")


@pytest.mark.parametrize("attack", ["altered", "symlink", "hardlink", "group_writable", "other_owner", "extra_file",
                                    "folder_link", "folder_lax", "top_lax", "fifo"])
def test_any_file_not_provably_ours_stops_the_load_before_any_code_runs(agent, tmp_path, attack):
    module, folder, manifest = agent
    helper = os.path.join(folder, "helper.py")
    evil = tmp_path / "evil.py"
    evil.write_text(SOURCES["helper.py"])
    if attack == "altered":
        with open(helper, "a") as f:
            f.write("PWNED = 1\n")
    elif attack == "symlink":
        os.unlink(helper)
        os.symlink(evil, helper)
    elif attack == "hardlink":
        os.unlink(helper)
        os.link(evil, helper)
    elif attack == "group_writable":
        os.chmod(helper, 0o620)
    elif attack == "other_owner":
        os.chown(helper, 12345, 12345)
    elif attack == "extra_file":
        open(os.path.join(folder, "sitecustomize.py"), "w").close()
    elif attack == "folder_link":
        os.rename(folder, folder + ".real")
        os.symlink(folder + ".real", folder)
    elif attack == "folder_lax":
        os.chmod(folder, 0o777)
    elif attack == "top_lax":
        os.chmod(os.path.dirname(folder), 0o755)
    elif attack == "fifo":
        os.unlink(helper)
        os.mkfifo(helper, 0o600)
    with pytest.raises(Untrusted) as e:
        load_agent(module, folder, UID, manifest)
    assert folder in str(e.value) or os.path.dirname(folder) in str(e.value)
    assert module not in sys.modules


def test_bytecode_is_used_only_when_its_hash_was_recorded(agent):
    module, folder, manifest = agent
    cache = os.path.join(folder, "__pycache__")
    os.mkdir(cache, 0o700)
    pyc = os.path.join(cache, f"helper.{sys.implementation.cache_tag}.pyc")
    code = compile("VALUE = 'from bytecode'\n", os.path.join(folder, "helper.py"), "exec")
    data = importlib.util.MAGIC_NUMBER + b"\0" * 12 + marshal.dumps(code)
    with open(pyc, "wb") as f:
        f.write(data)
    os.chmod(pyc, 0o600)
    files = AgentFiles(folder, UID, manifest)
    assert files.code("helper.py").co_consts[0] == "from source"  # not recorded: ignored
    files.manifest = dict(manifest, **{f"__pycache__/{os.path.basename(pyc)}": sha(data)})
    assert files.code("helper.py").co_consts[0] == "from bytecode"
    with open(pyc, "ab") as f:
        f.write(b"\0")
    assert files.code("helper.py").co_consts[0] == "from source"  # altered: the checked source instead


def test_agent_of_another_build_is_refused_while_listening_and_unloaded_once_detached(agent):
    module, folder, manifest = agent
    other = types.ModuleType(trusted_files.AGENT_MODULE)  # the fixed name agents before 0.2.0 had
    other.AGENT_VERSION = "0.1.0"
    other._server = types.SimpleNamespace(_state={"listener": object()})
    sub = types.ModuleType(trusted_files.AGENT_MODULE + ".server")
    sys.modules.update({other.__name__: other, sub.__name__: sub})
    try:
        with pytest.raises(AgentConflict, match="version 0.1.0"):
            load_agent(module, folder, UID, manifest)
        assert module not in sys.modules
        other._server._state["listener"] = None  # detached
        load_agent(module, folder, UID, manifest)
        assert other.__name__ not in sys.modules and sub.__name__ not in sys.modules
    finally:
        sys.modules.pop(other.__name__, None)
        sys.modules.pop(sub.__name__, None)


def test_report_ends_with_kind_and_message(tmp_path):
    err = tmp_path / "agent.error"
    trusted_files.report(str(err), Untrusted("/tmp/x belongs to uid 1"))
    assert err.read_text().splitlines()[-1] == "Untrusted: /tmp/x belongs to uid 1"
    try:
        raise SystemExit(3)
    except SystemExit as e:
        trusted_files.report(str(err), e)
    assert err.read_text().splitlines()[-1] == "SystemExit: 3"


def test_the_bootstrap_embeds_these_checks_and_compiles_on_the_oldest_target():
    script = bootstrap.bootstrap_script(module="_flight_mcp_agent_x", agent_dir="/tmp/flight-mcp-0/agent-x",
                                        agent_uid=0, manifest={"__init__.py": "0" * 64}, sock="/tmp/s", host_uid=0,
                                        build="x", errfile="/tmp/e")
    assert "def load_agent(" in script and "class AgentFiles" in script
    ast.parse(script, feature_version=(3, 8))  # 3.8 syntax: it runs in every target


@pytest.mark.parametrize("size", [0, 1, 2046, 2047, 2048, 4095, 100_000])
def test_the_hash_in_pieces_is_sha256(size):
    data = os.urandom(size)
    assert trusted_files.sha256(data) == sha(data)


@pytest.mark.parametrize("size", [0, 1, 4096, 3 << 20])
def test_a_file_is_read_whole(tmp_path, size):
    data = os.urandom(size)
    (tmp_path / "f").write_bytes(data)
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert trusted_files.read_file(fd, "f", UID) == data
    finally:
        os.close(fd)


def test_a_load_holds_the_folder_for_its_own_thread_only(agent, monkeypatch):
    """A load opens the folder once and compiles from the sources it verified; another thread (a command
    arriving while the agent starts) opens its own; once the load ends nothing stays open."""
    import threading
    module, folder, manifest = agent
    files = AgentFiles(folder, UID, manifest)
    files.hold()
    held = files._held
    files.verify_all()
    opened = []
    real_open = os.open
    monkeypatch.setattr(os, "open", lambda *a, **k: opened.append(a[0]) or real_open(*a, **k))
    assert files.code("helper.py").co_consts[0] == "from source" and opened == []  # from memory
    other = {}
    t = threading.Thread(target=lambda: other.update(code=files.code("helper.py")))
    t.start()
    t.join()
    assert other["code"].co_consts[0] == "from source" and "helper.py" in opened  # read by itself
    monkeypatch.undo()
    files.release()
    for fd in (held["root"], held["pycache"]):
        if fd is not None:
            with pytest.raises(OSError):
                os.fstat(fd)
    assert files.code("helper.py").co_consts[0] == "from source"  # after the load: opened per use
