"""complete: the names the interactive session offers on Tab (the imported modules, the names a module
defines, the names a class and its bases define). Read from sys.modules and the namespaces
themselves, like every lookup (lookup.py): nothing is imported and no target code runs."""
import sys

from . import lookup, objstate
from .registry import AgentError, command

MOST = 5000  # names in one answer: a completion list, not an inventory


@command("complete")
def complete(args, ctx):
    module, cls = args["module"], args["cls"]
    if module is None:
        names = [m for m in list(sys.modules) if type(m) is str]
    else:
        owner = lookup.module(module)
        if cls is None:
            names = [n for n, v in lookup.names_of(owner)]
        else:
            klass = lookup.attribute(owner, cls, "class")
            if not issubclass(type(klass), type):
                raise AgentError("not_a_class", "%r in %s is not a class" % (cls, module), arg="cls")
            names = [n for k in objstate.mro(klass) if k is not object for n, v in objstate.namespace_items(k)]
    names = sorted(set(names))
    return {"names": names[:MOST], "truncated": len(names) > MOST}
