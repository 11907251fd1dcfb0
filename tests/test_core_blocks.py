"""Block tests of the event-driven core's components, each against a reference, in Amaranth's
simulator: the delta comparator (both forms, exhaustively), the intake, the event queue, the
issue stage and a MAC lane (back-to-back updates of one accumulator included)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.sim import Simulator
from deltanet.hw.delta import delta_difference, delta_event, delta_fire, delta_window
from deltanet.hw.intake import Intake
from deltanet.hw.issue import Issuer
from deltanet.hw.lane import MacLane
from deltanet.hw.queue import EventQueue
from deltanet.hw.shapes import group_layout
from deltanet.pysim import load_model
from deltanet.pysim.coreplan import CorePlan

MODELS = Path(__file__).resolve().parents[1] / "deltanet" / "models"


def simulate(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def ref_fire(x: int, xh: int, thr: int, full: bool) -> tuple[int, bool]:
    """pysim's comparator (docs/semantics.md section 1)."""
    xh = 0 if full else xh
    d = x - xh
    return d, d != 0 and (abs(d) >= max(thr, 1) or full)


def test_delta_comparator_both_forms_exhaustive():
    w = 4  # codes -8..7, thresholds 0..17 (16 = 2**w: never fires)
    m = Module()
    x, xh = Signal(signed(w)), Signal(signed(w))
    thr, first = Signal(unsigned(w + 1)), Signal()
    xe, lo, hi = delta_window(m, xh, thr, first)
    d1, f1 = delta_event(m, x, xe, lo, hi, first)
    d2 = delta_difference(m, x, xh, first)
    f2 = delta_fire(m, d2, thr, first)
    neg = Signal(signed(w + 2))
    m.d.comb += neg.eq(-thr)
    f3 = delta_fire(m, d2, thr, first, neg_threshold=neg)
    cases = [(a, b, t, f) for a in range(-8, 8) for b in range(-8, 8) for t in range(18)
             if t < 32 for f in (0, 1)]
    got = []

    async def bench(ctx):
        for a, b, t, f in cases:
            ctx.set(x, a)
            ctx.set(xh, b)
            ctx.set(thr, t)
            ctx.set(first, f)
            got.append((ctx.get(d1), ctx.get(f1), ctx.get(d2), ctx.get(f2), ctx.get(f3)))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    for (a, b, t, f), (g1, h1, g2, h2, h3) in zip(cases, got):
        d, fire = ref_fire(a, b, t, bool(f))
        assert (g1, bool(h1), g2, bool(h2), bool(h3)) == (d, fire, d, fire, fire), (a, b, t, f)


@pytest.fixture(scope="module")
def cartpole():
    return load_model(MODELS / "cartpole.npz")


def test_intake_events_groups_and_x_hat(cartpole):
    plan = CorePlan.build(cartpole, 3, 3)  # 4 inputs in 2 words of 3 codes (one code unused)
    dut = Intake(plan=plan)
    cfg = plan.config
    w = cfg.input_fmt.width
    thr = 900
    rng = np.random.default_rng(3)
    steps = [rng.integers(-3000, 3000, size=cfg.n_in) for _ in range(12)]
    seen = []

    async def bench(ctx):
        ctx.set(dut.en, 1)
        ctx.set(dut.threshold, thr)
        for t, x in enumerate(steps):
            ctx.set(dut.first, int(t == 0))
            codes = list(x) + [0] * (plan.obs_depth * 3 - cfg.n_in)
            for a in range(plan.obs_depth):
                word = sum((int(c) & ((1 << w) - 1)) << (p * w)
                           for p, c in enumerate(codes[a * 3:a * 3 + 3]))
                ctx.set(dut.w.payload, {"addr": a, "data": [0, 0, 0]})
                ctx.set(dut.w.payload.as_value(), a | (word << len(dut.w.payload.addr)))
                ctx.set(dut.w.valid, 1)
                await ctx.tick()
            ctx.set(dut.w.valid, 0)
            events, groups = 0, []
            for _ in range(6):  # drain the pipeline
                events += ctx.get(dut.events)
                if ctx.get(dut.o.valid):
                    groups.append([(ctx.get(dut.o.payload[p].work), ctx.get(dut.o.payload[p].delta))
                                   for p in range(3)])
                await ctx.tick()
            seen.append((events, groups))

    simulate(dut, bench)
    x_hat = np.zeros(cfg.n_in, dtype=np.int64)
    lens = plan.col_len[0]
    for t, (x, (events, groups)) in enumerate(zip(steps, seen)):
        full = t == 0
        if full:
            x_hat[:] = 0
        d = x - x_hat
        fire = (d != 0) & ((np.abs(d) >= thr) | full)
        x_hat = np.where(fire, x, x_hat)
        assert events == int(fire.sum()), t
        want = []
        for a in range(plan.obs_depth):
            slots = []
            for p in range(3):
                j = a * 3 + p
                work = j < cfg.n_in and bool(fire[j]) and lens[j] > 0
                slots.append((int(work), int(d[j]) if j < cfg.n_in else None))
            if any(s[0] for s in slots):
                want.append(slots)
        assert len(groups) == len(want), t
        for g, wg in zip(groups, want):
            for (work, delta), (wwork, wdelta) in zip(g, wg):
                assert work == wwork
                if wwork:
                    assert delta == wdelta


