"""Whether the interpreter mapped in a process has the symbols native frames need, said plainly.

Native frames get their function names from .symtab (or only the exported .dynsym when stripped)
and their file:line from DWARF (.debug_info, in the file or in a separate debug file found by
build-id). Reading the ELF section table is enough to tell which of these a binary has.
"""
from __future__ import annotations

import os
import re
import struct

from .. import procfs

_INTERPRETER = re.compile(r"(libpython\d\.\d+[^/]*\.so[.\d]*|/python\d(\.\d+)?[^/]*)$")


def _sections(path: str) -> tuple[set[str], str | None]:
    """(section names, build-id hex) of a 64-bit little-endian ELF file; empty on any doubt."""
    with open(path, "rb") as f:
        ident = f.read(64)
        if ident[:4] != b"\x7fELF" or ident[4] != 2 or ident[5] != 1:
            return set(), None
        shoff, = struct.unpack_from("<Q", ident, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", ident, 0x3A)
        f.seek(shoff)
        table = f.read(shentsize * shnum)
        heads = [struct.unpack_from("<IIQQQQ", table, i * shentsize) for i in range(shnum)]
        _, _, _, _, str_off, str_size = heads[shstrndx]
        f.seek(str_off)
        strtab = f.read(str_size)
        names, build_id = set(), None
        for name_off, _type, _flags, _addr, off, size in heads:
            name = strtab[name_off:strtab.index(b"\0", name_off)].decode(errors="replace")
            names.add(name)
            if name == ".note.gnu.build-id" and size >= 16:
                f.seek(off)
                note = f.read(size)
                namesz, descsz, _ = struct.unpack_from("<III", note)
                start = 12 + ((namesz + 3) & ~3)
                build_id = note[start:start + descsz].hex()
        return names, build_id


def _has_separate_debug(build_id: str | None) -> bool:
    return bool(build_id) and os.path.exists(f"/usr/lib/debug/.build-id/{build_id[:2]}/{build_id[2:]}.debug")


def interpreter_files(pid: int) -> list[str]:
    """The python executable and libpython mapped in pid, as paths we can open."""
    found: list[str] = []
    for m in procfs.maps(pid) or ():
        if m.path and _INTERPRETER.search(m.path) and m.path not in found:
            found.append(m.path)
    return found


def debug_info_status(pid: int) -> list[str]:
    """One plain sentence per interpreter file that lacks symbols or line information."""
    notes = []
    for path in interpreter_files(pid):
        try:
            names, build_id = _sections(procfs.root(pid, path))
        except (OSError, struct.error, ValueError):
            continue
        if not names:
            continue
        dwarf = ".debug_info" in names or _has_separate_debug(build_id)
        symtab = ".symtab" in names
        base = os.path.basename(path)
        if not symtab and not dwarf:
            notes.append(f"{base} is stripped (no symbol table, no debug info): Python frames are complete, but "
                         f"native frames inside it show only the functions it exports, without file:line, and its "
                         f"internal functions show as ???. Install its debug symbols for full native frames.")
        elif not dwarf:
            notes.append(f"{base} has no debug info: its native frames show function names without file:line.")
    return notes
