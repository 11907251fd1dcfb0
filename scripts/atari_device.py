"""Move Atari DQN checkpoints between machines and sittings, small enough to travel.

A full checkpoint is ~27 MB of SB3 zip (the Q network, its target copy and Adam's moments)
plus a 2.8 GB replay buffer; a transfer may carry far less. ``pack`` keeps only the Q
network's weights and the step count (6.8 MB); ``unpack`` turns them back into a checkpoint
``model_<steps>.zip`` in ``<out>.ckpt/`` that ``deltanet train --resume`` continues: the target
network starts as a copy of the Q network, Adam starts afresh, and the replay buffer is
refilled for ``learning_starts`` steps before learning goes on (deltanet.train).

Two uses: a borrowed GPU machine sends its checkpoints back this way, and a training that
spans several sittings on machines whose ``runs/`` does not survive is carried in
``benchmarks/agents/<game>_dqn.pt`` (committed; ``pack`` takes the artifact path and finds
its newest checkpoint).

    python scripts/atari_device.py pack runs/atari/freeway_dqn.npz \\
        benchmarks/agents/freeway_dqn.pt
    python scripts/atari_device.py unpack benchmarks/agents/freeway_dqn.pt \\
        --env FreewayNoFrameskip-v4 --out runs/atari/freeway_dqn.npz
"""

from __future__ import annotations

import argparse
import io
import sys
import zipfile
from pathlib import Path


def pack(zip_path: Path, dest: Path) -> int:
    """Pack checkpoint ``zip_path`` (``model_<steps>.zip``, or an artifact ``<out>.npz``: the
    newest checkpoint in its ``<out>.ckpt/``) into ``dest``; returns its step count."""
    import json

    import torch

    from deltanet.train import _CKPT_RE, OVERRIDES_FILE, ckpt_dir, latest_checkpoint

    if zip_path.suffix == ".npz":
        found = latest_checkpoint(ckpt_dir(zip_path))
        if found is None:
            raise SystemExit(f"{zip_path}: no checkpoint in {ckpt_dir(zip_path)}")
        zip_path = found[1]
    m = _CKPT_RE.match(zip_path.name)
    if m is None:
        raise SystemExit(f"{zip_path}: not a checkpoint (model_<steps>.zip, or the artifact "
                         "<out>.npz whose <out>.ckpt/ holds them)")
    with zipfile.ZipFile(zip_path) as z:
        state = torch.load(io.BytesIO(z.read("policy.pth")), map_location="cpu",
                           weights_only=True)
    q_net = {k[len("q_net."):]: v for k, v in state.items() if k.startswith("q_net.")}
    steps = int(m.group(1))
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name("." + dest.name + ".tmp")
    # the run's --hyperparams travel with it, so that the unpacked run resumes with them
    hp_file = zip_path.parent / OVERRIDES_FILE
    overrides = json.loads(hp_file.read_text())["overrides"] if hp_file.exists() else {}
    torch.save({"steps": steps, "q_net": q_net, "overrides": overrides}, tmp)
    tmp.replace(dest)
    print(f"packed {zip_path} ({steps:,} steps) -> {dest} ({dest.stat().st_size:,} bytes)")
    return steps


def unpack(src: Path, env_id: str, out: Path, seed: int, overrides: dict | None = None) -> Path:
    """Rebuild a resumable checkpoint from packed Q-network weights, with the ``--hyperparams``
    the run was trained with (kept beside the checkpoint, as ``deltanet train`` keeps them);
    ``overrides`` replace those (a test's small replay buffer)."""
    import json

    import torch
    from stable_baselines3 import DQN

    from deltanet.train import (
        OVERRIDES_FILE,
        _kwargs,
        apply_overrides,
        check_overrides,
        ckpt_dir,
        hyperparams,
        make_vec_env,
        save_sb3_atomic,
    )

    packed = torch.load(src, map_location="cpu", weights_only=True)
    hp = hyperparams(env_id, "dqn", log=lambda *_: None)
    overrides = dict(packed.get("overrides", {}) if overrides is None else overrides)
    check_overrides("dqn", overrides, atari=True)
    apply_overrides(hp, overrides)
    env = make_vec_env(env_id, hp["n_envs"], seed, None)
    model = DQN("CnnPolicy", env, seed=seed, device="cpu", verbose=0,
                policy_kwargs=hp["policy_kwargs"], **_kwargs(hp))
    model.policy.q_net.load_state_dict(packed["q_net"])
    model.policy.q_net_target.load_state_dict(packed["q_net"])
    model.num_timesteps = packed["steps"]
    folder = ckpt_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / f"model_{packed['steps']}.zip"
    save_sb3_atomic(model, dest)
    (folder / OVERRIDES_FILE).write_text(json.dumps({"overrides": overrides}, indent=1) + "\n")
    env.close()
    print(f"unpacked {src} -> {dest} ({packed['steps']:,} steps; resume with "
          f"`deltanet train --env {env_id} --algo dqn --out {out} --resume`)")
    return dest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="checkpoint zip -> Q-network weights + steps")
    p.add_argument("zip", type=Path, help="model_<steps>.zip, or the artifact <out>.npz (its "
                                          "newest checkpoint)")
    p.add_argument("dest", type=Path)
    u = sub.add_parser("unpack", help="Q-network weights + steps -> resumable checkpoint")
    u.add_argument("src", type=Path)
    u.add_argument("--env", required=True)
    u.add_argument("--out", required=True, type=Path, help="the artifact deltanet train writes")
    u.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if a.cmd == "pack":
        pack(a.zip, a.dest)
    else:
        unpack(a.src, a.env, a.out, a.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
