"""The `--cmd` language (flight_profiler's): `trace mod [cls] method -n 1 -f 'args[0]>1'`.

Built from the Params models: a flag is whatever spelling a field's `Cli` carries, positional
slots are the fields marked positional, filled left to right with optional slots skipped first
(`module [class] method`: two words are module and method).
"""
from __future__ import annotations

import re
import shlex
import types
import typing

from pydantic import BaseModel, ValidationError

from .errors import FlightError
from .tools.base import CliSplit, Tool, cli_name, cli_of, validation_problems

_INTERNAL = {"pid", "timeout_s"}
_HELP_FLAGS = ("-h", "--help")


class HelpAsked(Exception):
    """`trace -h` in a command: the caller prints the command's help instead of running it."""

    def __init__(self, tool: Tool):
        super().__init__(tool.name)
        self.tool = tool


def split_of(model: type[BaseModel], name: str) -> CliSplit | None:
    field = model.model_fields.get(name)
    return next((m for m in (field.metadata if field is not None else ()) if isinstance(m, CliSplit)), None)


def _is_bool(annotation) -> bool:
    return annotation is bool or (typing.get_origin(annotation) in (typing.Union, types.UnionType)
                                  and bool in typing.get_args(annotation))


def flags_of(model: type[BaseModel]) -> dict[str, str]:
    """CLI spelling -> field name, every spelling of every field."""
    table = {}
    for name in model.model_fields:
        cli = cli_of(model, name)
        for flag in cli.flags if cli else ():
            table[flag] = name
    if "timeout_s" in model.model_fields:
        table["--timeout"] = "timeout_s"
    return table


def positional_of(model: type[BaseModel]) -> list[str]:
    return [n for n in model.model_fields if (c := cli_of(model, n)) is not None and c.positional]


def spellings(model: type[BaseModel]) -> list[tuple[str, str | None, list[str]]]:
    """Every argument of model as (name, its positional slot or None, its flags): the one reading of
    how the CLI spells arguments, for the skills' flag tables and `help CMD`."""
    positional = positional_of(model)
    out = []
    for name in model.model_fields:
        cli = cli_of(model, name)
        flags = ["--timeout"] if name == "timeout_s" else list(cli.flags if cli else ())
        out.append((name, name if name in positional else None, flags))
    return out


def usage(tool: Tool) -> str:
    model = tool.params
    pos = []
    for n in positional_of(model):
        pos.append(n if model.model_fields[n].is_required() else f"[{n}]")
    opts = []
    for n, f in model.model_fields.items():
        cli = cli_of(model, n)
        if cli and cli.flags and not cli.positional:
            opts.append(f"[{'/'.join(cli.flags)}{'' if _is_bool(f.annotation) else ' VALUE'}]")
        if (splitter := split_of(model, n)) is not None:
            opts.append(f"[{'/'.join(splitter.flags)} \"{' '.join(x.upper() for x in splitter.into)}\"]")
    if "timeout_s" in model.model_fields:
        opts.append("[--timeout SECONDS]")
    return f"{tool.name} {' '.join(pos)} {' '.join(opts)}".strip()


