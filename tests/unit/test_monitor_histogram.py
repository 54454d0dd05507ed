"""monitor's histogram (agent/cmd_monitor.py), in the test interpreter: percentiles from the log-scale
buckets against exact ones on known and random costs, the bounded number of buckets, and the probe's
accounting of calls, failures, keys and the cap on distinct --by values, driven directly (no process,
no instrumentation: enter/leave called as instrument.py calls them)."""
import math
import random

import pytest

from flight_mcp.agent import capture, cmd_monitor as m

ERROR = 2 ** (1 / m.BUCKETS_PER_OCTAVE / 2) - 1   # half a bucket's width: ~2.2%


def exact(costs, q):
    s = sorted(costs)
    return s[max(1, math.ceil(q * len(s))) - 1]


def stats_of(costs, fails=0):
    s = m.new_stats()
    for c in costs:
        part = [1, 0, c, c, c, {m.bucket(c): 1}]
        m.merge(s, part)
    s[1] = fails
    return s


@pytest.mark.parametrize("seed", range(5))
def test_percentiles_are_within_half_a_bucket(seed):
    rnd = random.Random(seed)
    costs = [rnd.lognormvariate(0, 2) for _ in range(5000)] + [rnd.uniform(20, 40) for _ in range(1000)]
    f = m.stats_facts(stats_of(costs))
    for q, got in ((0.5, f["p50_ms"]), (0.95, f["p95_ms"])):
        want = exact(costs, q)
        assert abs(got - want) / want <= ERROR + 1e-9, (q, got, want)
    assert f["max_ms"] == round(max(costs), 6) and f["calls"] == 6000
    assert abs(f["avg_ms"] - sum(costs) / len(costs)) < 1e-5


def test_one_in_six_slow_shows_in_p95_not_p50():
    costs = [2.0] * 50 + [30.0] * 10   # one call in six is slow
    f = m.stats_facts(stats_of(costs))
    assert abs(f["p50_ms"] - 2.0) / 2.0 <= ERROR and abs(f["p95_ms"] - 30.0) / 30.0 <= ERROR
    assert f["max_ms"] == 30.0


def test_single_call_and_bounds():
    f = m.stats_facts(stats_of([7.25]))
    assert f["p50_ms"] == f["p95_ms"] == f["max_ms"] == f["avg_ms"] == 7.25   # kept within [min, max]
    assert m.stats_facts(m.new_stats()) == {"calls": 0, "successes": 0, "failures": 0, "avg_ms": None,
                                            "p50_ms": None, "p95_ms": None, "max_ms": None}
    # costs of 0 and below 100 ns share the lowest bucket; the whole range fits HISTOGRAM_BUCKETS
    assert m.bucket(0.0) == m.bucket(1e-9) == m.MIN_BUCKET
    assert m.bucket(1e7) - m.MIN_BUCKET + 1 == m.HISTOGRAM_BUCKETS < 700
    hist = stats_of([10 ** (e / 10) for e in range(-40, 71)])[5]
    assert len(hist) <= m.HISTOGRAM_BUCKETS


def test_percentile_edges():
    hist = {m.bucket(1.0): 99, m.bucket(100.0): 1}
    assert abs(m.percentile(hist, 100, 0.99, 1.0, 100.0) - 1.0) <= ERROR
    assert abs(m.percentile(hist, 100, 0.995, 1.0, 100.0) - 100.0) / 100 <= ERROR
    assert m.percentile(hist, 100, 1.0, 1.0, 100.0) == 100.0


class _Target:
    has_self = False
    posnames = ("tenant", "n")


class _Ctx:
    cancelled = False

    def wakeup(self):
        pass


def _probe(by=None, flt=None):
    cap = capture.Capture(_Ctx(), 1)
    return m.MonitorProbe(_Target(), cap, capture.Expression(flt, "filter_expr", False),
                          capture.Expression(by, "by", False)), cap


