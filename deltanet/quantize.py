"""Post-training quantization: fixed-point formats from activation ranges seen in float rollouts.

Rules (documented choices)
--------------------------
* **Observations** are recorded from ``episodes`` float (dense-update) rollouts of the model
  itself, env ``i`` reset with seed ``seed + i`` (default seeds 50000...; held apart from the
  calibration and benchmark seeds).
* **Input scaling**: input ``i`` is multiplied by a power of two ``2^k_i`` so that its observed
  range ``m_i = max |x_i|`` comes close to the largest input range ``R = max_i m_i``:
  ``k_i = clip(floor(log2(R / m_i)), 0, max_input_shift)`` (default cap 3, i.e. x8). This keeps
  resolution for small-range observations (pole angle, car velocity) and lets one delta threshold
  serve all inputs of layer 0. The layer-0 weight columns are divided by the same power of two
  (exact in float), so the float network is unchanged. The cap limits the resolution lost by
  the scaled-down weight columns, which share the layer's weight format.
* **Range equalisation** (default on, :func:`equalize`): hidden units are rescaled by powers of
  two between consecutive layers so that weight ranges even out (exact for ReLU), optionally
  moving the overall gain to the input scaling / argmax outputs. Three variants are quantized
  (none, cross-layer, cross-layer + boundaries) and the one with the smallest relative RMS
  error of the last layer's outputs is kept (named in the report). DQN in particular leaves a
  few huge weights that would otherwise cost most of an 8-bit format's resolution.
* **Activation formats** (``act_bits`` wide, signed): integer bits (sign included) from the
  observed maximum with ``headroom`` (default 2x): ``int = max(1, ceil(log2(max * headroom)) + 1)``,
  the rest fraction bits. The input format uses ``max_i m_i 2^k_i``; layer ``l`` uses the max of
  its outputs (post-ReLU for hidden layers, raw outputs for the last layer).
* **Weight formats** (``weight_bits`` wide, signed, one per layer): the fewest integer bits whose
  range holds ``max |w|`` after rounding (at least the sign bit), the rest fraction bits.
* **A kept weight never rounds to zero** (:func:`keep_mask_nonzero`): the weight format above
  already has the finest LSB of its width that still holds the layer's largest weight, so no
  format of that width keeps a smaller weight without saturating the largest one. A kept
  (mask True) weight that rounds to 0 in it is therefore set to +/-1 LSB (the sign of the
  float weight; an error below 1 LSB, like any rounding), so the bit-accurate non-zero pattern
  is the pruning mask (a lane-balanced mask stays balanced). The count per layer is in the
  report (``kept_weights_raised``), printed by ``deltanet quantize`` and recorded in the
  provenance. Every equalisation variant is fixed this way before its error is measured.
* **Accumulators**: :func:`pysim.config.default_acc_bits` (cannot overflow).
* **Report**: per layer, outputs of the bit-accurate dense network vs the float dense network on
  every recorded observation (errors accumulate through the layers, as in the hardware): RMS and
  max absolute error, relative RMS (error RMS / float RMS), plus the action agreement.
"""

from __future__ import annotations

import math

import numpy as np
from rich.console import Console
from rich.table import Table

from deltanet.pysim import Decoder, DeltaNetwork, LayerParams, Model
from deltanet.pysim.config import DenseLayer, NetworkConfig, default_acc_bits
from deltanet.pysim.fixed import FixedFormat

from .envs import make_env

QUANT_SEED = 50_000
#: allowed activation/input widths (bits, sign included), weight widths, range headroom factors
#: and input-scale exponents (a scale of at most 2**MAX_INPUT_SHIFT)
ACT_BITS = (2, 32)
WEIGHT_BITS = (2, 16)
HEADROOM = (1.0, 65536.0)
MAX_INPUT_SHIFT = 16


