"""Verilog, design JSON and report for the event-driven core (:class:`hw.core.DeltaCore`),
bare or behind its UART host link (:class:`hw.hostlink.HostLink`).

``generate_core(model, lanes, out_dir, obs_words=None)`` generates the bare core;
``generate(top, out_dir)`` generates either a ``DeltaCore`` or a ``HostLink`` built by the
caller (this module is below :mod:`hw.hostlink`, which reads :func:`design_fields`, so it
takes the link as built rather than building it). The bare core writes

* ``deltanet_core.v`` - ``amaranth.back.verilog.convert(top, name="deltanet_core",
  emit_src=False)`` after a comment header (model checksum, env, lanes, obs_words, formats, the
  port contract in brief); with ``memory_files=True`` every memory's contents go to
  ``deltanet_core_<module>_<memory>.hex`` files read by ``$readmemh``
  (:func:`split_memory_init`), so designs that differ only in memory contents
  (weights, biases) share a simulator build;
* ``deltanet_core.json`` - everything a bench needs: the fields of
  :class:`sim.driver.CoreDesign` (``n_layers``, ``n_in``, ``n_out``, ``in_width``,
  ``out_width``, ``obs_words``, ``obs_addr_width``, ``lanes``), the network config, model
  checksum, ports (direction, width), the thresholds (raw codes and register reset values), the
  cycle-model constants of :mod:`pysim.corecycles`, the plan's sizes
  (:class:`pysim.coreplan.CorePlan`) and every memory of the elaborated design;
* ``report.md`` - layers, ports, memories and the cycles per step that
  :class:`pysim.corecycles.CoreCycleModel` predicts on a short deterministic observation
  sequence (or on recorded observations).

The link writes the same files named ``deltanet_link.*`` (:data:`LINK_TOPLEVEL`): its Verilog
module has the ports ``clk``, ``rst``, ``rx`` and ``tx``; its JSON is the core's (the
:class:`sim.driver.CoreDesign` fields, plan, thresholds, cycle model, memories) with the
link's ``toplevel``, ``verilog``, ``ports`` and ``port_contract``, plus ``link``: the UART
divisor (clock cycles per bit, 8N1), the protocol version and the model id its STATUS reports
(:mod:`hw.protocol`), and ``core_ports`` (the core's ports inside it).

Every file is written atomically and holds no time stamps or absolute paths: two runs give
identical bytes.
"""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path

import amaranth
import numpy as np
from amaranth.back import verilog
from amaranth.hdl import Fragment, Shape
from amaranth.lib import memory

from ..pysim import DeltaNetwork
from ..pysim import corecycles as cc
from ..pysim.artifact import model_meta
from ..pysim.atomic import write_text_atomic
from ..pysim.model import Model
from .control import COUNTER_WIDTH
from .core import DeltaCore
from .protocol import PROTOCOL_VERSION
from .shapes import obs_layout

__all__ = ["DEFAULT_STEPS", "LINK_TOPLEVEL", "TOPLEVEL", "design_fields", "design_info",
           "generate", "generate_core", "link_info", "memories", "verilog_header"]

TOPLEVEL = "deltanet_core"
#: the module name of the core behind its UART host link
LINK_TOPLEVEL = "deltanet_link"
SCHEMA = "deltanet-core-design"
SCHEMA_VERSION = 1
DEFAULT_STEPS = 32
_MEM_DECL = re.compile(r"  reg \[(\d+):0\] ([A-Za-z_][A-Za-z0-9_]*) \[(\d+):0\];")
_MODULE = re.compile(r"module \\?([^\s(]+)")
_MEM_WORD = re.compile(r"    ([A-Za-z_][A-Za-z0-9_]*)\[(\d+)\] = (\d+)'h([0-9a-f]+);")


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



#: the port contract in brief (the full text: :mod:`hw.core`'s docstring)
PORT_CONTRACT = (
    ("obs (obs__valid/obs__ready/obs__payload = addr | data << obs_addr_width): an observation "
    "word of obs_words raw input codes (code p in bits [p*in_width, (p+1)*in_width) of data, "
    "input addr*obs_words + p); accepted while ready and not start; write the words that "
    "changed (or all), each at most once per step, in ascending order; every word after an "
    "episode start or a layer-0 threshold write."),
    "first: hold high from the step's first write to its start at an episode start.",
    ("start: the step starts at an edge where ready & start; done: high for one cycle, in cycle "
    "`cycles` after the start edge; ready is high in the done cycle."),
    ("out: n_out raw output codes (output o in bits [o*out_width, (o+1)*out_width)); decoding "
    "(argmax, clip, tanh) stays on the host."),
    ("cycles, events_l, macs_l: the last step's cycles, events and significant multiplications "
    "of layer l (valid from done to the next done)."),
    ("thr_we/thr_sel/thr_data: write a threshold register (raw code, unsigned) while ready; the "
    "next step examines every neuron."),
    "clk: rising edge; rst: synchronous, active high.",
)

