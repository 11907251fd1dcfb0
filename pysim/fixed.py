"""Fixed-point formats: the bit vocabulary of deltanet, written once.

Vocabulary
----------
* A *format* ``SQi.f`` is a signed two's-complement number with ``i`` integer bits (the sign bit
  counts as one of them) and ``f`` fraction bits; ``UQi.f`` is unsigned. Its width is ``i + f``.
* A *raw code* (``*_raw``, numpy ``int64``) is the integer the hardware stores; its value is
  ``raw * 2**-f``. Raw codes travel with their format; floats appear only at the boundaries.
* *quantize* maps floats to raw codes: scale by ``2**f``, round, then handle overflow.
* *requantize* maps a raw code with ``src_frac`` fraction bits to this format: an arithmetic shift
  right by ``src_frac - f`` bits with rounding (or a left shift, which is exact), then overflow.
* Rounding modes (applied to the bits shifted out):
  ``trunc`` - floor (towards minus infinity, what a plain arithmetic shift does);
  ``half_up`` - round to nearest, ties towards plus infinity (add half an LSB, then floor);
  ``half_even`` - round to nearest, ties to the even code (EdgeDRNN's convergent rounding).
* Overflow modes: ``sat`` clamps to ``[min_raw, max_raw]``; ``wrap`` keeps the low ``width``
  bits, reinterpreted in two's complement (what a plain adder of that width does).

String form: ``SQ8.8`` means rounding ``half_even`` and overflow ``sat`` (the defaults); other
modes are suffixed, e.g. ``SQ8.8:trunc:wrap``. ``FixedFormat.parse(str(f)) == f`` always.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

ROUNDINGS = ("trunc", "half_up", "half_even")
OVERFLOWS = ("sat", "wrap")
MAX_WIDTH = 62  # raw codes live in int64 with headroom for one addition

_FMT_RE = re.compile(r"^(?P<s>[SU])Q(?P<i>-?\d+)\.(?P<f>-?\d+)(?::(?P<r>\w+))?(?::(?P<o>\w+))?$")


def shift_round(raw: np.ndarray, shift: int, rounding: str) -> np.ndarray:
    """Arithmetic shift of int64 codes by ``shift`` bits to the right with ``rounding``.

    A negative ``shift`` is a left shift (exact, no rounding).
    """
    raw = np.asarray(raw, dtype=np.int64)
    if shift <= 0:
        return raw << np.int64(-shift)
    q = raw >> np.int64(shift)  # floor
    if rounding == "trunc":
        return q
    rem = raw & np.int64((1 << shift) - 1)
    half = np.int64(1 << (shift - 1))
    if rounding == "half_up":
        return q + (rem >= half)
    if rounding == "half_even":
        return q + ((rem > half) | ((rem == half) & ((q & 1) == 1)))
    raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}")


def wrap_bits(raw: np.ndarray, width: int, signed: bool = True) -> np.ndarray:
    """Keep the low ``width`` bits of int64 codes (two's complement if ``signed``)."""
    raw = np.asarray(raw, dtype=np.int64)
    mask = np.int64((1 << width) - 1)
    low = raw & mask
    if signed:
        low = np.where(low >= (1 << (width - 1)), low - (1 << width), low)
    return low.astype(np.int64)


@dataclass(frozen=True)
class FixedFormat:
    """An immutable fixed-point format (see the module docstring for the vocabulary)."""

    signed: bool
    int_bits: int
    frac_bits: int
    rounding: str = "half_even"
    overflow: str = "sat"

    def __post_init__(self):
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {ROUNDINGS}, got {self.rounding!r}")
        if self.overflow not in OVERFLOWS:
            raise ValueError(f"overflow must be one of {OVERFLOWS}, got {self.overflow!r}")
        if self.int_bits < (1 if self.signed else 0):
            raise ValueError(f"{self}: a signed format needs at least 1 integer bit (the sign)")
        if not 1 <= self.width <= MAX_WIDTH:
            raise ValueError(f"{self}: width {self.width} outside 1..{MAX_WIDTH}")

    # ---- naming -------------------------------------------------------------------------
    @classmethod
    def parse(cls, text: str) -> FixedFormat:
        """Parse ``SQ8.8`` / ``UQ0.8`` / ``SQ8.8:trunc:wrap``."""
        m = _FMT_RE.match(text.strip()) if isinstance(text, str) else None
        if m is None:
            raise ValueError(
                f"bad fixed-point format {text!r}: expected e.g. 'SQ8.8' or 'UQ1.7:trunc:sat' "
                f"(rounding in {ROUNDINGS}, overflow in {OVERFLOWS})"
            )
        return cls(
            signed=m["s"] == "S",
            int_bits=int(m["i"]),
            frac_bits=int(m["f"]),
            rounding=m["r"] or "half_even",
            overflow=m["o"] or "sat",
        )

    def __str__(self) -> str:
        s = f"{'S' if self.signed else 'U'}Q{self.int_bits}.{self.frac_bits}"
        if (self.rounding, self.overflow) != ("half_even", "sat"):
            s += f":{self.rounding}:{self.overflow}"
        return s

    # ---- derived values -----------------------------------------------------------------
    @property
    def width(self) -> int:
        return self.int_bits + self.frac_bits

    @property
    def min_raw(self) -> int:
        return -(1 << (self.width - 1)) if self.signed else 0

    @property
    def max_raw(self) -> int:
        return (1 << (self.width - 1)) - 1 if self.signed else (1 << self.width) - 1

    @property
    def lsb(self) -> float:
        return math.ldexp(1.0, -self.frac_bits)

    @property
    def min_value(self) -> float:
        return self.min_raw * self.lsb

    @property
    def max_value(self) -> float:
        return self.max_raw * self.lsb

    # ---- conversions ----------------------------------------------------------------------
    def handle_overflow(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=np.int64)
        if self.overflow == "sat":
            return np.clip(raw, self.min_raw, self.max_raw).astype(np.int64)
        return wrap_bits(raw, self.width, self.signed)

    def quantize(self, x) -> np.ndarray:
        """Floats -> raw codes (rounding, then overflow handling)."""
        x = np.asarray(x, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            raise ValueError(f"cannot quantize non-finite values to {self}")
        scaled = np.ldexp(x, self.frac_bits)
        # Clamp far outside the range first so the int64 cast is defined; codes outside
        # [min_raw, max_raw] are still handled by the overflow mode below.
        lim = float(1 << MAX_WIDTH)
        scaled = np.clip(scaled, -lim, lim)
        if self.rounding == "trunc":
            r = np.floor(scaled)
        elif self.rounding == "half_up":
            r = np.floor(scaled + 0.5)
        else:
            r = np.rint(scaled)  # IEEE round-half-to-even
        return self.handle_overflow(r.astype(np.int64))

    def requantize(self, raw, src_frac: int) -> np.ndarray:
        """Raw codes with ``src_frac`` fraction bits -> raw codes of this format."""
        return self.handle_overflow(shift_round(raw, src_frac - self.frac_bits, self.rounding))

    def to_float(self, raw) -> np.ndarray:
        return np.ldexp(np.asarray(raw, dtype=np.float64), -self.frac_bits)

    def check_raw(self, raw, what: str = "value") -> np.ndarray:
        """Raise if any raw code lies outside this format."""
        raw = np.asarray(raw, dtype=np.int64)
        if raw.size and (raw.min() < self.min_raw or raw.max() > self.max_raw):
            raise ValueError(
                f"{what}: raw codes span [{raw.min()}, {raw.max()}], outside {self} "
                f"range [{self.min_raw}, {self.max_raw}]"
            )
        return raw


def fmt(text_or_fmt) -> FixedFormat:
    """Accept a FixedFormat or its string form."""
    if isinstance(text_or_fmt, FixedFormat):
        return text_or_fmt
    return FixedFormat.parse(text_or_fmt)
