"""The reference engines: bit-accurate delta network and its three twins, batched over B envs.

``DeltaNetwork(model, mode="fixed", delta=True)`` is the bit-accurate sparse delta network; the
same class with ``delta=False`` is the dense quantized network (same arithmetic, no state), and
``mode="float"`` gives the float32 twins. Every engine counts, per layer and per env:

* ``dense``        - ``n_in * n_out`` multiplications of a dense layer;
* ``events``       - inputs that take part: propagated non-zero deltas (delta) or non-zero
                     inputs (dense);
* ``significant``  - products with both operands non-zero: sum over the events of the non-zero
                     weights in that input's column;
* ``weight_reads`` - weight-memory words read with column-compressed storage (= significant).

Per step of layer ``l`` (delta, see docs/semantics.md for every convention)::

    d     = x - x_hat                      # x_hat: last *propagated* input, starts at 0
    ev    = (d != 0) & ((|d| >= theta) | first)  # comparator >=, theta in the input's raw codes;
                                           # first = first step after reset: a full pass that
                                           # ignores the threshold (every non-zero input fires)
    x_hat = where(ev, x, x_hat)
    M     = wrap(M + W @ where(ev, d, 0))  # M starts at the bias at reset
    y     = act(requantize(M))             # -> next layer's x

The integer matrix products run as float64 BLAS products, which are exact because every
operand and partial sum is an integer below 2**53 (the config caps accumulators at 48 bits).
"""

from __future__ import annotations

import numpy as np

from .fixed import wrap_bits
from .model import Model

MODES = ("fixed", "float")