def record_observations(model: Model, episodes: int = 10, seed: int = QUANT_SEED,
                        max_obs: int = 20_000) -> np.ndarray:
    """Observations (N, n_in) seen by the float dense network in ``episodes`` episodes."""
    env_id = model.meta["env_id"]
    envs = [make_env(env_id, seed + i)() for i in range(episodes)]
    net = DeltaNetwork(model, mode="float", delta=False, batch=episodes)
    obs = np.stack([np.asarray(e.reset(seed=seed + i)[0], dtype=np.float64).ravel()
                    for i, e in enumerate(envs)])
    active = np.ones(episodes, dtype=bool)
    seen = []
    while active.any():
        seen.append(obs[active].copy())
        act = net.act(obs)
        for b, e in enumerate(envs):
            if active[b]:
                o, _, term, trunc, _ = e.step(act[b])
                obs[b] = np.asarray(o, dtype=np.float64).ravel()
                active[b] = not (term or trunc)
    for e in envs:
        e.close()
    out = np.concatenate(seen)
    if len(out) > max_obs:  # deterministic subsample
        out = out[np.linspace(0, len(out) - 1, max_obs).astype(np.int64)]
    return out


def _truncated(model: Model, n_layers: int) -> Model:
    cfg = model.config
    dec = cfg.decoder if n_layers == len(cfg.layers) else Decoder("argmax")
    sub = NetworkConfig(cfg.input_fmt, cfg.layers[:n_layers], dec, cfg.input_scale,
                        cfg.input_offset)
    return Model(sub, model.params[:n_layers], dict(model.meta))


def layer_outputs(model: Model, obs: np.ndarray, mode: str) -> list:
    """Float outputs of every layer (dense updates) for a batch of observations."""
    outs = []
    for n in range(1, len(model.config.layers) + 1):
        net = DeltaNetwork(_truncated(model, n), mode=mode, delta=False, batch=len(obs))
        y = net.step(net.quantize_obs(obs))
        outs.append(net.outputs_float(y))
    return outs


def _int_bits_for(maxabs: float, headroom: float) -> int:
    if maxabs <= 0:
        return 1
    return max(1, math.ceil(math.log2(maxabs * headroom)) + 1)


def weight_format(maxabs: float, bits: int) -> FixedFormat:
    """Fewest integer bits whose range holds ``maxabs`` after rounding."""
    for i in range(1, bits + 1):
        f = FixedFormat(True, i, bits - i)
        if maxabs <= f.max_value + f.lsb / 2:
            return f
    raise ValueError(f"weights up to {maxabs:g} do not fit {bits} bits")


def _equalize_pairs(params, acts, iterations):
    for _ in range(iterations):
        for i in range(len(params) - 1):
            if acts[i] != "relu":
                continue
            a, b = params[i], params[i + 1]
            r1 = np.abs(np.where(a.mask, a.weight, 0)).max(axis=1)
            r2 = np.abs(np.where(b.mask, b.weight, 0)).max(axis=0)
            ok = (r1 > 0) & (r2 > 0)
            e = np.zeros_like(r1)
            e[ok] = np.round(0.5 * np.log2(r1[ok] / r2[ok]))
            sc = np.exp2(e)
            params[i] = LayerParams(a.weight / sc[:, None], a.bias / sc, a.mask)
            params[i + 1] = LayerParams(b.weight * sc[None, :], b.bias, b.mask)
    return params


