"""The delta comparator, written once: ``d = x - x_hat`` and whether it is propagated.

pysim ``DeltaNetwork.step`` (docs/semantics.md section 1): an input is an *event* when
``d != 0 and (|d| >= theta or full)``; ``full`` is the full pass of an episode start, which
ignores the threshold (and ``x_hat`` reads as 0 then). ``theta`` is an unsigned raw code of the
input format; a code of ``2**width`` or more never fires (except in a full pass).

It runs in two pipeline stages so that no stage holds two carry chains in a row, in one of two
forms (the same function; tests/test_core_blocks.py checks both against pysim exhaustively):

* *window* (:func:`delta_window` + :func:`delta_event`), for when ``x`` arrives late: stage 1
  computes ``[x_hat - theta, x_hat + theta]`` from ``x_hat`` alone, stage 2 compares ``x``
  with its ends (``|d| >= theta  <=>  x >= x_hat + theta or x <= x_hat - theta``) beside
  ``d = x - x_hat``;
* *difference* (:func:`delta_difference` + :func:`delta_fire`), fewer adders, for when ``x`` and
  ``x_hat`` arrive together: stage 1 computes ``d``, stage 2 compares ``d`` with ``theta``.
"""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed

__all__ = ["delta_difference", "delta_event", "delta_fire", "delta_window"]


def delta_window(m: Module, x_hat, threshold, first, name: str = "dx"):
    """Stage 1, combinational: ``(x_hat', lo, hi)`` with ``x_hat' = 0 if first else x_hat``,
    ``lo = x_hat' - theta`` and ``hi = x_hat' + theta`` (register them for stage 2)."""
    w = max(len(x_hat), len(threshold)) + 2
    xh = Signal(signed(len(x_hat) + 1), name=f"{name}_xh")
    lo = Signal(signed(w), name=f"{name}_lo")
    hi = Signal(signed(w), name=f"{name}_hi")
    m.d.comb += [xh.eq(Mux(first, 0, x_hat)), lo.eq(xh - threshold), hi.eq(xh + threshold)]
    return xh, lo, hi


def delta_event(m: Module, x, x_hat, lo, hi, full, name: str = "dx"):
    """Stage 2, combinational: ``(d, fire)`` from stage 1's ``x_hat'``, ``lo`` and ``hi``:
    ``d = x - x_hat'`` and ``fire = x != x_hat' & (full | x >= hi | x <= lo)``."""
    d = Signal(signed(max(len(x), len(x_hat)) + 1), name=f"{name}_d")
    fire = Signal(name=f"{name}_fire")
    m.d.comb += [
        d.eq(x - x_hat),
        fire.eq((x != x_hat) & (full | (x >= hi) | (x <= lo))),
    ]
    return d, fire


def delta_difference(m: Module, x, x_hat, first, name: str = "dx"):
    """Difference form, stage 1, combinational: ``d = x - (0 if first else x_hat)``."""
    d = Signal(signed(max(len(x), len(x_hat)) + 1), name=f"{name}_d")
    m.d.comb += d.eq(x - Mux(first, 0, x_hat))
    return d


def delta_fire(m: Module, d, threshold, full, name: str = "dx", *, neg_threshold=None):
    """Difference form, stage 2, combinational: ``d != 0 & (full | d >= theta | d <= -theta)``
    from stage 1's (registered) ``d``. ``neg_threshold``: ``-theta`` from a register of the
    caller's (so that no negation precedes the compare), else negated here."""
    neg = -threshold if neg_threshold is None else neg_threshold
    fire = Signal(name=f"{name}_fire")
    m.d.comb += fire.eq((d != 0) & (full | (d >= threshold) | (d <= neg)))
    return fire
