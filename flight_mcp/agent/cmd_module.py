"""module: file path -> the module name(s) the target imported it under."""
import os

from . import lookup
from .registry import AgentError, command


@command("module")
def module(args, ctx):
    path = args["filepath"]
    names = lookup.file_to_module(path)
    exists = os.path.exists(path)
    if not names:
        why = ("the file exists but the target has not imported it (or imported a different copy)"
               if exists else "no such file in the target's filesystem")
        raise AgentError("not_imported", "%s is not imported in the target: %s. Check the path the "
                         "target runs from (stack shows the files of running code)." % (path, why), arg="filepath")
    # '__main__' last: a script imported both ways is best traced under its importable name.
    names.sort(key=lambda n: (n == "__main__", n))
    return {"filepath": path, "realpath": os.path.realpath(path), "modules": names}
