"""The delta comparator, written once: ``d = x - x_hat`` and whether it is propagated.

pysim ``DeltaNetwork.step`` (docs/semantics.md section 1): an input is an *event* when
``d != 0 and (|d| >= theta or full)``; ``full`` is the full pass of an episode start, which
ignores the threshold. ``theta`` is an unsigned raw code of the input format; a code of
``2**width`` or more never fires (except in a full pass).
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal, signed

__all__ = ["delta_event"]


def delta_event(m: Module, x, x_hat, threshold, full, name: str = "dx"):
    """Combinational ``(d, fire)`` for one input: ``d = x - x_hat`` (one bit wider than the
    wider operand, signed) and ``fire = d != 0 & (d >= theta | d <= -theta | full)``."""
    d = Signal(signed(max(len(x), len(x_hat)) + 1), name=f"{name}_d")
    fire = Signal(name=f"{name}_fire")
    m.d.comb += [
        d.eq(x - x_hat),
        fire.eq((d != 0) & (full | (d >= threshold) | (d <= -threshold))),
    ]
    return d, fire