def equalize(model: Model, iterations: int = 4, boundaries: bool = True) -> Model:
    """Range equalisation with powers of two (exact for ReLU networks, float outputs unchanged).

    1. Cross-layer: for hidden unit ``j`` of layer ``l``, row ``j`` of ``W_l`` and ``b_l[j]`` are
       divided by ``2^e_j`` and column ``j`` of ``W_{l+1}`` multiplied by it, ``e_j =
       round(log2(sqrt(r1 / r2)))``, ``r1``/``r2`` the row/column maxima (Nagel et al. 2019).
    2. Boundaries: the overall gain ``prod_l max|W_l|`` is moved out of the weights into the
       input scaling (``input_scale * 2^k``, a float boundary) and, for ``argmax`` decoding
       (invariant to a positive output scale), half of it into the last layer's outputs; then
       step 1 again. The weights then sit near ``|w| <= 1``, where 8 bits keep 7 fraction bits.
    """
    cfg = model.config
    params = [LayerParams(p.weight.astype(np.float64), p.bias.astype(np.float64), p.mask)
              for p in model.params]
    acts = [ly.activation for ly in cfg.layers]
    params = _equalize_pairs(params, acts, iterations)
    if not boundaries:
        return model.replace(params=[LayerParams(p.weight.astype(np.float32),
                                                 p.bias.astype(np.float32), p.mask)
                                     for p in params])
    maxima = [float(np.abs(np.where(p.mask, p.weight, 0)).max()) for p in params]
    total = sum(np.log2(m) for m in maxima if m > 0)
    k = int(np.ceil(total - 1e-9))
    k_out = k // 2 if cfg.decoder.kind == "argmax" else 0
    k_in = k - k_out
    p0 = params[0]
    params[0] = LayerParams(p0.weight / 2.0 ** k_in, p0.bias, p0.mask)
    pl = params[-1]
    params[-1] = LayerParams(pl.weight / 2.0 ** k_out, pl.bias / 2.0 ** k_out, pl.mask)
    params = _equalize_pairs(params, acts, iterations)
    params = [LayerParams(p.weight.astype(np.float32), p.bias.astype(np.float32), p.mask)
              for p in params]
    new_cfg = NetworkConfig(cfg.input_fmt, cfg.layers, cfg.decoder,
                            tuple(np.asarray(cfg.input_scale) * 2.0 ** k_in), cfg.input_offset)
    return model.replace(config=new_cfg, params=params)


def choose_formats(model: Model, obs: np.ndarray, *, act_bits: int = 16, weight_bits: int = 8,
                   headroom: float = 2.0, max_input_shift: int = 3, scale_inputs: bool = True):
    """A new model with input scaling and formats chosen from ``obs``; see the module doc."""
    if not ACT_BITS[0] <= act_bits <= ACT_BITS[1]:
        raise ValueError(f"--act-bits must lie in [{ACT_BITS[0]}, {ACT_BITS[1]}], got {act_bits}")
    if not WEIGHT_BITS[0] <= weight_bits <= WEIGHT_BITS[1]:
        raise ValueError(f"--weight-bits must lie in [{WEIGHT_BITS[0]}, {WEIGHT_BITS[1]}], got "
                         f"{weight_bits}")
    if not HEADROOM[0] <= headroom <= HEADROOM[1]:
        raise ValueError(f"headroom must lie in [{HEADROOM[0]:g}, {HEADROOM[1]:g}], got "
                         f"{headroom}")
    if not 0 <= max_input_shift <= MAX_INPUT_SHIFT:
        raise ValueError(f"--max-input-shift must lie in [0, {MAX_INPUT_SHIFT}], got "
                         f"{max_input_shift}")
    cfg = model.config
    s0 = np.asarray(cfg.input_scale)
    off = np.asarray(cfg.input_offset)
    x = (obs - off) * s0
    m = np.abs(x).max(axis=0)
    if scale_inputs:
        big = m.max()
        k = np.zeros_like(m)
        ok = m > 0
        k[ok] = np.clip(np.floor(np.log2(big / m[ok])), 0, max_input_shift)
        shift = np.exp2(k)
    else:
        shift = np.ones_like(m)
    new_scale = s0 * shift
    # weights of layer 0 see x * shift: divide the columns by the same power of two (exact).
    params = list(model.params)
    p0 = params[0]
    params[0] = LayerParams((p0.weight / shift[None, :]).astype(np.float32), p0.bias, p0.mask)
    scaled = Model(cfg, tuple(params), dict(model.meta))
    float_outs = layer_outputs(scaled.replace(config=NetworkConfig(
        cfg.input_fmt, cfg.layers, cfg.decoder, tuple(new_scale), cfg.input_offset)),
        obs, "float")
    in_fmt = FixedFormat(True, _int_bits_for(float((m * shift).max()), headroom),
                         act_bits - _int_bits_for(float((m * shift).max()), headroom))
    layers = []
    prev = in_fmt
    for i, (layer, p) in enumerate(zip(cfg.layers, params)):
        w = np.where(p.mask, p.weight, 0)
        wf = weight_format(float(np.abs(w).max()), weight_bits)
        ib = _int_bits_for(float(np.abs(float_outs[i]).max()), headroom)
        if ib >= act_bits:
            raise ValueError(f"layer {i}: outputs up to {np.abs(float_outs[i]).max():g} need "
                             f"{ib} integer bits, more than --act-bits {act_bits}")
        of = FixedFormat(True, ib, act_bits - ib)
        layers.append(DenseLayer(layer.n_in, layer.n_out, wf, of,
                                 default_acc_bits(prev, wf, layer.n_in), layer.activation,
                                 layer.threshold))
        prev = of
    new_cfg = NetworkConfig(in_fmt, tuple(layers), cfg.decoder, tuple(new_scale),
                            cfg.input_offset)
    return Model(new_cfg, tuple(params), dict(model.meta))