def test_event_queue_order_and_latency():
    from amaranth.lib import data
    dut = EventQueue(layout=data.StructLayout({"v": unsigned(8)}), depth=8)
    rng = np.random.default_rng(0)
    pops = []

    async def bench(ctx):
        sent = 0
        for cycle in range(200):
            # the core never pushes into a full queue (it is sized for the worst case)
            push = rng.random() < 0.5 and sent < 100 and sent - len(pops) < 8
            ctx.set(dut.i.valid, int(push))
            ctx.set(dut.i.payload.v, sent & 0xFF)
            take = rng.random() < 0.6
            ctx.set(dut.o.ready, int(take))
            if ctx.get(dut.o.valid) and take:
                pops.append(ctx.get(dut.o.payload.v))
            await ctx.tick()
            if push:
                sent += 1
        ctx.set(dut.i.valid, 0)
        while ctx.get(dut.o.valid):
            ctx.set(dut.o.ready, 1)
            pops.append(ctx.get(dut.o.payload.v))
            await ctx.tick()

    simulate(dut, bench)
    assert pops == [v & 0xFF for v in range(len(pops))]
    assert len(pops) > 50


def test_issuer_issues_work_slots_in_order_without_bubbles(cartpole):
    plan = CorePlan.build(cartpole, 1, 4)  # one lane: columns up to 16 words long
    assert plan.len_width >= 2 and plan.group_slots == 4
    dut = Issuer(plan=plan)
    q = EventQueue(layout=group_layout(plan), depth=8)
    m = Module()
    m.submodules.q = q
    m.submodules.dut = dut
    m.d.comb += [dut.i.valid.eq(q.o.valid), dut.i.payload.eq(q.o.payload),
                 q.o.ready.eq(dut.i.ready)]
    groups = [[(1, 5, 10, 3), (0, 1, 0, 0), (1, -2, 20, 1), (0, 0, 0, 0)],
              [(0, 0, 0, 0), (0, 0, 0, 0), (0, 0, 0, 0), (1, 7, 30, 2)],
              [(1, -1, 40, 1), (1, 3, 41, 2), (0, 0, 0, 0), (0, 0, 0, 0)]]
    issued = []

    async def bench(ctx):
        for g in groups:
            ctx.set(q.i.valid, 1)
            for s, (work, d, start, ln) in enumerate(g):
                key = start | (ln << plan.start_width)
                ctx.set(q.i.payload[s], {"work": work, "delta": d, "key": key})
            await ctx.tick()
        ctx.set(q.i.valid, 0)
        ctx.set(dut.en, 1)
        for _ in range(16):
            if ctx.get(dut.o.valid):
                issued.append((ctx.get(dut.o.payload.addr), ctx.get(dut.o.payload.delta)))
            else:
                issued.append(None)
            await ctx.tick()

    simulate(m, bench)
    want = [(10, 5), (11, 5), (12, 5), (20, -2), (30, 7), (31, 7), (40, -1), (41, 3), (42, 3)]
    assert issued[:len(want)] == want  # one word per cycle, no cycle between slots or groups
    assert all(v is None for v in issued[len(want):])


