"""The only place that maps pysim fixed-point formats to Amaranth shapes (and raw codes to bits).

A format ``SQi.f`` becomes ``signed(i + f)``; ``UQi.f`` becomes ``unsigned(i + f)``. A vector of
``n`` raw codes becomes ``ArrayLayout(shape, n)``: element ``k`` in bits ``[k*w, (k+1)*w)``,
which is also the flattened Verilog port layout. ``pack``/``unpack`` convert numpy raw codes to
and from such flat integers (used by testbenches and the generator, never by the datapath).
"""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Shape, signed, unsigned
from amaranth.lib import data

from ..pysim.config import NetworkConfig
from ..pysim.fixed import FixedFormat

__all__ = ["BLOCK_RAM", "DISTRIBUTED_MAX_BITS", "ROM_LOGIC_MAX_DEPTH", "acc_shape",
           "delta_shape", "group_layout", "mac_command_layout", "obs_layout", "pack",
           "ram_attrs", "raw_shape", "raw_vector", "rom_attrs", "slot_layout",
           "threshold_shape", "unpack"]


#: memory attributes asking yosys for block RAM (ECP5 DP16KD, iCE40 SB_RAM40_4K) instead of
#: LUTs: the core's memories are synchronous-read, and in LUTs their contents cost logic
BLOCK_RAM = {"ram_style": "block"}
#: memories up to this many bits whose read data feeds arithmetic stay in LUT RAM (fast
#: clock-to-out; an ECP5 block RAM's 5.8 ns would need another pipeline stage)
DISTRIBUTED_MAX_BITS = 4096


def ram_attrs(depth: int, width: int) -> dict:
    """Attributes for a read-modify-write memory: LUT RAM when small, else block RAM."""
    if depth * width <= DISTRIBUTED_MAX_BITS:
        return {"ram_style": "distributed"}
    return BLOCK_RAM


#: read-only memories up to this many words are logic: one LUT4 per bit holds 16 words, fewer
#: logic cells than the block RAMs a wide word takes (an iCE40 block RAM is 16 bits wide)
ROM_LOGIC_MAX_DEPTH = 16


def rom_attrs(depth: int) -> dict:
    """Attributes for a read-only memory: logic when at most :data:`ROM_LOGIC_MAX_DEPTH`
    words deep, else block RAM."""
    return {"ram_style": "logic"} if depth <= ROM_LOGIC_MAX_DEPTH else BLOCK_RAM


def raw_shape(f: FixedFormat) -> Shape:
    """Shape of one raw code of format ``f``."""
    return signed(f.width) if f.signed else unsigned(f.width)


def raw_vector(f: FixedFormat, n: int) -> data.ArrayLayout:
    """Layout of ``n`` raw codes of format ``f`` (element ``k`` in bits ``[k*w, (k+1)*w)``)."""
    return data.ArrayLayout(raw_shape(f), n)


def delta_shape(f: FixedFormat) -> Shape:
    """Shape of the difference of two codes of ``f`` (one bit wider, always signed)."""
    return signed(f.width + 1)


def threshold_shape(f: FixedFormat) -> Shape:
    """Unsigned shape that holds every ``|delta|`` of ``f`` plus one "never fires" value."""
    return unsigned(f.width + 1)


def acc_shape(config: NetworkConfig, layer: int) -> Shape:
    """Shape of one pre-activation (accumulator) code of ``layer``."""
    return raw_shape(config.acc_fmt(layer))


def pack(raw, width: int) -> int:
    """Raw codes (any sign) -> one flat integer, code ``k`` in bits ``[k*width, (k+1)*width)``."""
    out = 0
    mask = (1 << width) - 1
    for k, v in enumerate(np.asarray(raw, dtype=np.int64).ravel().tolist()):
        out |= (int(v) & mask) << (k * width)
    return out


def unpack(value: int, width: int, n: int, signed_: bool = True) -> np.ndarray:
    """Flat integer -> ``n`` raw codes (two's complement when ``signed_``) as int64."""
    mask = (1 << width) - 1
    out = []
    for k in range(n):
        v = (int(value) >> (k * width)) & mask
        if signed_ and v >> (width - 1):
            v -= 1 << width
        out.append(v)
    return np.array(out, dtype=np.int64)


# ---- stream payloads of the event-driven core (widths from pysim.coreplan.CorePlan) ----------
def slot_layout(plan) -> data.StructLayout:
    """One candidate event of a group: ``work`` (a propagated event that reaches a non-empty
    weight column), its ``delta``, and its input's ``key`` in the consuming layer
    (:class:`pysim.coreplan.CorePlan`: a column's ``start | len``, or a conv input's kernel
    positions)."""
    return data.StructLayout({
        "work": unsigned(1),
        "delta": signed(plan.delta_width),
        "key": unsigned(plan.key_width),
    })


def group_layout(plan) -> data.ArrayLayout:
    """An event group: ``plan.group_slots`` slots (an observation word, or one round of an
    examination: one neuron per lane), issued lowest slot first."""
    return data.ArrayLayout(slot_layout(plan), plan.group_slots)


def obs_layout(plan) -> data.StructLayout:
    """An observation write: word ``addr`` and its ``obs_words`` input codes (code ``p`` is
    input ``addr * obs_words + p``)."""
    cfg = plan.config
    return data.StructLayout({
        "addr": unsigned(max(1, (plan.obs_depth - 1).bit_length())),
        "data": raw_vector(cfg.input_fmt, plan.obs_words),
    })


def mac_command_layout(plan) -> data.StructLayout:
    """One issue cycle, broadcast to every lane: weight word address, delta, the output pixel
    the event reaches (conv layers; 0 for dense) and the layer."""
    return data.StructLayout({
        "addr": unsigned(plan.start_width),
        "delta": signed(plan.delta_width),
        "pix": unsigned(plan.pix_width),
        "layer": unsigned(max(1, (plan.n_layers - 1).bit_length())),
    })
