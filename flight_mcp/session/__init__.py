"""The session layer: attach (on first use, within the call's one deadline), the connection per pid,
and answers that come from the agent or else from outside the process (session.stack).

Tools call into it; they never talk to AgentClient, /proc or the runtime directory themselves.
"""
from .connect import DEFAULT_ATTACH_TIMEOUT, Sessions, attach, attach_existing
from .deadline import Deadline

__all__ = ["DEFAULT_ATTACH_TIMEOUT", "Deadline", "Sessions", "attach", "attach_existing"]