def _call(probe, args, exc=None, result=None):
    token = probe.enter(args, {}, None)
    if token is not None:
        probe.leave(token, result, exc)


def test_probe_counts_calls_failures_and_keys():
    probe, cap = _probe(by="args[0]", flt="args[1] >= 0")
    for i in range(30):
        _call(probe, ("t%d" % (i % 3), i), exc=ValueError() if i % 3 == 2 else None)
    _call(probe, ("t0", -1))                        # filtered out at the start
    _call(probe, ("t1", 5), exc=GeneratorExit())    # a closed generator did not fail
    facts = m.table_facts(probe.rotate(), True)
    assert cap.seen == 32 and facts["stats"]["calls"] == 31 and facts["stats"]["failures"] == 10
    keys = {k["key"]: k for k in facts["keys"]}
    assert set(keys) == {"'t0'", "'t1'", "'t2'"} and keys["'t1'"]["calls"] == 11
    assert keys["'t2'"]["failures"] == keys["'t2'"]["calls"] == 10 and keys["'t0'"]["failures"] == 0
    assert m.table_facts(probe.rotate(), True)["stats"]["calls"] == 0   # a new cycle starts empty


def test_probe_without_args_and_with_a_late_filter():
    probe, _ = _probe()
    assert not probe.needs_args
    _call(probe, None)
    _call(probe, None, exc=KeyError("k"))
    facts = m.table_facts(probe.rotate(), False)
    assert facts["keys"] == [] and facts["other_keys"] == 0 and not facts["keys_overflow"]
    assert (facts["stats"]["calls"], facts["stats"]["successes"], facts["stats"]["failures"]) == (2, 1, 1)
    probe, _ = _probe(flt="return_obj == 1")
    assert not probe.early
    for r in (1, 2, 1):
        _call(probe, (r,), result=r)
    assert m.table_facts(probe.rotate(), False)["stats"]["calls"] == 2


def test_distinct_values_are_bounded():
    probe, _ = _probe(by="args[0]")
    for i in range(m.TRACKED_KEYS + 50):
        _call(probe, (i, 0))
        _call(probe, (i, 0)) if i < 5 else None
    table = probe.rotate()
    assert len(table) == m.TRACKED_KEYS + 1 and m.OTHER in table and table[m.OTHER][0] == 50
    facts = m.table_facts(table, True)
    assert [k["kind"] for k in facts["keys"]] == ["value"] * m.SHOWN_KEYS + ["other"]
    assert [k["key"] for k in facts["keys"][:5]] == ["0", "1", "2", "3", "4"]   # the most calls first
    assert facts["other_keys"] == m.TRACKED_KEYS - m.SHOWN_KEYS and facts["keys_overflow"]
    assert sum(k["calls"] for k in facts["keys"]) == facts["stats"]["calls"] == m.TRACKED_KEYS + 55
    total = {}
    for _ in range(3):
        for k, s in table.items():
            m.add_to(total, k, s)
    assert len(total) == m.TRACKED_KEYS + 1 and total[m.OTHER][0] == 150


def test_keys_run_no_target_code_and_failures_have_a_row():
    class Tenant:
        def __hash__(self):
            raise AssertionError("target code ran")
        __eq__ = __repr__ = __hash__
    probe, _ = _probe(by="args[0]")
    _call(probe, (Tenant(), 0))
    _call(probe, ("x" * 1000, 0))
    table = probe.rotate()
    assert any(type(k) is tuple and "Tenant" in k[1] for k in table)
    assert any(type(k) is str and len(k) == m.KEY_TEXT for k in table)
    probe, _ = _probe(by="args[5]")
    _call(probe, ("a", 0))
    facts = m.table_facts(probe.rotate(), True)
    assert [(k["kind"], k["calls"]) for k in facts["keys"]] == [("failed", 1)]
    assert probe.by._failures.value == 1 and type(probe.by.first) is IndexError
