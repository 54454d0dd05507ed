"""Command line: `flight-mcp --stdio` | `flight-mcp PID --cmd "..."` | `flight-mcp ps` | `flight-mcp demo`.

The command path never imports the MCP stack, so a one-shot command starts fast.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys

from . import __version__
from .errors import FlightError

EPILOG = """examples:
  flight-mcp ps                                     list Python processes
  flight-mcp PID --cmd "stack"                      what every thread is doing
  flight-mcp PID --cmd "getglobal __main__ CONFIG -x 2"
  flight-mcp PID --cmd "trace __main__ OrderService process_order -n 1"
  flight-mcp --workers-of MASTER --cmd "stack"      every worker of a gunicorn/uvicorn master (or PID1,PID2)
  flight-mcp demo                                   run a bundled demo target and show every tool
  flight-mcp help [CMD]                             every command, or one command's usage and options
  flight-mcp --stdio                                serve MCP over stdio (for Claude Code / Desktop)
  flight-mcp --http 8765                            serve MCP over HTTP on 127.0.0.1:8765 (bearer token)
"""


# words that may stand where the pid goes
_PROGRAM_WORDS = ("ps", "demo", "help", "install-skills")


class _Parser(argparse.ArgumentParser):
    def format_help(self) -> str:
        """--help ends with the commands --cmd runs (built only when asked: it loads every tool)."""
        from .help import command_rows
        from .tools import all_tools
        return (super().format_help() + "\ncommands (flight-mcp PID --cmd \"CMD ...\"; `flight-mcp help CMD` for "
                "one command's options):\n" + "\n".join(f"  {row}" for row in command_rows(all_tools(), 98)) + "\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="flight-mcp", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                description="Look inside a live Python process, over MCP or from the command line.")
    p.add_argument("--version", action="version", version=f"flight-mcp {__version__}")
    p.add_argument("target", nargs="?", help="a pid, or one of: ps, demo, help [CMD], install-skills")
    p.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    p.add_argument("--stdio", action="store_true", help="run the MCP server over stdio")
    p.add_argument("--cmd", help="the command to run in the target (flight_profiler's command language)")
    p.add_argument("--no-color", action="store_true", help="plain text even on a terminal")
    p.add_argument("--color", action="store_true", help="colour even when not on a terminal")
    p.add_argument("--json", action="store_true", help="print the structured result as JSON")
    p.add_argument("--allow-mutating", action="store_true",
                   help="allow tools that change the target (reload, vmtool forceGc, side-effect expressions)")
    p.add_argument("--workers-of", type=int, metavar="MASTER", help="run the command on every worker (child) of "
                   "this master pid in parallel (stack, watch, trace, monitor, mem); PID1,PID2 names a list")
    p.add_argument("--dir", help="with install-skills: where to copy the skills")
    p.add_argument("--http", metavar="[HOST:]PORT", help="serve MCP over streamable HTTP (loopback unless HOST "
                   "is given), every request with 'Authorization: Bearer <token>'")
    p.add_argument("--token-file", metavar="FILE", help="with --http: the bearer token, in a file only we can "
                   "read (default: $FLIGHT_MCP_TOKEN, else one generated into ~/.local/state/flight-mcp/)")
    p.add_argument("--tls-cert", metavar="FILE", help="with --http: serve HTTPS with this certificate (PEM)")
    p.add_argument("--tls-key", metavar="FILE", help="with --http: the certificate's private key (PEM)")
    return p


def run_command(pid: int | None, words: list[str], *, color: bool, as_json: bool, allow_mutating: bool,
                sessions=None, cmd: str | None = None, fleet: dict | None = None) -> int:
    """Runs one command; sessions: the interactive session's (kept open), else one for this command; cmd:
    the command as typed in one string, when it was (its quoting is checked); fleet: the processes instead
    of pid (flight_mcp/fleet.py)."""
    from . import cmdline
    from .session import Sessions
    from .tools import all_tools
    from .tools.base import Call

    if words and words[0] == "help":  # needs no process: answered before any attach
        from .help import help_text
        print(help_text(words, all_tools(), color))
        return 0
    if words and words[0] == "history":  # the interactive session's history (interactive.py)
        from .interactive import history_once
        return history_once(words)
    tools = _tools_for(words[0] if words else "", all_tools)
    try:
        tool, params = cmdline.parse(words, tools, pid if fleet is None else 0)
        if fleet is not None:
            from .fleet import cli_params
            params = cli_params(tool, params, fleet)
    except cmdline.HelpAsked as asked:   # `--cmd "trace -h"`
        from .help import command
        print(command(asked.tool, color))
        return 0
    except FlightError as e:
        if cmd is not None:   # `--expr args[0]['user']` fails as "'user' is not defined": say why
            cmdline.check_quoting(cmd, words, e)
        raise
    if cmd is not None:
        cmdline.check_quoting(cmd, words)
    own = sessions is None
    sessions = Sessions() if own else sessions
    call = Call(sessions, allow_mutating=allow_mutating, on_cli=True,
                progress=lambda done, total, msg: print(f"  ... {msg}", file=sys.stderr) if sys.stderr.isatty() else None)
    if not as_json:   # each capture of watch/trace as it arrives, as flight_profiler prints them
        call.stream = lambda text: print(text, flush=True)
        call.stream_color = color
    # Ctrl-C ends a watch/trace cleanly: the agent removes its instrumentation and we print what was captured.
    previous = signal.signal(signal.SIGINT, lambda *_: call.cancel_event.set())
    try:
        result = tool.invoke(params, call)
    finally:
        signal.signal(signal.SIGINT, previous)
        if own:
            sessions.close()
    if as_json:
        print(result.model_dump_json(indent=2))
    else:
        print(tool.text(result, color))
    return 0


def _not_a_pid(word: str) -> str:
    said = f"{word!r} is not a pid"
    if _tools_for(word, dict):   # a command word where the pid goes: `flight-mcp stack`
        return f'{said} but a command: run it in a process with flight-mcp PID --cmd "{word} ..."'
    return (f"{said} (a process id: digits) nor one of {', '.join(_PROGRAM_WORDS)}; `flight-mcp ps` lists the "
            'Python processes and their pids, then: flight-mcp PID --cmd "stack"')


# command words whose tool module is named otherwise (flight_profiler's spellings)
_MODULE_OF = {"ps": "processes", "list_processes": "processes", "perf": "profile", "detach": "attach"}


def _tools_for(word: str, all_tools) -> dict:
    """Only the tool module of the command when there is one: building every tool's pydantic
    models cost ~190 ms of a one-shot command's start-up. Otherwise every tool."""
    import importlib
    if word.isidentifier():
        try:
            mod = importlib.import_module(f"flight_mcp.tools.{_MODULE_OF.get(word, word)}")
        except ImportError:
            mod = None
        found = getattr(mod, "TOOLS", ()) or ((mod.TOOL,) if hasattr(mod, "TOOL") else ())
        if any(t.name == word or word in t.aliases for t in found):
            return {t.name: t for t in found}
    return all_tools()


