"""The Agent Skills docs in skills/: finding them, installing them, and keeping their generated parts true.

Two parts of each SKILL.md are generated, between markers, so they cannot drift from the code:
- the flag table, from the tool's Params model (the same source as the MCP schema and --cmd parser);
- example outputs, produced by running the example command with our own tool on the demo target.
`python -m flight_mcp.skills --write` regenerates both; tests fail when the committed text differs.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
import sysconfig
from pathlib import Path

from pydantic import BaseModel

_PKG = Path(__file__).resolve().parent
FLAGS_RE = re.compile(r"(<!-- BEGIN flags: (\S+) -->\n)(.*?)(<!-- END flags -->)", re.S)
EXAMPLE_RE = re.compile(r"(<!-- BEGIN example: (.+?) -->\n)(.*?)(<!-- END example -->)", re.S)


def skills_dir() -> Path:
    """skills/ of a source checkout, or the copy a regular install ships inside the package."""
    for candidate in (_PKG.parent / "skills", _PKG / "skills_data"):
        if candidate.is_dir():
            return candidate
    from .errors import FlightError
    raise FlightError("install_broken", f"the skills folder is missing from this installation ({_PKG})")


def front_matter(text: str) -> dict[str, str]:
    m = re.match(r"---\n(.*?)\n---\n", text, re.S)
    fields = {}
    for line in (m.group(1).splitlines() if m else []):
        key, _, value = line.partition(":")
        if value:
            fields[key.strip()] = value.strip()
    return fields


def all_skills() -> list[tuple[str, str, str]]:
    """(name, description, SKILL.md text) for every skill."""
    out = []
    for path in sorted(skills_dir().glob("*/SKILL.md")):
        text = path.read_text()
        meta = front_matter(text)
        out.append((meta.get("name", path.parent.name), meta.get("description", ""), text))
    return out


def install(dest: str | None) -> int:
    """Copies every skill folder into dest (default ~/.claude/skills); a bad dest is one error line."""
    from .errors import FlightError
    target = Path(dest or os.path.expanduser("~/.claude/skills"))
    source = skills_dir()
    try:
        target.mkdir(parents=True, exist_ok=True)
        for folder in sorted(p for p in source.iterdir() if (p / "SKILL.md").exists()):
            shutil.copytree(folder, target / folder.name, dirs_exist_ok=True)
            print(f"installed {folder.name} -> {target / folder.name}")
    except FileExistsError as e:
        raise FlightError("usage", f"install-skills: {e.filename} exists and is not a folder: give --dir a "
                          "folder (it is created when missing)") from None
    except (shutil.Error, OSError) as e:
        where = getattr(e, "filename", None) or target
        why = getattr(e, "strerror", None) or str(e)
        raise FlightError("usage", f"install-skills: cannot write {where} ({why}): give --dir a folder "
                          "you may write to") from None
    return 0


def flag_table(model: type[BaseModel]) -> str:
    from .cmdline import spellings

    rows = ["| MCP argument | CLI | default | meaning |", "|---|---|---|---|"]
    for name, slot, flags in spellings(model):
        field = model.model_fields[name]
        if name == "pid":
            spelling = "`PID` (before `--cmd`)"
        elif slot is not None:
            spelling = f"positional `{slot}`" + (f" or `{'`/`'.join(flags)}`" if flags else "")
        else:
            spelling = "`" + "`, `".join(flags) + "`" if flags else "(MCP only)"
        default = "required" if field.is_required() else f"`{field.default}`"
        meaning = (field.description or "").replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `{name}` | {spelling} | {default} | {meaning} |")
    return "\n".join(rows) + "\n"


_NOISE = [
    (re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[:.]\d+"), "<time>"),
    (re.compile(r"0x[0-9a-f]+"), "0x…"),
    (re.compile(r"\d+(\.\d+)?"), "N"),
    (re.compile(r"\[(N(, N)*)?\]"), "[N…]"),  # how many orders the demo has seen so far (maybe none yet)
    (re.compile(r"/\S*/(demo_target\.py)"), r"\1"),
    (re.compile(r"/\S*/(python3\.\d+|lib)/\S+"), "<stdlib>"),
]


def normalize(text: str) -> str:
    """What may differ between two runs of one example: times, ids, addresses, paths, counts."""
    for pattern, repl in _NOISE:
        text = pattern.sub(repl, text)
    return "\n".join(line.rstrip() for line in text.strip().splitlines())


def run_examples(commands: list[str]) -> dict[str, str]:
    """Runs each example command on a fresh demo target and returns its plain-text output."""
    import subprocess

    from . import cmdline
    from .demo import TARGET
    from .errors import FlightError
    from .session import Sessions
    from .tools import all_tools
    from .tools.base import Call

    stdlib = sysconfig.get_paths()["stdlib"]
    proc = subprocess.Popen([sys.executable, "-u", TARGET], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    sessions = Sessions()
    out = {}
    try:
        proc.stdout.readline()
        tools = all_tools()
        for cmd in commands:
            tool, params = cmdline.parse(cmdline.split(cmd.replace("DEMO_TARGET", TARGET)), tools, proc.pid)
            try:
                text = tool.text(tool.invoke(params, Call(sessions, allow_mutating=True, on_cli=True)), False)
            except FlightError as e:
                text = f"error: {e.message}"
            out[cmd] = (text.replace(TARGET, "/srv/demo/demo_target.py").replace(str(proc.pid), "12345")
                        .replace(stdlib, f"/usr/lib/python{sys.version_info[0]}.{sys.version_info[1]}"))
    finally:
        sessions.close()
        proc.kill()
        proc.wait(timeout=10)
    return out


def regenerate(text: str, outputs: dict[str, str] | None) -> str:
    from .tools import all_tools

    tools = all_tools()
    text = FLAGS_RE.sub(lambda m: m.group(1) + flag_table(tools[m.group(2)].params) + m.group(4), text)
    if outputs is not None:
        text = EXAMPLE_RE.sub(lambda m: m.group(1) + "```text\n$ flight-mcp 12345 --cmd \"" + m.group(2) + "\"\n"
                              + outputs[m.group(2)] + "\n```\n" + m.group(4), text)
    return text


def examples_in(text: str) -> list[str]:
    return [m.group(2) for m in EXAMPLE_RE.finditer(text)]


def main(argv: list[str]) -> int:
    write = "--write" in argv
    for path in sorted(skills_dir().glob("*/SKILL.md")):
        text = path.read_text()
        outputs = run_examples(examples_in(text)) if write else None
        new = regenerate(text, outputs)
        if new != text:
            path.write_text(new)
            print(f"updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
