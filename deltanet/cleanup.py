"""Structural clean-up after pruning: hidden units that cannot change any output are removed.

Pruning zeroes weights but keeps every neuron; a neuron whose outgoing weights are all pruned is
still computed (its incoming row costs multiplications, its delta events are encoded) although
nothing reads it. :func:`cleanup` removes such units from the artifact, so the reference and the
hardware no longer compute them. A *unit* is a neuron of a hidden dense layer or a whole output
channel of a hidden conv layer (all its pixels). The observation (layer 0's inputs, whose number
the env fixes) and the output layer's units (the actions) are never removed; an input column
that no weight reads is left in place.

What is removed (repeated until nothing changes: removing a unit can empty the columns or rows
of its neighbours)
----------------------------------------------------------------------------------------------
1. **Dead outputs**: a hidden unit whose outgoing weights are all zero (dense -> dense: its
   column of the next layer; conv -> conv: the next layer's taps of that input channel; conv ->
   dense: the next layer's columns of all the channel's pixels). Removed with its incoming row
   (conv: filter) and bias, and the matching all-zero column(s) / input channel of the next
   layer. **Exact in every mode**: the next layer's accumulator never receives anything from it
   (a zero weight adds an exact zero, in float and in fixed point, dense or delta), and no
   other unit depends on it.
2. **Dead inputs with a zero output**: a hidden unit whose incoming weights are all zero and
   whose activation of its bias is 0 (ReLU with ``b <= 0``; identity with ``b == 0``). Its
   output is 0 at every step, in float and in fixed point (quantization is monotone, so
   ``b <= 0`` gives a raw bias ``<= 0`` and a requantized ReLU output of 0): removed exactly.
3. **Dead inputs with a constant output** (``fold=True``): the unit outputs ``c = act(b)``
   at every step, so its contribution to the next layer, ``W_next[:, unit] * c`` (conv -> dense:
   summed over the channel's pixels; conv -> conv: summed over the kernel taps, only when the
   next conv has no zero padding, else the contribution is not constant at the borders and the
   unit is kept), is added to the next layer's bias and the unit is removed. In float this is
   exact up to float32 rounding, in delta mode too (the constant fires once, in the first full
   pass after a reset, exactly like a bias). **It is not exact in fixed point**: the original
   network adds ``w_raw * requantize(b_raw)`` while the folded one quantizes the summed float
   bias once, which can differ by rounding. So folding is done **only in float, before
   quantization**: ``fold=None`` (the default) folds when the model has no quantization in its
   provenance and skips this case (keeps such units) on quantized models.

The **dense count stays the trained network's**: the report records every layer's dense
multiplications and weights before the clean-up (``dense_mults_before``, ``weights_before``;
kept from the first clean-up when one is repeated), and :func:`dense_mults` /
:func:`dense_weights` return them, so that reductions (``deltanet eval``, calibration, weight
memory) are measured against the network as trained, not against the smaller cleaned one.

A layer never loses its last unit: if every unit of a layer is removable, the first one stays,
with its incoming and outgoing weights masked off and a zero bias (it then contributes and
costs nothing). A dense layer that feeds a conv layer (not produced by any exporter here) keeps
its units (they are the conv's pixels). Formats, accumulator widths and thresholds are kept
(a smaller fan-in never needs a wider accumulator), so the cleaned model gives bit-identical
outputs to the original quantized with the same formats, when no constant was folded.
"""

from __future__ import annotations

import numpy as np

from deltanet.pysim import LayerParams, Model, NetworkConfig
from deltanet.pysim.config import Conv2dLayer, DenseLayer

__all__ = ["cleanup", "cleanup_summary", "dense_mults", "dense_weights"]


