"""Closed-loop episodes on the event-driven core through a port adapter: one loop, every engine.

The cocotb bench (:mod:`sim.bench_core`, generated Verilog in Verilator or Icarus) and the
Amaranth engine (``deltanet simulate --engine amaranth``, :class:`hw.core.DeltaCore` in
``amaranth.sim``) both run :meth:`CoreBench.run` with their own port adapter (see
:mod:`sim.driver`); an adapter that also counts the rising clock edges it has seen
(``edges``) lets the bench check the cycles port against the time that actually passed.

Each env step :meth:`CoreBench.run`

1. quantizes the observation with pysim (``DeltaNetwork.quantize_obs``: raw input codes);
2. runs one step in the design with :class:`sim.driver.StepDriver` (observation words written
   as they changed, or all of them, ``start``, wait for ``done``, read ``out``, ``cycles``,
   ``events_l``, ``macs_l``);
3. steps ``pysim.DeltaNetwork(model, mode="fixed", delta=True)`` and compares bit for bit
   (:func:`sim.check.compare`): per-layer events and significant MACs
   (``last_counts["significant"]``), the raw outputs, the action the host decodes from them
   (``DeltaNetwork.decode``: argmax, clip or tanh; compared for argmax, continuous actions
   follow from the outputs), the ``cycles`` port and the edges elapsed against
   :class:`pysim.corecycles.CoreCycleModel` (``schedule(events, first)``);
4. steps the env with the action decoded from **the hardware's** outputs.

Over the UART host link (:class:`sim.link.LinkStepDriver`, passed as ``driver``) the loop
is the same, with one check fewer: the ``cycles`` value comes from the result frame and is
still compared with the cycle model, but the link hides the core's clock, so no elapsed edges
are compared (result key ``elapsed_checked``: false); an adapter's edges then time the whole
step on the link (``latency``), and each step also records ``round_trip_s`` and
``link_bytes``.

The run stops at the first mismatching step (a timeout waiting for ``done`` is one) and
reports it. The result has the keys of :func:`sim.check.result` plus the run's figures, and with
``coverage=True`` a ``coverage`` key: the functional coverage of the steps run
(:class:`sim.coverage.Coverage`, sampled after every completed step).
"""

from __future__ import annotations

import time

import numpy as np

from ..pysim import DeltaNetwork
from ..pysim.corecycles import CoreCycleModel
from .check import compare, describe, first_mismatch, reference_return, result
from .coverage import Coverage, StepRecord
from .driver import CoreDesign, StepDriver
from .envs import check_model_fits_env, make_env

__all__ = ["CoreBench"]


class _Probe:
    """A port adapter around another that times ``wait_done`` (the design running freely)
    and, if the adapter counts ``edges``, notes the count when ``wait_done`` starts (just
    after the edge that sampled ``start``)."""

    def __init__(self, io):
        self.io = io
        self.wait_s = 0.0
        self.start_edges = None

    def set(self, name, value):
        self.io.set(name, value)

    def get(self, name):
        return self.io.get(name)

    async def tick(self):
        await self.io.tick()

    async def wait_done(self, max_cycles):
        self.start_edges = getattr(self.io, "edges", None)
        t = time.perf_counter()
        try:
            return await self.io.wait_done(max_cycles)
        finally:
            self.wait_s += time.perf_counter() - t


