"""The reference engines: bit-accurate delta network and its three twins, batched over B envs.

``DeltaNetwork(model, mode="fixed", delta=True)`` is the bit-accurate sparse delta network; the
same class with ``delta=False`` is the dense quantized network (same arithmetic, no state), and
``mode="float"`` gives the float32 twins. Every engine counts, per layer and per env:

* ``dense``        - multiplications of the dense layer: ``n_in * n_out`` (dense),
                     ``out_h * out_w * out_ch * k * k * in_ch`` (conv2d);
* ``events``       - inputs that take part: propagated non-zero deltas (delta) or non-zero
                     inputs (dense);
* ``significant``  - products with both operands non-zero: sum over the events of the non-zero
                     weights in that input's column (conv2d: the non-zero taps of its channel
                     that land on the output grid, :meth:`pysim.model.Model.column_nnz`);
* ``weight_reads`` - weight-memory words read with column-compressed storage (= significant).

Per step of layer ``l`` (delta, see docs/semantics.md for every convention)::

    d     = x - x_hat                      # x_hat: last *propagated* input, starts at 0
    ev    = (d != 0) & ((|d| >= theta) | first)  # comparator >=, theta in the input's raw codes;
                                           # first = first step after reset: a full pass that
                                           # ignores the threshold (every non-zero input fires)
    x_hat = where(ev, x, x_hat)
    M     = wrap(M + W @ where(ev, d, 0))  # M starts at the bias at reset (conv2d: W @ is
                                           # the convolution of the delta maps, CHW order)
    y     = act(requantize(M))             # -> next layer's x

The integer matrix products run as float64 BLAS products, which are exact because every
operand and partial sum is an integer below 2**53 (the config caps accumulators at 48 bits).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .fixed import FixedFormat
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
        self.dense_per_layer = np.array([ly.dense_mults for ly in cfg.layers], dtype=np.int64)
        self._nnz = [model.column_nnz(i, mode) for i in range(n)]
        if mode == "fixed":
            # Exact integers held in float64: every operand and partial sum stays below 2**52.
            self._wt = [self._weight_operand(ly, model.w_raw[i].astype(np.float64))
                        for i, ly in enumerate(cfg.layers)]
            self._b = [self._bias_vector(ly, model.b_raw[i].astype(np.float64))
                       for i, ly in enumerate(cfg.layers)]
            self._thr = [float(max(cfg.threshold_raw(i), 1)) for i in range(n)]  # d != 0 folded in
            self._wrap = []
            self._requant = []
            for i, ly in enumerate(cfg.layers):
                in_f = cfg.in_fmt(i)
                bound = in_f.width + 1 + ly.weight_fmt.width - 1 + int(
                    np.ceil(np.log2(max(ly.fan_in, 2))))
                if bound > 52:
                    raise ValueError(f"layer {i}: delta x weight x fan-in needs {bound} bits; "
                                     "the exact float64 product allows 52")
                # The accumulator always equals bias + W @ x_hat with x_hat inside the input
                # format, so when that cannot leave the accumulator range wrapping is a no-op.
                in_abs = max(-in_f.min_raw, in_f.max_raw)
                w_abs = np.abs(model.w_raw[i]).reshape(ly.weight_shape[0], -1).sum(axis=1)
                if ly.kind == "dense":  # w_raw is (n_out, n_in): one sum per output
                    row_abs = w_abs
                else:  # one sum per output channel, shared by its pixels (border: an upper bound)
                    row_abs = np.repeat(w_abs, ly.out_h * ly.out_w)
                worst = np.abs(self._b[i]) + row_abs * float(in_abs)
                self._wrap.append(None if worst.max() < 2.0 ** (ly.acc_bits - 1)
                                  else ly.acc_bits)
                self._requant.append(_FloatRequant(ly.out_fmt, cfg.acc_fmt(i).frac_bits,
                                                   ly.activation == "relu"))
        else:
            self._wt = [self._weight_operand(ly, model.float_weight(i))
                        for i, ly in enumerate(cfg.layers)]
            self._b = [self._bias_vector(ly, model.params[i].bias.astype(np.float32))
                       for i, ly in enumerate(cfg.layers)]
            self._thr = [np.float32(ly.threshold) for ly in cfg.layers]
        # one product gives both counts: events (column of ones) and significant (nnz)
        self._cnt = [np.stack([np.ones_like(v), v], axis=1).astype(self._wt[0].dtype)
                     for v in self._nnz]
        self.reset()

    @staticmethod
    def _weight_operand(layer, w: np.ndarray) -> np.ndarray:
        """Dense: W.T (n_in, n_out) for ``x @ W.T``. Conv2d: (out_ch, in_ch*k*k) for im2col."""
        if layer.kind == "dense":
            return np.ascontiguousarray(w.T)
        return np.ascontiguousarray(w.reshape(layer.out_ch, -1))

    @staticmethod
    def _bias_vector(layer, b: np.ndarray) -> np.ndarray:
        """Per-output bias (n_out,): a conv channel's bias repeated over its out_h*out_w pixels."""
        if layer.kind == "dense":
            return b
        return np.repeat(b, layer.out_h * layer.out_w)

    def _linear(self, i: int, x: np.ndarray) -> np.ndarray:
        """Layer ``i``'s linear map of a (B, n_in) batch: ``x @ W.T`` or the conv, (B, n_out).

        A conv runs as one product per batch over the im2col patches (zero padding). Applied to
        a delta map it is the event-driven update: for each kernel offset, the delta at input
        ``(c, y, x)`` reaches the one output ``((y + p - ky) / s, (x + p - kx) / s)`` if that is
        on the grid, through weight ``W[:, c, ky, kx]``; zero deltas add exact zeros, so the sum
        equals the scatter over the events alone (the tests check it against such a scatter).
        """
        ly = self.config.layers[i]
        if ly.kind == "dense":
            return x @ self._wt[i]
        return conv2d_im2col(x, self._wt[i], ly)

    # ---- state -----------------------------------------------------------------------------
    @property
    def _dtype(self):
        return np.float64 if self.mode == "fixed" else np.float32

    def reset(self, which=None):
        """Reset all envs (``which=None``) or those where the boolean ``which`` is True."""
        cfg, B = self.config, self.batch
        if which is None:
            self._xh = [np.zeros((B, ly.n_in), dtype=self._dtype) for ly in cfg.layers]
            self._acc = [np.broadcast_to(b, (B, b.shape[0])).astype(self._dtype)
                         for b in self._b]
            self.steps = np.zeros(B, dtype=np.int64)
            return
        which = np.asarray(which, dtype=bool).reshape(B)
        for i in range(len(cfg.layers)):
            self._xh[i][which] = 0
            self._acc[i][which] = self._b[i]
        self.steps[which] = 0

    def _export(self, arrays):
        if self.mode == "fixed":
            return [a.astype(np.int64) for a in arrays]
        return [a.copy() for a in arrays]

    @property
    def x_hat(self) -> list:
        """Last propagated input of every layer, (B, n_in) each (raw codes in fixed mode)."""
        return self._export(self._xh)

    @property
    def acc(self) -> list:
        """Pre-activation memory of every layer, (B, n_out) each (raw codes in fixed mode)."""
        return self._export(self._acc)

    def set_threshold_raw(self, layer: int, raw: int) -> None:
        """Change layer ``layer``'s threshold at run time, in raw codes of its input format.

        The model of a write to the hardware's threshold register (fixed mode only); 0 and 1
        both mean "every change".
        """
        if self.mode != "fixed":
            raise ValueError("set_threshold_raw applies to the fixed-point network")
        if not 0 <= layer < len(self._thr):
            raise ValueError(f"layer must be in 0..{len(self._thr) - 1}, got {layer}")
        if int(raw) < 0:
            raise ValueError(f"threshold must be >= 0, got {raw}")
        self._thr[layer] = float(max(int(raw), 1))

    def quantize_obs(self, obs) -> np.ndarray:
        """Float observation (B, n_in) -> layer-0 input: raw codes (fixed) or float32.

        A NaN or infinite observation value is refused (ValueError naming its index and
        value): in the delta network it would silence that input for the rest of the episode.
        """
        cfg = self.config
        obs = np.asarray(obs, dtype=np.float64).reshape(self.batch, cfg.n_in)
        bad = ~np.isfinite(obs)
        if bad.any():
            b, i = (int(v) for v in np.argwhere(bad)[0])
            env = f" (env {b} of {self.batch})" if self.batch > 1 else ""
            raise ValueError(f"observation[{i}]{env} is {float(obs[b, i])}: observations must be "
                             f"finite ({int(bad.sum())} of {bad.size} values are not)")
        x = (obs - np.asarray(cfg.input_offset)) * np.asarray(cfg.input_scale)
        if self.mode == "fixed":
            return cfg.input_fmt.quantize(x)
        return x.astype(np.float32)

    # ---- one step ----------------------------------------------------------------------------
    def step(self, x) -> np.ndarray:
        """Advance every env by one step. ``x``: layer-0 inputs (use :meth:`quantize_obs`)."""
        cfg, B = self.config, self.batch
        fixed = self.mode == "fixed"
        x = np.asarray(x)
        if fixed:
            if x.dtype.kind not in "iu":
                raise ValueError(f"network input: raw codes must be integers, got {x.dtype}")
            cfg.input_fmt.check_raw(x, "network input")
        x = x.astype(self._dtype).reshape(B, cfg.n_in)
        n = len(cfg.layers)
        first = self.steps == 0  # full pass at episode start
        any_first = bool(first.any())
        counts = np.zeros((2, n, B), dtype=self._dtype)
        self.last_events = []
        for i, layer in enumerate(cfg.layers):
            if self.delta:
                d = x - self._xh[i]
                if fixed:
                    thr = np.where(first, 1.0, self._thr[i])[:, None] if any_first \
                        else self._thr[i]
                    ev = np.abs(d) >= thr
                else:
                    ev = d != 0
                    if self._thr[i] > 0:
                        big = np.abs(d) >= self._thr[i]
                        ev &= (big | first[:, None]) if any_first else big
                dx = d * ev
                self._xh[i] += dx
                acc = self._acc[i]
                if ev.any():  # no event anywhere in the batch: nothing to add
                    acc += self._linear(i, dx)
            else:
                ev = x != 0
                acc = self._linear(i, x)
                acc += self._b[i]
                self._acc[i] = acc
            if fixed and self._wrap[i] is not None:
                acc -= np.floor((acc + 2.0 ** (self._wrap[i] - 1)) * 2.0 ** -self._wrap[i]) \
                    * 2.0 ** self._wrap[i]
            self.last_events.append(ev)
            counts[:, i] = (ev @ self._cnt[i]).T
            if fixed:
                x = self._requant[i](acc)
            else:
                x = np.maximum(acc, 0) if layer.activation == "relu" else acc.copy()
        self.steps += 1
        c = counts.astype(np.int64)
        self.last_counts = {"events": c[0], "significant": c[1], "weight_reads": c[1],
                            "dense": np.broadcast_to(self.dense_per_layer[:, None], (n, B))}
        out = x.astype(np.int64) if fixed else x
        self.last_outputs = out
        return out

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


