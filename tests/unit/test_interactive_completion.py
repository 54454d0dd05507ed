"""Tab completion of the interactive session: what is offered where, and the per-session cache of the
names read from the target (here a table stands in for the target's `complete` answers)."""
import pytest

from flight_mcp.errors import FlightError
from flight_mcp.interactive import Completer, TargetNames
from flight_mcp.tools import all_tools

MODULES = ["__main__", "flight_mcp", "flight_mcp.tools", "flight_mcp.tools.watch", "json", "json.decoder"]
NAMES = {("__main__",): ["CONFIG", "OrderService", "__name__", "compute", "helper"],
         ("__main__", "OrderService"): ["__init__", "compute_price", "process_order", "validate"]}


class Target:
    """The names of a pretend target, counting the requests."""

    def __init__(self):
        self.asked = []

    def __call__(self, module=None, cls=None):
        self.asked.append((module, cls))
        if module is None:
            return MODULES
        return NAMES.get(tuple(x for x in (module, cls) if x), [])


@pytest.fixture(scope="module")
def tools():
    return all_tools()


def offer(tools, line, names=None):
    """What Tab offers at the end of line."""
    before, _, text = line.rpartition(" ")
    return Completer(tools, names or Target()).candidates(before + " " if before else "", text)


def test_command_names_and_session_words(tools):
    everything = offer(tools, "")
    for word in ("watch ", "trace ", "ps ", "perf ", "help ", "history ", "exit ", "quit "):
        assert word in everything
    assert offer(tools, "wa") == ["watch "]
    assert offer(tools, "help tr") == ["trace "]
    assert offer(tools, "help watch ") == []
    assert offer(tools, "history -") == ["-c ", "-n "]
    assert offer(tools, "bogus x") == []


def test_flags_of_the_command(tools):
    flags = offer(tools, "watch __main__ f --e")
    assert flags == ["--exception ", "--expand ", "--expr "]
    assert "-n " in offer(tools, "trace -") and "-nm " in offer(tools, "trace -")
    assert offer(tools, "stack --as") == ["--async "]


def test_module_class_and_method_slots(tools):
    target = Target()
    assert offer(tools, "watch __main__ Or", target) == ["OrderService "]
    assert offer(tools, "watch __main__ OrderService pro", target) == ["process_order "]
    assert offer(tools, "trace __main__ co", target) == ["compute "]
    assert offer(tools, "getglobal __main__ CO", target) == ["CONFIG "]
    assert offer(tools, "vmtool __main__ Ord", target) == ["OrderService "]
    assert ("__main__", "OrderService") in target.asked


def test_values_of_module_class_and_method_flags(tools):
    assert offer(tools, "watch --mod __m") == ["__main__ "]
    assert offer(tools, "watch --mod __main__ --cls Or") == ["OrderService "]
    assert offer(tools, "watch --mod __main__ --cls OrderService --method val") == ["validate "]
    assert offer(tools, "watch --mod=__main__ --cls=OrderService pro") == ["process_order "]
    assert offer(tools, "watch __main__ --method com") == ["compute "]  # no class: the module's names
    assert offer(tools, "watch __main__ f -n ") == []   # a value that is no name
    assert offer(tools, "watch __main__ f -f 'args[0] > 1' -x ") == []


def test_dunders_only_when_asked_and_nothing_past_the_method(tools):
    assert "__init__ " not in offer(tools, "watch __main__ OrderService ")
    assert offer(tools, "watch __main__ OrderService __i") == ["__init__ "]
    assert offer(tools, "watch __main__ OrderService process_order x") == []


def test_modules_one_dotted_part_at_a_time(tools):
    # a package with imported submodules ends without a space, so that `.` can follow
    assert offer(tools, "watch fl") == ["flight_mcp"]
    assert offer(tools, "watch flight_mcp") == ["flight_mcp ", "flight_mcp.tools"]
    assert offer(tools, "watch flight_mcp.tools.") == ["flight_mcp.tools.watch "]
    assert offer(tools, "watch js") == ["json"]


def test_no_names_where_the_command_has_no_module_slot_or_inside_a_quote(tools):
    target = Target()
    assert offer(tools, "stack ", target) == [] and offer(tools, "module /tmp/", target) == []
    assert Completer(tools, target).candidates("watch __main__ f -f 'args[0] ", "") == []
    assert target.asked == []


def test_target_names_are_cached_bounded_and_errors_remembered():
    calls = []

    def fetch(module, cls):
        calls.append((module, cls))
        if module == "gone":
            raise FlightError("module_not_found", "no")
        return [f"{module}.{cls}"]

    names = TargetNames(fetch)
    assert names("a") == ["a.None"] and names("a") == ["a.None"]
    assert names("gone") == [] and names("gone") == []
    assert calls == [("a", None), ("gone", None)]
    for i in range(TargetNames.MOST + 10):
        names(str(i))
    assert len(names.cache) == TargetNames.MOST
    names("a")  # evicted long ago: asked again
    assert calls[-1] == ("a", None)


def test_target_names_not_remembered_when_nothing_could_be_asked():
    # None: not attached now (Tab does not inject); a timeout: a slow target. Asked again at the next Tab
    answers = [None, FlightError("agent_timeout", "slow"), ["x"]]

    def fetch(module, cls):
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    names = TargetNames(fetch)
    assert names("m") == [] and names("m") == [] and names("m") == ["x"] and names("m") == ["x"]
    assert answers == []
