"""DeltaCore: the event-driven delta core. Cycles follow the events and significant MACs.

The core is bit-exact with ``pysim.DeltaNetwork(model, mode="fixed", delta=True)`` and its
``cycles`` equal ``pysim.corecycles.CoreCycleModel(model, lanes, obs_words)`` at every step
(that module's docstring gives the schedule). The memory layout is
:class:`pysim.coreplan.CorePlan`. This module only wires the components:

* :class:`hw.intake.Intake` delta-encodes each observation word as the host writes it;
* :class:`hw.queue.EventQueue` holds the event groups (intake words, examination rounds);
* :class:`hw.issue.Issuer` issues a group's non-empty weight columns, one word per cycle;
* :class:`hw.lane.MacLane` x L: weights, accumulator banks with dirty bits, dirty lists;
* :class:`hw.examiner.Examiner` x L: re-examines the changed neurons, one per lane per round;
* :class:`hw.gather.Gather` makes a round's group; :class:`hw.eventmux.EventMux` picks the
  queue's producer (intake when idle, examiners when running);
* :class:`hw.control.Controller`: phases, rounds, thresholds, counters.

Ports (flattened Verilog names; plus ``clk`` and ``rst``)
-------------------------------------------------------
obs (``obs__valid``, ``obs__ready``, ``obs__payload`` = ``addr | data << addr_width``): an
observation word of ``obs_words`` raw input codes (``config.input_fmt``), code ``p`` in bits
``[p*w, (p+1)*w)`` of ``data``, input ``addr * obs_words + p``. Accepted while ``ready`` and not
``start``; write each word whose codes changed since the last step (or every word), each at most
once per step, in ascending order (the cycle model assumes it); after an episode start every
word. first: In(1) episode start: hold it from the step's first write to its ``start``.
start: In(1) the step starts at an edge where ``ready & start``.
ready, done: Out(1) as :class:`hw.control.Controller`.
out: Out(n_out * out_width) the last layer's raw output codes (``config.output_fmt``), output
``o`` in bits ``[o*w, (o+1)*w)``; decoding (argmax, clip, tanh) stays on the host.
cycles, events_{l}, macs_{l}: Out(32) the last step's cycles (``done`` is high in cycle
``cycles`` after the start edge), events and significant multiplications of layer ``l``.
thr_we, thr_sel, thr_data: write a threshold register (raw unsigned code of the layer's input
format; ``2**w`` never fires) while ready; the next step examines every neuron. After writing
layer 0's threshold, write every observation word in the next step.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Shape
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..pysim.coreplan import CorePlan
from ..pysim.model import Model
from .control import COUNTER_WIDTH, Controller
from .eventmux import EventMux
from .examiner import Examiner
from .gather import Gather
from .intake import Intake
from .issue import Issuer
from .lane import MacLane
from .queue import EventQueue
from .shapes import group_layout, obs_layout

__all__ = ["DeltaCore"]


class DeltaCore(wiring.Component):
    """The event-driven core of ``model`` on ``lanes`` MAC lanes with observation words of
    ``obs_words`` codes (see the module docstring). ``DeltaCore(model, lanes=4, obs_words=4)``.
    """

    def __init__(self, model, *, lanes=4, obs_words=None):
        if not isinstance(model, Model):
            raise TypeError(f"DeltaCore: model must be a pysim Model, got "
                            f"{type(model).__name__}")
        if obs_words is None:
            obs_words = min(model.config.n_in, 8)
        self._plan = plan = CorePlan.build(model, lanes, obs_words)
        cfg = model.config
        N = plan.n_layers
        self._ctrl_proto = Controller(plan=plan)
        ports = {
            "obs": In(stream.Signature(obs_layout(plan))),
            "start": In(1), "first": In(1), "ready": Out(1), "done": Out(1),
            "out": Out(cfg.n_out * cfg.output_fmt.width),
            "cycles": Out(COUNTER_WIDTH),
        }
        for i in range(N):
            ports[f"events_{i}"] = Out(COUNTER_WIDTH)
            ports[f"macs_{i}"] = Out(COUNTER_WIDTH)
        c = self._ctrl_proto.signature.members
        ports["thr_we"] = In(1)
        ports["thr_sel"] = In(c["thr_sel"].shape)
        ports["thr_data"] = In(c["thr_data"].shape)
        super().__init__(ports)

    # ---- derived, read-only -------------------------------------------------------------
    @property
    def plan(self) -> CorePlan:
        return self._plan

    @property
    def model(self) -> Model:
        return self._plan.model

    @property
    def lanes(self) -> int:
        return self._plan.lanes

    @property
    def obs_words(self) -> int:
        return self._plan.obs_words

    @property
    def n_layers(self) -> int:
        return self._plan.n_layers

    def threshold_reset(self, i: int) -> int:
        return self._ctrl_proto.threshold_reset(i)

    def port_widths(self) -> dict:
        """Verilog port name -> (direction, width), ``clk``/``rst`` excluded."""
        return {"__".join(str(p) for p in path):
                ("input" if member.flow == In else "output", Shape.cast(member.shape).width)
                for path, member, _ in self.signature.flatten(self)}

    def elaborate(self, platform):
        m = Module()
        plan = self._plan
        N, L = plan.n_layers, plan.lanes
        ctrl = m.submodules.control = self._ctrl_proto
        intake = m.submodules.intake = Intake(plan=plan)
        mux = m.submodules.producer = EventMux(layout=group_layout(plan), n=2)
        queue = m.submodules.queue = EventQueue(
            layout=group_layout(plan), depth=plan.queue_depth,
            valid_from=lambda g: Cat(*(g[s].work for s in range(plan.group_slots))).any())
        issuer = m.submodules.issuer = Issuer(plan=plan)
        gather = m.submodules.gather = Gather(plan=plan)
        lanes = [MacLane(plan=plan, lane=k) for k in range(L)]
        exams = [Examiner(plan=plan, lane=k) for k in range(L)]
        for k in range(L):
            m.submodules[f"lane{k}"] = lanes[k]
            m.submodules[f"exam{k}"] = exams[k]

        # host side
        m.d.comb += [
            intake.w.valid.eq(self.obs.valid), intake.w.payload.eq(self.obs.payload),
            self.obs.ready.eq(intake.w.ready),
            intake.en.eq(ctrl.obs_en), intake.first.eq(ctrl.intake_first),
            intake.threshold.eq(ctrl.thresholds[0]), ctrl.intake_busy.eq(intake.busy),
            ctrl.start.eq(self.start), ctrl.first.eq(self.first),
            self.ready.eq(ctrl.ready), self.done.eq(ctrl.done), self.cycles.eq(ctrl.cycles),
            ctrl.thr_we.eq(self.thr_we), ctrl.thr_sel.eq(self.thr_sel),
            ctrl.thr_data.eq(self.thr_data),
        ]
        for i in range(N):
            m.d.comb += [getattr(self, f"events_{i}").eq(ctrl.events[i]),
                         getattr(self, f"macs_{i}").eq(ctrl.macs[i])]

        # producers -> queue -> issue stage
        wiring.connect(m, intake.o, mux.i[0])
        wiring.connect(m, gather.o, mux.i[1])
        m.d.comb += mux.sel.eq(~ctrl.idle)
        wiring.connect(m, mux.o, queue.i)
        wiring.connect(m, queue.o, issuer.i)
        m.d.comb += [
            issuer.en.eq(ctrl.mac_en), issuer.layer.eq(ctrl.mac_layer),
            ctrl.queue_empty.eq(queue.empty), ctrl.issue_idle.eq(issuer.idle),
            ctrl.intake_events.eq(intake.events),
            ctrl.mac_layer_r.eq(lanes[0].mac_layer),
        ]

        # lanes and their examiners
        w = plan.config.output_fmt.width
        for k, (lane, ex) in enumerate(zip(lanes, exams)):
            m.d.comb += [
                lane.cmd.valid.eq(issuer.o.valid), lane.cmd.payload.eq(issuer.o.payload),
                lane.init_en.eq(ctrl.init_en), lane.init_index.eq(ctrl.init_index),
                lane.init_bank.eq(ctrl.init_bank), lane.init_addr.eq(ctrl.init_addr),
                lane.dl_clear.eq(ctrl.dl_clear),
                ex.go.eq(ctrl.go), ex.index.eq(ctrl.index), ex.index1.eq(ctrl.index1),
                ex.layer.eq(ctrl.exam_layer),
                ex.full.eq(ctrl.full), ex.first.eq(ctrl.first_step),
                ex.threshold.eq(ctrl.exam_threshold),
                ex.count[0].eq(lane.count[0]), ex.count[1].eq(lane.count[1]),
                ex.appending.eq(lane.appending),
                lane.dl_bank.eq(ex.dl_bank), lane.dl_index.eq(ex.dl_index),
                ex.dl_data.eq(lane.dl_data),
                lane.ex_rd_en.eq(ex.ex_rd_en), lane.ex_rd_bank.eq(ex.ex_rd_bank),
                lane.ex_rd_addr.eq(ex.ex_rd_addr), ex.ex_rd_data.eq(lane.ex_rd_data),
                lane.ex_clean_en.eq(ex.ex_clean_en), lane.ex_clean_bank.eq(ex.ex_clean_bank),
                lane.ex_clean_addr.eq(ex.ex_clean_addr),
                gather.slots[k].eq(ex.slot),
                ctrl.more[k].eq(ex.more), ctrl.busy[k].eq(ex.busy),
                ctrl.fires[k].eq(ex.fire), ctrl.mac_valid[k].eq(lane.mac_valid),
            ]
            for r in range(plan.rows[-1]):
                o = int(plan.neuron(N - 1, k, r))
                if o < plan.config.n_out:
                    m.d.comb += self.out[o * w:(o + 1) * w].eq(ex.out[r])
        return m