def parse(words: list[str], tools: dict[str, Tool], pid: int | None) -> tuple[Tool, BaseModel]:
    if not words:
        raise FlightError("usage", "empty command; try `stack`, `trace MODULE [CLASS] METHOD -n 1`, or `help`.")
    name, rest = words[0], words[1:]
    tool = tools.get(name) or next((t for t in tools.values() if name in t.aliases), None)
    if tool is None:
        raise FlightError("usage", f"unknown command {name!r}; commands: {', '.join(sorted(tools))}.")
    model = tool.params
    table = flags_of(model)
    values: dict = {}
    positional: list[str] = []
    last_value_flag = None
    i = 0
    while i < len(rest):
        word = rest[i]
        if word.startswith("-") and not _is_number(word):
            key, eq, inline = word.partition("=")
            field = table.get(key)
            if field is None and key in _HELP_FLAGS:
                raise HelpAsked(tool)
            if field is None:
                raise FlightError("usage", f"{name}: unknown option {key!r}. Usage: {usage(tool)}")
            if _is_bool(model.model_fields[field].annotation):
                values[field] = True if not eq else inline
            else:
                if eq:
                    value = inline
                elif i + 1 < len(rest):
                    i += 1
                    value = rest[i]
                    last_value_flag = key
                else:
                    raise FlightError("usage", f"{name}: option {key} needs a value. Usage: {usage(tool)}")
                splitter = split_of(model, field)
                values.update(splitter.split(value) if splitter and key in splitter.flags else {field: value})
        else:
            positional.append(word)
        i += 1
    slots = [s for s in positional_of(model) if s not in values]
    optional = [s for s in slots if not model.model_fields[s].is_required()]
    if getattr(model, "cli_trailing_optional", False):  # `gilstat on [take] [hold] ...`: the last ones are left out
        optional.reverse()
    while len(slots) > len(positional) and optional:
        slots.remove(optional.pop(0))
    if len(positional) > len(slots):
        extra = positional[len(slots):]
        # The usual cause: an expression with spaces, split into words. Show the quoting with the
        # flag the user actually typed (getglobal's -e, trace's -f, ...).
        flag = last_value_flag or next((f for f in ("-e", "-f", "--expr") if f in table), "-f")
        raise FlightError("usage", f"{name}: unexpected argument(s) {extra}. If this is part of an expression, "
                          f"quote the whole expression as one word, with double quotes inside single ones: "
                          f"--cmd \"{name} ... {flag} 'target[\\\"db\\\"] + 1'\". Usage: {usage(tool)}")
    values.update(zip(slots, positional))
    if pid is not None and "pid" in model.model_fields:
        values["pid"] = pid
    try:
        return tool, model.model_validate(values)
    except ValidationError as e:
        raise FlightError("usage", f"{name}: {validation_problems(e, lambda n: cli_name(model, n))}. "
                          f"Usage: {usage(tool)}")


def _is_number(word: str) -> bool:
    try:
        float(word)
        return True
    except ValueError:
        return False


def split(cmd: str) -> list[str]:
    try:
        return shlex.split(cmd)
    except ValueError as e:
        raise FlightError("usage", f"cannot split the command ({e}): close every quote; put an expression "
                          "with spaces in single quotes, e.g. -f 'args[0] > 1'.")


def check_quoting(cmd: str, words: list[str], failure: FlightError | None = None) -> None:
    """A usage error when splitting cmd into words took the quotes off a name inside an expression.
    After a failed parse (failure), only when that failure names the name ("'user' is not defined"): a
    plainer mistake in the same command is said first."""
    for raw, word, name in _quoted_names(cmd):
        if word in words and (failure is None or f"'{name}'" in failure.message):
            raise FlightError("usage", f"the quotes around {name!r} in {raw} are removed when the command is split "
                              f"into words (as a shell does), leaving {word}, which reads a variable {name}: "
                              f"quote the whole expression, with the other quotes inside: "
                              f"--cmd \"... {_requoted(raw)} ...\".")


_QUOTED = re.compile(r"""'([^']*)'|"((?:[^"\\]|\\.)*)"|\\.|(\s+)|[^'"\\\s]+""")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


def _quoted_names(cmd: str):
    """(raw word, the word after splitting, name) for each word of cmd in which a quoted bare name stands
    beside unquoted text: `args[0]['user']` splits into `args[0][user]`, an expression that reads a
    variable `user`: not what was meant. A word quoted whole (`'args[0] > 1'`, `"a['k']"`) is fine."""
    words: list[tuple[str, str, list[str]]] = []   # (raw, split, quoted names)
    raw, out, names, started = "", "", [], False
    for m in _QUOTED.finditer(cmd):
        if m.group(3) is not None:   # whitespace ends a word
            if started:
                words.append((raw, out, names))
            raw, out, names, started = "", "", [], False
            continue
        text = m.group(0)
        raw, started = raw + text, True
        if m.group(1) is not None or m.group(2) is not None:
            inner = m.group(1) if m.group(1) is not None else re.sub(r"\\(.)", r"\1", m.group(2))
            out += inner
            if _NAME.fullmatch(inner):
                names.append(inner)
        else:
            out += text[1:] if text.startswith("\\") else text
    if started:
        words.append((raw, out, names))
    for raw, out, names in words:
        # a quoted name inside a longer word that is not itself a (dotted) name, as `my'Class'` would be
        if names and not _DOTTED.fullmatch(out):
            yield raw, out, names[0]


def _requoted(raw: str) -> str:
    """raw as one single-quoted word with escaped double quotes inside, as typed within --cmd "...":
    args[0]['user'] -> 'args[0][\"user\"]'."""
    def inner(m: re.Match) -> str:
        if m.group(1) is None and m.group(2) is None:
            return m.group(0)
        return '\\"' + (m.group(1) if m.group(1) is not None else m.group(2)) + '\\"'
    return "'" + _QUOTED.sub(inner, raw) + "'"