def error_report(model: Model, obs: np.ndarray) -> dict:
    """Fixed vs float dense outputs per layer over ``obs`` (see the module doc)."""
    fl = layer_outputs(model, obs, "float")
    fx = layer_outputs(model, obs, "fixed")
    rows = []
    for i, (a, b) in enumerate(zip(fl, fx)):
        err = b - a
        rms_f = float(np.sqrt(np.mean(a ** 2)))
        rms_e = float(np.sqrt(np.mean(err ** 2)))
        rows.append({"layer": i, "in_fmt": str(model.config.in_fmt(i)),
                     "weight_fmt": str(model.config.layers[i].weight_fmt),
                     "out_fmt": str(model.config.layers[i].out_fmt),
                     "acc_bits": model.config.layers[i].acc_bits,
                     "float_max": float(np.abs(a).max()), "float_rms": rms_f,
                     "rms_error": rms_e, "max_error": float(np.abs(err).max()),
                     "relative_rms": rms_e / rms_f if rms_f > 0 else 0.0})
    dec = model.config.decoder
    if dec.kind == "argmax":
        agree = float(np.mean(np.argmax(fl[-1], 1) == np.argmax(fx[-1], 1)))
        action = {"action_agreement": agree}
    else:
        low, high = np.asarray(dec.low), np.asarray(dec.high)

        def decode(y):
            if dec.kind == "clip":
                return np.clip(y, low, high)
            return low + (np.tanh(y) + 1) * 0.5 * (high - low)

        d = decode(fx[-1]) - decode(fl[-1])
        action = {"action_rms_error": float(np.sqrt(np.mean(d ** 2))),
                  "action_max_error": float(np.abs(d).max())}
    return {"observations": len(obs), "layers": rows, **action}