class _Layer:
    """Mutable working copy of one layer: weights, mask, bias (float64) and its config."""

    def __init__(self, layer, p: LayerParams):
        self.cfg = layer
        self.w = np.array(p.weight, dtype=np.float32)
        self.m = np.array(p.mask, dtype=bool)
        self.b = np.array(p.bias, dtype=np.float64)

    @property
    def conv(self) -> bool:
        return self.cfg.kind == "conv2d"

    @property
    def units(self) -> int:
        return self.cfg.out_ch if self.conv else self.cfg.n_out

    @property
    def pixels(self) -> int:
        return self.cfg.out_h * self.cfg.out_w if self.conv else 1

    def eff(self) -> np.ndarray:
        return np.where(self.m, self.w, np.float32(0))

    def in_zero(self) -> np.ndarray:
        """(units,) True where the unit's incoming weights are all zero."""
        return ~self.eff().reshape(self.units, -1).any(axis=1)

    def constant(self) -> np.ndarray:
        """(units,) the unit's output when its incoming weights are zero: act(bias)."""
        return np.maximum(self.b, 0.0) if self.cfg.activation == "relu" else self.b.copy()

    def in_groups(self, prev: _Layer) -> np.ndarray:
        """(prev.units, n) the columns (dense) / input channels (conv) of this layer's weights
        that read each unit of ``prev``, as the weights themselves (for sums and zero tests)."""
        e = self.eff().astype(np.float64)
        if self.conv:  # (O, C, K, K) -> (C, O*K*K)
            return np.moveaxis(e, 1, 0).reshape(prev.units, -1)
        # dense: (n_out, n_in); prev unit u reads columns u*pixels ... (u+1)*pixels-1 (CHW)
        return e.T.reshape(prev.units, -1)

    def keep_outputs(self, keep: np.ndarray) -> None:
        self.w, self.m, self.b = self.w[keep], self.m[keep], self.b[keep]
        n = int(keep.sum())
        c = self.cfg
        if self.conv:
            self.cfg = Conv2dLayer(**{**c.__dict__, "out_ch": n})
        else:
            self.cfg = DenseLayer(**{**c.__dict__, "n_out": n})

    def keep_inputs(self, keep: np.ndarray, prev: _Layer) -> None:
        c = self.cfg
        if self.conv:
            self.w, self.m = self.w[:, keep], self.m[:, keep]
            self.cfg = Conv2dLayer(**{**c.__dict__, "in_ch": int(keep.sum())})
        else:
            cols = np.repeat(keep, prev.pixels)
            self.w, self.m = self.w[:, cols], self.m[:, cols]
            self.cfg = DenseLayer(**{**c.__dict__, "n_in": int(cols.sum())})


def _removable_layer(layers, i: int) -> bool:
    """Units of hidden layer ``i`` can be removed: not the output layer, and not a dense layer
    feeding a conv (its units are the conv's pixels)."""
    if i >= len(layers) - 1:
        return False
    return not (not layers[i].conv and layers[i + 1].conv)


