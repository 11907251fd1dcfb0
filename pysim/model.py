"""A model: a :class:`NetworkConfig` plus its parameters (float weights, biases, pruning masks).

Float parameters are the single source; the raw fixed-point codes used by the bit-accurate
reference and burnt into the hardware are derived from them deterministically:
``w_raw = weight_fmt.quantize(W * mask)`` and ``b_raw = acc_fmt(sat).quantize(b)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .config import NetworkConfig
from .fixed import FixedFormat


def conv_tap_valid(n: int, n_out: int, k: int, stride: int, padding: int) -> np.ndarray:
    """(k, n) int64: 1 where input position ``p`` through kernel offset ``a`` reaches an output,
    i.e. ``o = (p + padding - a) / stride`` is an integer in ``[0, n_out)``."""
    a = np.arange(k)[:, None]
    q = np.arange(n)[None, :] + padding - a
    return ((q >= 0) & (q % stride == 0) & (q // stride < n_out)).astype(np.int64)


@dataclass(frozen=True)
class LayerParams:
    # dense: weight float32 (n_out, n_in), rows = outputs, columns = inputs; bias (n_out,).
    # conv2d: weight float32 (out_ch, in_ch, k, k); bias (out_ch,), shared by a channel's pixels.
    weight: np.ndarray
    bias: np.ndarray
    mask: np.ndarray  # bool, the weight's shape; False = pruned


@dataclass(frozen=True, eq=False)
class Model:
    """Config + parameters + metadata (env id, spaces, provenance)."""

    config: NetworkConfig
    params: tuple
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        params = []
        if len(self.params) != len(self.config.layers):
            raise ValueError(f"model: {len(self.params)} parameter sets for "
                             f"{len(self.config.layers)} layers")
        for i, (layer, p) in enumerate(zip(self.config.layers, self.params)):
            w = np.asarray(p.weight, dtype=np.float32)
            b = np.asarray(p.bias, dtype=np.float32)
            m = np.ones_like(w, dtype=bool) if p.mask is None else np.asarray(p.mask, dtype=bool)
            if w.shape != layer.weight_shape:
                raise ValueError(f"model: layer {i} weight shape {w.shape}, config says "
                                 f"{layer.weight_shape}")
            if b.shape != layer.bias_shape:
                raise ValueError(f"model: layer {i} bias shape {b.shape}, config says "
                                 f"{layer.bias_shape}")
            if m.shape != w.shape:
                raise ValueError(f"model: layer {i} mask shape {m.shape} != weight {w.shape}")
            if not (np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
                raise ValueError(f"model: layer {i} has non-finite parameters")
            params.append(LayerParams(w, b, m))
        object.__setattr__(self, "params", tuple(params))

    # ---- derived parameters ------------------------------------------------------------------
    def float_weight(self, i: int) -> np.ndarray:
        p = self.params[i]
        return np.where(p.mask, p.weight, np.float32(0)).astype(np.float32)

    @cached_property
    def w_raw(self) -> tuple:
        return tuple(layer.weight_fmt.quantize(self.float_weight(i)).astype(np.int64)
                     for i, layer in enumerate(self.config.layers))

    @cached_property
    def b_raw(self) -> tuple:
        out = []
        for i in range(len(self.config.layers)):
            a = self.config.acc_fmt(i)
            sat = FixedFormat(True, a.int_bits, a.frac_bits, "half_even", "sat")
            out.append(sat.quantize(self.params[i].bias).astype(np.int64))
        return tuple(out)

    def nonzero(self, i: int, mode: str = "fixed") -> np.ndarray:
        """Boolean, the weight's shape: which weights take part in multiplications.

        Dense: (n_out, n_in). Conv2d: (out_ch, in_ch, k, k) (kernel taps, not the unrolled
        matrix; see :meth:`column_nnz` for the per-input count)."""
        if mode == "fixed":
            return self.w_raw[i] != 0
        return self.float_weight(i) != 0

    def column_nnz(self, i: int, mode: str = "fixed") -> np.ndarray:
        """(n_in,): products one event of each input takes part in (its column's non-zeros).

        Conv2d: the non-zero taps of the input's channel whose output lands inside the output
        grid (border-aware: an input near the border or skipped by the stride feeds fewer
        outputs), i.e. the column of the unrolled ``(n_out, n_in)`` matrix."""
        nz = self.nonzero(i, mode)
        layer = self.config.layers[i]
        if layer.kind == "dense":
            return nz.sum(axis=0).astype(np.int64)
        per_tap = nz.sum(axis=0).astype(np.int64)  # (in_ch, k, k)
        vy = conv_tap_valid(layer.in_h, layer.out_h, layer.kernel, layer.stride, layer.padding)
        vx = conv_tap_valid(layer.in_w, layer.out_w, layer.kernel, layer.stride, layer.padding)
        return np.einsum("cab,ay,bx->cyx", per_tap, vy, vx).reshape(-1)

    def sparsity(self, mode: str = "fixed") -> float:
        nz = sum(int(self.nonzero(i, mode).sum()) for i in range(len(self.params)))
        total = sum(p.weight.size for p in self.params)
        return 1.0 - nz / total

    def replace(self, config: NetworkConfig | None = None, params=None,
                meta: dict | None = None) -> Model:
        return Model(config or self.config, self.params if params is None else tuple(params),
                     dict(self.meta if meta is None else meta))
