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


@dataclass(frozen=True)
class LayerParams:
    weight: np.ndarray  # float32 (n_out, n_in), rows = outputs, columns = inputs
    bias: np.ndarray  # float32 (n_out,)
    mask: np.ndarray  # bool (n_out, n_in); False = pruned


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
            if w.shape != (layer.n_out, layer.n_in):
                raise ValueError(f"model: layer {i} weight shape {w.shape}, config says "
                                 f"{(layer.n_out, layer.n_in)}")
            if b.shape != (layer.n_out,):
                raise ValueError(f"model: layer {i} bias shape {b.shape}, config says "
                                 f"{(layer.n_out,)}")
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
        """Boolean (n_out, n_in): which weights take part in multiplications."""
        if mode == "fixed":
            return self.w_raw[i] != 0
        return self.float_weight(i) != 0

    def column_nnz(self, i: int, mode: str = "fixed") -> np.ndarray:
        return self.nonzero(i, mode).sum(axis=0).astype(np.int64)

    def sparsity(self, mode: str = "fixed") -> float:
        nz = sum(int(self.nonzero(i, mode).sum()) for i in range(len(self.params)))
        total = sum(p.weight.size for p in self.params)
        return 1.0 - nz / total

    def replace(self, config: NetworkConfig | None = None, params=None,
                meta: dict | None = None) -> Model:
        return Model(config or self.config, self.params if params is None else tuple(params),
                     dict(self.meta if meta is None else meta))
