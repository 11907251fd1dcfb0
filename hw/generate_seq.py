"""Verilog, design JSON and report for the sequential delta core (:class:`hw.seqtop.DeltaSeqTop`).

``generate_seq(model, lanes, out_dir, obs_words=8)`` writes

* ``deltanet_seq.v`` - ``amaranth.back.verilog.convert(top, name="deltanet_seq",
  emit_src=False)``;
* ``deltanet_seq.json`` - what a testbench needs: network config, lanes, obs_words, ports
  (direction, width), model checksum, reset thresholds, per-layer geometry, the cycle-model
  constants and formula, the memories;
* ``report.md`` - the memory budget per layer (words x bits of every memory, kbit, an estimate
  of ECP5 EBR blocks) against the on-chip block RAM of an ECP5-25k and an ECP5-85k, and the
  cycles per step predicted by ``pysim.seqcycles`` on a short deterministic observation sequence.

Files are written atomically and hold no time stamps or absolute paths (repeatable bytes).
:func:`memory_budget` needs no elaboration, so it also sizes models too large to emit quickly.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from amaranth.back import verilog

from pysim import DeltaNetwork
from pysim import seqcycles as sc
from pysim.atomic import write_text_atomic
from pysim.model import Model

from .generate import default_observations, model_checksum
from .seqtop import DeltaSeqTop

__all__ = ["ECP5_DEVICES", "TOPLEVEL", "design_info", "ebr_blocks", "generate_seq",
           "memory_budget", "split_memory_init"]

TOPLEVEL = "deltanet_seq"
SCHEMA = "deltanet-seq-design"
SCHEMA_VERSION = 1
DEFAULT_STEPS = 16
KBIT = 1024
#: ECP5 DP16KD/PDPW16KD aspect ratios (depth, width) of one 18-kbit EBR block
EBR_CONFIGS = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))
#: device -> (EBR blocks, kbit of EBR)
ECP5_DEVICES = {"ECP5-25k (LFE5U-25F)": (56, 1008), "ECP5-85k (LFE5U-85F)": (208, 3744)}

FORMULA = ("cycles = STEP_OVERHEAD + sum_l [SCAN_OVERHEAD + n_in_l + MAC_OVERHEAD + "
           "sum_{i in events_l} cost_l[i]] + FINAL_OVERHEAD + n_out + "
           "first * sum_l (INIT_OVERHEAD + depth_l); cost_l[i] = active(c) * sum over the "
           "kernel positions of input i that land on the output grid of max(1, len[col]); "
           "depth_l = ceil(O/L)*OH*OW")


def ebr_blocks(depth: int, width: int) -> int:
    """18-kbit ECP5 EBR blocks for a ``depth x width`` memory (best aspect ratio, no packing
    of several memories into one block)."""
    return min(-(-depth // d) * -(-width // w) for d, w in EBR_CONFIGS)


def memory_budget(top: DeltaSeqTop) -> list:
    """Rows ``{layer, memory, count, depth, width, bits, ebr}`` for every memory of ``top``
    (``layer`` is ``None`` for the shared observation memory and event buffer)."""
    rows = []

    def add(layer, name, count, depth, width):
        rows.append({"layer": layer, "memory": name, "count": count, "depth": depth,
                     "width": width, "bits": count * depth * width,
                     "ebr": count * ebr_blocks(depth, width)})

    cfg, L = top.model.config, top.lanes
    add(None, "observation", 1, top.obs_depth, top.obs_words * top.in_width)
    add(None, "event buffer", 1, top.event_depth, top.event_layout.size)
    for i, (g, p) in enumerate(zip(top.geometries, top.plans)):
        add(i, "x_hat", 1, g.n_in, cfg.in_fmt(i).width)
        add(i, "accumulators (per lane)", L, p.acc_depth, p.acc_bits)
        add(i, "weights (per lane)", L, p.weight_depth, p.word_width)
        add(i, "column table", 1, g.n_cols, p.ctab_width)
        add(i, "bias ROM", 1, p.rows, L * p.acc_bits)
        add(i, "channel mask", 1, g.C, 1)
    return rows


def design_info(top: DeltaSeqTop) -> dict:
    model, cfg = top.model, top.model.config
    ports = {name: {"direction": d, "width": w} for name, (d, w) in top.port_widths().items()}
    budget = memory_budget(top)
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "toplevel": TOPLEVEL,
        "verilog": f"{TOPLEVEL}.v",
        "lanes": top.lanes,
        "obs_words": top.obs_words,
        "n_layers": top.n_layers,
        "n_in": cfg.n_in,
        "n_out": cfg.n_out,
        "in_width": top.in_width,
        "out_width": top.out_width,
        "action_width": top.action_width,
        "obs_depth": top.obs_depth,
        "thr_width": top.thr_width,
        "counter_width": 32,
        "network": cfg.to_dict(),
        "env_id": model.meta.get("env_id"),
        "model_checksum": model_checksum(model),
        "thresholds_raw": [cfg.threshold_raw(i) for i in range(top.n_layers)],
        "geometry": [
            {**g.to_dict(), "kind": ly.kind, "acc_depth": p.acc_depth,
             "weight_depth": p.weight_depth, "nonzero_weights": p.nnz}
            for g, p, ly in zip(top.geometries, top.plans, cfg.layers)],
        "ports": ports,
        "clock": "clk (rising edge)",
        "reset": "rst (synchronous, active high; memories keep their contents, the first step "
                 "after rst is a full pass that rewrites them)",
        "cycle_model": {
            "step_overhead": sc.STEP_OVERHEAD,
            "scan_overhead": sc.SCAN_OVERHEAD,
            "mac_overhead": sc.MAC_OVERHEAD,
            "init_overhead": sc.INIT_OVERHEAD,
            "final_overhead": sc.FINAL_OVERHEAD,
            "formula": FORMULA,
            "counting": "clock edges from the edge that samples start (ready & start) to the "
                        "edge that samples done high; done is high for one cycle, ready is "
                        "high in the done cycle",
        },
        "memories": budget,
        "memory_bits": int(sum(r["bits"] for r in budget)),
    }


def _kbit(bits: int) -> str:
    return f"{bits / KBIT:.1f}"


def _report(top: DeltaSeqTop, info: dict, observations, source: str) -> str:
    model, cfg, L = top.model, top.model.config, top.lanes
    lines = [
        f"# {TOPLEVEL}: {info['env_id'] or 'model'} on {L} lane(s), obs_words={top.obs_words}",
        "",
        (f"Model checksum `{info['model_checksum']}`; {top.n_layers} layers, {cfg.n_in} "
         f"inputs -> {cfg.n_out} outputs (argmax)."),
        "",
        "## Layers (each as a convolution; dense = 1x1 conv on a 1x1 image)",
        "",
        ("| layer | kind | C x H x W | O x OH x OW | K / S / P | in fmt | weight fmt | acc bits "
         "| out fmt | act | threshold (raw) | non-zero weights |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, (ly, g, p) in enumerate(zip(cfg.layers, top.geometries, top.plans)):
        lines.append(f"| {i} | {ly.kind} | {g.C} x {g.H} x {g.W} | {g.O} x {g.OH} x {g.OW} | "
                     f"{g.K} / {g.S} / {g.P} | {cfg.in_fmt(i)} | {ly.weight_fmt} | "
                     f"{ly.acc_bits} | {ly.out_fmt} | {ly.activation} | "
                     f"{cfg.threshold_raw(i)} | {p.nnz} |")
    budget = info["memories"]
    lines += ["", "## Memory budget", "",
              "| layer | memory | count x words x bits | kbit | EBR blocks (est.) |",
              "|---|---|---|---|---|"]
    for r in budget:
        lay = "shared" if r["layer"] is None else str(r["layer"])
        lines.append(f"| {lay} | {r['memory']} | {r['count']} x {r['depth']} x {r['width']} | "
                     f"{_kbit(r['bits'])} | {r['ebr']} |")
    lines += ["", "| layer | kbit | EBR blocks (est.) |", "|---|---|---|"]
    for i in [None] + list(range(top.n_layers)):
        sel = [r for r in budget if r["layer"] == i]
        lines.append(f"| {'shared' if i is None else i} | "
                     f"{_kbit(sum(r['bits'] for r in sel))} | {sum(r['ebr'] for r in sel)} |")
    total_bits = sum(r["bits"] for r in budget)
    total_ebr = sum(r["ebr"] for r in budget)
    lines += [f"| **total** | **{_kbit(total_bits)}** | **{total_ebr}** |", ""]
    for dev, (blocks, kbit) in ECP5_DEVICES.items():
        fits_bits = total_bits <= kbit * KBIT
        fits_blocks = total_ebr <= blocks
        verdict = ("fits on-chip" if fits_bits and fits_blocks else
                   "does not fit on-chip" if not fits_bits else
                   "fits by bits but not by whole EBR blocks (small memories would go to "
                   "distributed RAM/LUTs)")
        lines.append(f"* {dev}: {kbit} kbit EBR in {blocks} blocks: {_kbit(total_bits)} kbit "
                     f"({total_bits / (kbit * KBIT):.0%}), {total_ebr} blocks estimated: "
                     f"**{verdict}**.")
    lines += ["",
              ("EBR estimate: each memory on its own blocks with the best 18-kbit aspect "
               "ratio (16384x1 ... 512x36); small ROMs (column tables, bias, channel mask) can "
               "live in LUTs instead. The accumulator read ports are synchronous and "
               "transparent (read-during-write returns the new word)."), ""]

    net = DeltaNetwork(model)
    cm = sc.SeqCycleModel(model, L)
    cyc, busy, sig, ideal = [], [], [], []
    for obs in np.asarray(observations, dtype=np.float64):
        first = net.steps == 0
        net.step(net.quantize_obs(obs[None]))
        cyc.append(int(cm.step_cycles(net.last_events, first)[0]))
        busy.append(int(cm.busy_cycles(net.last_events)[0]))
        s = net.last_counts["significant"][:, 0]
        sig.append(int(s.sum()))
        ideal.append(int(cm.ideal_cycles(s[:, None])[0]))
    cyc, busy, sig, ideal = map(np.array, (cyc, busy, sig, ideal))
    lines += [
        "## Cycles per step (pysim.seqcycles)", "",
        (f"`{FORMULA}` with STEP_OVERHEAD = {sc.STEP_OVERHEAD}, SCAN_OVERHEAD = "
         f"{sc.SCAN_OVERHEAD}, MAC_OVERHEAD = {sc.MAC_OVERHEAD}, INIT_OVERHEAD = "
         f"{sc.INIT_OVERHEAD}, FINAL_OVERHEAD = {sc.FINAL_OVERHEAD}."), "",
        (f"Fixed part (scans, overheads) {cm.fixed_cycles()} cycles; first-step bias "
         f"initialisation {cm.init_cycles()} cycles; dense schedule on the same lanes "
         f"{cm.dense_cycles()} cycles/step."), "",
        f"On {len(cyc)} steps of {source} (step 0 is the full pass):", "",
        "| figure | first step | later mean | later min | later max |", "|---|---|---|---|---|",
    ]
    for name, v in (("cycles/step", cyc), ("MAC issue cycles/step", busy),
                    ("ideal ceil(significant/L)/step", ideal), ("significant MACs/step", sig)):
        rest = v[1:] if len(v) > 1 else v
        lines.append(f"| {name} | {v[0]} | {rest.mean():.1f} | {rest.min()} | {rest.max()} |")
    lines.append("")
    return "\n".join(lines)


_MEM_DECL = re.compile(r"  reg \[(\d+):0\] ([A-Za-z_][A-Za-z0-9_]*) \[(\d+):0\];")
_MODULE = re.compile(r"module \\?([^\s(]+)")
_MEM_WORD = re.compile(r"    ([A-Za-z_][A-Za-z0-9_]*)\[(\d+)\] = (\d+)'h([0-9a-f]+);")


def split_memory_init(text: str, prefix: str = TOPLEVEL) -> tuple:
    """Move every memory's ``initial`` block out of the Verilog into a ``$readmemh`` file.

    Yosys writes a memory's initial contents as one assignment per word
    (``initial begin m[0] = 26'h3ffffbc; ... end``): for a Nature-DQN that is ~10**5 lines,
    which Verilator turns into tens of MB of C++ to compile. Each such block whose words are
    exactly addresses ``0..depth-1`` in order becomes ``initial $readmemh("<file>", m, 0,
    depth-1);`` and the file holds the same words, one per line in address order (the
    memory's contents at time 0 are the same; blocks of any other shape are kept as they are).
    The file is ``<module>_<m>.hex`` with the Verilog module's name (``\\top.lane0`` ->
    ``top_lane0``; prefixed by ``<prefix>_`` unless it starts with it), so memories of the same
    name in several modules (one per lane) get files of their own.
    The simulator reads the files from its working directory.
    Returns ``(verilog, {file name: file text})``.
    """
    lines = text.split("\n")
    out, files = [], {}
    module = prefix
    i = 0
    while i < len(lines):
        mod = _MODULE.match(lines[i])
        if mod is not None:
            module = re.sub(r"[^A-Za-z0-9_]", "_", mod.group(1))
            if not module.startswith(prefix):
                module = f"{prefix}_{module}"
        m = _MEM_DECL.fullmatch(lines[i])
        if m is None or i + 1 >= len(lines) or lines[i + 1] != "  initial begin":
            out.append(lines[i])
            i += 1
            continue
        width, name, depth = int(m.group(1)) + 1, m.group(2), int(m.group(3)) + 1
        words, j = [], i + 2
        while j < len(lines) and len(words) < depth:
            w = _MEM_WORD.fullmatch(lines[j])
            if w is None or w.group(1) != name or int(w.group(2)) != len(words) \
                    or int(w.group(3)) != width:
                break
            words.append(w.group(4))
            j += 1
        if len(words) != depth or j >= len(lines) or lines[j] != "  end":
            out.append(lines[i])  # not the shape this rewrite knows: leave it alone
            i += 1
            continue
        digits = -(-width // 4)
        fname = f"{module}_{name}.hex"
        if fname in files:
            raise ValueError(f"split_memory_init: two memories map to {fname}")
        files[fname] = "".join(v.rjust(digits, "0") + "\n" for v in words)
        out += [lines[i], f'  initial $readmemh("{fname}", {name}, 0, {depth - 1});']
        i = j + 1
    return "\n".join(out), files


def generate_seq(model: Model, lanes: int, out_dir, obs_words: int = 8,
                 observations=None, memory_files: bool = False) -> dict:
    """Write ``deltanet_seq.v``, ``deltanet_seq.json`` and ``report.md`` into ``out_dir``.

    ``memory_files``: memory contents in ``deltanet_seq_<memory>.hex`` files read by
    ``$readmemh`` (see :func:`split_memory_init`; the JSON lists them under
    ``memory_init_files``) instead of inline ``initial`` blocks: the same design, a much smaller
    Verilog and a much faster Verilator build.

    Returns ``{"verilog": path, "json": path, "report": path}``.
    """
    if not isinstance(model, Model):
        raise TypeError(f"generate_seq: model must be a pysim Model, got "
                        f"{type(model).__name__}")
    top = DeltaSeqTop(model, lanes=lanes, obs_words=obs_words)
    if observations is None:
        observations = default_observations(model, DEFAULT_STEPS)
        source = "a deterministic smooth sequence"
    else:
        observations = np.asarray(observations, dtype=np.float64)
        if observations.ndim != 2 or observations.shape[1] != model.config.n_in \
                or len(observations) < 1:
            raise ValueError(f"generate_seq: observations must have shape (steps >= 1, "
                             f"{model.config.n_in}), got {observations.shape}")
        source = "recorded observations"
    info = design_info(top)
    text = verilog.convert(top, name=TOPLEVEL, emit_src=False)
    out_dir = Path(out_dir)
    if memory_files:
        text, files = split_memory_init(text)
        info["memory_init_files"] = sorted(files)
        for name, body in files.items():
            write_text_atomic(out_dir / name, body)
    return {
        "verilog": write_text_atomic(out_dir / f"{TOPLEVEL}.v", text),
        "json": write_text_atomic(out_dir / f"{TOPLEVEL}.json",
                                  json.dumps(info, indent=2, sort_keys=True) + "\n"),
        "report": write_text_atomic(out_dir / "report.md",
                                    _report(top, info, observations, source)),
    }
