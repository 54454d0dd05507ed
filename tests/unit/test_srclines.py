"""srclines: the source lines of frames, read by the agent without linecache (nothing imported into the
target, nothing kept in its linecache), decoded as the interpreter decodes source."""
import linecache
import os
import sys

from flight_mcp.agent import srclines


def lines_of(tmp_path, data: bytes, name="m.py"):
    path = tmp_path / name
    path.write_bytes(data)
    return srclines.Lines(), str(path)


def test_lines_are_numbered_as_the_interpreter_numbers_them(tmp_path):
    lines, path = lines_of(tmp_path, b"a = 1\r\nb = '\x0c\x1c'\rc = 3\n  d = 4  \n")
    assert [lines.get(path, n) for n in range(1, 6)] == ["a = 1", "b = '\x0c\x1c'", "c = 3", "d = 4", ""]
    assert lines.get(path, 0) == "" and lines.get(path, None) == "" and lines.get(path, 99) == ""


def test_the_encoding_is_the_files_own(tmp_path):
    lines, path = lines_of(tmp_path, b"\xef\xbb\xbfs = '\xc3\xa9'\n")
    assert lines.get(path, 1) == "s = 'é'"
    lines, path = lines_of(tmp_path, b"#!/usr/bin/env python\n# -*- coding: latin-1 -*-\ns = '\xe9'\n", "l1.py")
    assert lines.get(path, 3) == "s = 'é'"
    # a cookie after code does not count; an unknown encoding falls back to UTF-8, bad bytes are replaced
    lines, path = lines_of(tmp_path, b"x = 1\n# coding: latin-1\ns = '\xe9'\n", "late.py")
    assert lines.get(path, 3) == "s = '\ufffd'"
    lines, path = lines_of(tmp_path, b"# coding=no-such-codec\ns = '\xc3\xa9'\n", "unknown.py")
    assert lines.get(path, 2) == "s = 'é'"


def test_what_is_no_regular_file_is_not_read(tmp_path):
    fifo = tmp_path / "fifo.py"
    os.mkfifo(fifo)   # nobody writes it: a blocking open would hang the command
    lines = srclines.Lines()
    assert lines.get(str(fifo), 1) == "" and lines.get(str(tmp_path), 1) == ""
    assert lines.get(str(tmp_path / "missing.py"), 1) == "" and lines.get("<string>", 1) == ""
    assert lines.get("bad\0name", 1) == ""


def test_a_file_is_read_once_per_command_and_kept_by_nobody_else(tmp_path):
    lines, path = lines_of(tmp_path, b"one\ntwo\n")
    assert lines.get(path, 1) == "one"
    (tmp_path / "m.py").write_bytes(b"ONE\n")
    assert lines.get(path, 2) == "two"                 # the same command: the text it read
    assert srclines.Lines().get(path, 1) == "ONE"      # the next command reads it again
    assert path not in linecache.cache


def test_the_stack_command_imports_no_linecache_tokenize_or_re():
    """In a target that has not loaded them (a bare 3.12+ interpreter), stack imports none of them."""
    saved = dict(sys.modules)
    try:
        for name in [n for n in sys.modules if n in ("linecache", "tokenize", "re") or n.startswith("flight_mcp.agent")]:
            del sys.modules[name]
        from flight_mcp.agent import cmd_stack
        threads = cmd_stack.threads()[0]
        assert any(f["source"] for t in threads for f in t["frames"]), threads
        assert not {"linecache", "tokenize", "re"} & set(sys.modules), sorted({"linecache", "tokenize", "re"} & set(sys.modules))
    finally:
        sys.modules.clear()
        sys.modules.update(saved)


def test_a_relative_name_is_also_looked_for_along_sys_path(tmp_path, monkeypatch):
    (tmp_path / "rel_script.py").write_bytes(b"first = 1\n")
    monkeypatch.chdir("/")
    monkeypatch.setattr(sys, "path", [str(tmp_path)] + sys.path)
    assert srclines.Lines().get("rel_script.py", 1) == "first = 1"
