"""Formal proofs of the event-driven core's components (:mod:`sim.proofs` through
:mod:`sim.formal`, SymbiYosys + z3 from pip): every property holds by its stated method
(k-induction, or BMC at its depth), and every deliberately broken variant gives a
counterexample, so the checker is proven able to fail. Skipped, with the reason, when a formal
tool is missing."""

from __future__ import annotations

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Assert, Module, Signal
from deltanet.sim import formal
from deltanet.sim.formal import (
    FormalToolMissing,
    check,
    elaborate_now,
    find_tools,
    missing_tool,
    probe,
)
from deltanet.sim.proofs import PROPERTIES, property_named, run, tiny_plan

BROKEN = [(p.name, bug) for p in PROPERTIES for bug in p.bugs]
COVERED = [p.name for p in PROPERTIES if p.cover is not None]


@pytest.fixture(scope="module")
def tools():
    reason = missing_tool()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def plan():
    return tiny_plan()


def counter(wrong: bool) -> Module:
    """A counter 0..9 that wraps; ``wrong`` asserts one value too few."""
    m = Module()
    c = Signal(4)
    m.d.sync += c.eq(c + 1)
    with m.If(c == 9):
        m.d.sync += c.eq(0)
    m.d.comb += Assert(c < (9 if wrong else 10))
    return m


@pytest.mark.parametrize("mode", ["prove", "bmc"])
def test_check_passes_a_true_property_and_fails_a_false_one(tools, tmp_path, mode):
    good = check(counter(False), name="counter", mode=mode, depth=12, folder=tmp_path)
    assert good.status == "PASS" and good.passed and good.failed == (), good.log.read_text()
    bad = check(counter(True), name="counter_wrong", mode=mode, depth=12, folder=tmp_path)
    assert bad.status == "FAIL" and not bad.passed
    assert bad.failed and "test_formal.py" in bad.failed[0]  # the assertion's source line
    assert bad.log.exists() and "counterexample" in bad.log.read_text()


def test_check_rejects_bad_arguments():
    harness = object()  # refused before the harness is looked at
    with pytest.raises(ValueError, match="mode"):
        check(harness, name="x", mode="live")
    with pytest.raises(ValueError, match="depth"):
        check(harness, name="x", depth=0)
    with pytest.raises(ValueError, match="name"):
        check(harness, name="a b")


def test_a_missing_tool_is_named(monkeypatch):
    monkeypatch.setitem(formal.TOOLS, "z3", "no-such-solver-xyz")
    with pytest.raises(FormalToolMissing, match="no-such-solver-xyz"):
        find_tools()
    assert "no-such-solver-xyz" in missing_tool()


def test_probe_finds_a_component_internal_signal(plan):
    from deltanet.hw.control import Controller

    ctrl = Controller(plan=plan)
    cm = elaborate_now(ctrl)
    assert probe(cm, "cyc").name == "cyc"
    assert ctrl.elaborate("formal") is cm  # the conversion uses the probed module
    with pytest.raises(LookupError, match="no signal named 'nothing'"):
        probe(cm, "nothing")
    assert "cyc" in rtlil.convert(ctrl, platform="formal")


@pytest.mark.parametrize("name", [p.name for p in PROPERTIES])
def test_property_holds(tools, plan, tmp_path, name):
    prop = property_named(name)
    r = run(prop, plan, folder=tmp_path)
    assert r.status == "PASS", f"{name} ({r.method}): {r.status} at {r.failed}; log {r.log}"


@pytest.mark.parametrize("name", [p.name for p in PROPERTIES if p.mode == "prove"])
def test_inductive_property_holds_on_another_plan(tools, tmp_path, name):
    """The harnesses are not tied to one plan: 3 lanes (banks of 2 and 1 words, 1-bit
    addresses), other weights."""
    prop = property_named(name)
    r = run(prop, tiny_plan(seed=1, lanes=3, obs_words=2), folder=tmp_path)
    assert r.status == "PASS", f"{name} ({r.method}): {r.status} at {r.failed}; log {r.log}"


@pytest.mark.parametrize(("name", "bug"), BROKEN, ids=[f"{n}-{b}" for n, b in BROKEN])
def test_broken_variant_fails(tools, plan, tmp_path, name, bug):
    r = run(property_named(name), plan, bug=bug, folder=tmp_path)
    assert r.status == "FAIL" and r.failed, f"{name}.{bug}: {r.status}; log {r.log}"


@pytest.mark.parametrize("name", COVERED)
def test_bounded_check_reaches_its_scenario(tools, plan, tmp_path, name):
    r = run(property_named(name), plan, cover=True, folder=tmp_path)
    assert r.status == "PASS", f"{name} cover: {r.status}; log {r.log}"


def test_every_property_has_a_broken_variant():
    for p in PROPERTIES:
        assert p.bugs, p.name
        assert p.mode in ("prove", "bmc") and p.depth >= 1
