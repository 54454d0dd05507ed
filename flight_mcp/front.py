"""The `flight-mcp` command's entry point. A one-shot command (`flight-mcp PID --cmd ...`) runs in a child
of the user's resident helper (resident.py), which has imported everything already; anything else (the
MCP server, the interactive session, ps, demo, help) runs here through cli.main. Imports nothing heavy:
what this module costs, every command pays."""
from __future__ import annotations

import os
import sys

# what makes a command line not a one-shot command for the resident: it serves, asks for the program's
# own help or version, or needs this terminal for itself (the interactive console)
_HERE_ONLY = {"--stdio", "--http", "-h", "--help", "--version"}


def wants_resident(argv: list[str], env=os.environ) -> bool:
    if env.get("FLIGHT_MCP_RESIDENT", "1") == "0":
        return False
    cmd = None
    for i, arg in enumerate(argv):
        flag = arg.split("=", 1)[0]
        if flag in _HERE_ONLY:
            return False
        if flag == "--cmd":
            cmd = arg[6:] if "=" in arg else (argv[i + 1] if i + 1 < len(argv) else None)
    return cmd is not None and (cmd.split() or [""])[0] != "console"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not wants_resident(argv):
        return _here(argv)
    from . import resident
    try:
        code = resident.run(argv)
    except KeyboardInterrupt:
        return 130
    except OSError:   # no resident to be had (an unreadable state folder, a full disk...): run here
        return _here(argv)
    if code is not None:
        return code
    try:
        return _here(argv)
    finally:   # after the answer: a resident's warm-up does not slow down this command
        try:
            resident.start()
        except OSError:
            pass


def _here(argv: list[str]) -> int:
    from .cli import main as cli_main   # here only: the command line's imports are what the resident saves
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
