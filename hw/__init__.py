"""hw: the Amaranth hardware of deltanet (sparse delta network, bit-exact with ``pysim``).

Blocks, one concept per file; each is a ``wiring.Component``:

* :mod:`hw.shapes`      - pysim ``FixedFormat`` -> Amaranth shapes (the only such mapping).
* :mod:`hw.encoder`     - :class:`DeltaEncoder`: thresholded delta events, lowest index first.
* :mod:`hw.eventmux`    - :class:`EventMux`: picks the active layer's event stream.
* :mod:`hw.weights`     - :class:`WeightPlan`: column-compressed per-lane weight layout (numpy).
* :mod:`hw.mac`         - :class:`SparseMAC`: L lanes streaming the event's weight column.
* :mod:`hw.accumulator` - :class:`DeltaAccumulator`: pre-activation registers, bias at reset.
* :mod:`hw.activation`  - :class:`Activation`: requantize (rounding, overflow) + ReLU/identity.
* :mod:`hw.argmax`      - :class:`Argmax`: lowest index among the maxima.
* :mod:`hw.sequencer`   - :class:`Sequencer`: the per-step layer FSM and the cycle counter.
* :mod:`hw.top`         - :class:`DeltanetTop`: wires the blocks; the port contract.
* :mod:`hw.generate`    - :func:`generate`: Verilog + config JSON + report.

hw imports only amaranth, numpy and pysim.
"""

from .top import DeltanetTop

__all__ = ["DeltanetTop"]
