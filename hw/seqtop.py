"""DeltaSeqTop: the sequential, memory-based delta core (conv2d and dense layers, L MAC lanes).

Unlike :class:`hw.top.DeltanetTop`, which keeps every input, ``x_hat`` and pre-activation in
flip-flops and compares all inputs at once, this core keeps all state in memories
(``amaranth.lib.memory.Memory``) and walks the inputs one per cycle, so it scales to the
Nature-DQN (28,224 inputs in layer 0). It is bit-exact with
``pysim.DeltaNetwork(model, mode="fixed", delta=True)`` and its cycles equal
``pysim.seqcycles.SeqCycleModel(model, lanes).step_cycles`` (that module's docstring states the
schedule and the formula; the constants below are the same objects).

Every layer is a convolution ``C x H x W -> O x OH x OW`` (kernel ``K``, stride ``S``, zero
padding ``P``); a dense layer is the 1x1 conv on a 1x1 image. Inputs and outputs are flat CHW
vectors (index ``(c * H + y) * W + x``).

Memories (per layer ``l`` unless noted; see :class:`SeqLayerPlan` for the contents)
-------------------------------------------------------------------------------------
* ``obs`` (global): ``ceil(n_in / obs_words)`` words of ``obs_words`` layer-0 input codes.
* ``xhat{l}``: ``n_in_l`` words, the last propagated input codes.
* ``acc{l}_{k}`` (lane ``k``): ``ceil(O / L) * OH * OW`` words of ``acc_bits``; neuron
  ``(o, oy, ox)`` with ``o % L == k`` at ``(o // L) * OH * OW + oy * OW + ox``. Synchronous read
  port, transparent for the write port; together with one forwarding path in the MAC pipeline
  (below) this resolves the read-modify-write hazard of back-to-back updates of one address.
* ``w{l}_{k}`` (ROM): column-compressed weights, word = ``valid | rowbase | weight`` where
  ``rowbase = (o // L) * OH * OW`` is the neuron's bank row (so no multiplier is needed for the
  address); columns ``col = (c * K + ky) * K + kx`` in order, each ``len[col]`` words long.
* ``ctab{l}`` (ROM): ``start[col] | len[col]`` per column.
* ``bias{l}`` (ROM): ``ceil(O / L)`` words of ``L`` biases (lane ``k`` in field ``k``).
* ``chan{l}`` (ROM): 1 bit per input channel, "has a non-zero weight".
* ``evbuf`` (global): ``max n_in`` buffered events ``{c*K*K, d, ky0, oy0, kx0, ox0}``.

Phases of a step (one FSM; ``pysim/seqcycles.py`` gives the cycle count of each)
------------------------------------------------------------------------------
``SCAN_l`` (inputs ``i = 0..n_in-1``, one per cycle), ``INIT_l`` (full pass only: every
accumulator address of layer ``l`` gets its bias), ``MAC_l`` (a position register walks the
events' valid kernel positions; an issue register spends ``max(1, len[col])`` cycles per
position, every lane reading word ``start + t``), and ``FINAL`` (the last layer's outputs into
``out`` and a running argmax, strictly greater updates so the lowest index wins ties).

Pipelines (one register between stages; a phase ends when its last item has left the
pipeline, which is where the ``*_OVERHEAD`` constants of ``pysim/seqcycles.py`` come from):

* scan (SCAN and FINAL), one input per cycle: **A** memory addresses (the SCAN/FINAL state);
  **B** memory data -> observation code, ``x_hat``, channel bit, the lane-selected accumulator
  of every layer, the event's kernel position fields; **C** requantize: shift and round (and
  the layer select of ``x_hat``); **D** saturate/wrap and activation, layer select -> ``x``
  (FINAL: ``y``); **E** ``d = x - x_hat`` (FINAL: output register and argmax); **F**
  ``d != 0 and (d >= thr or d <= -thr or full)``: write ``x_hat`` (on an event or in a full pass) and append the event to ``evbuf``
  if its channel is active and it reaches an output. A scan reads ``x_hat[i]`` once and writes
  it 5 cycles later; no other input of the scan touches that word.
* MAC, one issue per cycle: **I** issue register -> registered weight address ``start + t``;
  **R** weight ROM read; **S** layer-selected weight words registered; **A** ``addr = rowbase
  + pix`` into the accumulator read port, ``product = w * d`` (DSP) registered; **Q**
  accumulator read data registered; **X** ``acc + product`` written back. An update reads its
  address in A and writes it in X two cycles later: the read sees (transparency) every write
  up to two updates before it, and the update right before it, if it wrote the same address,
  is forwarded from the X stage's last written word (``x_last``).

Ports (flattened Verilog names are the same; plus ``clk`` and ``rst``)
---------------------------------------------------------------------
obs_we, obs_addr, obs_data: write input codes ``obs_addr * obs_words + j`` (``j`` in bits
``[j*w, (j+1)*w)`` of ``obs_data``, raw two's-complement codes of ``config.input_fmt``) into the
observation memory at an edge where ``ready`` (ignored otherwise; codes past ``n_in`` and
addresses past the memory are ignored). A write at the start edge is seen by that step.
start, first: In(1) a step starts at the edge where ``ready & start``; with ``first`` the episode
state resets (``x_hat = 0``, accumulators = bias, written during the step) and the step is a
full pass (every non-zero input of every layer fires whatever the threshold). The first step
after ``rst`` is a full pass too (memories are not reset by ``rst``; the full pass rewrites
them), like pysim's first step after construction.
ready: Out(1) idle (also high in the done cycle). done: Out(1) one-cycle pulse: ``out``,
``action`` and the counters are valid from now until the next start.
out: Out(n_out * out_width) output ``o`` in bits ``[o*w, (o+1)*w)``, raw codes of the last
layer's ``out_fmt``. action: Out(max(1, ceil_log2(n_out))) argmax, lowest index on ties.
cycles: Out(32) cycles of the last step: clock edges from the edge that samples ``start`` to
the edge that samples ``done`` high (= ``SeqCycleModel.step_cycles``).
events_{l}, macs_{l}: Out(32) events (propagated non-zero deltas, including those that need no
MAC) and issued valid weight entries (= pysim's ``significant``) of layer ``l`` in the last step.
thr_we, thr_sel, thr_data: write layer ``thr_sel``'s threshold register (raw unsigned code in
that layer's input format, zero-extended; 0 and 1 both mean "every change") at an edge where
``ready``; a write in a start cycle takes effect from the next step. A reset value above the
format's largest ``|d|`` is kept as ``2**w`` (never fires, except in a full pass).
``thr_sel`` beyond the last layer writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from amaranth.hdl import Cat, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from pysim import seqcycles
from pysim.config import ACTIVATIONS
from pysim.model import Model
from pysim.seqcycles import MAX_LANES, Geometry, geometry, taps

from ._checks import check_int
from .activation import requantize_overflow, requantize_round
from .shapes import threshold_shape

__all__ = ["DeltaSeqTop", "SeqLayerPlan"]

COUNTER_WIDTH = 32
MAX_FMT_WIDTH = 32
MAX_ACC_BITS = 48
MAX_OBS_WORDS = 1024


def _bits(n: int) -> int:
    """Unsigned bits to hold every value in ``0..n`` (at least 1)."""
    return max(1, int(n).bit_length())


@dataclass(frozen=True, eq=False)
class SeqLayerPlan:
    """Memory contents of one layer on ``lanes`` lanes (numpy; no Amaranth objects)."""

    geom: Geometry
    lanes: int
    col_start: np.ndarray  # (n_cols,) first word of each column in every lane memory
    col_len: np.ndarray  # (n_cols,) words of each column (the busiest lane's entries)
    chan_active: np.ndarray  # (C,) bool
    lane_words: tuple  # per lane: list of packed words (valid | rowbase | weight)
    bias_words: tuple  # per bank row: packed L biases
    acc_init: tuple  # per lane: list of accumulator words (bias of each address)
    weight_width: int
    acc_bits: int
    nnz: int

    @classmethod
    def build(cls, model: Model, i: int, lanes: int) -> SeqLayerPlan:
        ly = model.config.layers[i]
        g = geometry(ly)
        L = lanes
        w = taps(model, i).reshape(g.O, g.n_cols)  # column order (c * K + ky) * K + kx
        nz = w != 0
        rows = -(-g.O // L)
        pix = g.pixels
        depth_b = rows * pix
        counts = np.zeros((L, g.n_cols), dtype=np.int64)
        for k in range(L):
            counts[k] = nz[k::L].sum(axis=0)
        col_len = counts.max(axis=0)
        col_start = np.cumsum(col_len) - col_len
        depth_w = max(1, int(col_len.sum()))
        ww = ly.weight_fmt.width
        rbw = _bits(depth_b - 1)
        wmask = (1 << ww) - 1
        lane_words = []
        for k in range(L):
            words = np.zeros(depth_w, dtype=np.int64)
            cols, r = np.nonzero(nz[k::L].T)  # sorted by column, then by local row
            if cols.size:
                rank = np.arange(cols.size) - np.searchsorted(cols, cols, side="left")
                addr = col_start[cols] + rank
                wv = w[k::L][r, cols]
                words[addr] = (1 << (rbw + ww)) | ((r * pix) << ww) | (wv & wmask)
            lane_words.append(words.tolist())
        b = np.asarray(model.b_raw[i], dtype=np.int64)
        ab = ly.acc_bits
        amask = (1 << ab) - 1
        bias_words, acc_init = [], []
        for r in range(rows):
            v = 0
            for k in range(L):
                o = r * L + k
                if o < g.O:
                    v |= (int(b[o]) & amask) << (k * ab)
            bias_words.append(v)
        for k in range(L):
            vals = [(int(b[r * L + k]) & amask) if r * L + k < g.O else 0 for r in range(rows)]
            acc_init.append([v for v in vals for _ in range(pix)])
        chan = nz.reshape(g.O, g.C, g.K * g.K).any(axis=(0, 2))
        return cls(g, L, col_start.astype(np.int64), col_len.astype(np.int64), chan,
                   tuple(lane_words), tuple(bias_words), tuple(acc_init), ww, ab,
                   int(nz.sum()))

    # ---- sizes -----------------------------------------------------------------------------
    @property
    def rows(self) -> int:
        return -(-self.geom.O // self.lanes)

    @property
    def acc_depth(self) -> int:
        return self.rows * self.geom.pixels

    @property
    def weight_depth(self) -> int:
        return max(1, int(self.col_len.sum()))

    @property
    def rowbase_width(self) -> int:
        return _bits(self.acc_depth - 1)

    @property
    def word_width(self) -> int:
        return 1 + self.rowbase_width + self.weight_width

    @property
    def start_width(self) -> int:
        return _bits(self.weight_depth)

    @property
    def len_width(self) -> int:
        return _bits(int(self.col_len.max()) if self.col_len.size else 0)

    @property
    def ctab_width(self) -> int:
        return self.start_width + self.len_width

    def ctab_words(self) -> list:
        sw = self.start_width
        return [int(s) | (int(n) << sw) for s, n in zip(self.col_start, self.col_len)]


class DeltaSeqTop(wiring.Component):
    """The sequential delta core of ``model`` on ``lanes`` MAC lanes (see the module docstring).

    ``DeltaSeqTop(model, lanes=4, obs_words=8)``.
    """

    STEP_OVERHEAD = seqcycles.STEP_OVERHEAD
    SCAN_OVERHEAD = seqcycles.SCAN_OVERHEAD
    MAC_OVERHEAD = seqcycles.MAC_OVERHEAD
    INIT_OVERHEAD = seqcycles.INIT_OVERHEAD
    FINAL_OVERHEAD = seqcycles.FINAL_OVERHEAD

    def __init__(self, model, lanes=4, obs_words=8):
        owner = "DeltaSeqTop"
        if not isinstance(model, Model):
            raise TypeError(f"{owner}: model must be a pysim Model, got {type(model).__name__}")
        self._lanes = check_int(owner, "lanes", lanes, 1, MAX_LANES)
        self._ow = check_int(owner, "obs_words", obs_words, 1, MAX_OBS_WORDS)
        cfg = model.config
        if cfg.decoder.kind != "argmax":
            raise ValueError(f"{owner}: decoder {cfg.decoder.kind!r} is not supported: the core "
                             "is for discrete-action policies (argmax decoder only)")
        for i, ly in enumerate(cfg.layers):
            if ly.kind not in ("dense", "conv2d"):
                raise ValueError(f"{owner}: layer {i} kind {ly.kind!r} is not supported")
            if ly.activation not in ACTIVATIONS:
                raise ValueError(f"{owner}: layer {i} activation {ly.activation!r} is not "
                                 f"supported (only {ACTIVATIONS})")
            for what, f in (("input", cfg.in_fmt(i)), ("weight", ly.weight_fmt),
                            ("output", ly.out_fmt)):
                if f.width > MAX_FMT_WIDTH:
                    raise ValueError(f"{owner}: layer {i} {what} format {f} is {f.width} bits "
                                     f"wide; unsupported (at most {MAX_FMT_WIDTH})")
            if not 2 <= ly.acc_bits <= MAX_ACC_BITS:
                raise ValueError(f"{owner}: layer {i} acc_bits={ly.acc_bits} unsupported "
                                 f"(accumulators/requantizers support 2..{MAX_ACC_BITS} bits)")
        self._model = model
        self._cfg = cfg
        self._geo = tuple(geometry(ly) for ly in cfg.layers)
        self._plans = tuple(SeqLayerPlan.build(model, i, self._lanes)
                            for i in range(len(cfg.layers)))
        ports = {
            "obs_we": In(1),
            "obs_addr": In(self.obs_addr_width),
            "obs_data": In(self._ow * self.in_width),
            "start": In(1),
            "first": In(1),
            "ready": Out(1),
            "done": Out(1),
            "out": Out(cfg.n_out * self.out_width),
            "action": Out(self.action_width),
            "cycles": Out(COUNTER_WIDTH),
        }
        for i in range(self.n_layers):
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
    def obs_words(self) -> int:
        return self._ow

    @property
    def n_layers(self) -> int:
        return len(self._cfg.layers)

    @property
    def geometries(self) -> tuple:
        return self._geo

    @property
    def plans(self) -> tuple:
        return self._plans

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
    def obs_depth(self) -> int:
        return -(-self._cfg.n_in // self._ow)

    @property
    def obs_addr_width(self) -> int:
        return max(1, ceil_log2(self.obs_depth))

    @property
    def thr_width(self) -> int:
        return max(self._cfg.in_fmt(i).width for i in range(self.n_layers))

    @property
    def thr_sel_width(self) -> int:
        return max(1, ceil_log2(self.n_layers))

    @property
    def delta_width(self) -> int:
        return self.thr_width + 1

    @property
    def event_layout(self) -> data.StructLayout:
        g = self._geo
        return data.StructLayout({
            "ckk": unsigned(_bits(max(x.n_cols for x in g) - 1)),
            "d": signed(self.delta_width),
            "ky": unsigned(_bits(max(x.K for x in g) - 1)),
            "oy": unsigned(_bits(max(max(x.OH, x.OW) for x in g) - 1)),
            "kx": unsigned(_bits(max(x.K for x in g) - 1)),
            "ox": unsigned(_bits(max(max(x.OH, x.OW) for x in g) - 1)),
        })

    @property
    def event_depth(self) -> int:
        return max(x.n_in for x in self._geo)

    def threshold_reset(self, i: int) -> int:
        f = self._cfg.in_fmt(i)
        return min(self._cfg.threshold_raw(i), 1 << f.width)

    def port_widths(self) -> dict:
        """Verilog port name -> (direction, width), ``clk``/``rst`` excluded."""
        return {name: ("input" if member.flow == In else "output", Shape.cast(member.shape).width)
                for name, member in self.signature.members.items()}

    # ---- the design ---------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        cfg, N, L, OW_ = self._cfg, self.n_layers, self._lanes, self._ow
        G, PL = self._geo, self._plans
        XW, DW = self.thr_width, self.delta_width
        iw = [cfg.in_fmt(i).width for i in range(N)]
        WW = max(p.weight_width for p in PL)
        PW = WW + DW
        AW = max(p.acc_bits for p in PL)
        RBW = max(p.rowbase_width for p in PL)
        n_max = max([g.n_in for g in G] + [cfg.n_out])
        Kmax = max(g.K for g in G)
        Smax = max(g.S for g in G)
        Pmax = max(g.P for g in G)
        Hmax = max(max(g.H, g.W) for g in G)
        OHmax = max(max(g.OH, g.OW) for g in G)
        ncols_max = max(g.n_cols for g in G)
        depth_b_max = max(p.acc_depth for p in PL)
        pix_max = max(g.pixels for g in G)
        wdepth_max = max(p.weight_depth for p in PL)
        len_max = max(int(p.col_len.max()) for p in PL)
        evl = self.event_layout

        lay = Signal(range(N + 1))

        def lut(values, shape, name):
            """A per-layer constant selected by ``lay`` (index N: the FINAL phase)."""
            s = Signal(shape, name=name)
            with m.Switch(lay):
                for j, v in enumerate(values):
                    with m.Case(j):
                        m.d.comb += s.eq(v)
            return s

        dest = list(G) + [None]
        src = [None] + list(G)

        def dv(f, default=0):
            return [f(g) if g is not None else default for g in dest]

        last_i = lut([g.n_in - 1 for g in G] + [cfg.n_out - 1], range(n_max), "last_i")
        Wm1 = lut(dv(lambda g: g.W - 1), range(Hmax), "Wm1")
        Hm1 = lut(dv(lambda g: g.H - 1), range(Hmax), "Hm1")
        Sm1 = lut(dv(lambda g: g.S - 1), range(Smax), "Sm1")
        Kc = lut(dv(lambda g: g.K), range(Kmax + 1), "K")
        KKc = lut(dv(lambda g: g.K * g.K), range(Kmax * Kmax + 1), "KK")
        OHm1 = lut(dv(lambda g: g.OH - 1), range(OHmax), "OHm1")
        OWm1 = lut(dv(lambda g: g.OW - 1), range(OHmax), "OWm1")
        Sc = lut(dv(lambda g: g.S), range(Smax + 1), "S")
        dpix_last = lut(dv(lambda g: g.pixels - 1), range(pix_max), "dpix_last")
        depth_last = lut([p.acc_depth - 1 for p in PL] + [0], range(depth_b_max), "depth_last")
        spix_last = lut([g.pixels - 1 if g is not None else 0 for g in src],
                        range(pix_max), "spix_last")
        spix_n = lut([g.pixels if g is not None else 0 for g in src],
                     range(pix_max + 1), "spix_n")

        # ---- control state --------------------------------------------------------------
        full = Signal()
        fresh = Signal(init=1)
        ready = Signal()
        cycles = Signal(COUNTER_WIDTH)
        events = [Signal(COUNTER_WIDTH, name=f"events{j}") for j in range(N)]
        macs = [Signal(COUNTER_WIDTH, name=f"macs{j}") for j in range(N)]
        thr_reg = [Signal(unsigned(max(threshold_shape(cfg.in_fmt(j)).width, XW)),
                          init=self.threshold_reset(j), name=f"thr{j}") for j in range(N)]
        thr_act = [Signal(unsigned(len(thr_reg[j])), init=self.threshold_reset(j),
                          name=f"thr_act{j}") for j in range(N)]
        m.d.comb += [self.ready.eq(ready), self.cycles.eq(cycles)]
        for j in range(N):
            m.d.comb += [getattr(self, f"events_{j}").eq(events[j]),
                         getattr(self, f"macs_{j}").eq(macs[j])]

        # ---- scan counters --------------------------------------------------------------
        i_cnt = Signal(range(n_max + 1))
        cx = Signal(range(Hmax))
        cy = Signal(range(Hmax))
        cc = Signal(range(max(g.C for g in G) + 1))
        xq = Signal(range(Hmax + Pmax + 1))
        yq = Signal(range(Hmax + Pmax + 1))
        xr = Signal(range(Smax))
        yr = Signal(range(Smax))
        ckk = Signal(range(ncols_max + 1))
        word = Signal(range(self.obs_depth + 1))
        sub = Signal(range(OW_))
        bank = Signal(range(L))
        rowbase = Signal(range(depth_b_max + pix_max + 1))
        pix = Signal(range(pix_max))
        src_addr = Signal(range(depth_b_max + 2 * pix_max + 1))
        m.d.comb += src_addr.eq(rowbase + pix)

        # ---- scan stage B registers (the address stage's input, for the data stages) ------
        s1_v = Signal()
        s1_i = Signal(range(n_max + 1))
        s1_sub = Signal(range(OW_))
        s1_bank = Signal(range(L))
        s1_ckk = Signal(evl["ckk"].shape)
        s1_xq = Signal.like(xq)
        s1_xr = Signal.like(xr)
        s1_yq = Signal.like(yq)
        s1_yr = Signal.like(yr)
        n_ev = Signal(range(self.event_depth + 1))

        # ---- memories -------------------------------------------------------------------
        obs_mem = memory.Memory(shape=unsigned(OW_ * self.in_width), depth=self.obs_depth,
                                init=[])
        m.submodules.obs = obs_mem
        obs_wr = obs_mem.write_port()
        obs_rd = obs_mem.read_port()
        m.d.comb += [
            obs_wr.addr.eq(self.obs_addr),
            obs_wr.data.eq(self.obs_data),
            obs_wr.en.eq(self.obs_we & ready & (self.obs_addr < self.obs_depth)),
            obs_rd.addr.eq(word),
        ]

        ev_mem = memory.Memory(shape=evl, depth=self.event_depth, init=[])
        m.submodules.evbuf = ev_mem
        ev_wr = ev_mem.write_port()
        ev_rd = ev_mem.read_port(transparent_for=(ev_wr,))

        xh_rd, xh_wr, ch_rd, ct_rd, bias_rd = [], [], [], [], []
        w_rd, acc_rd, acc_wr = [], [], []
        for j, (g, p) in enumerate(zip(G, PL)):
            mem = memory.Memory(shape=unsigned(iw[j]), depth=g.n_in, init=[])
            m.submodules[f"xhat{j}"] = mem
            xh_wr.append(mem.write_port())
            xh_rd.append(mem.read_port())
            mem = memory.Memory(shape=unsigned(1), depth=g.C,
                                init=[int(v) for v in p.chan_active])
            m.submodules[f"chan{j}"] = mem
            ch_rd.append(mem.read_port())
            mem = memory.Memory(shape=unsigned(p.ctab_width), depth=g.n_cols,
                                init=p.ctab_words())
            m.submodules[f"ctab{j}"] = mem
            ct_rd.append(mem.read_port())
            mem = memory.Memory(shape=unsigned(L * p.acc_bits), depth=p.rows,
                                init=list(p.bias_words))
            m.submodules[f"bias{j}"] = mem
            bias_rd.append(mem.read_port())
            wr_l, ar_l, aw_l = [], [], []
            for k in range(L):
                mem = memory.Memory(shape=unsigned(p.word_width), depth=p.weight_depth,
                                    init=p.lane_words[k])
                m.submodules[f"w{j}_{k}"] = mem
                wr_l.append(mem.read_port())
                mem = memory.Memory(shape=unsigned(p.acc_bits), depth=p.acc_depth,
                                    init=p.acc_init[k])
                m.submodules[f"acc{j}_{k}"] = mem
                wp = mem.write_port()
                aw_l.append(wp)
                ar_l.append(mem.read_port(transparent_for=(wp,)))
            w_rd.append(wr_l)
            acc_rd.append(ar_l)
            acc_wr.append(aw_l)

        # ---- scan address stage: shared addresses ---------------------------------------
        for j in range(N):
            m.d.comb += [xh_rd[j].addr.eq(i_cnt), ch_rd[j].addr.eq(cc)]

        # ---- scan pipeline ----------------------------------------------------------------
        # A (the SCAN/FINAL state): memory addresses. B: memory data -> obs code, x_hat,
        # channel bit, lane-selected accumulator of every layer, event fields. C: requantize
        # (shift and round). D: saturate, activation, layer select -> x. E: d = x - x_hat
        # (FINAL: output registers and argmax). F: |d| >= thr, x_hat and event-buffer writes.
        def reg(value, shape, name):
            r = Signal(shape, name=name)
            m.d.sync += r.eq(value)
            return r

        # B
        obs_x = Signal(signed(self.in_width))
        with m.Switch(s1_sub):
            for j in range(OW_):
                with m.Case(j):
                    w_ = self.in_width
                    m.d.comb += obs_x.eq(obs_rd.data[j * w_:(j + 1) * w_].as_signed())
        ch_b = Signal()
        with m.Switch(lay):
            for j in range(N):
                with m.Case(j):
                    m.d.comb += ch_b.eq(ch_rd[j].data[0])
        acc_b = []
        for j in range(N):
            sel = Signal(signed(PL[j].acc_bits), name=f"src_m{j}")
            with m.Switch(s1_bank):
                for k in range(L):
                    with m.Case(k):
                        m.d.comb += sel.eq(acc_rd[j][k].data.as_signed())
            acc_b.append(sel)
        oy0 = Signal(range(OHmax))
        ox0 = Signal(range(OHmax))
        m.d.comb += [oy0.eq(Mux(s1_yq > OHm1, OHm1, s1_yq)),
                     ox0.eq(Mux(s1_xq > OWm1, OWm1, s1_xq))]
        kw_wide = unsigned(_bits((Hmax + Pmax + 2) * (Smax + 1)))
        ky0w = Signal(kw_wide)
        kx0w = Signal(kw_wide)
        with m.Switch(lay):
            for j, g in enumerate(G):
                with m.Case(j):
                    m.d.comb += [ky0w.eq(s1_yr + g.S * (s1_yq - oy0)),
                                 kx0w.eq(s1_xr + g.S * (s1_xq - ox0))]
        has_pos = Signal()
        m.d.comb += has_pos.eq((ky0w < Kc) & (kx0w < Kc))
        s2_v = reg(s1_v, 1, "s2_v")
        s2_i = reg(s1_i, s1_i.shape(), "s2_i")
        s2_obs = reg(obs_x, obs_x.shape(), "s2_obs")
        # x_hat words registered as read, the layer select in C (yosys may merge these
        # registers into a block RAM's read port: then C starts at the RAM's clock-to-out)
        s2_xh = [reg(xh_rd[j].data, unsigned(iw[j]), f"s2_xh{j}") for j in range(N)]
        s2_ch = reg(ch_b, 1, "s2_ch")
        s2_acc = [reg(a, a.shape(), f"s2_acc{j}") for j, a in enumerate(acc_b)]
        s2_f = {"ckk": reg(s1_ckk, evl["ckk"].shape, "s2_ckk"),
                "ky": reg(ky0w, evl["ky"].shape, "s2_ky"),
                "oy": reg(oy0, evl["oy"].shape, "s2_oy"),
                "kx": reg(kx0w, evl["kx"].shape, "s2_kx"),
                "ox": reg(ox0, evl["ox"].shape, "s2_ox"),
                "has": reg(has_pos, 1, "s2_has")}

        def pipe_fields(fields, stage):
            return {k: reg(v, v.shape(), f"s{stage}_{k}") for k, v in fields.items()}

        # C
        s3_v = reg(s2_v, 1, "s3_v")
        s3_i = reg(s2_i, s2_i.shape(), "s3_i")
        s3_obs = reg(s2_obs, s2_obs.shape(), "s3_obs")
        xh_c = Signal(signed(XW))
        with m.Switch(lay):
            for j in range(N):
                with m.Case(j):
                    m.d.comb += xh_c.eq(s2_xh[j].as_signed())
        s3_xh = reg(Mux(full, 0, xh_c), signed(XW), "s3_xh")
        s3_ch = reg(s2_ch, 1, "s3_ch")
        s3_f = pipe_fields(s2_f, 3)
        s3_r = []
        for j in range(N):
            r = requantize_round(m, s2_acc[j], cfg.acc_fmt(j), cfg.layers[j].out_fmt, f"rq{j}")
            s3_r.append(reg(r, r.shape(), f"s3_r{j}"))
        # D
        ys = []
        for j in range(N):
            ly = cfg.layers[j]
            y = requantize_overflow(m, s3_r[j], ly.out_fmt, f"rq{j}")
            ya = Signal(signed(ly.out_fmt.width), name=f"src_y{j}")
            m.d.comb += ya.eq(Mux(y < 0, 0, y) if ly.activation == "relu" else y)
            ys.append(ya)
        xval = Signal(signed(XW))
        with m.Switch(lay):
            for j in range(N):
                with m.Case(j):
                    m.d.comb += xval.eq(s3_obs if j == 0 else ys[j - 1])
        s4_v = reg(s3_v, 1, "s4_v")
        s4_i = reg(s3_i, s3_i.shape(), "s4_i")
        s4_x = reg(xval, xval.shape(), "s4_x")
        s4_xh = reg(s3_xh, s3_xh.shape(), "s4_xh")
        s4_yf = reg(ys[N - 1], ys[N - 1].shape(), "s4_yf")
        s4_ch = reg(s3_ch, 1, "s4_ch")
        s4_f = pipe_fields(s3_f, 4)
        # E
        s5_v = reg(s4_v & (lay != N), 1, "s5_v")
        s5_i = reg(s4_i, s4_i.shape(), "s5_i")
        s5_x = reg(s4_x, s4_x.shape(), "s5_x")
        s5_d = reg(s4_x - s4_xh, signed(DW), "s5_d")
        s5_ch = reg(s4_ch, 1, "s5_ch")
        s5_f = pipe_fields(s4_f, 5)
        # F
        thr = Signal(unsigned(max(len(t) for t in thr_reg)))
        with m.Switch(lay):  # the layer's threshold, one cycle late (lay is set >= 6 cycles
            for j in range(N):  # before a scan's first data reaches F)
                with m.Case(j):
                    m.d.sync += thr.eq(thr_act[j])
        ev = Signal()
        append = Signal()
        m.d.comb += [
            ev.eq(s5_v & (s5_d != 0) & ((s5_d >= thr) | (s5_d + thr <= 0) | full)),
            append.eq(ev & s5_f["has"] & s5_ch),
        ]
        for j in range(N):
            m.d.comb += [
                xh_wr[j].addr.eq(s5_i),
                xh_wr[j].data.eq(s5_x[:iw[j]]),
                xh_wr[j].en.eq(s5_v & (lay == j) & (ev | full)),
            ]
        m.d.comb += [
            ev_wr.addr.eq(n_ev),
            ev_wr.en.eq(append),
            ev_wr.data.d.eq(s5_d),
        ]
        m.d.comb += [ev_wr.data[k].eq(s5_f[k]) for k in ("ckk", "ky", "oy", "kx", "ox")]
        with m.If(append):
            m.d.sync += n_ev.eq(n_ev + 1)
        with m.If(ev), m.Switch(lay):
            for j in range(N):
                with m.Case(j):
                    m.d.sync += events[j].eq(events[j] + 1)

        # ---- FINAL (stage E): output registers and running argmax -------------------------
        outs = [Signal(signed(self.out_width), name=f"out{o}") for o in range(cfg.n_out)]
        best = Signal(signed(self.out_width))
        action = Signal(self.action_width)
        m.d.comb += [self.out.eq(Cat(*outs)), self.action.eq(action)]
        with m.If(s4_v & (lay == N)):
            with m.Switch(s4_i):
                for o in range(cfg.n_out):
                    with m.Case(o):
                        m.d.sync += outs[o].eq(s4_yf)
            with m.If((s4_i == 0) | (s4_yf > best)):
                m.d.sync += [best.eq(s4_yf), action.eq(s4_i)]

        # ---- INIT: bias into every accumulator address ----------------------------------
        ia = Signal(range(depth_b_max + 1))
        ipix = Signal(range(pix_max))
        irow = Signal(range(max(p.rows for p in PL) + 1))
        ini_v = Signal()
        ini_addr = Signal(range(depth_b_max + 1))
        for j in range(N):
            m.d.comb += bias_rd[j].addr.eq(irow)

        # ---- MAC: position register (NEXT), issue register (CUR), lanes ------------------
        rd_idx = Signal(range(self.event_depth + 2))
        rd_valid = Signal()
        m.d.comb += rd_valid.eq(rd_idx < n_ev)
        nx_v = Signal()
        nx_ckk = Signal(evl["ckk"].shape)
        nx_d = Signal(signed(DW))
        nx_ky = Signal(evl["ky"].shape)
        nx_oy = Signal(evl["oy"].shape)
        nx_kx = Signal(evl["kx"].shape)
        nx_ox = Signal(evl["ox"].shape)
        nx_kx0 = Signal(evl["kx"].shape)
        nx_ox0 = Signal(evl["ox"].shape)
        row_end = Signal()
        col_end = Signal()
        nx_last = Signal()
        m.d.comb += [
            row_end.eq((nx_kx + Sc >= Kc) | (nx_ox == 0)),
            col_end.eq((nx_ky + Sc >= Kc) | (nx_oy == 0)),
            nx_last.eq(row_end & col_end),
        ]
        col_nx = Signal(range(ncols_max + 1))
        pix_nx = Signal(range(pix_max + 1))
        with m.Switch(lay):
            for j, g in enumerate(G):
                with m.Case(j):
                    m.d.comb += [col_nx.eq(nx_ckk + nx_ky * g.K + nx_kx),
                                 pix_nx.eq(nx_oy * g.OW + nx_ox)]
        cur_v = Signal()
        cur_pix = Signal(range(pix_max + 1))
        cur_d = Signal(signed(DW))
        t = Signal(range(len_max + 1))
        c_start = Signal(range(wdepth_max + 1))
        c_len = Signal(range(len_max + 1))
        with m.Switch(lay):
            for j, p in enumerate(PL):
                with m.Case(j):
                    sw = p.start_width
                    m.d.comb += [c_start.eq(ct_rd[j].data[:sw]),
                                 c_len.eq(ct_rd[j].data[sw:])]
        run = Signal()  # MRUN state
        fill = Signal()  # MFILL state
        adv = Signal()
        issue = Signal()
        take_ev = Signal()
        m.d.comb += [
            adv.eq(run & (~cur_v | (t + 1 >= c_len))),
            issue.eq(run & cur_v & (c_len != 0)),
            take_ev.eq((fill | run) & (~nx_v | (adv & nx_last)) & rd_valid),
        ]
        m.d.comb += ev_rd.addr.eq(Mux(take_ev, rd_idx + 1, rd_idx))
        m.d.sync += rd_idx.eq(Mux(take_ev, rd_idx + 1, rd_idx))
        with m.If(fill | run):
            with m.If(nx_v & adv & ~nx_last):
                with m.If(row_end):
                    m.d.sync += [nx_ky.eq(nx_ky + Sc), nx_oy.eq(nx_oy - 1),
                                 nx_kx.eq(nx_kx0), nx_ox.eq(nx_ox0)]
                with m.Else():
                    m.d.sync += [nx_kx.eq(nx_kx + Sc), nx_ox.eq(nx_ox - 1)]
            with m.Elif(~nx_v | adv):
                e = ev_rd.data
                m.d.sync += [
                    nx_v.eq(rd_valid),
                    nx_ckk.eq(e.ckk), nx_d.eq(e.d),
                    nx_ky.eq(e.ky), nx_oy.eq(e.oy), nx_kx.eq(e.kx), nx_ox.eq(e.ox),
                    nx_kx0.eq(e.kx), nx_ox0.eq(e.ox),
                ]
        with m.If(run):
            with m.If(adv):
                m.d.sync += [cur_v.eq(nx_v), cur_pix.eq(pix_nx), cur_d.eq(nx_d), t.eq(0)]
            with m.Else():
                m.d.sync += t.eq(t + 1)
        for j in range(N):
            m.d.comb += [ct_rd[j].addr.eq(col_nx), ct_rd[j].en.eq(adv)]

        # ---- MAC datapath: I (issue: registered weight address), R (weight ROM read),
        # S (layer-selected weight words), A (bank address -> accumulator read; product),
        # Q (accumulator read data), X (add, write; forwarding from the previous X) ----------
        i_v = reg(issue, 1, "i_v")
        i_wa = reg(c_start + t, range(wdepth_max + len_max + 1), "i_wa")
        i_pix = reg(cur_pix, cur_pix.shape(), "i_pix")
        i_d = reg(cur_d, cur_d.shape(), "i_d")
        for j in range(N):
            for k in range(L):
                m.d.comb += w_rd[j][k].addr.eq(i_wa)
        r_v = reg(i_v, 1, "r_v")
        r_pix = reg(i_pix, i_pix.shape(), "r_pix")
        r_d = reg(i_d, i_d.shape(), "r_d")
        s_pix = reg(r_pix, r_pix.shape(), "s_pix")
        s_d = reg(r_d, r_d.shape(), "s_d")
        in_mac = Signal()
        valid_bits = []
        addr_w = range(depth_b_max + 2 * pix_max + 1)
        for k in range(L):
            wv = Signal(name=f"wv{k}")
            rb = Signal(unsigned(RBW), name=f"rb{k}")
            wt = Signal(signed(WW), name=f"wt{k}")
            with m.Switch(lay):
                for j, p in enumerate(PL):
                    with m.Case(j):
                        wd = w_rd[j][k].data
                        ww, rbw = p.weight_width, p.rowbase_width
                        m.d.comb += [wt.eq(wd[:ww].as_signed()), rb.eq(wd[ww:ww + rbw]),
                                     wv.eq(wd[ww + rbw])]
            s_wv = reg(r_v & wv, 1, f"s_wv{k}")
            s_rb = reg(rb, rb.shape(), f"s_rb{k}")
            s_wt = reg(wt, wt.shape(), f"s_wt{k}")
            valid_bits.append(s_wv)
            mac_addr = Signal(addr_w, name=f"mac_addr{k}")
            m.d.comb += mac_addr.eq(s_rb + s_pix)
            a_en = reg(s_wv, 1, f"a_en{k}")
            a_addr = reg(mac_addr, addr_w, f"a_addr{k}")
            a_prod = reg(s_wt * s_d, signed(PW), f"a_prod{k}")
            q_en = reg(a_en, 1, f"q_en{k}")
            q_addr = reg(a_addr, addr_w, f"q_addr{k}")
            q_prod = reg(a_prod, signed(PW), f"q_prod{k}")
            q_fwd = reg(a_en & q_en & (a_addr == q_addr), 1, f"q_fwd{k}")
            # layer select before the register: a register right at the read data would be
            # merged into a block RAM as its read register, leaving the RAM's clock-to-out in
            # front of the adder
            cur = Signal(signed(AW), name=f"acc_cur{k}")
            with m.Switch(lay):
                for j in range(N):
                    with m.Case(j):
                        m.d.comb += cur.eq(acc_rd[j][k].data.as_signed())
            q_acc = reg(cur, signed(AW), f"q_acc{k}")
            wlast = Signal(signed(AW), name=f"x_last{k}")  # the previous X's written word
            total = Signal(signed(max(AW, PW) + 1), name=f"acc_sum{k}")
            m.d.comb += total.eq(Mux(q_fwd, wlast, q_acc) + q_prod)
            with m.Switch(lay):
                for j, p in enumerate(PL):
                    with m.Case(j):
                        m.d.sync += wlast.eq(total[:p.acc_bits].as_signed())
            for j, p in enumerate(PL):
                ab = p.acc_bits
                m.d.comb += [
                    acc_rd[j][k].addr.eq(Mux(in_mac, mac_addr, src_addr)),
                    acc_wr[j][k].addr.eq(Mux(ini_v, ini_addr, q_addr)),
                    acc_wr[j][k].data.eq(Mux(ini_v, bias_rd[j].data[k * ab:(k + 1) * ab],
                                             total[:ab])),
                    acc_wr[j][k].en.eq((lay == j) & (ini_v | q_en)),
                ]
        nvalid = Signal(range(L + 1))
        m.d.comb += nvalid.eq(sum(valid_bits))
        with m.Switch(lay):
            for j in range(N):
                with m.Case(j):
                    m.d.sync += macs[j].eq(macs[j] + nvalid)

        # ---- the phase FSM ----------------------------------------------------------------
        def advance_scan():
            m.d.sync += [
                s1_v.eq(1), s1_i.eq(i_cnt), s1_sub.eq(sub), s1_bank.eq(bank), s1_ckk.eq(ckk),
                s1_xq.eq(xq), s1_xr.eq(xr), s1_yq.eq(yq), s1_yr.eq(yr),
                i_cnt.eq(i_cnt + 1),
            ]
            with m.If(cx == Wm1):
                g0 = [(g.P // g.S, g.P % g.S) if g is not None else (0, 0) for g in dest]
                m.d.sync += cx.eq(0)
                with m.Switch(lay):
                    for j, (q0, r0) in enumerate(g0):
                        with m.Case(j):
                            m.d.sync += [xq.eq(q0), xr.eq(r0)]
                with m.If(cy == Hm1):
                    m.d.sync += [cy.eq(0), cc.eq(cc + 1), ckk.eq(ckk + KKc)]
                    with m.Switch(lay):
                        for j, (q0, r0) in enumerate(g0):
                            with m.Case(j):
                                m.d.sync += [yq.eq(q0), yr.eq(r0)]
                with m.Else():
                    m.d.sync += cy.eq(cy + 1)
                    with m.If(yr == Sm1):
                        m.d.sync += [yr.eq(0), yq.eq(yq + 1)]
                    with m.Else():
                        m.d.sync += yr.eq(yr + 1)
            with m.Else():
                m.d.sync += cx.eq(cx + 1)
                with m.If(xr == Sm1):
                    m.d.sync += [xr.eq(0), xq.eq(xq + 1)]
                with m.Else():
                    m.d.sync += xr.eq(xr + 1)
            with m.If(sub == OW_ - 1):
                m.d.sync += [sub.eq(0), word.eq(word + 1)]
            with m.Else():
                m.d.sync += sub.eq(sub + 1)
            with m.If(pix == spix_last):
                m.d.sync += pix.eq(0)
                with m.If(bank == L - 1):
                    m.d.sync += [bank.eq(0), rowbase.eq(rowbase + spix_n)]
                with m.Else():
                    m.d.sync += bank.eq(bank + 1)
            with m.Else():
                m.d.sync += pix.eq(pix + 1)

        def enter_scan(j):
            g = dest[j]
            q0, r0 = (g.P // g.S, g.P % g.S) if g is not None else (0, 0)
            m.d.sync += [
                lay.eq(j), i_cnt.eq(0), cx.eq(0), cy.eq(0), cc.eq(0), ckk.eq(0),
                xq.eq(q0), xr.eq(r0), yq.eq(q0), yr.eq(r0),
                word.eq(0), sub.eq(0), bank.eq(0), rowbase.eq(0), pix.eq(0),
                n_ev.eq(0), rd_idx.eq(0),
            ]
        def enter_mac():
            m.d.sync += [nx_v.eq(0), cur_v.eq(0)]

        # drain cycles after the last address/issue of a phase (the pipeline depth)
        dc = Signal(range(max(self.SCAN_OVERHEAD, self.MAC_OVERHEAD, self.FINAL_OVERHEAD)))
        m.d.sync += [s1_v.eq(0), ini_v.eq(0), self.done.eq(0)]
        with m.FSM(name="phase"):
            with m.State("IDLE"):
                m.d.comb += ready.eq(1)
                with m.If(self.thr_we):
                    for j in range(N):
                        with m.If(self.thr_sel == j):
                            m.d.sync += thr_reg[j].eq(self.thr_data)
                with m.If(self.start):
                    enter_scan(0)
                    m.d.sync += [full.eq(self.first | fresh), fresh.eq(0), cycles.eq(1)]
                    m.d.sync += [thr_act[j].eq(thr_reg[j]) for j in range(N)]
                    m.d.sync += [c.eq(0) for c in events + macs]
                    m.next = "SCAN"
            with m.State("SCAN"):
                m.d.sync += [cycles.eq(cycles + 1), dc.eq(0)]
                advance_scan()
                with m.If(i_cnt == last_i):
                    m.next = "SCAN_DRAIN"
            with m.State("SCAN_DRAIN"):  # stages B..F of the last input
                m.d.sync += [cycles.eq(cycles + 1), dc.eq(dc + 1)]
                with m.If(dc == self.SCAN_OVERHEAD - 1):
                    with m.If(full):
                        m.d.sync += [ia.eq(0), ipix.eq(0), irow.eq(0)]
                        m.next = "INIT"
                    with m.Else():
                        enter_mac()
                        m.next = "MFILL"
            with m.State("INIT"):
                m.d.sync += [cycles.eq(cycles + 1), ini_v.eq(1), ini_addr.eq(ia),
                             ia.eq(ia + 1)]
                with m.If(ipix == dpix_last):
                    m.d.sync += [ipix.eq(0), irow.eq(irow + 1)]
                with m.Else():
                    m.d.sync += ipix.eq(ipix + 1)
                with m.If(ia == depth_last):
                    m.next = "INIT_LAST"
            with m.State("INIT_LAST"):
                m.d.sync += cycles.eq(cycles + 1)
                enter_mac()
                m.next = "MFILL"
            with m.State("MFILL"):
                m.d.sync += cycles.eq(cycles + 1)
                m.d.comb += [fill.eq(1), in_mac.eq(1)]
                m.next = "MRUN"
            with m.State("MRUN"):
                m.d.sync += [cycles.eq(cycles + 1), dc.eq(0)]
                m.d.comb += [run.eq(1), in_mac.eq(1)]
                with m.If(adv & ~nx_v):
                    m.next = "MDRAIN"
            with m.State("MDRAIN"):  # stages R, S, A, Q, X of the last issue
                m.d.sync += [cycles.eq(cycles + 1), dc.eq(dc + 1)]
                m.d.comb += in_mac.eq(1)
                with m.If(dc == self.MAC_OVERHEAD - 3), m.Switch(lay):
                    for j in range(N):
                        with m.Case(j):
                            enter_scan(j + 1)
                            m.next = "SCAN" if j + 1 < N else "FINAL"
            with m.State("FINAL"):
                m.d.sync += [cycles.eq(cycles + 1), dc.eq(0)]
                advance_scan()
                with m.If(i_cnt == last_i):
                    m.next = "FINAL_DRAIN"
            with m.State("FINAL_DRAIN"):  # stages B..E of the last output
                m.d.sync += [cycles.eq(cycles + 1), dc.eq(dc + 1)]
                with m.If(dc == self.FINAL_OVERHEAD - 1):
                    m.d.sync += self.done.eq(1)
                    m.next = "IDLE"
        return m