FORMULA = ("cycles = the schedule of pysim.corecycles.CoreCycleModel: S_0 = 1 + first * "
           "sum_l rows_l (bias init); per layer l, groups (observation words with work, then "
           "examination rounds) issue one weight-column word per cycle from max(available, "
           "previous issue end); the MAC ends at f_l = max(S_l, D_l, last issue end); "
           "examination rounds (changed neurons, or every row at first/rescan) run one per "
           "cycle from x_l = f_l + 1, a round's group available to layer l+1 after "
           "EXAM_LATENCY + QUEUE_LATENCY; S_{l+1} = x_l; D_{l+1} = x_l + R_l + EXAM_LATENCY "
           "(x_l + 1 if R_l = 0); cycles = x_{N-1} + R_{N-1} + OUT_LATENCY (x_{N-1} + 2 if "
           "R_{N-1} = 0); latency of a step = observation writes + cycles")


#: the link's ports in brief (the full text: :mod:`hw.hostlink`'s docstring)
LINK_PORT_CONTRACT = (
    ("rx: the UART's receive pin (from the host), tx: its transmit pin (to the host); 8N1 at "
     "`link.divisor` clock cycles per bit, both idle high."),
    ("frames, commands and the FIRST flag: hw/protocol.py; one response per request, the host "
     "sends the next request after it."),
    "clk: rising edge; rst: synchronous, active high.",
)


def memories(top: DeltaCore) -> list:
    """Every memory of the elaborated ``top``: rows ``{name, depth, width, bits, ram_style}``
    (``name``: the submodule path, e.g. ``lane0.weights``), in elaboration order."""
    rows = []

    def walk(frag, path):
        for sub, name, _ in frag.subfragments:
            p = path + (str(name),)
            mem = [o for o in (getattr(sub, "origins", None) or ())
                   if isinstance(o, memory.Memory)]
            if mem:
                m = mem[0]
                width = Shape.cast(m.shape).width
                rows.append({"name": ".".join(p), "depth": int(m.depth), "width": width,
                             "bits": int(m.depth) * width,
                             "ram_style": dict(m.attrs).get("ram_style", "auto")})
            walk(sub, p)

    walk(Fragment.get(top, None), ())
    return rows


def tool_versions() -> dict:
    """The versions of deltanet and Amaranth that generate the design (for its header)."""
    try:
        own = metadata.version("deltanet")
    except metadata.PackageNotFoundError:  # a source tree that is not installed
        own = "unknown"
    return {"deltanet": own, "amaranth": amaranth.__version__}


def design_fields(top: DeltaCore) -> dict:
    """What the host's step driver needs (the fields of :class:`sim.driver.CoreDesign`);
    no elaboration."""
    cfg = top.model.config
    return {
        "n_layers": top.n_layers,
        "n_in": cfg.n_in,
        "n_out": cfg.n_out,
        "in_width": cfg.input_fmt.width,
        "out_width": cfg.output_fmt.width,
        "obs_words": top.obs_words,
        "obs_addr_width": Shape.cast(obs_layout(top.plan)["addr"].shape).width,
        "lanes": top.lanes,
        "thr_width": top.port_widths()["thr_data"][1],
    }


