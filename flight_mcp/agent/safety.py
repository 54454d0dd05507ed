"""Read-only checker for user expressions (owned by the vmtool/reload work, issue 4).

check(source, flag) raises AgentError("read_only", ...) naming the refused construct and how to
allow it (--allow-mutating). Until that lands it accepts everything.
"""


def check(source, flag):
    return None
