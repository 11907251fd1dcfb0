"""stable-baselines3 policy -> deltanet :class:`pysim.Model` (float weights, ReLU MLP)."""

from __future__ import annotations

import numpy as np
from torch import nn

from pysim import Decoder, LayerParams, Model, mlp_config

from .envs import space_to_dict


def policy_linears(sb3_model) -> list:
    """The Linear layers that map an observation to the deterministic action, in order
    (for an Atari DQN: its three Conv2d layers, then its two Linear layers)."""
    pol = sb3_model.policy
    algo = type(sb3_model).__name__
    if algo in ("PPO", "A2C"):
        seq = list(pol.mlp_extractor.policy_net) + [pol.action_net]
    elif algo == "DQN" and hasattr(pol.q_net.features_extractor, "cnn"):  # Atari NatureCNN
        fe = pol.q_net.features_extractor
        seq = list(fe.cnn) + list(fe.linear) + list(pol.q_net.q_net)
        return [m for m in seq if isinstance(m, (nn.Conv2d, nn.Linear))]
    elif algo == "DQN":
        seq = list(pol.q_net.q_net)
    elif algo in ("SAC", "TD3", "DDPG"):
        actor = pol.actor
        seq = list(actor.latent_pi) + [actor.mu] if algo == "SAC" else list(actor.mu)
    else:
        raise ValueError(f"cannot export {algo}: supported PPO, A2C, DQN, SAC, TD3")
    linears = []
    for m in seq:
        if isinstance(m, nn.Linear):
            linears.append(m)
        elif not isinstance(m, (nn.ReLU, nn.Identity, nn.Flatten, nn.Tanh)):
            raise ValueError(f"cannot export layer {m}: deltanet networks are Linear + ReLU")
        elif isinstance(m, nn.Tanh) and m is not seq[-1]:
            raise ValueError("cannot export a hidden Tanh: train with activation_fn=nn.ReLU")
    return linears


def decoder_for(sb3_model, action_space) -> Decoder:
    algo = type(sb3_model).__name__
    if hasattr(action_space, "n"):
        return Decoder("argmax")
    low = np.asarray(action_space.low, dtype=np.float64).ravel()
    high = np.asarray(action_space.high, dtype=np.float64).ravel()
    return Decoder("tanh" if algo in ("SAC", "TD3", "DDPG") else "clip", tuple(low), tuple(high))


def export_sb3(sb3_model, env_id: str, provenance: dict | None = None, **fmt_kwargs) -> Model:
    """Float export (formats are placeholders until ``deltanet quantize`` picks them)."""
    linears = policy_linears(sb3_model)
    sizes = [linears[0].in_features] + [m.out_features for m in linears]
    cfg = mlp_config(sizes, decoder=decoder_for(sb3_model, sb3_model.action_space), **fmt_kwargs)
    params = []
    for m in linears:
        w = m.weight.detach().cpu().numpy().astype(np.float32)
        b = m.bias.detach().cpu().numpy().astype(np.float32)
        params.append(LayerParams(w, b, np.ones_like(w, dtype=bool)))
    meta = {"env_id": env_id,
            "observation_space": space_to_dict(sb3_model.observation_space),
            "action_space": space_to_dict(sb3_model.action_space),
            "provenance": dict(provenance or {})}
    return Model(cfg, tuple(params), meta)
