"""The network description: one frozen config that every other part of deltanet reads.

A :class:`NetworkConfig` holds the shapes, fixed-point formats, activations, delta thresholds,
the input scaling and the output decoding of a sparse delta network. Weights are not part of it
(see :mod:`pysim.model`). The HDL takes this config in its constructors and the cocotb benches
read it back from the JSON written beside the generated Verilog: no other file restates a width.

Layer ``l`` reads the activations of layer ``l-1`` (layer 0 reads the quantized observation in
``input_fmt``), delta-encodes them against its threshold, accumulates ``W @ dx`` into its
pre-activation memory (accumulator format: ``acc_bits`` wide with ``in.frac + w.frac`` fraction
bits, two's-complement wrap), then requantizes into ``out_fmt`` and applies the activation.
Layers are tagged by ``kind``: ``dense`` (:class:`DenseLayer`) and ``conv2d``
(:class:`Conv2dLayer`). Every layer reads and writes a flat vector; a conv layer's input and
output vectors are its feature maps in **CHW order** (index ``(c * H + y) * W + x``), which is
exactly what a PyTorch ``nn.Flatten`` of an NCHW tensor produces. A flatten between a conv and a
dense layer is therefore a no-op and has no layer kind: the dense layer simply takes
``n_in = out_ch * out_h * out_w`` of the conv before it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from .fixed import FixedFormat, fmt

ACTIVATIONS = ("relu", "identity")
DECODERS = ("argmax", "clip", "tanh")


def default_acc_bits(in_fmt: FixedFormat, weight_fmt: FixedFormat, n_in: int) -> int:
    """Accumulator width that cannot overflow: product width + log2(fan-in) + 1 for the bias."""
    return in_fmt.width + weight_fmt.width + max(1, math.ceil(math.log2(max(n_in, 1)))) + 1


@dataclass(frozen=True)
class DenseLayer:
    """A fully connected layer ``y = act(requantize(b + W x))`` evaluated with delta updates.

    ``threshold`` is the delta threshold on this layer's *input*, in real units; the bit-accurate
    model compares against ``round(threshold / lsb)`` codes of the input format with ``>=``.
    """

    n_in: int
    n_out: int
    weight_fmt: FixedFormat
    out_fmt: FixedFormat
    acc_bits: int
    activation: str = "relu"
    threshold: float = 0.0
    kind: str = "dense"

    def __post_init__(self):
        object.__setattr__(self, "weight_fmt", fmt(self.weight_fmt))
        object.__setattr__(self, "out_fmt", fmt(self.out_fmt))
        for name in ("n_in", "n_out"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"dense layer: {name} must be a positive integer, got {v!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"dense layer: activation must be one of {ACTIVATIONS}, got {self.activation!r}"
            )
        if not (isinstance(self.threshold, (int, float)) and self.threshold >= 0
                and math.isfinite(self.threshold)):
            raise ValueError(f"dense layer: threshold must be finite and >= 0, got "
                             f"{self.threshold!r}")
        if not self.weight_fmt.signed:
            raise ValueError(f"dense layer: weight format must be signed, got {self.weight_fmt}")
        if not self.out_fmt.signed:
            raise ValueError(f"dense layer: activation format must be signed, got {self.out_fmt}")

    @property
    def fan_in(self) -> int:
        return self.n_in

    @property
    def dense_mults(self) -> int:
        """Multiplications of the dense (unpruned, every input) layer: ``n_in * n_out``."""
        return self.n_in * self.n_out

    @property
    def weight_shape(self) -> tuple:
        return (self.n_out, self.n_in)

    @property
    def bias_shape(self) -> tuple:
        return (self.n_out,)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["weight_fmt"] = str(self.weight_fmt)
        d["out_fmt"] = str(self.out_fmt)
        return d


@dataclass(frozen=True)
class Conv2dLayer:
    """A 2-D convolution ``y = act(requantize(b + conv(W, x)))`` evaluated with delta updates.

    Input: ``in_ch x in_h x in_w`` maps, flattened in CHW order (``n_in = in_ch*in_h*in_w``);
    output: ``out_ch x out_h x out_w`` maps in CHW order (``n_out``), with
    ``out_h = (in_h + 2*padding - kernel) // stride + 1`` (same for ``out_w``); zero padding.
    Weights ``(out_ch, in_ch, kernel, kernel)`` (PyTorch's layout, cross-correlation), one bias
    per output channel. ``threshold`` is the delta threshold on this layer's input, as for
    :class:`DenseLayer`.
    """

    in_ch: int
    in_h: int
    in_w: int
    out_ch: int
    kernel: int
    stride: int
    padding: int
    weight_fmt: FixedFormat
    out_fmt: FixedFormat
    acc_bits: int
    activation: str = "relu"
    threshold: float = 0.0
    kind: str = "conv2d"

    def __post_init__(self):
        object.__setattr__(self, "weight_fmt", fmt(self.weight_fmt))
        object.__setattr__(self, "out_fmt", fmt(self.out_fmt))
        for name in ("in_ch", "in_h", "in_w", "out_ch", "kernel", "stride"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"conv2d layer: {name} must be a positive integer, got {v!r}")
        if not isinstance(self.padding, int) or self.padding < 0:
            raise ValueError(f"conv2d layer: padding must be an integer >= 0, got "
                             f"{self.padding!r}")
        if self.kernel > min(self.in_h, self.in_w) + 2 * self.padding:
            raise ValueError(f"conv2d layer: kernel {self.kernel} larger than the padded input "
                             f"{self.in_h + 2 * self.padding}x{self.in_w + 2 * self.padding}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"conv2d layer: activation must be one of {ACTIVATIONS}, got {self.activation!r}"
            )
        if not (isinstance(self.threshold, (int, float)) and self.threshold >= 0
                and math.isfinite(self.threshold)):
            raise ValueError(f"conv2d layer: threshold must be finite and >= 0, got "
                             f"{self.threshold!r}")
        if not self.weight_fmt.signed:
            raise ValueError(f"conv2d layer: weight format must be signed, got {self.weight_fmt}")
        if not self.out_fmt.signed:
            raise ValueError(f"conv2d layer: activation format must be signed, got {self.out_fmt}")

    @property
    def out_h(self) -> int:
        return (self.in_h + 2 * self.padding - self.kernel) // self.stride + 1

    @property
    def out_w(self) -> int:
        return (self.in_w + 2 * self.padding - self.kernel) // self.stride + 1

    @property
    def n_in(self) -> int:
        return self.in_ch * self.in_h * self.in_w

    @property
    def n_out(self) -> int:
        return self.out_ch * self.out_h * self.out_w

    @property
    def in_shape(self) -> tuple:
        return (self.in_ch, self.in_h, self.in_w)

    @property
    def out_shape(self) -> tuple:
        return (self.out_ch, self.out_h, self.out_w)

    @property
    def fan_in(self) -> int:
        return self.in_ch * self.kernel * self.kernel

    @property
    def dense_mults(self) -> int:
        """Multiplications of the dense conv: ``out_pixels * out_ch * k * k * in_ch``."""
        return self.out_h * self.out_w * self.out_ch * self.fan_in

    @property
    def weight_shape(self) -> tuple:
        return (self.out_ch, self.in_ch, self.kernel, self.kernel)

    @property
    def bias_shape(self) -> tuple:
        return (self.out_ch,)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["weight_fmt"] = str(self.weight_fmt)
        d["out_fmt"] = str(self.out_fmt)
        return d


LAYER_KINDS = {"dense": DenseLayer, "conv2d": Conv2dLayer}


def layer_from_dict(d: dict):
    kind = d.get("kind", "dense")
    if kind not in LAYER_KINDS:
        raise ValueError(f"unknown layer kind {kind!r}; known: {sorted(LAYER_KINDS)}")
    cls = LAYER_KINDS[kind]
    known = set(cls.__dataclass_fields__)
    extra = set(d) - known
    if extra:
        raise ValueError(f"{kind} layer: unknown fields {sorted(extra)}")
    return cls(**d)


@dataclass(frozen=True)
class Decoder:
    """How the last layer's outputs become an action (a float boundary, outside the datapath).

    * ``argmax`` - discrete actions: index of the largest output, ties to the *lowest* index.
    * ``clip``   - continuous actions: ``clip(y, low, high)`` per dimension (SB3 PPO/A2C).
    * ``tanh``   - continuous actions: ``low + (tanh(y) + 1) * (high - low) / 2`` (SB3 SAC/TD3).
    """

    kind: str = "argmax"
    low: tuple = ()
    high: tuple = ()

    def __post_init__(self):
        if self.kind not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {self.kind!r}")
        object.__setattr__(self, "low", tuple(float(v) for v in self.low))
        object.__setattr__(self, "high", tuple(float(v) for v in self.high))
        if self.kind != "argmax" and len(self.low) != len(self.high):
            raise ValueError("decoder: low and high must have the same length")

    def to_dict(self) -> dict:
        return {"kind": self.kind, "low": list(self.low), "high": list(self.high)}


@dataclass(frozen=True)
class NetworkConfig:
    """Shapes, formats, thresholds, input scaling and output decoding of a delta network.

    The observation enters as ``x = (obs - input_offset) * input_scale`` (float), quantized to
    ``input_fmt``. Layer ``l``'s input format is ``input_fmt`` for ``l == 0`` else
    ``layers[l-1].out_fmt``.
    """

    input_fmt: FixedFormat
    layers: tuple
    decoder: Decoder = field(default_factory=Decoder)
    input_scale: tuple = ()
    input_offset: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "input_fmt", fmt(self.input_fmt))
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers:
            raise ValueError("network: needs at least one layer")
        if not self.input_fmt.signed:
            raise ValueError(f"network: input format must be signed, got {self.input_fmt}")
        n = self.layers[0].n_in
        scale = tuple(float(v) for v in (self.input_scale or (1.0,) * n))
        offset = tuple(float(v) for v in (self.input_offset or (0.0,) * n))
        if len(scale) != n or len(offset) != n:
            raise ValueError(f"network: input_scale/input_offset need {n} entries "
                             f"(got {len(scale)}/{len(offset)})")
        object.__setattr__(self, "input_scale", scale)
        object.__setattr__(self, "input_offset", offset)
        for i in range(1, len(self.layers)):
            if self.layers[i].n_in != self.layers[i - 1].n_out:
                raise ValueError(f"network: layer {i} has n_in={self.layers[i].n_in} but layer "
                                 f"{i - 1} has n_out={self.layers[i - 1].n_out}")
            a, b = self.layers[i - 1], self.layers[i]
            if a.kind == "conv2d" and b.kind == "conv2d" and a.out_shape != b.in_shape:
                raise ValueError(f"network: layer {i} takes {b.in_shape} maps but layer {i - 1} "
                                 f"gives {a.out_shape}")
        for i, layer in enumerate(self.layers):
            need = self.in_fmt(i).frac_bits + layer.weight_fmt.frac_bits + 2
            if layer.acc_bits < need or layer.acc_bits > 48:
                raise ValueError(f"network: layer {i} acc_bits={layer.acc_bits} outside "
                                 f"[{need}, 48] (needs more than its {need - 2} fraction bits; "
                                 f"48 keeps the reference's float64 matmul exact)")
        if self.decoder.kind == "argmax" and self.layers[-1].n_out < 1:
            raise ValueError("network: argmax needs at least one output")
        if self.decoder.kind != "argmax" and len(self.decoder.low) != self.n_out:
            raise ValueError(f"network: decoder bounds have {len(self.decoder.low)} entries, "
                             f"the network has {self.n_out} outputs")

    # ---- derived, read-only ---------------------------------------------------------------
    @property
    def n_in(self) -> int:
        return self.layers[0].n_in

    @property
    def n_out(self) -> int:
        return self.layers[-1].n_out

    @property
    def output_fmt(self) -> FixedFormat:
        return self.layers[-1].out_fmt

    def in_fmt(self, i: int) -> FixedFormat:
        return self.input_fmt if i == 0 else self.layers[i - 1].out_fmt

    def acc_fmt(self, i: int) -> FixedFormat:
        """Accumulator format of layer ``i``: wraps, fraction = input frac + weight frac."""
        layer = self.layers[i]
        frac = self.in_fmt(i).frac_bits + layer.weight_fmt.frac_bits
        return FixedFormat(True, layer.acc_bits - frac, frac, "half_even", "wrap")

    def threshold_raw(self, i: int) -> int:
        """Threshold of layer ``i`` in raw codes of its input format (round half to even)."""
        f = self.in_fmt(i)
        return round(self.layers[i].threshold * (1 << f.frac_bits))

    def with_thresholds(self, thresholds) -> NetworkConfig:
        thresholds = list(thresholds)
        if len(thresholds) != len(self.layers):
            raise ValueError(f"need {len(self.layers)} thresholds, got {len(thresholds)}")
        layers = tuple(
            type(layer)(**{**layer.__dict__, "threshold": float(t)})
            for layer, t in zip(self.layers, thresholds)
        )
        return NetworkConfig(self.input_fmt, layers, self.decoder, self.input_scale,
                             self.input_offset)

    def replace_layers(self, layers) -> NetworkConfig:
        return NetworkConfig(self.input_fmt, tuple(layers), self.decoder, self.input_scale,
                             self.input_offset)

    def to_dict(self) -> dict:
        return {
            "input_fmt": str(self.input_fmt),
            "layers": [layer.to_dict() for layer in self.layers],
            "decoder": self.decoder.to_dict(),
            "input_scale": list(self.input_scale),
            "input_offset": list(self.input_offset),
        }

    @classmethod
    def from_dict(cls, d: dict) -> NetworkConfig:
        try:
            return cls(
                input_fmt=d["input_fmt"],
                layers=tuple(layer_from_dict(ld) for ld in d["layers"]),
                decoder=Decoder(**d.get("decoder", {})),
                input_scale=tuple(d.get("input_scale", ())),
                input_offset=tuple(d.get("input_offset", ())),
            )
        except KeyError as e:
            raise ValueError(f"network config: missing field {e.args[0]!r}") from None
        except TypeError as e:
            raise ValueError(f"network config: {e}") from None


def mlp_config(sizes, *, input_fmt="SQ8.8", weight_fmt="SQ2.6", act_fmt="SQ8.8",
               out_fmt=None, thresholds=None, decoder=None, acc_bits=None,
               input_scale=(), input_offset=()) -> NetworkConfig:
    """An MLP ``sizes[0] -> ... -> sizes[-1]`` with ReLU hidden layers and a linear output."""
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError("mlp_config: need at least input and output sizes")
    n = len(sizes) - 1
    wf = [fmt(w) for w in (weight_fmt if isinstance(weight_fmt, (list, tuple)) else
                           [weight_fmt] * n)]
    af = [fmt(act_fmt)] * (n - 1) + [fmt(out_fmt or act_fmt)]
    thr = list(thresholds) if thresholds is not None else [0.0] * n
    layers = []
    in_f = fmt(input_fmt)
    for i in range(n):
        ab = acc_bits[i] if isinstance(acc_bits, (list, tuple)) else acc_bits
        ab = ab or default_acc_bits(in_f, wf[i], sizes[i])
        layers.append(DenseLayer(sizes[i], sizes[i + 1], wf[i], af[i], ab,
                                 "relu" if i < n - 1 else "identity", float(thr[i])))
        in_f = af[i]
    return NetworkConfig(fmt(input_fmt), tuple(layers), decoder or Decoder(), input_scale,
                         input_offset)