def design_info(top: DeltaCore) -> dict:
    """The JSON description of ``top`` (see the module docstring)."""
    model, cfg, plan = top.model, top.model.config, top.plan
    ports = {name: {"direction": d, "width": w} for name, (d, w) in top.port_widths().items()}
    mems = memories(top)
    N = top.n_layers
    constants = {n.lower(): getattr(cc, n) for n in cc.__all__ if n.isupper()}
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "tool_versions": tool_versions(),
        "toplevel": TOPLEVEL,
        "verilog": f"{TOPLEVEL}.v",
        **design_fields(top),
        "obs_depth": plan.obs_depth,
        "counter_width": COUNTER_WIDTH,
        "network": cfg.to_dict(),
        "decoder": cfg.decoder.kind,
        "env_id": model.meta.get("env_id"),
        "model_checksum": model_checksum(model),
        "thresholds_raw": [cfg.threshold_raw(i) for i in range(N)],
        "threshold_reset": [top.threshold_reset(i) for i in range(N)],
        "ports": ports,
        "port_contract": list(PORT_CONTRACT),
        "clock": "clk (rising edge)",
        "reset": "rst (synchronous, active high; the first step after rst is an episode start)",
        "cycle_model": {
            **constants,
            "init_steps": plan.init_steps,
            "formula": FORMULA,
            "counting": "clock edges from the edge that samples start (ready & start) to the "
                        "edge after which done is high; done is high for one cycle, ready is "
                        "high in the done cycle (back-to-back steps take cycles each)",
        },
        "plan": {
            "rows": list(plan.rows),
            "acc_base": list(plan.acc_base),
            "bank_depth": list(plan.bank_depth),
            "acc_width": plan.acc_width,
            "weight_width": plan.weight_width,
            "weight_depth": plan.weight_depth,
            "word_width": plan.word_width,
            "x_depth": plan.x_depth,
            "x_width": plan.x_width,
            "start_width": plan.start_width,
            "len_width": plan.len_width,
            "key_width": plan.key_width,
            "ctab_depth": plan.ctab_depth,
            "geometry": [{k: getattr(g, k) for k in ("C", "H", "W", "O", "K", "S", "P", "OH",
                                                       "OW")} for g in plan.geometry],
            "queue_depth": plan.queue_depth,
            "group_slots": plan.group_slots,
            "init_steps": plan.init_steps,
            "nonzero_weights": [int((w != 0).sum()) for w in model.w_raw],
        },
        "memories": mems,
        "memory_bits": int(sum(r["bits"] for r in mems)),
    }


def link_info(link) -> dict:
    """The JSON description of a :class:`hw.hostlink.HostLink` (``link``): its core's
    (:func:`design_info`) with the link's top level, ports and contract, and ``link`` (see the
    module docstring)."""
    info = design_info(link.core)
    info.update({
        "toplevel": LINK_TOPLEVEL,
        "verilog": f"{LINK_TOPLEVEL}.v",
        "core_ports": info["ports"],
        "ports": {"rx": {"direction": "input", "width": 1},
                  "tx": {"direction": "output", "width": 1}},
        "port_contract": list(LINK_PORT_CONTRACT),
        "link": {"divisor": link.divisor, "protocol_version": PROTOCOL_VERSION,
                 "model_id": link.model_id, "uart": "8N1"},
    })
    return info


def _layer_text(ly: dict) -> str:
    if ly["kind"] == "conv2d":
        return (f"conv2d {ly['out_ch']}@{ly['kernel']}x{ly['kernel']}/{ly['stride']}"
                f"p{ly['padding']}")
    return f"dense {ly['n_out']}"


def verilog_header(info: dict) -> str:
    """The comment block above the generated module (no time stamps)."""
    net = info["network"]
    layers = net["layers"]
    link = info.get("link")
    what = (f"the event-driven delta core behind its UART host link (hw.hostlink.HostLink, "
            f"divisor {link['divisor']}, protocol version {link['protocol_version']}, model id "
            f"0x{link['model_id']:08x})" if link else "event-driven delta core (hw.core.DeltaCore)")
    lines = [
        (f"{info['toplevel']}: {what}, generated by "
        f"hw.generate_core (deltanet {info['tool_versions']['deltanet']}, Amaranth "
        f"{info['tool_versions']['amaranth']}); do not edit."),
        f"model checksum {info['model_checksum']}, env {info['env_id'] or '-'}",
        f"lanes {info['lanes']}, obs_words {info['obs_words']}, {info['n_layers']} layers: "
        + " -> ".join([str(info["n_in"])] + [_layer_text(ly) for ly in layers]),
        (f"input format {net['input_fmt']}, output format {layers[-1]['out_fmt']} (decoder "
        f"{info['decoder']}, on the host)"),
    ]
    for i, ly in enumerate(layers):
        lines.append(f"layer {i}: weights {ly['weight_fmt']}, accumulator {ly['acc_bits']} "
                     f"bits, out {ly['out_fmt']}, {ly['activation']}, threshold raw "
                     f"{info['thresholds_raw'][i]}")
    lines.append(f"ports (see {'hw/hostlink.py' if link else 'hw/core.py'}):")
    lines += [f"  {p}" for p in info["port_contract"]]
    out = []
    for line in lines:
        out.append(f"// {line}".rstrip())
    return "\n".join(out) + "\n"


