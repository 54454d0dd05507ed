"""The one catalogue of error codes, shared by the agent (which runs inside the target, so: standard
library only, Python 3.8) and the host. Every error carries one of these codes; the hint is what
to do about that kind of failure, the message says what happened this time.

Messages name a tool argument as `{arg:NAME}` (NAME is the Params field): the host writes it in the
caller's language, the MCP argument name over MCP and the flag on the command line (errors.speak).
"""

# code -> hint. Grouped by who finds the problem; a test checks every code raised anywhere is here.
CODES = {
    # the caller's input
    "usage": "Check the arguments against the tool's description (CLI: `flight-mcp PID --cmd \"help\"`).",
    "bad_argument": "Give the argument a value in its documented range.",
    "bad_expression": "Fix the expression: it must be one Python expression over the names the tool lists.",
    "expression_failed": "The expression raised on the target's data: read the value first without it, then "
                         "narrow the expression.",
    "read_only": "Restart the server with --allow-mutating if changing the target is intended.",
    "write_failed": "Name a file in a directory you can write, or leave the file argument out.",
    # what the target holds
    "module_not_found": "Use the module name the target imported (the script that was run is __main__); "
                        "the `module` tool maps a file path to its module name.",
    "class_not_found": "Check the class name (dotted for nested classes); getglobal on the module lists its names.",
    "method_not_found": "Check the name; getglobal on the module or class lists what it defines.",
    "field_not_found": "Check the name; getglobal without a field lists what the module or class defines.",
    "function_not_found": "Check the name; getglobal on the module lists what it defines.",
    "nested_method_not_found": "Name a function defined directly inside the method.",
    "not_a_function": "Name a function or method; getglobal shows what the name holds.",
    "not_a_class": "Name a class; getglobal on the module lists its names with their types.",
    "not_imported": "The target has not imported it; flight-mcp never imports modules into the target.",
    "bad_class": "Name a class as module.Class (or Class with a module).",
    "bad_action": "Use one of the documented actions.",
    "not_tracked": "The garbage collector does not track this type: reach its objects through a container or an "
                   "object that holds them (getglobal, or vmtool on the holder's class).",
    # reload: the running code is left as it was
    "not_reloadable": "Reload works on def functions and methods whose source is in a file; restart the target "
                      "for anything else.",
    "file_missing": "Restore the function's source file (at the path the message names), then reload.",
    "file_unreadable": "Make the source file readable by the target's user, then reload.",
    "syntax_error": "Fix the syntax error the message shows, then reload again.",
    "function_missing": "The def is no longer in its file (renamed or moved?): reload a def that is still there.",
    "compile_failed": "Evaluating the def's default values or annotations failed: fix them, then reload.",
    "closure_changed": "The new code needs other closure cells than the running function has: restart the target "
                       "for this change.",
    "kind_changed": "A function cannot turn into a generator or coroutine (or back) in place: restart the target "
                    "for this change.",
    "unsupported": "This target or object does not support the request; the message says what does.",
    "busy": "Another command holds what this one needs; retry when it is done.",
    "monitoring_busy": "Another tool uses the sys.monitoring slot; retry when it is done.",
    # the process
    "bad_pid": "Give the pid of a running process (list_processes shows the Python ones).",
    "no_such_process": "The process is gone; list_processes shows the running Python processes.",
    "not_python": "Give the pid of a CPython process (list_processes shows them).",
    "unsupported_python": "flight-mcp attaches to CPython 3.8 and newer.",
    "permission_denied": "Run flight-mcp as the target's user or root (ptrace must be allowed: "
                         "kernel.yama.ptrace_scope, CAP_SYS_PTRACE in containers).",
    "process_stopped": "The process is stopped (SIGSTOP or a debugger); continue it, then retry.",
    # attaching and the agent
    "attach_busy": "Another flight-mcp is attaching to this process; retry in a moment.",
    "attach_failed": "The attach did not complete; the message says why. The target is unaffected.",
    "inject_failed": "The agent could not be loaded; the message says why. The target is unaffected.",
    "inject_timeout": "The injector did not finish in time; retry with a longer timeout_s.",
    "agent_timeout": "A thread may be holding the GIL in native code: stack with native=true reads the "
                     "process from outside.",
    "agent_gone": "The process exited or the agent was detached; retry to attach afresh.",
    "agent_failed": "The agent failed to start; the target is unaffected. Report the message.",
    "agent_version_mismatch": "Detach the other flight-mcp's agent (`flight-mcp PID --cmd detach`) and retry.",
    "bad_agent_reply": "Detach the agent (`flight-mcp PID --cmd detach`) and retry; otherwise report this.",
    "agent_bug": "A fault of flight-mcp, not of the target (which is unaffected): report the message.",
    "unknown_command": "The agent is of another flight-mcp version: detach it and retry.",
    "protocol": "The agent received a malformed request: report this.",
    "agent_pending": "An agent injected earlier still waits for the GIL (a thread holds it): stack answered from "
                     "outside; it starts by itself once the GIL is free.",
    "no_safe_point": "No thread reached a point where the agent can start; stack with native=true reads the "
                     "process from outside.",
    "unsafe_runtime_dir": "Remove the named path (as its owner or root) and retry.",
    "runtime_dir_failed": "Free space or permissions under /tmp (or $XDG_RUNTIME_DIR) are needed for the agent.",
    "install_broken": "Reinstall flight-mcp: a file it ships is missing.",
    # reading from outside
    "external_unavailable": "Install pystack (it comes with flight-mcp on Linux) or run as root.",
    "external_failed": "Reading the process from outside failed; the message says why.",
    "external_timeout": "Reading from outside took too long; retry with a longer timeout_s.",
    # tt
    "record_not_found": "List the recorded calls (tt -l; MCP list_records=true) and use an index it shows; "
                        "records are deleted by delete/delete_all, the oldest past the table's bound, and all of "
                        "them at detach.",
    # console
    "snippet_syntax_error": "Fix the snippet's syntax (it is compiled by the target's own Python version).",
    "console_busy": "Earlier snippets blocked in C code still run past their deadline; wait for them to end "
                    "(they end when the call they wait on returns), or restart the target.",
    # gilstat
    "gilstat_unavailable": "The GIL of this interpreter cannot be read (the message says why); profile with "
                           "py-spy's --gil view shows which threads hold it.",
    "gilstat_busy": "Wait for the other gilstat to answer (it stops by itself after its interval), or stop it "
                    "with `gilstat off`.",
    # mem
    "cancelled": "The call was cancelled before it finished; run it again.",
    # profile
    "profiler_unavailable": "Install py-spy into flight-mcp's environment (`pip install py-spy`; it is a "
                            "dependency of flight-mcp).",
    # http
    "bad_token": "Give a token of at least 16 printable characters without spaces (e.g. `python -c 'import "
                 "secrets; print(secrets.token_urlsafe(32))'`) in the file or in FLIGHT_MCP_TOKEN.",
    "unsafe_token_file": "Make the token file a regular file of the server's user that only it can read "
                         "(chmod 600 FILE), in a directory of that user.",
    "http_bind_failed": "Choose another port, or stop what listens there (`ss -ltnp`).",
    # stack during a GIL stall
    "gil_held": "A thread holds the GIL in one long C call (the reading from outside shows which, and where); "
                "the agent answers once it lets go: call again, or look at what that call does.",
    # containers
    "unmapped_user": "Run flight-mcp as a uid that the target's user namespace maps (the container's owner), "
                     "or inside the container (`nsenter -t PID -a`); stack with native=true reads it from outside.",
    # fleet
    "no_workers": "Give the master's pid (list_processes marks it [master]) or name the processes with pids.",
}


def arg(name):
    """A tool argument, named in a message; the host writes it the way the caller spells it."""
    return "{arg:%s}" % name
