"""DeltanetTop: a whole sparse delta network in hardware (wiring only; the port contract)."""

from __future__ import annotations

from amaranth.hdl import Module, Shape, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from pysim.cycles import MAX_LANES
from pysim.model import Model

from ._checks import check_int
from .accumulator import DeltaAccumulator
from .activation import Activation
from .argmax import Argmax
from .encoder import DeltaEncoder
from .eventmux import EventMux
from .mac import COUNTER_WIDTH, SparseMAC
from .sequencer import Sequencer
from .shapes import delta_shape, raw_shape
from .weights import WeightPlan

__all__ = ["DeltanetTop"]


class DeltanetTop(wiring.Component):
    """The delta network of ``model`` on ``lanes`` MAC lanes, bit-exact with pysim.

    Blocks (this class only wires them): one :class:`DeltaEncoder` per layer (its ``x_hat`` and
    threshold), an :class:`EventMux`, one shared :class:`SparseMAC` (``lanes`` multipliers for
    all layers; its per-lane weight memories hold every layer's compressed columns), one
    :class:`DeltaAccumulator` (all layers' pre-activations in registers), one
    :class:`Activation` per layer (its output registers are the next layer's input), an
    :class:`Argmax` and the :class:`Sequencer`.

    Ports (flattened Verilog names are the same; plus ``clk`` and ``rst``)
    ---------------------------------------------------------------------
    obs: In(n_in * in_width) input ``i`` in bits ``[i*w, (i+1)*w)``, raw two's-complement codes
    of ``config.input_fmt``; sampled at the edge that samples ``start``.
    start, first: In(1) a step starts at the edge where ``ready & start``; with ``first`` the
    episode state resets at that edge (``x_hat = 0``, ``M = bias``), no extra cycles, and the
    step is a full pass (every non-zero input of every layer fires whatever the threshold,
    docs/semantics.md). The first step after ``rst`` is a full pass too (the state is already
    the reset state), like pysim's first step after construction.
    ready: Out(1) idle (also high in the done cycle). done: Out(1) one-cycle pulse: ``out``,
    ``action`` and the counters are valid from now until the next start.
    out: Out(n_out * out_width) output ``o`` in bits ``[o*w, (o+1)*w)``, raw codes of the last
    layer's ``out_fmt``. action: Out(max(1, ceil_log2(n_out))) argmax, lowest index on ties.
    cycles: Out(32) cycles of the last step: clock edges from the edge that samples ``start``
    to the edge that samples ``done`` high (= ``pysim.CycleModel.step_cycles``).
    events_{l}, macs_{l}: Out(32) events (inputs that propagated, including ones with an empty
    weight column) and significant multiplications of layer ``l`` in the last step.
    thr_we, thr_sel, thr_data: write layer ``thr_sel``'s threshold register (raw unsigned code
    in that layer's input format, zero-extended; 0 and 1 both mean "every change") at an edge
    where ``ready``; a write in a start cycle takes effect from the next step. A reset value
    above the format's largest ``|d|`` (``2**w - 1``) is kept as ``2**w``: never fires (except
    in a full pass). ``thr_sel`` beyond the last layer writes nothing.

    Cycle model (``pysim/cycles.py`` holds the same two constants)::

        cycles = STEP_OVERHEAD + sum_l (LAYER_OVERHEAD + sum_{j in events_l} maxlen_l[j])

    with ``maxlen_l[j] = max_k nnz(lane k's rows of column j)`` (0 for an empty column) and,
    cycle by cycle for layer ``l`` (``S_l`` = its issue cycles):

    1. ENC: the encoder compares all inputs with ``x_hat`` and latches the events (for layer 0
       this is the start cycle itself; for ``l > 0`` the cycle after layer ``l-1``'s ACT).
    2. ISSUE, ``S_l`` cycles: the MAC pops the lowest pending event in the cycle it issues the
       column's first word, one word per lane per cycle, columns back to back (II = 1).
    3. one cycle that sees the MAC idle (the last word's memory data -> product register).
    4. DRAIN: the last product is added into ``M`` (register read-modify-write).
    5. ACT: all rows requantized/activated in parallel into the output registers.

    That is ``LAYER_OVERHEAD = 4``. ``STEP_OVERHEAD = 0``: the start cycle is layer 0's ENC and
    the done cycle is the next step's earliest start cycle, so back-to-back steps take exactly
    ``cycles`` each.

    Parameters (keyword-only): ``model`` (a pysim ``Model``), ``lanes`` (1..64).
    """

    LAYER_OVERHEAD = Sequencer.LAYER_OVERHEAD
    STEP_OVERHEAD = Sequencer.STEP_OVERHEAD

    def __init__(self, *, model, lanes):
        if not isinstance(model, Model):
            raise TypeError(f"DeltanetTop: model must be a pysim Model, got {type(model).__name__}")
        self._lanes = check_int("DeltanetTop", "lanes", lanes, 1, MAX_LANES)
        self._model = model
        cfg = self._cfg = model.config
        for i, layer in enumerate(cfg.layers):
            if layer.kind != "dense":
                raise ValueError(f"DeltanetTop: layer {i} kind {layer.kind!r} is not supported "
                                 "(only 'dense')")
        n = len(cfg.layers)
        self._iw = max(1, max(ceil_log2(ly.n_in) for ly in cfg.layers))
        self._dw = max(delta_shape(cfg.in_fmt(i)).width for i in range(n))
        self._ww = max(ly.weight_fmt.width for ly in cfg.layers)
        self._plan = WeightPlan(model.w_raw, self._lanes, self._ww)
        ports = {
            "obs": In(cfg.n_in * self.in_width),
            "start": In(1),
            "first": In(1),
            "ready": Out(1),
            "done": Out(1),
            "out": Out(cfg.n_out * self.out_width),
            "action": Out(self.action_width),
            "cycles": Out(COUNTER_WIDTH),
        }
        for i in range(n):
            ports[f"events_{i}"] = Out(COUNTER_WIDTH)
            ports[f"macs_{i}"] = Out(COUNTER_WIDTH)
        ports["thr_we"] = In(1)
        ports["thr_sel"] = In(unsigned(self.thr_sel_width))
        ports["thr_data"] = In(self.thr_width)
        super().__init__(ports)

    # ---- derived, read-only -------------------------------------------------------------
    @property
    def model(self) -> Model:
        return self._model

    @property
    def lanes(self) -> int:
        return self._lanes

    @property
    def n_layers(self) -> int:
        return len(self._cfg.layers)

    @property
    def in_width(self) -> int:
        return self._cfg.input_fmt.width

    @property
    def out_width(self) -> int:
        return self._cfg.output_fmt.width

    @property
    def action_width(self) -> int:
        return max(1, ceil_log2(self._cfg.n_out))

    @property
    def thr_width(self) -> int:
        return max(self._cfg.in_fmt(i).width for i in range(self.n_layers))

    @property
    def thr_sel_width(self) -> int:
        return max(1, ceil_log2(self.n_layers))

    @property
    def plan(self):
        """The per-lane weight layout (:class:`hw.weights.WeightPlan`)."""
        return self._plan

    @property
    def min_step_cycles(self) -> int:
        """Latency of a step without events (start edge to done edge)."""
        return self.STEP_OVERHEAD + self.n_layers * self.LAYER_OVERHEAD

    @property
    def max_step_cycles(self) -> int:
        """Latency of a step in which every input fires (e.g. a full pass on non-zero inputs)."""
        return self.min_step_cycles + sum(int(v.sum()) for v in self._plan.col_len)

    @property
    def product_width(self) -> int:
        """Width of the lanes' products (delta x weight)."""
        return self._dw + self._ww

    def port_widths(self) -> dict:
        """Verilog port name -> (direction, width), ``clk``/``rst`` excluded."""
        return {name: ("input" if member.flow == In else "output", Shape.cast(member.shape).width)
                for name, member in self.signature.members.items()}

    def elaborate(self, platform):
        m = Module()
        cfg, n = self._cfg, self.n_layers
        plan = self._plan

        m.submodules.seq = seq = Sequencer(n_layers=n)
        m.submodules.mac = mac = SparseMAC(weights=self._model.w_raw, weight_width=self._ww,
                                           lanes=self._lanes, index_width=self._iw,
                                           delta_width=self._dw)
        m.submodules.mux = mux = EventMux(layout=mac.i.payload.shape(), n=n)
        m.submodules.acc = acc = DeltaAccumulator(
            n_out=[ly.n_out for ly in cfg.layers], acc_bits=[ly.acc_bits for ly in cfg.layers],
            bias=self._model.b_raw, lanes=self._lanes, row_width=plan.row_width,
            data_width=mac.product_width)
        encs, acts = [], []
        for i, ly in enumerate(cfg.layers):
            enc = DeltaEncoder(n_in=ly.n_in, fmt=cfg.in_fmt(i), threshold=cfg.threshold_raw(i),
                               mask=plan.column_mask(i), thr_width=self.thr_width,
                               index_width=self._iw, delta_width=self._dw)
            act = Activation(n=ly.n_out, src_fmt=cfg.acc_fmt(i), out_fmt=ly.out_fmt,
                             activation=ly.activation)
            m.submodules[f"enc{i}"] = enc
            m.submodules[f"act{i}"] = act
            encs.append(enc)
            acts.append(act)
        m.submodules.argmax = argmax = Argmax(n=cfg.n_out, shape=raw_shape(cfg.output_fmt))

        m.d.comb += [
            seq.start.eq(self.start),
            seq.first.eq(self.first),
            seq.thr_we.eq(self.thr_we),
            seq.thr_sel.eq(self.thr_sel),
            seq.idle.eq(mac.idle),
            self.ready.eq(seq.ready),
            self.done.eq(seq.done),
            self.cycles.eq(seq.cycles),
            mux.sel.eq(seq.layer),
            mac.layer.eq(seq.layer),
            mac.clear.eq(seq.started),
            acc.clear.eq(seq.clear),
        ]
        wiring.connect(m, mac.wr, acc.wr)
        wiring.connect(m, mux.o, mac.i)
        for i, (enc, act) in enumerate(zip(encs, acts)):
            wiring.connect(m, enc.o, mux.i[i])
            m.d.comb += [
                enc.x.eq(self.obs if i == 0 else acts[i - 1].o),
                enc.load.eq(seq.load[i]),
                enc.clear.eq(seq.clear),
                enc.full.eq(seq.full),
                enc.thr_we.eq(seq.thr_write[i]),
                enc.thr_data.eq(self.thr_data),
                act.i.eq(acc.pre(i)),
                act.en.eq(seq.act[i]),
                getattr(self, f"events_{i}").eq(enc.events),
                getattr(self, f"macs_{i}").eq(mac.macs[i]),
            ]
        m.d.comb += [
            argmax.i.eq(acts[-1].o),
            self.out.eq(acts[-1].o),
            self.action.eq(argmax.o),
        ]
        return m
