"""owners.py in-process, on objects of this interpreter: owner paths for each way a program holds
objects (module global, instance attribute, class attribute, closure, nested containers), the
agent's own objects never named as holders, and ours() leaving the target's objects alone."""
import gc
import sys
import types

import pytest

from flight_mcp.agent import objstate, owners


class Item:
    def __init__(self, n):
        self.n = n


class Registry:
    def __init__(self):
        self._by_topic = {}


class Slotted:
    __slots__ = ("held",)


class Holder:
    ITEMS = []


def _paths(objs):
    heap = gc.get_objects()
    skip = set(owners.ours())
    skip.update((id(heap), id(objs)))   # the sample list (the agent's own, in the real command)
    try:
        ranked, facts = owners.owner_paths([objs], heap, skip, lambda: None)
    finally:
        heap.clear()
    return dict(ranked[0]), facts


@pytest.fixture
def module():
    mod = types.ModuleType("memtest_owned")
    sys.modules[mod.__name__] = mod
    yield mod
    del sys.modules[mod.__name__]


def test_module_global_list(module):
    module.CACHE = [Item(i) for i in range(20)]
    paths, _ = _paths(module.CACHE[:5])
    assert paths == {"memtest_owned.CACHE[*]": 5}


def test_instance_attribute_dict_of_lists(module):
    module.REGISTRY = Registry()
    for i in range(30):
        module.REGISTRY._by_topic.setdefault("t%d" % (i % 3), []).append(Item(i))
    sample = [x for lst in module.REGISTRY._by_topic.values() for x in lst][:12]
    paths, facts = _paths(sample)
    assert paths == {"Registry._by_topic[*][*]": 12}
    assert facts["passes"] <= owners.MAX_LEVELS


def test_class_attribute_slot_and_closure(module):
    Holder.ITEMS[:] = [Item(1), Item(2)]
    s = Slotted()
    s.held = Item(3)
    module.S = s

    def make():
        kept = [Item(4)]

        def handler():
            return kept
        return handler
    module.HANDLER = make()
    try:
        paths, _ = _paths(Holder.ITEMS[:1])
        assert paths == {"%s.ITEMS[*]" % objstate.type_name(Holder): 1}
        paths, _ = _paths([s.held])
        assert paths == {"Slotted.held": 1}
        kept = module.HANDLER.__closure__[0].cell_contents
        paths, _ = _paths(kept[:1])
        (path,) = paths
        assert path.startswith("closure of ") and path.endswith("make.<locals>.handler[*]"), paths
    finally:
        Holder.ITEMS[:] = []


def test_object_held_by_nothing_tracked_has_no_path():
    lonely = Item(5)   # held by this frame's local only
    paths, _ = _paths([lonely])
    assert list(paths) == [None] or list(paths)[0].startswith("frame of test_object_held_by"), paths


def test_the_agents_own_objects_are_never_holders():
    reader = objstate.Reader()            # an agent class instance holding a target object
    target = Item(6)
    reader._layouts[id(target)] = (target, None)
    paths, _ = _paths([target])
    assert not [p for p in paths if p and ("Reader" in p or "_layouts" in p)], paths


def test_ours_has_the_agent_and_not_the_target(module):
    module.DATA = {"k": [1, 2, 3]}
    mine = owners.ours()
    assert id(owners) in mine and id(owners.ours) in mine and id(owners.__dict__) in mine
    assert id(module.DATA) not in mine and id(module.DATA["k"]) not in mine
    assert id(module.__dict__) not in mine
    assert id(Item) not in mine and id(objstate.class_dict(Item)) not in mine
    # a class of the target cached by the agent (objstate._DICTS) does not make its namespace ours
    objstate.class_dicts(Item)
    mine = owners.ours()
    assert id(objstate.class_dict(Item)) not in mine and id(Item) not in mine


def test_find_holders_reads_big_lists_in_slices():
    big = [None] * (owners.BIG * 2 + 5)
    target = Item(7)
    big[-1] = target
    paused = []
    found = owners.find_holders([big], {id(target): target}, set(), lambda: paused.append(1))
    assert found[id(target)] == [big]
    assert len(paused) >= 3   # the big list was read slice by slice, yielding between


def test_huge_containers_are_read_apart_in_slices():
    target, other = Item(8), Item(9)
    big_list = [None] * (owners.BIG * 3)
    big_list[owners.BIG * 2 + 1] = target
    big_dict = {i: None for i in range(owners.BIG * 2)}
    big_dict[-1] = other
    heap = [object(), big_list, big_dict, object()]
    found, paused = {}, []
    passes = owners.climb(heap, {id(target): target, id(other): other}, set(), lambda: paused.append(1), found,
                          lambda h: False, 3, {id(big_list), id(big_dict)})
    assert found[id(target)] == [big_list] and found[id(other)] == [big_dict]
    assert len(paused) >= 5 and passes >= 1
