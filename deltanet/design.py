"""Hardware design files for a model: the event-driven core's Verilog, design JSON and report
(:mod:`hw.generate_core`), written into a folder all together or not at all."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deltanet.hw.generate_core import generate_core
from deltanet.pysim import DeltaNetwork
from deltanet.pysim.atomic import atomic_dir

from .envs import check_model_fits_env, make_env

__all__ = ["record_episode", "write_design", "write_design_dir"]


def record_episode(model, seed: int, max_steps: int) -> np.ndarray:
    """Float observations of one episode with the pysim reference choosing the actions."""
    env = make_env(model.meta["env_id"], seed)()
    try:
        check_model_fits_env(model, env)
        net = DeltaNetwork(model)
        obs, _ = env.reset(seed=seed)
        out = []
        for _ in range(max_steps):
            o = np.asarray(obs, dtype=np.float64).ravel()
            out.append(o)
            action = net.act(o[None])[0]
            obs, _, term, trunc, _ = env.step(action)
            if term or trunc:
                break
        return np.stack(out)
    finally:
        env.close()


def write_design(model, lanes: int, out_dir, *, obs_words: int,
                 memory_files: bool = False, observations=None) -> dict:
    """Run the generator into ``out_dir``; its ``{kind: path(s)}``."""
    return generate_core(model, lanes, out_dir, obs_words=obs_words,
                         memory_files=memory_files, observations=observations)


def write_design_dir(model, lanes: int, out, *, obs_words: int, memory_files: bool = False,
                     observations=None) -> dict:
    """:func:`write_design` into a fresh folder beside ``out`` first, then into ``out``: it gets
    all the files or none (:func:`pysim.atomic.atomic_dir`). Returns the paths under ``out``."""
    out = Path(out)
    with atomic_dir(out) as tmp:
        paths = write_design(model, lanes, tmp, obs_words=obs_words, memory_files=memory_files,
                             observations=observations)
    return _moved(paths, Path(tmp), out)


def _moved(paths: dict, tmp: Path, out: Path) -> dict:
    """The generator's paths under the temporary folder -> the same files under ``out``."""
    def move(p):
        return out / Path(p).relative_to(tmp)

    return {k: [move(p) for p in v] if isinstance(v, (list, tuple)) else move(v)
            for k, v in paths.items()}
