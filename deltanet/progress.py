"""Progress display, and ``deltanet --quiet`` to turn it off (for scripts and logs).

Progress bars are tqdm's, through :func:`bar` (and SB3's, through :func:`shown`); status lines
are rich's, through :func:`status`. ``--quiet`` sets ``DELTANET_QUIET`` (and ``TQDM_DISABLE``)
for the command's process and the processes it starts (simulators and Dask workers inherit
the environment).
"""

from __future__ import annotations

import contextlib
import os

from rich.console import Console
from tqdm.auto import tqdm

__all__ = ["QUIET_ENV", "bar", "is_quiet", "quiet", "shown", "status"]

#: environment variable that silences deltanet's status lines
QUIET_ENV = "DELTANET_QUIET"


@contextlib.contextmanager
def quiet():
    """Quiet while the block runs (the environment as it was afterwards)."""
    saved = {k: os.environ.get(k) for k in (QUIET_ENV, "TQDM_DISABLE")}
    os.environ[QUIET_ENV] = "1"
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def is_quiet() -> bool:
    return os.environ.get(QUIET_ENV, "") not in ("", "0")


class _Silent:
    def update(self, *args, **kwargs) -> None:
        pass


@contextlib.contextmanager
def status(text: str, console: Console | None = None):
    """A rich status line on stderr (or ``console``) while the block runs; nothing when quiet.
    Yields an object with ``update(text)``."""
    if is_quiet():
        yield _Silent()
        return
    with (console or Console(stderr=True)).status(text) as st:
        yield st


def shown(progress: bool) -> bool:
    """Whether a progress display asked for with ``progress`` appears (not when quiet)."""
    return bool(progress) and not is_quiet()


def bar(*, progress: bool = True, **kwargs):
    """A tqdm bar, hidden when ``progress`` is false or deltanet is quiet."""
    return tqdm(disable=not shown(progress), **kwargs)