class DeltaNetwork:
    """A batch of B independent copies of one network (one per environment)."""

    def __init__(self, model: Model, *, mode: str = "fixed", delta: bool = True, batch: int = 1):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be a positive integer, got {batch!r}")
        self.model = model
        self.config = model.config
        self.mode = mode
        self.delta = delta
        self.batch = batch
        cfg = self.config
        n = len(cfg.layers)
        self.dense_per_layer = np.array([ly.n_in * ly.n_out for ly in cfg.layers], dtype=np.int64)
        self._nnz = [model.column_nnz(i, mode) for i in range(n)]
        if mode == "fixed":
            self._wt = [model.w_raw[i].T.astype(np.float64) for i in range(n)]  # (n_in, n_out)
            self._b = [model.b_raw[i] for i in range(n)]
            self._thr = [cfg.threshold_raw(i) for i in range(n)]
            self._acc_bits = [ly.acc_bits for ly in cfg.layers]
            for i, ly in enumerate(cfg.layers):
                bound = (cfg.in_fmt(i).width + 1 + ly.weight_fmt.width - 1
                         + int(np.ceil(np.log2(max(ly.n_in, 2)))))
                if bound > 52:
                    raise ValueError(f"layer {i}: delta x weight x fan-in needs {bound} bits; "
                                     "the exact float64 product allows 52")
        else:
            self._wt = [model.float_weight(i).T.copy() for i in range(n)]
            self._b = [model.params[i].bias.astype(np.float32) for i in range(n)]
            self._thr = [np.float32(ly.threshold) for ly in cfg.layers]
        self.reset()

    # ---- state -----------------------------------------------------------------------------
    def reset(self, which=None):
        """Reset all envs (``which=None``) or those where the boolean ``which`` is True."""
        cfg, B = self.config, self.batch
        dt = np.int64 if self.mode == "fixed" else np.float32
        if which is None:
            self.x_hat = [np.zeros((B, ly.n_in), dtype=dt) for ly in cfg.layers]
            self.acc = [np.broadcast_to(b, (B, b.shape[0])).astype(dt) for b in self._b]
            self.steps = np.zeros(B, dtype=np.int64)
            return
        which = np.asarray(which, dtype=bool).reshape(B)
        for i in range(len(cfg.layers)):
            self.x_hat[i][which] = 0
            self.acc[i][which] = self._b[i]
        self.steps[which] = 0

    def quantize_obs(self, obs) -> np.ndarray:
        """Float observation (B, n_in) -> layer-0 input: raw codes (fixed) or float32."""
        cfg = self.config
        obs = np.asarray(obs, dtype=np.float64).reshape(self.batch, cfg.n_in)
        x = (obs - np.asarray(cfg.input_offset)) * np.asarray(cfg.input_scale)
        if self.mode == "fixed":
            return cfg.input_fmt.quantize(x)
        return x.astype(np.float32)

    # ---- one step ----------------------------------------------------------------------------
    def step(self, x) -> np.ndarray:
        """Advance every env by one step. ``x``: layer-0 inputs (use :meth:`quantize_obs`)."""
        cfg, B = self.config, self.batch
        fixed = self.mode == "fixed"
        x = np.asarray(x, dtype=np.int64 if fixed else np.float32).reshape(B, cfg.n_in)
        if fixed:
            cfg.input_fmt.check_raw(x, "network input")
        n = len(cfg.layers)
        first = (self.steps == 0)[:, None]  # full pass at episode start
        events = np.zeros((n, B), dtype=np.int64)
        signif = np.zeros((n, B), dtype=np.int64)
        self.last_events = []
        for i, layer in enumerate(cfg.layers):
            if self.delta:
                d = x - self.x_hat[i]
                ev = (d != 0) & ((np.abs(d) >= self._thr[i]) | first)
                self.x_hat[i] = np.where(ev, x, self.x_hat[i])
                dx = np.where(ev, d, 0)
                upd = dx.astype(np.float64) @ self._wt[i] if fixed else dx @ self._wt[i]
                if fixed:
                    acc = wrap_bits(self.acc[i] + upd.astype(np.int64), self._acc_bits[i])
                else:
                    acc = self.acc[i] + upd
                self.acc[i] = acc
            else:
                ev = x != 0
                if fixed:
                    prod = (x.astype(np.float64) @ self._wt[i]).astype(np.int64)
                    acc = wrap_bits(prod + self._b[i], self._acc_bits[i])
                else:
                    acc = x @ self._wt[i] + self._b[i]
                self.acc[i] = acc
            self.last_events.append(ev)
            events[i] = ev.sum(axis=1)
            signif[i] = ev.astype(np.int64) @ self._nnz[i]
            if fixed:
                y = layer.out_fmt.requantize(acc, cfg.acc_fmt(i).frac_bits)
            else:
                y = acc.astype(np.float32)
            if layer.activation == "relu":
                y = np.maximum(y, 0)
            x = y
        self.steps += 1
        self.last_counts = {"events": events, "significant": signif, "weight_reads": signif,
                            "dense": np.broadcast_to(self.dense_per_layer[:, None], (n, B))}
        self.last_outputs = x
        return x

    def outputs_float(self, y) -> np.ndarray:
        """Last-layer outputs as floats (decoding boundary)."""
        if self.mode == "fixed":
            return self.config.output_fmt.to_float(y)
        return np.asarray(y, dtype=np.float64)

    def decode(self, y) -> np.ndarray:
        """Outputs -> actions, per :class:`pysim.config.Decoder`."""
        dec = self.config.decoder
        if dec.kind == "argmax":
            return np.argmax(np.asarray(y), axis=1)  # first maximum = lowest index on ties
        yf = self.outputs_float(y)
        low, high = np.asarray(dec.low), np.asarray(dec.high)
        if dec.kind == "clip":
            return np.clip(yf, low, high).astype(np.float32)
        return (low + (np.tanh(yf) + 1.0) * 0.5 * (high - low)).astype(np.float32)

    def act(self, obs) -> np.ndarray:
        """Observation -> action for every env (quantize, step, decode)."""
        return self.decode(self.step(self.quantize_obs(obs)))
