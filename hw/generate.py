"""Verilog, design JSON and report for a model: one repeatable, deterministic function.

``generate(model, lanes, out_dir)`` writes

* ``deltanet_top.v`` - ``amaranth.back.verilog.convert(top, name="deltanet_top",
  emit_src=False)``;
* ``deltanet_top.json`` - everything a testbench needs to talk to the design: the network config
  (``NetworkConfig.to_dict()``), lanes, layer count, port names/directions/widths, the model
  checksum, the reset thresholds (raw), the cycle-model constants and how cycles are counted;
* ``report.md`` - ports, memories (depth x width), weight storage bits, registers, and the
  cycles per step predicted by pysim's cycle model on a short deterministic observation sequence
  (or on recorded observations the caller passes in).

Every file is written atomically (temporary file in the same folder, then ``os.replace``) and
holds no time stamps or absolute paths, so two runs give identical bytes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from amaranth.back import verilog

from pysim import CycleModel, DeltaNetwork
from pysim import cycles as cycle_model
from pysim.artifact import model_meta
from pysim.atomic import write_text_atomic
from pysim.model import Model

from .top import DeltanetTop

__all__ = ["TOPLEVEL", "default_observations", "design_info", "generate"]

TOPLEVEL = "deltanet_top"
SCHEMA = "deltanet-design"
SCHEMA_VERSION = 1
DEFAULT_STEPS = 64


def model_checksum(model: Model) -> str:
    """The artifact checksum (``sha256:...``) of ``model`` as it is: computed from its arrays
    and config, not read from ``meta`` (a modified copy, ``Model.replace``, inherits the
    loaded file's checksum there). Equals the file's checksum for a loaded model."""
    return model_meta(model)["checksum"]


def default_observations(model: Model, steps: int = DEFAULT_STEPS) -> np.ndarray:
    """A deterministic, smooth observation sequence ``(steps, n_in)`` (float, observation units).

    Each input follows a slow sinusoid with its own phase, spanning a quarter of the input
    format's range (before ``input_scale``), like consecutive observations of a control task.
    """
    cfg = model.config
    n = cfg.n_in
    t = np.arange(steps, dtype=np.float64)[:, None]
    phase = np.arange(n, dtype=np.float64)[None, :]
    amp = 0.25 * cfg.input_fmt.max_value / np.asarray(cfg.input_scale)[None, :]
    return np.asarray(cfg.input_offset)[None, :] + amp * np.sin(0.15 * t + 1.3 * phase)


def design_info(top: DeltanetTop) -> dict:
    """The JSON description of ``top`` (see the module docstring)."""
    model, cfg = top.model, top.model.config
    plan = top.plan
    ports = {name: {"direction": d, "width": w} for name, (d, w) in top.port_widths().items()}
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "toplevel": TOPLEVEL,
        "verilog": f"{TOPLEVEL}.v",
        "lanes": top.lanes,
        "n_layers": top.n_layers,
        "n_in": cfg.n_in,
        "n_out": cfg.n_out,
        "in_width": top.in_width,
        "out_width": top.out_width,
        "action_width": top.action_width,
        "thr_width": top.thr_width,
        "counter_width": 32,
        "network": cfg.to_dict(),
        "env_id": model.meta.get("env_id"),
        "model_checksum": model_checksum(model),
        "thresholds_raw": [cfg.threshold_raw(i) for i in range(top.n_layers)],
        "ports": ports,
        "clock": "clk (rising edge)",
        "reset": "rst (synchronous, active high)",
        "cycle_model": {
            "layer_overhead": cycle_model.LAYER_OVERHEAD,
            "step_overhead": cycle_model.STEP_OVERHEAD,
            "formula": "cycles = step_overhead + sum_l (layer_overhead + "
                       "sum_{j in events_l} maxlen_l[j])",
            "counting": "clock edges from the edge that samples start (ready & start) to the "
                        "edge that samples done high; done is high for one cycle, ready is "
                        "high in the done cycle",
        },
        "memories": {
            "weight_lanes": top.lanes,
            "weight_depth": plan.depth,
            "weight_word_width": plan.word_width,
            "weight_width": top.plan.weight_width,
            "row_width": plan.row_width,
            "column_table_depth": plan.n_columns,
        },
        "product_width": top.product_width,
    }


def _report(top: DeltanetTop, info: dict, observations, source: str) -> str:
    model, cfg = top.model, top.model.config
    plan, L = top.plan, top.lanes
    net = DeltaNetwork(model)
    cm = CycleModel(model, L)
    cyc, ideal, busy, sig, ev = [], [], [], [], []
    for obs in np.asarray(observations, dtype=np.float64):
        net.step(net.quantize_obs(obs[None]))
        cyc.append(int(cm.step_cycles(net.last_events)[0]))
        busy.append(int(cm.busy_cycles(net.last_events)[0]))
        s = net.last_counts["significant"][:, 0]
        sig.append(s.copy())
        ev.append(net.last_counts["events"][:, 0].copy())
        ideal.append(int(cm.ideal_cycles(s[:, None])[0]))
    cyc, busy, ideal = np.array(cyc), np.array(busy), np.array(ideal)
    sig, ev = np.array(sig), np.array(ev)
    nnz = sum(int((w != 0).sum()) for w in model.w_raw)
    lines = [
        f"# deltanet_top: {info['env_id'] or 'model'} on {L} lane(s)",
        "",
        f"Model checksum `{info['model_checksum']}`; {top.n_layers} dense layers "
        + " -> ".join([str(cfg.n_in)] + [str(ly.n_out) for ly in cfg.layers]) + ".",
        "",
        "## Layers",
        "",
        ("| layer | n_in x n_out | in fmt | weight fmt | acc bits | out fmt | act | "
        "threshold (raw) | non-zero weights |"),
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, ly in enumerate(cfg.layers):
        lines.append(f"| {i} | {ly.n_in} x {ly.n_out} | {cfg.in_fmt(i)} | {ly.weight_fmt} | "
                     f"{ly.acc_bits} | {ly.out_fmt} | {ly.activation} | "
                     f"{cfg.threshold_raw(i)} | {int((model.w_raw[i] != 0).sum())} |")
    lines += ["", "## Ports", "", "| port | direction | width |", "|---|---|---|",
              "| clk | input | 1 |", "| rst | input | 1 |"]
    for name, p in info["ports"].items():
        lines.append(f"| {name} | {p['direction']} | {p['width']} |")
    word_bits = L * plan.depth * plan.word_width
    lines += [
        "", "## Memories", "",
        "| memory | count | depth x width | bits |", "|---|---|---|---|",
        f"| weight memory (per lane) | {L} | {plan.depth} x {plan.word_width} | {word_bits} |",
        (f"| column table (ROM: start, length, nnz) | 1 | {plan.n_columns} x "
        f"{plan.table_width} | {plan.n_columns * plan.table_width} |"),
        "",
        (f"Weight storage: {word_bits} bits in the lane memories ({plan.word_width}-bit words: "
        f"valid + {plan.row_width}-bit local row + {plan.weight_width}-bit weight) for {nnz} "
        f"non-zero weights ({nnz * plan.weight_width} bits of weight payload); "
        f"{L * plan.depth - nnz} of {L * plan.depth} words are padding."),
        "",
        ("Registers: pre-activations "
        f"{sum(ly.n_out * ly.acc_bits for ly in cfg.layers)} bits, x_hat "
        f"{sum(ly.n_in * cfg.in_fmt(i).width for i, ly in enumerate(cfg.layers))} bits, "
        f"activations {sum(ly.n_out * ly.out_fmt.width for ly in cfg.layers)} bits. "
        f"Multipliers: {L} ({info['product_width']}-bit products)."),
        "",
        "## Cycles per step (pysim cycle model)",
        "",
        (f"`{info['cycle_model']['formula']}` with layer_overhead = "
        f"{info['cycle_model']['layer_overhead']}, step_overhead = "
        f"{info['cycle_model']['step_overhead']}; counted as "
        f"{info['cycle_model']['counting']}."),
        "",
        f"On {len(cyc)} steps of {source}:",
        "",
        "| figure | mean | min | max |", "|---|---|---|---|",
        f"| cycles/step | {cyc.mean():.1f} | {cyc.min()} | {cyc.max()} |",
        f"| MAC issue cycles/step | {busy.mean():.1f} | {busy.min()} | {busy.max()} |",
        (f"| ideal ceil(significant/L)/step | {ideal.mean():.1f} | {ideal.min()} | "
        f"{ideal.max()} |"),
        (f"| significant MACs/step | {sig.sum(1).mean():.1f} | {sig.sum(1).min()} | "
        f"{sig.sum(1).max()} |"),
    ]
    for i in range(top.n_layers):
        lines.append(f"| layer {i} events/step | {ev[:, i].mean():.1f} | {ev[:, i].min()} | "
                     f"{ev[:, i].max()} |")
    util = sig.sum() / (L * busy.sum()) if busy.sum() else float("nan")
    lines += [
        "",
        (f"Dense schedule on the same lanes: {cm.dense_cycles()} cycles/step; "
        f"MAC-lane utilisation over the issue cycles: {util:.1%}."),
        "",
    ]
    return "\n".join(lines)


def generate(model: Model, lanes: int, out_dir, observations=None) -> dict:
    """Write the design files for ``model`` on ``lanes`` lanes into ``out_dir``.

    ``observations``: optional ``(steps, n_in)`` float observations (e.g. recorded from an
    episode) for the report's cycle figures; default :func:`default_observations`.
    Returns ``{"verilog": path, "json": path, "report": path}``.
    """
    if not isinstance(model, Model):
        raise TypeError(f"generate: model must be a pysim Model, got {type(model).__name__}")
    top = DeltanetTop(model=model, lanes=lanes)
    out_dir = Path(out_dir)
    if observations is None:
        observations, source = default_observations(model), "a deterministic smooth sequence"
    else:
        observations = np.asarray(observations, dtype=np.float64)
        if observations.ndim != 2 or observations.shape[1] != model.config.n_in \
                or len(observations) < 1:
            raise ValueError(f"generate: observations must have shape (steps >= 1, "
                             f"{model.config.n_in}), got {observations.shape}")
        source = "recorded observations"
    info = design_info(top)
    text = verilog.convert(top, name=TOPLEVEL, emit_src=False)
    paths = {
        "verilog": write_text_atomic(out_dir / f"{TOPLEVEL}.v", text),
        "json": write_text_atomic(out_dir / f"{TOPLEVEL}.json",
                              json.dumps(info, indent=2, sort_keys=True) + "\n"),
        "report": write_text_atomic(out_dir / "report.md",
                                _report(top, info, observations, source)),
    }
    return paths
