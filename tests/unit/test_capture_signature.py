"""Parameters by name: the signature a capture reports, and `params` in expressions."""
import pytest

from flight_mcp.agent import capture


class Target:
    def __init__(self, func, has_self=False):
        self.func, self.code, self.has_self = func, func.__code__, has_self
        self.posnames = self.code.co_varnames[:self.code.co_argcount]


class Svc:
    def process(self, order_id, amount=100.0, *items, retry=False, timeout, **extra):
        pass


def plain(a, b=[1, 2], /, c=None):   # noqa: B006 (positional-only marker on 3.8+)
    pass


@pytest.mark.parametrize("target, want", [
    (Target(Svc.process, has_self=True), "(order_id, amount=100.0, *items, retry=False, timeout, **extra)"),
    (Target(plain), "(a, b=[1, 2], /, c=None)"),
    (Target(lambda: None), "()"),
])
def test_signature(target, want):
    assert capture.signature(target) == want


def test_params_name_every_argument_the_instance_left_out():
    e = capture.Expression("params", "expr", False)
    call = e.caller(Target(Svc.process, has_self=True))
    assert call(("svc", 7, 12.5), {"timeout": 3}) == {"order_id": 7, "amount": 12.5, "timeout": 3}
    f = capture.Expression("params['amount'] > 10 and kwargs['order_id'] == 7", "filter_expr", False)
    assert f.caller(Target(Svc.process, has_self=True))(("svc", 7, 12.5), {}) is True
