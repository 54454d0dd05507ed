"""Command table of the agent: name -> handler(args, ctx) -> result dict."""

COMMANDS = {}


class AgentError(Exception):
    """An answer for the caller, not a crash: `kind` is machine-readable, `message` names cause and fix."""

    def __init__(self, kind, message, **extra):
        Exception.__init__(self, message)
        self.kind = kind
        self.message = message
        self.extra = extra


def command(name):
    def register(fn):
        COMMANDS[name] = fn
        return fn
    return register
