"""deltanet: RL policies as sparse delta networks, from training to verified hardware."""

from pathlib import Path

__version__ = "0.1.0"

#: Bundled, ready-to-use model artifacts.
MODELS_DIR = Path(__file__).resolve().parent / "models"


def bundled_model(name: str) -> Path:
    """Path of a bundled model, e.g. ``bundled_model("cartpole")`` -> models/cartpole.npz."""
    p = MODELS_DIR / (name if name.endswith(".npz") else f"{name}.npz")
    if not p.exists():
        known = sorted(q.stem for q in MODELS_DIR.glob("*.npz"))
        raise FileNotFoundError(f"no bundled model {name!r}; bundled: {known}")
    return p
