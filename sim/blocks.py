"""Runner for the cocotb *block* benches (:mod:`sim.bench_blocks`).

A block variant is a small frozen spec (:class:`EncoderVariant`, :class:`MacVariant`). It becomes
a seeded random pysim model, then an Amaranth component (``hw.encoder.DeltaEncoder`` alone, or
``hw.mac.SparseMAC`` wired to ``hw.accumulator.DeltaAccumulator`` by :class:`MacAccumulatorBlock`),
then Verilog (``amaranth.back.verilog.convert(..., emit_src=False)``) and the JSON the bench reads
(every width, format, weight and derived constant: the bench restates none). Both files go into
their own folder ``<build_root>/<toplevel>-<hash of Verilog + JSON>``; each simulator compiles
into ``<sim>/`` below it, once (a ``.built`` stamp), with :func:`sim.runner.compile_sources`.

:func:`run_block` runs the bench's tests for that block with ``cocotb_tools.runner`` and returns
the parsed ``results.xml`` (:class:`BlockResult`), so a caller can assert that a test *fails*
(the mutation checks) as well as that it passes.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

import numpy as np

from .runner import SimulationError, compile_sources, sim_kwargs
from .tools import ensure_on_path

DEFAULT_BUILD_ROOT = Path("build") / "sim_blocks"
BENCH_MODULE = "sim.bench_blocks"
ENCODER_TOPLEVEL = "delta_encoder"
MAC_TOPLEVEL = "mac_accumulator"
#: bench tests per block (the names of the ``@cocotb.test()`` coroutines in the bench)
TESTS = {
    ENCODER_TOPLEVEL: ("encoder_reset_state", "encoder_events"),
    MAC_TOPLEVEL: ("mac_accumulate",),
}


# ---- variants -> seeded random models --------------------------------------------------------

@dataclass(frozen=True)
class EncoderVariant:
    """One ``DeltaEncoder`` build: ``n_in`` inputs in ``fmt``, reset threshold ``threshold``
    (real units; a huge value is clamped to "never"), a random emit mask of ``mask_density``
    (empty weight columns are masked), ``thr_width`` of the threshold write port."""

    n_in: int
    fmt: str = "SQ4.4"
    threshold: float = 0.0
    mask_density: float = 1.0
    thr_width: int | None = None
    seed: int = 0

    @property
    def id(self) -> str:
        return f"enc-n{self.n_in}-{self.fmt}"


@dataclass(frozen=True)
class MacVariant:
    """One ``SparseMAC`` + ``DeltaAccumulator`` build over an MLP of ``sizes`` on ``lanes``
    lanes; ``acc_bits`` small enough makes the accumulator wrap; ``zero_cols`` input columns of
    each layer hold no weight at all (events there must cost one cycle and do nothing)."""

    sizes: tuple = (9, 10, 3)
    lanes: int = 1
    input_fmt: str = "SQ4.4"
    weight_fmt: str = "SQ2.6"
    act_fmt: str = "SQ4.4"
    acc_bits: tuple | None = None
    density: float = 0.5
    zero_cols: int = 1
    seed: int = 0

    @property
    def id(self) -> str:
        return f"mac-L{self.lanes}-{'x'.join(map(str, self.sizes))}"


def _random_model(sizes, *, seed, density, input_fmt, weight_fmt, act_fmt, thresholds=None,
                  acc_bits=None, zero_cols=0):
    from pysim import LayerParams, Model, mlp_config

    rng = np.random.default_rng(seed)
    cfg = mlp_config(list(sizes), input_fmt=input_fmt, weight_fmt=weight_fmt, act_fmt=act_fmt,
                     thresholds=thresholds, acc_bits=list(acc_bits) if acc_bits else None)
    params = []
    for ly in cfg.layers:
        w = rng.normal(0, 1.0, size=(ly.n_out, ly.n_in)).astype(np.float32)
        b = rng.normal(0, 2.0, size=ly.n_out).astype(np.float32)
        mask = rng.random((ly.n_out, ly.n_in)) < density
        if zero_cols and ly.n_in > 1:
            mask[:, rng.choice(ly.n_in, size=min(zero_cols, ly.n_in - 1), replace=False)] = False
        params.append(LayerParams(w, b, mask))
    return Model(cfg, tuple(params), {"env_id": "random"})


def _fields(layout) -> list:
    """Amaranth StructLayout -> ``[(name, width, signed)]``, LSB field first."""
    from amaranth.hdl import Shape

    out = []
    for name, f in sorted(layout, key=lambda nf: nf[1].offset):
        s = Shape.cast(f.shape)
        out.append([name, s.width, s.signed])
    return out


# ---- components --------------------------------------------------------------------------------

def encoder_component(v: EncoderVariant):
    """``(DeltaEncoder, design dict)`` for ``v``."""
    from hw.encoder import DeltaEncoder

    model = _random_model([v.n_in, 3], seed=v.seed, density=v.mask_density, input_fmt=v.fmt,
                          weight_fmt="SQ2.6", act_fmt="SQ4.4", thresholds=[v.threshold])
    cfg = model.config
    mask = [bool(x) for x in model.column_nnz(0) > 0]
    enc = DeltaEncoder(n_in=v.n_in, fmt=cfg.input_fmt, threshold=cfg.threshold_raw(0),
                       mask=mask, thr_width=v.thr_width)
    design = {
        "block": "encoder",
        "toplevel": ENCODER_TOPLEVEL,
        "variant": v.id,
        "n_in": enc.n_in,
        "fmt": str(cfg.input_fmt),
        "threshold_config_raw": cfg.threshold_raw(0),
        "threshold_reset": enc.threshold_reset,
        "threshold_width": enc.threshold_width,
        "thr_data_width": len(enc.thr_data),
        "mask": mask,
        "latency": enc.latency,
        "events_width": len(enc.events),
        "o_fields": _fields(enc.o.payload.shape()),
    }
    return enc, design


def _mac_block_class():
    from amaranth.hdl import Module, Shape
    from amaranth.lib import data, stream, wiring
    from amaranth.lib.wiring import In, Out
    from amaranth.utils import ceil_log2

    from hw.accumulator import DeltaAccumulator
    from hw.mac import SparseMAC
    from hw.shapes import delta_shape

    class MacAccumulatorBlock(wiring.Component):
        """``SparseMAC`` -> ``DeltaAccumulator`` as in ``DeltanetTop``, for a block bench.

        Ports: ``i`` (event stream in), ``layer``, ``clear`` (MAC counters to 0 and rows to
        their bias, at the same edge), ``idle``, ``macs`` (per-layer counters) and ``pre_{l}``
        (the accumulator rows of layer ``l``). Widths follow ``DeltanetTop``'s choices.
        """

        def __init__(self, model, lanes):
            cfg = model.config
            n = len(cfg.layers)
            iw = max(1, max(ceil_log2(ly.n_in) for ly in cfg.layers))
            dw = max(delta_shape(cfg.in_fmt(i)).width for i in range(n))
            ww = max(ly.weight_fmt.width for ly in cfg.layers)
            self.mac = SparseMAC(weights=model.w_raw, weight_width=ww, lanes=lanes,
                                 index_width=iw, delta_width=dw)
            self.acc = DeltaAccumulator(
                n_out=[ly.n_out for ly in cfg.layers], acc_bits=[ly.acc_bits for ly in cfg.layers],
                bias=model.b_raw, lanes=lanes, row_width=self.mac.plan.row_width,
                data_width=self.mac.product_width)
            ports = {
                "i": In(stream.Signature(self.mac.i.payload.shape())),
                "layer": In(Shape.cast(self.mac.layer.shape())),
                "clear": In(1),
                "idle": Out(1),
                "macs": Out(self.mac.macs.shape()),
            }
            for i, ly in enumerate(cfg.layers):
                ports[f"pre_{i}"] = Out(data.ArrayLayout(self.acc.pre(i).shape().elem_shape,
                                                         ly.n_out))
            super().__init__(ports)

        def elaborate(self, platform):
            m = Module()
            m.submodules.mac = mac = self.mac
            m.submodules.acc = acc = self.acc
            wiring.connect(m, wiring.flipped(self.i), mac.i)
            wiring.connect(m, mac.wr, acc.wr)
            m.d.comb += [
                mac.layer.eq(self.layer),
                mac.clear.eq(self.clear),
                acc.clear.eq(self.clear),
                self.idle.eq(mac.idle),
                self.macs.eq(mac.macs),
            ]
            for i in range(acc.n_layers):
                m.d.comb += getattr(self, f"pre_{i}").eq(acc.pre(i))
            return m

    return MacAccumulatorBlock


def mac_component(v: MacVariant):
    """``(MacAccumulatorBlock, design dict)`` for ``v``."""
    from hw.mac import COUNTER_WIDTH

    model = _random_model(v.sizes, seed=v.seed, density=v.density, input_fmt=v.input_fmt,
                          weight_fmt=v.weight_fmt, act_fmt=v.act_fmt, acc_bits=v.acc_bits,
                          zero_cols=v.zero_cols)
    cfg = model.config
    blk = _mac_block_class()(model, v.lanes)
    design = {
        "block": "mac",
        "toplevel": MAC_TOPLEVEL,
        "variant": v.id,
        "lanes": v.lanes,
        "config": cfg.to_dict(),
        "layers": [{"n_in": ly.n_in, "n_out": ly.n_out, "acc_bits": ly.acc_bits,
                    "in_width": cfg.in_fmt(i).width,
                    "weights": model.w_raw[i].tolist(), "bias": model.b_raw[i].tolist()}
                   for i, ly in enumerate(cfg.layers)],
        "i_fields": _fields(blk.i.payload.shape()),
        "layer_width": len(blk.layer),
        "macs_width": COUNTER_WIDTH,
        "drain_cycles": blk.mac.drain_cycles,
    }
    return blk, design


# ---- generate, build, run ------------------------------------------------------------------------

def generate_block(variant, build_root: Path | None = None) -> Path:
    """Verilog + JSON of ``variant`` in their own folder (named by their hash); returns it."""
    from amaranth.back import verilog

    if isinstance(variant, EncoderVariant):
        comp, design = encoder_component(variant)
    elif isinstance(variant, MacVariant):
        comp, design = mac_component(variant)
    else:
        raise TypeError(f"not a block variant: {variant!r}")
    top = design["toplevel"]
    text = verilog.convert(comp, name=top, emit_src=False)
    js = json.dumps(design, indent=1, sort_keys=True) + "\n"
    digest = hashlib.sha256(text.encode() + b"\0" + js.encode()).hexdigest()[:16]
    d = Path(build_root or DEFAULT_BUILD_ROOT).resolve() / f"{top}-{digest}"
    d.mkdir(parents=True, exist_ok=True)
    for name, content in ((f"{top}.v", text), (f"{top}.json", js)):
        p = d / name
        if not p.exists() or p.read_text() != content:
            tmp = p.with_suffix(p.suffix + f".{os.getpid()}.tmp")
            tmp.write_text(content)
            os.replace(tmp, p)
    return d


def build_block(design_dir: Path, sim: str = "verilator", *, waves: bool = False) -> Path:
    """Compile ``design_dir``'s Verilog for ``sim`` into ``design_dir/<sim>`` (cached)."""
    ensure_on_path(sim)
    design_dir = Path(design_dir).resolve()
    top = json.loads(next(design_dir.glob("*.json")).read_text())["toplevel"]
    bdir = design_dir / (f"{sim}-waves" if waves else sim)
    stamp = bdir / ".built"
    if not stamp.exists():
        bdir.mkdir(parents=True, exist_ok=True)
        compile_sources([design_dir / f"{top}.v"], top, bdir, sim, waves=waves)
        stamp.write_text("ok\n")
    return bdir