class CoreBench:
    """Driver -> monitor -> model -> checker for one ``deltanet_core`` design.

    ``design``: the design JSON (:func:`hw.generate_core.design_info`); ``model``: the model
    the reference runs (normally the one the design was built from; a different one proves
    the checker can fail); ``writes``: ``changed`` (default) or ``all`` observation words per
    step; ``driver``: the step driver (default: :class:`sim.driver.StepDriver` of ``design``
    with ``writes``; one given brings its own ``writes``). A driver whose ``through_ports`` is
    false (:class:`sim.link.LinkStepDriver`) does not drive the adapter's ports: the edges
    elapsed in its steps are not checked against the cycle model.
    """

    def __init__(self, design: dict, model, *, writes: str = "changed", driver=None):
        self.design = CoreDesign.from_json(design)
        d, cfg = self.design, model.config
        want = {"n_layers": len(cfg.layers), "n_in": cfg.n_in, "n_out": cfg.n_out,
                "in_width": cfg.input_fmt.width, "out_width": cfg.output_fmt.width}
        bad = {k: (getattr(d, k), v) for k, v in want.items() if getattr(d, k) != v}
        if bad:
            raise ValueError("the design does not fit the reference model: "
                             + ", ".join(f"{k} {a} (design) != {b} (model)"
                                         for k, (a, b) in bad.items()))
        self.model = model
        if driver is not None and driver.design != d:
            raise ValueError(f"the driver's design {driver.design} is not the bench's {d}")
        self.driver = StepDriver(d, writes=writes) if driver is None else driver
        #: the steps drive the adapter's ports (whose edges then time them); StepDriver's do
        self.through_ports = getattr(self.driver, "through_ports", True)
        self.cycle_model = CoreCycleModel(model, d.lanes, d.obs_words)
        self.ref = DeltaNetwork(model, mode="fixed", delta=True, batch=1)
        every = [np.ones(ly.n_in, dtype=bool) for ly in cfg.layers]
        #: no step can take this long: twice an episode start with every input an event
        self.max_cycles = 2 * self.cycle_model.schedule(every, True).cycles + 64

    async def reset(self, io) -> None:
        await self.driver.reset(io)

    # ---- model ------------------------------------------------------------------------------
    def ref_step(self, x_raw, first: bool, rescan: bool = False) -> tuple:
        """The reference's step: ``(expected dict, schedule)``; ``rescan``: a threshold was
        written before it."""
        y = self.ref.step(np.asarray(x_raw)[None])
        c = self.ref.last_counts
        sched = self.cycle_model.schedule(self.ref.last_events, first, rescan)
        ref = {
            "out": y[0],
            "action": int(self.ref.decode(y)[0])
            if self.model.config.decoder.kind == "argmax" else None,
            "cycles": int(sched.cycles),
            "events": [int(v) for v in c["events"][:, 0]],
            "macs": [int(v) for v in c["significant"][:, 0]],
        }
        return ref, sched

    def decode(self, out) -> int | np.ndarray:
        """The action the host decodes from raw output codes."""
        a = self.ref.decode(np.asarray(out, dtype=np.int64)[None])[0]
        return int(a) if self.model.config.decoder.kind == "argmax" else a

    # ---- the closed loop --------------------------------------------------------------------
    async def run(self, io, *, episodes: int = 1, seed: int = 0, max_steps: int = 0,
                  log=None, coverage: bool = False, threshold_writes: int = 0) -> dict:
        """``episodes`` episodes (episode ``i`` reset with ``seed + i``, cut after
        ``max_steps`` steps unless 0); the design must be out of reset. ``log(text)`` is
        called with the first mismatch. ``coverage``: sample the functional coverage of every
        completed step (result key ``coverage``, :meth:`sim.coverage.Coverage.summary`).
        ``threshold_writes``: every that many steps of an episode (0: never), write one
        layer's threshold register at run time (the layers in turn; its raw value halved, then
        restored, and so on) in the design and the reference alike; the next step examines
        every neuron. Returns the result dict."""
        if episodes < 1:
            raise ValueError(f"episodes must be >= 1, got {episodes}")
        if threshold_writes < 0:
            raise ValueError(f"threshold_writes must be >= 0, got {threshold_writes}")
        cfg = self.model.config
        base_thr = [cfg.threshold_raw(i) for i in range(len(cfg.layers))]
        n_writes = 0
        cov = Coverage(self.model, self.design.lanes, self.design.obs_words) if coverage \
            else None
        env_id = self.model.meta["env_id"]
        tio = _Probe(io)
        edges = (lambda: io.edges) if hasattr(io, "edges") else None
        all_diffs, per_step, episodes_out = [], [], []
        hw_s = ref_s = env_s = setup_s = 0.0
        e_start = edges() if edges else None
        wall0 = time.perf_counter()
        stopped = False
        for ep in range(episodes):
            s0 = time.perf_counter()
            env = make_env(env_id, seed + ep)()  # the first one imports the env's libraries
            check_model_fits_env(self.model, env)
            obs, _ = env.reset(seed=seed + ep)
            self.ref.reset()
            setup_s += time.perf_counter() - s0
            total, t = 0.0, 0
            while True:
                x = self.ref.quantize_obs(np.asarray(obs, dtype=np.float64).reshape(1, -1))[0]
                first = t == 0
                written = []
                if threshold_writes and t and t % threshold_writes == 0:
                    layer = n_writes % len(base_thr)
                    raw = base_thr[layer] // 2 if (n_writes // len(base_thr)) % 2 == 0 \
                        else base_thr[layer]
                    await self.driver.write_threshold(tio, layer, raw)
                    self.ref.set_threshold_raw(layer, raw)
                    written = [(layer, raw)]
                    n_writes += 1
                h0 = time.perf_counter()
                e0 = edges() if edges else None
                hw = await self.driver.step(tio, x, first, self.max_cycles)
                latency = None
                if edges and not hw.get("timeout"):
                    # edges from the one that sampled start to the one after which done is
                    # high (not seen through a link); latency: from the first observation
                    # write (over a link: its first request bit) on
                    if self.through_ports:
                        hw["elapsed"] = edges() - tio.start_edges + 1
                    latency = edges() - e0
                r0 = time.perf_counter()
                hw_s += r0 - h0
                x_hat = self.ref.x_hat if cov else None  # before the step
                ref, sched = self.ref_step(x, first, bool(written))
                if hw.get("timeout"):  # no done: a mismatch of the cycle count
                    diffs = [(t, -1, "done", 0, f"none in {self.max_cycles} cycles",
                              ref["cycles"])]
                    action = None
                else:
                    action = self.decode(hw["out"])
                    hw["action"] = action if ref["action"] is not None else None
                    diffs = compare(t, hw, ref)
                    if cov:
                        cov.sample(StepRecord.from_reference(self.ref, x, x_hat, first, hw,
                                                             threshold_writes=written))
                all_diffs.extend((ep,) + d for d in diffs)
                per_step.append({
                    "episode": ep, "step": t, "cycles": hw.get("cycles"),
                    "events": hw.get("events"), "macs": hw.get("macs"),
                    "writes": hw["writes"], "latency": latency,
                    "action": (action if isinstance(action, (int, type(None)))
                               else [float(v) for v in np.ravel(action)]),
                    "busy": int(sum(sched.mac_cycles)),
                    "rounds": [int(v) for v in sched.rounds],
                    "lane_work": [int(v) for v in sched.lane_work],
                    "mismatch": bool(diffs),
                    **{k: hw[k] for k in ("round_trip_s", "link_bytes") if k in hw}})
                r1 = time.perf_counter()
                ref_s += r1 - r0
                t += 1
                if diffs:  # stop at the first mismatching step
                    stopped = True
                    if log is not None:
                        log(describe(first_mismatch(all_diffs)))
                    break
                obs, r, term, trunc, _ = env.step(action)
                env_s += time.perf_counter() - r1
                total += float(r)
                if term or trunc or (max_steps and t >= max_steps):
                    break
            env.close()
            r0 = time.perf_counter()
            # the reference alone as the policy for as many steps: its return must be the same
            ref_total = None if stopped else reference_return(self.model, env_id, seed + ep, t)
            ref_s += time.perf_counter() - r0
            episodes_out.append({"episode": ep, "seed": seed + ep, "steps": t,
                                 "hw_return": total, "ref_return": ref_total})
            if stopped:
                break
        wall = time.perf_counter() - wall0
        # env steps/s over the closed loop itself (env creation and library imports excluded)
        res = result(all_diffs, per_step,
                     [{**e, "ref_return": e["ref_return"] or 0.0} for e in episodes_out],
                     wall - setup_s)
        res["episodes"] = episodes_out
        if stopped:
            res.update({"ref_return": None, "returns_equal": False})
        cycles = [s["cycles"] for s in per_step if s["cycles"] is not None]
        lat = [s["latency"] for s in per_step if s["latency"] is not None]
        d = self.design
        sim_cycles = edges() - e_start if edges else None
        res.update({
            "stopped_at_first_mismatch": stopped,
            "elapsed_checked": bool(edges) and self.through_ports,
            "first_mismatch_text": describe(res["first_mismatch"]),
            "lanes": d.lanes,
            "obs_words": d.obs_words,
            "obs_writes": self.driver.writes,
            "obs_writes_per_step": self.driver.words_written / max(len(per_step), 1),
            "latency_per_step": {"mean": float(np.mean(lat)) if lat else None,
                                 "max": max(lat) if lat else None},
            "cycles_per_step": {"mean": float(np.mean(cycles)) if cycles else None,
                                "first": cycles[0] if cycles else None,
                                "min": min(cycles) if cycles else None,
                                "max": max(cycles) if cycles else None},
            "sim_cycles": sim_cycles,
            "sim_cycles_per_s": sim_cycles / hw_s if sim_cycles and hw_s > 0 else None,
            # the steps alone (start to done, the simulator running freely)
            "step_cycles_per_s": sum(cycles) / tio.wait_s if tio.wait_s > 0 else None,
            "wall_total_s": wall,
            # obs_writes: the hardware time outside wait_done (writes, start, reading results)
            "time_s": {"hardware": hw_s, "obs_writes": hw_s - tio.wait_s, "reference": ref_s,
                       "env": env_s, "setup": setup_s},
        })
        if cov:
            res["coverage"] = cov.summary()
        return res