def test_issuer_walks_conv_positions_without_gaps():
    """A conv layer: every work slot's kernel positions in order (column table read one cycle
    ahead), an empty column's position takes one cycle, slots and groups follow without a gap
    and the first word comes one cycle after the group reaches the head."""
    from tests.test_core import random_conv_model

    model = random_conv_model(2)
    plan = CorePlan.build(model, 2, 3)
    g = plan.geometry[0]
    assert g.conv
    keys = plan.keys(0)
    pos = g.positions()
    work = [j for j in range(g.n_in) if keys[j]]
    assert len(work) >= 5
    empty = sum(1 for j in work for c, _ in pos[j] if plan.col_len[0][c] == 0)
    assert empty > 0  # the model has an empty column on the way
    G = plan.group_slots
    groups = [[(1, 3, work[0]), (0, 0, 0), (1, -4, work[1])] + [(0, 0, 0)] * (G - 3),
              [(0, 0, 0)] * (G - 1) + [(1, 2, work[2])],
              [(1, 1, work[3]), (1, -1, work[4])] + [(0, 0, 0)] * (G - 2)]
    dut = Issuer(plan=plan)
    q = EventQueue(layout=group_layout(plan), depth=8)
    m = Module()
    m.submodules.q = q
    m.submodules.dut = dut
    m.d.comb += [dut.i.valid.eq(q.o.valid), dut.i.payload.eq(q.o.payload),
                 q.o.ready.eq(dut.i.ready)]
    want = []
    for grp in groups:
        for w_, d, j in grp:
            if not w_:
                continue
            for c, pix in pos[j]:
                n = int(plan.col_len[0][c])
                st = int(plan.col_start[0][c])
                want += [(st + t, d, pix) for t in range(n)] if n else [None]
    issued, idle = [], []

    async def bench(ctx):
        for grp in groups:
            ctx.set(q.i.valid, 1)
            for s_, (w_, d, j) in enumerate(grp):
                ctx.set(q.i.payload[s_], {"work": w_, "delta": d, "key": int(keys[j])})
            await ctx.tick()
        ctx.set(q.i.valid, 0)
        ctx.set(dut.layer, 0)
        ctx.set(dut.en, 1)
        for _ in range(len(want) + 6):
            if ctx.get(dut.o.valid):
                issued.append((ctx.get(dut.o.payload.addr), ctx.get(dut.o.payload.delta),
                               ctx.get(dut.o.payload.pix)))
            else:
                issued.append(None)
            idle.append(ctx.get(dut.idle) and ctx.get(q.empty))
            await ctx.tick()

    simulate(m, bench)
    assert issued[0] is None  # the column-table read of the first position
    assert issued[1:1 + len(want)] == want
    assert all(v is None for v in issued[1 + len(want):])
    assert idle.index(True) == 1 + len(want)  # done right after the last position


def test_mac_lane_back_to_back_updates_and_dirty_list(cartpole):
    plan = CorePlan.build(cartpole, 2, 4)
    k = 1
    dut = MacLane(plan=plan, lane=k)
    words = plan.weight_words[k]
    ww, aw = plan.weight_width, plan.acc_addr_width
    # every valid weight word of this lane, several times, some back to back
    valid = [a for a, v in enumerate(words) if v >> (ww + aw) & 1]
    rng = np.random.default_rng(5)
    seq = [int(a) for a in rng.choice(valid, size=60)] + [valid[0]] * 4
    deltas = [int(v) for v in rng.integers(-200, 200, size=len(seq))]
    acc = [np.zeros(plan.bank_depth[b], dtype=np.int64) for b in range(2)]
    lists = [[], []]
    layer_of = np.searchsorted([int(s[0]) if len(s) else 0 for s in plan.col_start],
                               np.arange(plan.weight_depth), side="right") - 1
    for a, d in zip(seq, deltas):
        v = words[a]
        w = v & ((1 << ww) - 1)
        w -= (1 << ww) if w >> (ww - 1) else 0
        addr = (v >> ww) & ((1 << aw) - 1)
        b = int(layer_of[a]) % 2
        acc[b][addr] += w * d
        if addr not in lists[b]:
            lists[b].append(addr)
    got = {}

    async def bench(ctx):
        for a, d in zip(seq, deltas):
            ctx.set(dut.cmd.valid, 1)
            ctx.set(dut.cmd.payload, {"addr": a, "delta": d, "layer": int(layer_of[a])})
            await ctx.tick()
        ctx.set(dut.cmd.valid, 0)
        for _ in range(4):
            await ctx.tick()
        got["count"] = [ctx.get(dut.count[b]) for b in range(2)]
        got["lists"] = [[], []]
        got["acc"] = [[], []]
        for b in range(2):
            ctx.set(dut.dl_bank, b)
            ctx.set(dut.ex_rd_bank, b)
            ctx.set(dut.ex_rd_en, 1)
            for i in range(got["count"][b]):
                ctx.set(dut.dl_index, i)
                await ctx.tick()
                got["lists"][b].append(ctx.get(dut.dl_data))
            for a in range(plan.bank_depth[b]):
                ctx.set(dut.ex_rd_addr, a)
                await ctx.tick()
                got["acc"][b].append(ctx.get(dut.ex_rd_data))

    simulate(dut, bench)
    W = plan.acc_width
    for b in range(2):
        assert got["count"][b] == len(lists[b])
        assert got["lists"][b] == lists[b]
        want = [(int(v) + (1 << W)) % (1 << W) for v in acc[b]]
        assert got["acc"][b] == want