def quantize_model(model: Model, *, episodes: int = 10, seed: int = QUANT_SEED,
                   act_bits: int = 16, weight_bits: int = 8, headroom: float = 2.0,
                   max_input_shift: int = 3, scale_inputs: bool = True,
                   equalize_ranges: bool = True):
    """Record observations, choose formats, measure errors; returns ``(model, report)``."""
    obs = record_observations(model, episodes, seed)
    variants = {"none": model}
    if equalize_ranges:
        variants["cross-layer"] = equalize(model, boundaries=False)
        variants["cross-layer + boundaries"] = equalize(model)
    best = None
    for name, m in variants.items():
        q = choose_formats(m, obs, act_bits=act_bits, weight_bits=weight_bits,
                           headroom=headroom, max_input_shift=max_input_shift,
                           scale_inputs=scale_inputs)
        q, raised = keep_mask_nonzero(q)
        rep = error_report(q, obs)
        rep["kept_weights_raised"] = raised
        rep["mask_nonzero_fixed"] = sum(raised)
        err = rep["layers"][-1]["relative_rms"]
        if best is None or err < best[0] - 1e-12:
            best = (err, name, q, rep)
    _, name, q, rep = best
    rep["equalization"] = name
    rep.update({"act_bits": act_bits, "weight_bits": weight_bits, "headroom": headroom,
                "equalized": equalize_ranges,
                "input_scale": list(q.config.input_scale), "episodes": episodes, "seed": seed})
    meta = dict(q.meta)
    prov = dict(meta.get("provenance", {}))
    prov["quantization"] = {k: v for k, v in rep.items() if k != "layers"}
    prov["quantization"]["per_layer"] = [
        {k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()}
        for r in rep["layers"]]
    meta["provenance"] = prov
    return q.replace(meta=meta), rep


def keep_mask_nonzero(model: Model):
    """Set every kept weight (mask True) that rounds to zero in its layer's weight format to
    +/-1 LSB (the sign of the float weight), so the bit-accurate non-zero pattern equals the
    pruning mask (a lane-balanced mask stays balanced; the error stays below 1 LSB).
    Returns ``(model, per-layer counts of the weights changed)``; the counts are recorded in
    the provenance (``quantization.kept_weights_raised``, total ``mask_nonzero_fixed``)."""
    params, raised = list(model.params), []
    for i, p in enumerate(params):
        lsb = model.config.layers[i].weight_fmt.lsb
        lost = np.asarray(p.mask, dtype=bool) & (model.w_raw[i] == 0)
        raised.append(int(lost.sum()))
        if lost.any():
            w = np.array(p.weight, copy=True)
            w[lost] = np.where(w[lost] < 0, -lsb, lsb)
            params[i] = LayerParams(w.astype(p.weight.dtype), p.bias, p.mask)
    if not any(raised):
        return model, raised
    meta = dict(model.meta)
    prov = dict(meta.get("provenance", {}))
    prov["quantization"] = {**prov.get("quantization", {}), "kept_weights_raised": raised,
                            "mask_nonzero_fixed": sum(raised)}
    meta["provenance"] = prov
    return model.replace(params=params, meta=meta), raised


def print_quantize_report(rep: dict, console=None):
    """The quantization report of :func:`quantize_model` as a table."""
    console = console or Console(width=max(Console().width, 110))
    t = Table(title=f"quantization error over {rep['observations']} recorded observations "
                    "(bit-accurate dense vs float dense)")
    for col in ("layer", "in", "weights", "out", "acc", "float max", "RMS err", "max err",
                "rel RMS"):
        t.add_column(col, justify="right")
    for r in rep["layers"]:
        t.add_row(str(r["layer"]), r["in_fmt"], r["weight_fmt"], r["out_fmt"],
                  str(r["acc_bits"]), f"{r['float_max']:.3g}", f"{r['rms_error']:.2e}",
                  f"{r['max_error']:.2e}", f"{r['relative_rms']:.2%}")
    console.print(t)
    if "action_agreement" in rep:
        console.print(f"argmax action agreement {rep['action_agreement']:.2%}")
    else:
        console.print(f"action RMS error {rep['action_rms_error']:.3g}, "
                      f"max {rep['action_max_error']:.3g}")
    console.print(f"input scale {rep['input_scale']}; equalisation: "
                  f"{rep.get('equalization', 'none')}")
    raised = rep.get("kept_weights_raised", [])
    if any(raised):
        per = ", ".join(f"layer {i}: {n} (weights {r['weight_fmt']})"
                        for i, (n, r) in enumerate(zip(raised, rep["layers"])) if n)
        console.print(f"kept weights that rounded to 0, set to +/-1 LSB: {per}")
    else:
        console.print("no kept weight rounds to 0")
