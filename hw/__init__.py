"""hw: the Amaranth hardware of deltanet (sparse delta network, bit-exact with ``pysim``).

One core, :class:`hw.core.DeltaCore` (toplevel ``deltanet_core``), built from components, one
concept per file, each a ``wiring.Component`` with stream ports:

* :mod:`hw.shapes`     - pysim ``FixedFormat`` -> Amaranth shapes and stream payloads (the only
  such mapping).
* :mod:`hw.delta`      - the threshold comparator (window and difference forms).
* :mod:`hw.activation` - requantize (rounding, overflow) + ReLU/identity.
* :mod:`hw.intake`     - :class:`Intake`: delta-encodes observation words as the host writes them.
* :mod:`hw.queue`      - :class:`EventQueue`: event groups (a ring buffer in a synchronous-read
  memory: block RAM on every FPGA).
* :mod:`hw.eventmux`   - :class:`EventMux`: picks the queue's producer.
* :mod:`hw.issue`      - :class:`Issuer`: weight columns (conv: kernel positions) to the lanes.
* :mod:`hw.lane`       - :class:`MacLane`: weights, accumulator banks, dirty lists.
* :mod:`hw.examiner`   - :class:`Examiner`: re-examines the neurons whose accumulator changed.
* :mod:`hw.gather`     - :class:`Gather`: an examination round's events as one group.
* :mod:`hw.control`    - :class:`Controller`: phases, rounds, thresholds, counters.
* :mod:`hw.core`       - :class:`DeltaCore`: wires them; the port contract.
* :mod:`hw.generate_core` - Verilog + design JSON + report.

The host link (for a board):

* :mod:`hw.uart`       - :class:`UartRx`, :class:`UartTx`: 8N1 serial with byte streams.
* :mod:`hw.protocol`   - the framed host protocol (pure Python, shared by the hardware and the
  host code).
* :mod:`hw.hostlink`   - :class:`HostLink`: the core behind a UART, driven by that protocol.
* :mod:`hw.board`      - :class:`BoardTop`: HostLink on a board's clock, UART and LED
  (``deltanet build``).

hw imports only amaranth, numpy and pysim.
"""

from .core import DeltaCore

__all__ = ["DeltaCore"]
