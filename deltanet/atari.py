"""Atari glue: the DQN setting of the seed paper (Mnih et al. 2015 preprocessing and network).

Training envs (:func:`make_train_env`) are SB3's standard stack: ``<Game>NoFrameskip-v4`` with
:class:`~stable_baselines3.common.atari_wrappers.AtariWrapper` (30 no-op starts, max-pool over
frame skip 4, 84x84 grey, episodic life, FIRE on reset, rewards clipped to their sign) and four
stacked frames.

Evaluation envs (:func:`make_eval_env`, defined in :mod:`sim.envs` because the closed-loop
benches create them) are the same preprocessing *without* episodic life and reward clipping, so
an episode is a whole game and its return is the game score (what DQN papers report), capped at
:data:`MAX_EVAL_STEPS` agent steps (108,000 frames, the usual cap). Their observations are the
four stacked frames in CHW order, flattened (``4*84*84`` uint8 values), which is the input
layout of the exported network (SB3 transposes HWC to CHW the same way).

The exported network (:func:`export_dqn_cnn`) is SB3's ``NatureCNN`` + Q head:
conv 32@8x8 s4 -> conv 64@4x4 s2 -> conv 64@3x3 s1 -> dense 3136->512 -> dense 512->A, ReLU
after every layer but the last, argmax decoder; the ``/255`` of SB3's image preprocessing is the
network's input scale.
"""

from __future__ import annotations

import numpy as np

from deltanet.sim.envs import (
    FRAME_STACK,
    MAX_EVAL_STEPS,
    ChwFrameStack,
    check_atari,
    is_atari,
    make_eval_env,
    register_atari,
)

__all__ = ["DQN_ATARI", "FRAME_STACK", "MAX_EVAL_STEPS", "PAPER_GAMES", "PAPER_SPARSITY",
           "ChwFrameStack", "check_atari", "export_dqn_cnn", "game_name", "is_atari",
           "make_eval_env", "make_train_env", "quantize_atari", "record_frames", "register"]

#: ale-py's envs registered with gymnasium (see :func:`sim.envs.register_atari`)
register = register_atari

#: The paper's games (Ivanov et al. 2022 and DOMAIN.md); any ``*NoFrameskip-v4`` id works.
PAPER_GAMES = ("Breakout", "SpaceInvaders", "Freeway", "Enduro", "Robotank", "BattleZone")
#: Paper sparsities (DOMAIN.md) for the two games it names.
PAPER_SPARSITY = {"Breakout": 0.79, "SpaceInvaders": 0.74}
#: DQN hyper-parameters (rl-zoo dqn.yml "atari" entry; learning starts after 20k instead of
#: 100k steps because our CPU budget is ~1M steps instead of 10M).
DQN_ATARI = {
    "n_envs": 1, "steps": 1_000_000, "net_arch": "NatureCNN",
    # torch's fused Adam: the same update in one kernel; a training step takes 5.8 ms less
    # of Adam on one CPU core (1.0 instead of 6.8; ~10% of the step)
    "policy_kwargs": {"optimizer_kwargs": {"fused": True}},
    "kwargs": {"buffer_size": 100_000, "learning_rate": 1e-4, "batch_size": 32,
               "learning_starts": 20_000, "target_update_interval": 1000, "train_freq": 4,
               "gradient_steps": 1, "exploration_fraction": 0.1,
               "exploration_final_eps": 0.01, "optimize_memory_usage": True,
               "replay_buffer_kwargs": {"handle_timeout_termination": False}},
}


def game_name(env_id: str) -> str:
    return env_id.split("NoFrameskip")[0]


def make_train_env(env_id: str, n_envs: int, seed: int):
    """SB3's Atari training stack: AtariWrapper + 4 stacked frames (HWC, SB3 transposes)."""
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    check_atari(env_id)
    return VecFrameStack(make_atari_env(env_id, n_envs=n_envs, seed=seed), FRAME_STACK)


def export_dqn_cnn(sb3_model, env_id: str, provenance: dict | None = None):
    """SB3 CnnPolicy (NatureCNN) -> float :class:`pysim.Model` with conv layers, through the one
    conversion path (:func:`deltanet.export.export_sb3`), with the Atari setting's placeholder
    formats and the eval env's flat CHW observation space."""
    from .export import export_sb3

    n_in = int(np.prod(sb3_model.policy.observation_space.shape))
    obs = {"type": "Box", "shape": [n_in], "low": [0.0], "high": [255.0],
           "layout": f"{FRAME_STACK}x84x84 CHW uint8 frames"}
    return export_sb3(sb3_model, env_id, provenance, observation_space=obs, input_fmt="SQ2.8",
                      acc_bits=32)


