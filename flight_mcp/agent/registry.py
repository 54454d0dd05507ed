"""Command table of the agent: name -> handler(args, ctx) -> result dict."""

COMMANDS = {}


class AgentError(Exception):
    """An answer for the caller, not a crash: `kind` is a code of codes.CODES, `message` says what
    happened (naming arguments as codes.arg(name)), `arg` the argument at fault if one is."""

    def __init__(self, kind, message, arg=None, **extra):
        Exception.__init__(self, message)
        self.kind = kind
        self.message = message
        self.arg = arg
        self.extra = extra

    def fact(self):
        err = {"kind": self.kind, "message": self.message}
        if self.arg is not None:
            err["arg"] = self.arg
        err.update(self.extra)
        return err


def command(name):
    def register(fn):
        COMMANDS[name] = fn
        return fn
    return register