def cleanup(model: Model, *, fold: bool | None = None) -> tuple[Model, dict]:
    """Remove the hidden units that cannot change any output (see the module doc).

    Returns ``(model, report)``; the report (also recorded in the provenance as ``cleanup``)
    has, per layer, the units before and after and how many were removed as dead outputs,
    dead inputs with a zero output, and dead inputs whose constant was folded."""
    prov = model.meta.get("provenance", {})
    quantized = "quantization" in prov
    if fold is None:
        fold = not quantized
    layers = [_Layer(ly, p) for ly, p in zip(model.config.layers, model.params)]
    n = len(layers)
    before = [ly.units for ly in layers]
    counts = {k: [0] * n for k in ("dead_out", "dead_in_zero", "folded")}
    placeholder = [False] * n
    changed = True
    while changed:
        changed = False
        for i in range(n - 1):
            if not _removable_layer(layers, i) or placeholder[i]:
                continue
            cur, nxt = layers[i], layers[i + 1]
            groups = nxt.in_groups(cur)  # (units, ...)
            out_zero = ~groups.any(axis=1)
            in_zero = cur.in_zero()
            const = cur.constant()
            zero_in = in_zero & (const == 0) & ~out_zero
            foldable = fold and (not nxt.conv or nxt.cfg.padding == 0)
            folded = (in_zero & (const != 0) & ~out_zero) if foldable else np.zeros_like(in_zero)
            remove = out_zero | zero_in | folded
            if not remove.any():
                continue
            if folded.any():
                if nxt.conv:  # every output pixel sees all K*K taps of the constant map
                    taps = nxt.eff().astype(np.float64).sum(axis=(2, 3))  # (O, C)
                    nxt.b += taps[:, folded] @ const[folded]
                else:  # the unit's pixels' columns, each times the constant
                    cols = nxt.eff().astype(np.float64).reshape(nxt.cfg.n_out, cur.units, -1)
                    nxt.b += cols[:, folded].sum(axis=2) @ const[folded]
            counts["dead_out"][i] += int(out_zero.sum())
            counts["dead_in_zero"][i] += int(zero_in.sum())
            counts["folded"][i] += int(folded.sum())
            keep = ~remove
            if not keep.any():  # keep one unit, contributing and costing nothing
                keep[0] = True
                placeholder[i] = True
                cur.m[0] = False
                cur.b[0] = 0.0
                g = np.zeros(cur.units, dtype=bool)
                g[0] = True
                if nxt.conv:
                    nxt.m[:, 0] = False
                else:
                    nxt.m[:, np.repeat(g, cur.pixels)] = False
                hits = {"dead_out": out_zero, "dead_in_zero": zero_in, "folded": folded}
                for k, hit in hits.items():  # the kept one is not counted as removed
                    counts[k][i] -= int(hit[0])
            cur.keep_outputs(keep)
            nxt.keep_inputs(keep, cur)
            changed = True
    after = [ly.units for ly in layers]
    cfg = model.config
    new_cfg = NetworkConfig(cfg.input_fmt, tuple(ly.cfg for ly in layers), cfg.decoder,
                            cfg.input_scale, cfg.input_offset)
    params = [LayerParams(ly.w, ly.b.astype(np.float32), ly.m) for ly in layers]
    earlier = prov.get("cleanup", {})
    report = {
        "fold": bool(fold), "quantized": quantized,
        "dense_mults_before": earlier.get("dense_mults_before",
                                          [int(ly.dense_mults) for ly in cfg.layers]),
        "weights_before": earlier.get("weights_before",
                                      [int(p.weight.size) for p in model.params]),
        "per_layer": [{"layer": i, "kind": "channels" if layers[i].conv else "neurons",
                       "before": before[i], "after": after[i],
                       "removed": before[i] - after[i],
                       **{k: counts[k][i] for k in counts}} for i in range(n)],
    }
    meta = dict(model.meta)
    new_prov = dict(prov)
    new_prov["cleanup"] = report
    meta["provenance"] = new_prov
    return Model(new_cfg, tuple(params), meta), report


def cleanup_summary(report: dict) -> str:
    """One line: how many units each layer lost (and why)."""
    parts = []
    for r in report["per_layer"]:
        why = [f"{r[k]} {label}" for k, label in
               (("dead_out", "unread"), ("dead_in_zero", "always 0"),
                ("folded", "constant, folded into the next bias")) if r[k]]
        parts.append(f"layer {r['layer']} {r['before']} -> {r['after']} {r['kind']}"
                     + (f" ({', '.join(why)})" if why else ""))
    removed = sum(r["removed"] for r in report["per_layer"])
    return f"clean-up removed {removed} units: " + "; ".join(parts)


def _before(model: Model, key: str):
    rec = model.meta.get("provenance", {}).get("cleanup", {})
    v = rec.get(key) if isinstance(rec, dict) else None
    return v if isinstance(v, list) and len(v) == len(model.config.layers) else None


def dense_mults(model: Model) -> np.ndarray:
    """(layers,) dense multiplications per step of every layer of the network as trained:
    before any clean-up (from the provenance), else of the model's own layers."""
    v = _before(model, "dense_mults_before")
    return np.array(v if v is not None else [ly.dense_mults for ly in model.config.layers],
                    dtype=np.int64)


def dense_weights(model: Model) -> np.ndarray:
    """(layers,) weights of every layer of the network as trained (see :func:`dense_mults`)."""
    v = _before(model, "weights_before")
    return np.array(v if v is not None else [p.weight.size for p in model.params],
                    dtype=np.int64)