def conv2d_im2col(x: np.ndarray, wmat: np.ndarray, layer) -> np.ndarray:
    """(B, in_ch*in_h*in_w) CHW maps -> (B, out_ch*out_h*out_w) CHW maps; ``wmat`` is the
    weight reshaped to (out_ch, in_ch*k*k). Exact on integers held in float64 (the caller
    checks the 52-bit bound)."""
    B = x.shape[0]
    k, s, p = layer.kernel, layer.stride, layer.padding
    oh, ow = layer.out_h, layer.out_w
    xm = x.reshape(B, layer.in_ch, layer.in_h, layer.in_w)
    if p:
        xm = np.pad(xm, ((0, 0), (0, 0), (p, p), (p, p)))
    win = sliding_window_view(xm, (k, k), axis=(2, 3))[:, :, ::s, ::s][:, :, :oh, :ow]
    cols = win.transpose(0, 1, 4, 5, 2, 3).reshape(B, layer.in_ch * k * k, oh * ow)
    return np.matmul(wmat, cols).reshape(B, layer.out_ch * oh * ow)


class _FloatRequant:
    """``out_fmt.requantize`` + activation on exact integers held in float64.

    Scaling by a power of two is exact; ``rint`` rounds half to even, ``floor`` truncates and
    ``floor(v + 0.5)`` rounds half up, all exactly below 2**52. Equal to
    :meth:`pysim.fixed.FixedFormat.requantize` (tests compare them).
    """

    def __init__(self, out_fmt: FixedFormat, src_frac: int, relu: bool):
        self.scale = 2.0 ** (out_fmt.frac_bits - src_frac)
        self.rounding = out_fmt.rounding
        self.fmt = out_fmt
        self.relu = relu
        lo = float(out_fmt.min_raw)
        self.lo = max(lo, 0.0) if relu else lo
        self.hi = float(out_fmt.max_raw)

    def __call__(self, acc: np.ndarray) -> np.ndarray:
        y = acc * self.scale
        if self.rounding == "half_even":
            np.rint(y, out=y)
        elif self.rounding == "trunc":
            np.floor(y, out=y)
        else:
            y += 0.5
            np.floor(y, out=y)
        if self.fmt.overflow == "sat":
            return np.clip(y, self.lo, self.hi, out=y)
        w = float(1 << self.fmt.width)
        y -= np.floor((y - self.fmt.min_raw) / w) * w
        if self.relu:
            np.maximum(y, 0.0, out=y)
        return y
