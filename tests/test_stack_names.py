"""Frames are named Class.method on every Python: 3.8-3.10 code objects carry only the bare name,
so the agent finds the class that defines the function (nested classes too); functions keep their
name. Nothing of the application runs to find it (a metaclass with side effects proves it)."""
import json

import pytest

from .conftest import flight_cli, version_params

pytestmark = pytest.mark.timeout(120)

SCRIPT = r'''
import time

TOUCHED = []


class Meta(type):
    def __getattribute__(cls, name):
        TOUCHED.append(name)
        return type.__getattribute__(cls, name)


class Outer:
    class Inner(metaclass=Meta):
        def run(self):
            return waiter()

    @staticmethod
    def start():
        return Outer.Inner().run()


def waiter():
    print("READY", flush=True)
    while True:
        time.sleep(0.05)


TOUCHED.clear()
Outer.start()
'''


@pytest.mark.parametrize("version", version_params())
def test_frames_are_named_with_their_class(spawn, version):
    t = spawn(version, SCRIPT)
    r = flight_cli(str(t.pid), "--json", "--cmd", "stack")
    assert r.returncode == 0, r.stderr
    [main] = [th for th in json.loads(r.stdout)["threads"] if th["main"]]
    assert [f["qualname"] for f in main["frames"]] == ["<module>", "Outer.start", "Outer.Inner.run", "waiter"]
    text = flight_cli(str(t.pid), "--cmd", "stack").stdout
    assert "in Outer.Inner.run\n" in text and "in waiter\n" in text
    r = flight_cli(str(t.pid), "--json", "--cmd", "getglobal __main__ TOUCHED")
    assert json.loads(r.stdout)["view"]["repr"] == "[]"   # the metaclass saw no lookup of ours