def _no_pydantic_plugins() -> None:
    """pydantic looks for plugins among every installed distribution's entry points when it builds its
    first validator: a one-shot command's start spent finding none (flight-mcp uses none). With
    PYDANTIC_DISABLE_PLUGINS=__all__ its loader finds none without looking, but the loader's module still
    imports importlib.metadata (email, zipfile, csv: about a quarter of what pydantic's own import costs).
    So, with every plugin disabled, the loader is the one function pydantic asks of it (get_plugins, which
    then returns nothing in pydantic's too), without that import."""
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    name = "pydantic.plugin._loader"
    if os.environ["PYDANTIC_DISABLE_PLUGINS"] == "__all__" and name not in sys.modules:
        import types
        loader = types.ModuleType(name, "pydantic's plugin loader with every plugin disabled (flight_mcp.cli)")
        loader.get_plugins = lambda: ()
        sys.modules[name] = loader


def main(argv: list[str] | None = None) -> int:
    _no_pydantic_plugins()
    args = _parser().parse_intermixed_args(argv)   # `ps --json FILTER` as well as `ps FILTER --json`
    color = args.color or (not args.no_color and sys.stdout.isatty() and os.environ.get("NO_COLOR") is None)
    try:
        if args.http is not None:
            if args.stdio or args.target is not None:
                raise FlightError("usage", "--http serves MCP on its own: give it without --stdio or a command")
            from .http_server import serve_http
            return serve_http(args.http, allow_mutating=args.allow_mutating, token_file=args.token_file,
                              tls_cert=args.tls_cert, tls_key=args.tls_key)
        if args.token_file or args.tls_cert or args.tls_key:
            raise FlightError("usage", "--token-file, --tls-cert and --tls-key go with --http [HOST:]PORT")
        if args.stdio and (args.cmd or args.target):
            raise FlightError("usage", "--stdio serves MCP on stdin/stdout and runs nothing else: drop "
                              f"{'--cmd' if args.cmd else repr(args.target)}, or run a command without --stdio: "
                              'flight-mcp PID --cmd "stack"')
        if args.stdio:
            from .server import serve_stdio
            serve_stdio(allow_mutating=args.allow_mutating)
            return 0
        if args.target == "demo":
            from .demo import run_demo
            return run_demo(color=color)
        if args.target == "install-skills":
            from .skills import install
            return install(args.dir)
        if args.target == "help":
            return run_command(None, ["help", *args.rest], color=color, as_json=False, allow_mutating=False)
        if args.target == "ps":
            return run_command(None, ["list_processes", *args.rest], color=color, as_json=args.json,
                               allow_mutating=False)
        if args.target is None and args.workers_of is None:
            _parser().print_usage(sys.stderr)
            print('give a pid and a command: flight-mcp PID --cmd "stack"; `flight-mcp ps` lists the Python '
                  "processes, `flight-mcp --help` says more.", file=sys.stderr)
            return 2
        if args.workers_of is not None or "," in args.target:   # several processes (fleet.py)
            from .cmdline import split
            from .fleet import cli_target
            return run_command(None, split(args.cmd or ""), color=color, as_json=args.json,
                               allow_mutating=args.allow_mutating, cmd=args.cmd,
                               fleet=cli_target(args.target, args.workers_of))
        if not args.target.isdigit():
            raise FlightError("usage", _not_a_pid(args.target))
        if not args.cmd:  # the interactive session
            from .interactive import session
            return session(int(args.target), color=color, allow_mutating=args.allow_mutating)
        from .cmdline import split
        words = split(args.cmd)
        if words[:1] == ["console"] and not args.json:  # no code: the interactive console
            from .console_repl import interactive
            rc = interactive(int(args.target), words, color=color, allow_mutating=args.allow_mutating)
            if rc is not None:
                return rc
        return run_command(int(args.target), words, color=color, as_json=args.json,
                           allow_mutating=args.allow_mutating, cmd=args.cmd)
    except FlightError as e:
        from .render import escape
        code = "" if e.code == "usage" else f" [{e.code}]"
        print(f"error: {escape(e.message)}{code}", file=sys.stderr)  # messages may quote target data
        if e.hint and e.code != "usage":
            print(f"hint: {escape(e.hint)}", file=sys.stderr)
        return 2 if e.code == "usage" else 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:   # `flight-mcp ps | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