# ---- quantization ------------------------------------------------------------------------------
#: Input format of the pixels: x = pixel / 256 in SQ1.8, so the raw code *is* the pixel (0..255)
#: and quantizing the input is exact; SB3's /255 is folded into conv1's weights (x 256/255).
PIXEL_FMT = "SQ1.8"


def record_frames(model, episodes: int = 2, seed: int = 50_000, max_steps: int = 1500,
                  max_frames: int = 600) -> np.ndarray:
    """Observations (N, n_in) uint8 seen by the float dense network (deterministic subsample)."""
    from deltanet.pysim import DeltaNetwork

    env_id = model.meta["env_id"]
    envs = [make_eval_env(env_id, max_steps) for _ in range(episodes)]
    net = DeltaNetwork(model, mode="float", delta=False, batch=episodes)
    obs = np.stack([e.reset(seed=seed + i)[0] for i, e in enumerate(envs)])
    active = np.ones(episodes, dtype=bool)
    seen = []
    while active.any():
        seen.append(obs[active].copy())
        act = net.act(obs.astype(np.float64))
        for b, e in enumerate(envs):
            if active[b]:
                o, _, term, trunc, _ = e.step(int(act[b]))
                obs[b] = o
                active[b] = not (term or trunc)
    for e in envs:
        e.close()
    out = np.concatenate(seen)
    if len(out) > max_frames:
        out = out[np.linspace(0, len(out) - 1, max_frames).astype(np.int64)]
    return out


def quantize_atari(model, frames: np.ndarray, *, act_bits: int = 16, weight_bits: int = 12,
                   headroom: float = 2.0):
    """Fixed-point formats for an exported Atari DQN, chosen from the float layer outputs on
    ``frames``: pixels in :data:`PIXEL_FMT` (exact), per-layer weights in ``weight_bits`` (fewest
    integer bits that hold the largest kept weight; 12 bits because the DQN's weights are small,
    ~0.01 in the dense layers, and 8 bits would leave them 1-2 LSB), activations in
    ``act_bits`` (integer bits
    for ``headroom`` x the largest output seen), accumulators wide enough never to overflow."""
    import dataclasses

    from deltanet.pysim import LayerParams, Model, NetworkConfig
    from deltanet.pysim.config import default_acc_bits
    from deltanet.pysim.fixed import FixedFormat, fmt

    from .quantize import _int_bits_for, keep_mask_nonzero, layer_outputs, weight_format

    cfg = model.config
    if cfg.layers[0].kind != "conv2d":
        raise ValueError("quantize_atari: the model does not start with a conv layer")
    params = list(model.params)
    s0 = float(np.asarray(cfg.input_scale)[0])
    fold = s0 * 256.0  # x = pixel * s0 = (pixel / 256) * fold
    p0 = params[0]
    params[0] = LayerParams((p0.weight * fold).astype(np.float32), p0.bias, p0.mask)
    n_in = cfg.n_in
    scaled = Model(NetworkConfig(fmt(PIXEL_FMT), cfg.layers, cfg.decoder,
                                 input_scale=(1.0 / 256.0,) * n_in),
                   tuple(params), dict(model.meta))
    outs = []
    for k in range(0, len(frames), 100):
        outs.append(layer_outputs(scaled, frames[k:k + 100].astype(np.float64), "float"))
    maxes = [max(float(np.abs(o[i]).max()) for o in outs) for i in range(len(cfg.layers))]
    layers, prev = [], fmt(PIXEL_FMT)
    for i, (layer, p) in enumerate(zip(cfg.layers, params)):
        w = np.where(p.mask, p.weight, 0)
        wf = weight_format(float(np.abs(w).max()), weight_bits)
        ib = _int_bits_for(maxes[i], headroom)
        of = FixedFormat(True, ib, act_bits - ib)
        layers.append(dataclasses.replace(layer, weight_fmt=wf, out_fmt=of,
                                          acc_bits=default_acc_bits(prev, wf, layer.fan_in)))
        prev = of
    q = Model(NetworkConfig(fmt(PIXEL_FMT), tuple(layers), cfg.decoder,
                            input_scale=(1.0 / 256.0,) * n_in), tuple(params), dict(model.meta))
    q, changed = keep_mask_nonzero(q)
    meta = dict(q.meta)
    prov = dict(meta.get("provenance", {}))
    prov["quantization"] = {"method": "deltanet.atari.quantize_atari", "act_bits": act_bits,
                            "weight_bits": weight_bits, "headroom": headroom,
                            "frames": len(frames), "float_max_per_layer": maxes,
                            "kept_weights_raised": changed,
                            "mask_nonzero_fixed": sum(changed)}
    meta["provenance"] = prov
    return q.replace(meta=meta)