def _check_observations(model: Model, observations):
    if observations is None:
        return default_observations(model, DEFAULT_STEPS), "a deterministic smooth sequence"
    obs = np.asarray(observations, dtype=np.float64)
    if obs.ndim != 2 or obs.shape[1] != model.config.n_in or len(obs) < 1:
        raise ValueError(f"generate_core: observations must have shape (steps >= 1, "
                         f"{model.config.n_in}), got {obs.shape}")
    return obs, "recorded observations"


def _changed_words(prev, x, P: int) -> int:
    """Observation words whose codes differ (every word when ``prev`` is None)."""
    n = -(-x.size // P) * P
    a = np.zeros(n, dtype=np.int64)
    a[:x.size] = x
    if prev is None:
        return n // P
    b = np.zeros(n, dtype=np.int64)
    b[:prev.size] = prev
    return int((a.reshape(-1, P) != b.reshape(-1, P)).any(axis=1).sum())


def _report(top: DeltaCore, info: dict, observations, source: str) -> str:
    model, cfg, plan, L = top.model, top.model.config, top.plan, top.lanes
    lines = [
        f"# {info['toplevel']}: {info['env_id'] or 'model'} on {L} lane(s), "
        f"obs_words={top.obs_words}",
        "",
        f"Model checksum `{info['model_checksum']}`; {top.n_layers} dense layers "
        + " -> ".join([str(cfg.n_in)] + [str(ly.n_out) for ly in cfg.layers])
        + f"; outputs decoded on the host ({cfg.decoder.kind}).",
        "",
    ]
    link = info.get("link")
    if link:
        lines += [(f"The core behind its UART host link: {link['uart']} at {link['divisor']} "
                   f"clock cycles per bit, protocol version {link['protocol_version']}, model "
                   f"id 0x{link['model_id']:08x} (hw/protocol.py); the core's ports below "
                   "are inside it."), ""]
    lines += [
        "## Layers",
        "",
        ("| layer | n_in x n_out | in fmt | weight fmt | acc bits | out fmt | act | "
        "threshold (raw) | non-zero weights | rows per lane |"),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, ly in enumerate(cfg.layers):
        lines.append(f"| {i} | {ly.n_in} x {ly.n_out} | {cfg.in_fmt(i)} | {ly.weight_fmt} | "
                     f"{ly.acc_bits} | {ly.out_fmt} | {ly.activation} | "
                     f"{cfg.threshold_raw(i)} | {info['plan']['nonzero_weights'][i]} | "
                     f"{plan.rows[i]} |")
    lines += ["", "## Ports", "", "| port | direction | width |", "|---|---|---|",
              "| clk | input | 1 |", "| rst | input | 1 |"]
    for name, p in info.get("core_ports", info["ports"]).items():
        lines.append(f"| {name} | {p['direction']} | {p['width']} |")
    lines += ["", "## Memories (elaborated design)", "",
              "| memory | words x bits | bits | ram_style |", "|---|---|---|---|"]
    for r in info["memories"]:
        lines.append(f"| {r['name']} | {r['depth']} x {r['width']} | {r['bits']} | "
                     f"{r['ram_style']} |")
    lines += [f"| **total** | | **{info['memory_bits']}** | |", ""]

    net = DeltaNetwork(model, mode="fixed", delta=True)
    cm = cc.CoreCycleModel(model, L, top.obs_words)
    rows = {k: [] for k in ("cycles", "writes", "latency", "mac", "rounds", "ideal", "sig")}
    prev = None
    for obs in np.asarray(observations, dtype=np.float64):
        first = bool(net.steps[0] == 0)
        x = net.quantize_obs(obs[None])
        net.step(x)
        s = cm.schedule(net.last_events, first)
        sig = net.last_counts["significant"][:, 0]
        w = _changed_words(None if first else prev, x[0], top.obs_words)
        prev = x[0]
        for k, v in (("cycles", s.cycles), ("writes", w), ("latency", w + s.cycles),
                     ("mac", sum(s.mac_cycles)), ("rounds", sum(s.rounds)),
                     ("ideal", int(cm.ideal_cycles(sig[:, None])[0])), ("sig", int(sig.sum()))):
            rows[k].append(int(v))
    constants = ", ".join(f"{n} = {getattr(cc, n)}" for n in cc.__all__ if n.isupper())
    lines += [
        "## Cycles per step (pysim.corecycles)", "",
        f"{FORMULA} ({constants}); counted as {info['cycle_model']['counting']}.", "",
        (f"Bias initialisation at an episode start: {plan.init_steps} cycles; dense schedule on "
        f"the same lanes (every column, unpruned): {cm.dense_cycles()} MAC cycles/step."), "",
        (f"On {len(rows['cycles'])} steps of {source} (step 0 is an episode start: bias "
        "initialisation and a full pass; observation words written only when they changed):"),
        "",
        "| figure | first step | later mean | later min | later max |",
        "|---|---|---|---|---|",
    ]
    for name, key in (("cycles/step", "cycles"), ("observation words written", "writes"),
                      ("latency (writes + cycles)", "latency"),
                      ("MAC issue cycles", "mac"), ("examination rounds", "rounds"),
                      ("ideal ceil(significant/L)", "ideal"),
                      ("significant MACs", "sig")):
        v = np.asarray(rows[key])
        rest = v[1:] if len(v) > 1 else v
        lines.append(f"| {name} | {v[0]} | {rest.mean():.1f} | {rest.min()} | {rest.max()} |")
    lines.append("")
    return "\n".join(lines)


def generate_core(model: Model, lanes: int, out_dir, obs_words: int | None = None,
                  memory_files: bool = False, observations=None) -> dict:
    """Write ``deltanet_core.v``, ``deltanet_core.json`` and ``report.md`` into ``out_dir``
    (:func:`generate` of ``DeltaCore(model, lanes=lanes, obs_words=obs_words)``).

    ``obs_words``: input codes per observation word (default ``min(n_in, 8)``); the other
    arguments and the result: :func:`generate`.
    """
    if not isinstance(model, Model):
        raise TypeError(f"generate_core: model must be a pysim Model, got "
                        f"{type(model).__name__}")
    _check_observations(model, observations)  # before the elaboration
    return generate(DeltaCore(model, lanes=lanes, obs_words=obs_words), out_dir,
                    memory_files=memory_files, observations=observations)


def _is_link(top) -> bool:
    """``top`` is a :class:`hw.hostlink.HostLink` (known by its parts: a ``DeltaCore`` in
    ``core``, a UART ``divisor``, the ``model_id`` of its STATUS, the ``rx``/``tx`` pins)."""
    return (isinstance(getattr(top, "core", None), DeltaCore)
            and all(hasattr(top, k) for k in ("divisor", "model_id", "rx", "tx")))


def generate(top, out_dir, *, memory_files: bool = False, observations=None) -> dict:
    """Write ``<toplevel>.v``, ``<toplevel>.json`` and ``report.md`` of ``top`` into
    ``out_dir``: a :class:`hw.core.DeltaCore` (top level :data:`TOPLEVEL`) or a
    :class:`hw.hostlink.HostLink` (:data:`LINK_TOPLEVEL`, JSON :func:`link_info`).

    ``memory_files``: memory contents in ``$readmemh`` files beside the Verilog (listed in the
    JSON under ``memory_init_files``; the simulator reads them from its working folder);
    ``observations``: ``(steps, n_in)`` float observations for the report's cycle figures
    (default :func:`default_observations`, ``DEFAULT_STEPS`` steps).
    Returns ``{"verilog": path, "json": path, "report": path}`` (plus ``"memory_files"``: a
    list of paths, with ``memory_files``).
    """
    if isinstance(top, DeltaCore):
        core, info = top, design_info(top)
    elif _is_link(top):
        core, info = top.core, link_info(top)
    else:
        raise TypeError(f"generate: top must be a DeltaCore or a HostLink, got "
                        f"{type(top).__name__}")
    name = info["toplevel"]
    observations, source = _check_observations(core.model, observations)
    text = verilog.convert(top, name=name, emit_src=False)
    out_dir = Path(out_dir)
    paths = {}
    if memory_files:
        text, files = split_memory_init(text, name)
        info["memory_init_files"] = sorted(files)
        paths["memory_files"] = [write_text_atomic(out_dir / fname, body)
                                 for fname, body in sorted(files.items())]
    paths["verilog"] = write_text_atomic(out_dir / f"{name}.v", verilog_header(info) + text)
    paths["json"] = write_text_atomic(out_dir / f"{name}.json",
                                      json.dumps(info, indent=2, sort_keys=True) + "\n")
    paths["report"] = write_text_atomic(out_dir / "report.md",
                                        _report(core, info, observations, source))
    return paths
