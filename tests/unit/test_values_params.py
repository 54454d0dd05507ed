"""The value tools' arguments, in-process: one vocabulary over MCP (vmtool takes module + cls like
every tool), flight_profiler's CLI spellings as a declared rewrite (`-c "module Class"`), and the
cross-field rules as model validators."""
import pytest

from flight_mcp import cmdline
from flight_mcp.errors import FlightError
from flight_mcp.tools import all_tools
from flight_mcp.tools.getglobal import GetGlobalParams
from flight_mcp.tools.module import ModuleParams
from flight_mcp.tools.reload import ReloadParams
from flight_mcp.tools.vmtool import VmtoolParams

TOOLS = all_tools()


def parse(cmd):
    tool, params = cmdline.parse(cmdline.split(cmd), TOOLS, 42)
    return tool.name, params.agent_args()


@pytest.mark.parametrize("cmd", [
    "vmtool -a getInstances -c __main__ Box",           # flight_profiler's unquoted form
    "vmtool -a getInstances -c '__main__ Box'",         # one string
    "vmtool -c __main__.Box",                           # module.Class
    "vmtool -c __main__:Box",
    "vmtool --class='__main__ Box'",
    "vmtool __main__ Box",                              # positional, like getglobal/trace
    "vmtool --mod __main__ --cls Box",
])
def test_vmtool_cli_class_forms_fill_module_and_cls(cmd):
    name, args = parse(cmd)
    assert name == "vmtool" and (args["module"], args["cls"]) == ("__main__", "Box")


def test_vmtool_cli_nested_class_and_dotted_module():
    assert parse("vmtool -c 'pkg.mod Outer.Inner'")[1]["module"] == "pkg.mod"
    assert parse("vmtool -c 'pkg.mod Outer.Inner'")[1]["cls"] == "Outer.Inner"
    assert (parse("vmtool -c pkg.mod.Thing")[1]["module"], parse("vmtool -c pkg.mod.Thing")[1]["cls"]) == \
        ("pkg.mod", "Thing")


def test_vmtool_cli_other_flags_keep_their_spellings():
    _, args = parse("vmtool -a getInstances -c '__main__ Box' -n 3 -x 2 -v -r -s --referrers "
                    "--count-by target.size -e len(instances)")
    assert args == {"action": "getInstances", "module": "__main__", "cls": "Box", "expr": "len(instances)",
                    "limit": 3, "expand": 2, "verbose": True, "raw": True, "subclasses": True, "referrers": True,
                    "count_by": "target.size"}
    assert parse("vmtool -c '__main__ Box' --limits 4")[1]["limit"] == 4


def test_vmtool_needs_the_class_for_get_instances_only():
    with pytest.raises(FlightError) as e:
        parse("vmtool -a getInstances -c Box")  # one word: a module, no class
    assert e.value.code == "usage" and "getInstances needs the class" in e.value.message
    assert "{arg:" not in e.value.message and "CLS" in e.value.message  # spoken as the CLI names it
    assert parse("vmtool -a forceGc")[1]["action"] == "forceGc"
    with pytest.raises(ValueError) as e:
        VmtoolParams(pid=1, cls="Box")
    assert "{arg:module}" in str(e.value) and "{arg:cls}" in str(e.value)
    VmtoolParams(pid=1, action="forceGc")


def test_nothing_cli_only_in_the_mcp_schemas():
    for params, expected in ((VmtoolParams, {"action", "module", "cls", "expr", "limit", "expand", "verbose", "raw",
                                            "subclasses", "referrers", "count_by"}),
                             (GetGlobalParams, {"module", "cls", "field", "expr", "expand", "verbose", "raw"}),
                             (ReloadParams, {"module", "cls", "method", "verbose"}),
                             (ModuleParams, {"filepath"})):
        props = set(params.model_json_schema()["properties"])
        assert props == expected | {"pid", "timeout_s"}, params


def test_one_vocabulary_with_the_shared_fields():
    vm, gg = VmtoolParams.model_json_schema()["properties"], GetGlobalParams.model_json_schema()["properties"]
    for name in ("expand", "verbose", "raw"):
        assert {k: v for k, v in vm[name].items() if k != "default"} == \
            {k: v for k, v in gg[name].items() if k != "default"}, name
    assert vm["expand"]["maximum"] == 6 and vm["expand"]["minimum"] == 0
    assert vm["limit"]["minimum"] == 1
    with pytest.raises(ValueError):
        VmtoolParams(pid=1, module="m", cls="C", limit=-1)
    with pytest.raises(ValueError):
        GetGlobalParams(pid=1, module="m", expand=-1)


def test_getglobal_and_reload_positional_slots():
    assert parse("getglobal __main__ CONFIG")[1] == {"module": "__main__", "cls": None, "field": "CONFIG",
                                                     "expr": "target", "expand": 2, "verbose": False, "raw": False}
    assert parse("getglobal __main__ Settings region -x 0")[1]["cls"] == "Settings"
    assert parse("reload app Box bump -v")[1] == {"module": "app", "cls": "Box", "method": "bump"}  # verbose: host
    assert cmdline.parse(["reload", "app", "f", "-v"], TOOLS, 1)[1].verbose is True
    assert parse("reload app helper")[1]["cls"] is None


def test_split_is_declared_on_the_field():
    split = cmdline.split_of(VmtoolParams, "cls")
    assert split is not None and split.into == ("module", "cls") and split.flags == ("-c", "--class")
    assert split.split(" a  B ") == {"module": "a", "cls": "B"}
    assert split.split("solo") == {"module": "solo"}
    assert cmdline.split_of(GetGlobalParams, "cls") is None


def test_usage_shows_the_split_flag():
    assert '[-c/--class "MODULE CLS"]' in cmdline.usage(TOOLS["vmtool"])
    assert "-c" not in cmdline.usage(TOOLS["getglobal"])
