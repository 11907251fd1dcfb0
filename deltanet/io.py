"""Atomic writes (see :mod:`pysim.atomic`), plus JSON."""

from __future__ import annotations

import json
from pathlib import Path

from deltanet.pysim.atomic import write_bytes_atomic, write_text_atomic

__all__ = ["write_bytes_atomic", "write_figure_atomic", "write_json_atomic", "write_text_atomic"]


def write_json_atomic(path, obj) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_figure_atomic(path, fig, dpi: int = 110) -> None:
    """A matplotlib figure as PNG, written atomically; the figure is closed."""
    import io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())