@dataclass
class BlockResult:
    """Parsed ``results.xml``: test name -> failure message (``None`` = passed)."""

    tests: dict = field(default_factory=dict)
    log: Path | None = None

    @property
    def passed(self) -> bool:
        return bool(self.tests) and all(v is None for v in self.tests.values())

    def failures(self) -> dict:
        return {k: v for k, v in self.tests.items() if v is not None}

    def summary(self) -> str:
        lines = [f"{k}: {'ok' if v is None else 'FAILED ' + v}" for k, v in self.tests.items()]
        return "\n".join(lines + [f"log: {self.log}"])


def _parse_results(xml: Path) -> dict:
    out = {}
    for tc in ElementTree.parse(xml).getroot().iter("testcase"):
        bad = tc.find("failure")
        if bad is None:
            bad = tc.find("error")
        msg = None
        if bad is not None:
            msg = (bad.get("message") or bad.text or "failed").strip()
        out[tc.get("name")] = msg
    return out


def run_block(variant, sim: str = "verilator", *, seed: int = 0, tests=None,
              mutate: str = "", build_root: Path | None = None, waves: bool = False,
              work_name: str = "run") -> BlockResult:
    """Generate, build (cached) and run the bench tests for ``variant`` on ``sim``.

    ``tests``: subset of :data:`TESTS` for the block (default all). ``mutate``: passed to the
    bench as ``DELTANET_BENCH_MUTATE`` to corrupt its *reference* (the run must then fail).
    """
    from cocotb_tools.runner import get_runner

    design_dir = generate_block(variant, build_root)
    design_json = next(design_dir.glob("*.json"))
    top = json.loads(design_json.read_text())["toplevel"]
    bdir = build_block(design_dir, sim, waves=waves)
    work = bdir / work_name
    work.mkdir(parents=True, exist_ok=True)
    xml = work / "results.xml"
    if xml.exists():
        xml.unlink()
    env = {
        "DELTANET_BLOCK_JSON": str(design_json),
        "DELTANET_SEED": str(seed),
        "DELTANET_BENCH_MUTATE": mutate,
        "PYTHONWARNINGS": "ignore",
    }
    log = work / "sim.log"
    try:
        get_runner(sim).test(hdl_toplevel=top, hdl_toplevel_lang="verilog",
                             test_module=BENCH_MODULE, testcase=list(tests or TESTS[top]),
                             build_dir=bdir, test_dir=work, extra_env=env, waves=waves,
                             log_file=log, results_xml=str(xml), **sim_kwargs(sim))
    except SystemExit:
        pass  # under pytest the runner exits on a failing test; results.xml says which
    if not xml.exists():
        raise SimulationError(f"the {sim} block simulation produced no results; see {log}")
    return BlockResult(_parse_results(xml), log)
