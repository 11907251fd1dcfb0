"""Atomic writes: a good output is never replaced by a partial one.

One file (:func:`write_bytes_atomic`): the data goes to a temporary file in the target's folder,
which is then renamed over the target (``os.replace`` is atomic on one file system). Used by
every writer in deltanet.

Several files that belong together (:func:`atomic_dir`, e.g. a design's Verilog, JSON, report
and memory images): they are all written into a fresh temporary folder beside the target folder
and take their place only once every one of them is complete, so a failed or interrupted run
never leaves a new file beside an old one.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_dir", "staging_folder", "write_bytes_atomic", "write_text_atomic"]


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def write_bytes_atomic(path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_text_atomic(path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def staging_folder(path) -> Path:
    """The folder in which :func:`atomic_dir` builds ``path``'s new files: the one holding
    ``path`` (its real location when ``path`` is a link to a folder), or ``path`` itself when it
    is a mount point (a rename cannot cross file systems). It need not exist yet."""
    path = Path(os.path.abspath(path))
    if not path.is_dir():
        return path.parent
    real = path.resolve()
    if real.parent != real and real.stat().st_dev != real.parent.stat().st_dev:
        return real
    return real.parent


def _make_parents(folder: Path) -> list:
    """Create ``folder`` and its missing parents; the ones created, outermost first."""
    missing = []
    while not folder.exists() and folder.parent != folder:
        missing.append(folder)
        folder = folder.parent
    created = []
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:  # made meanwhile by someone else: not ours to remove
            continue
        created.append(d)
    return created


def _merge(tmp: Path, real: Path) -> None:
    """Move every entry of ``tmp`` over its namesake in the existing folder ``real``, under an
    exclusive lock on ``real``; on any failure put the old entries back."""
    fd = os.open(real, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # two runs committing to one folder take turns
        backup = Path(tempfile.mkdtemp(prefix=f".{real.name}.old-", dir=tmp.parent))
        done = []  # (target, its old contents in backup/ or None)
        try:
            for src in sorted(tmp.iterdir()):
                dst = real / src.name
                old = None
                if os.path.lexists(dst) and (dst.is_symlink() or not dst.is_dir()):
                    old = backup / src.name
                    try:
                        os.link(dst, old, follow_symlinks=False)
                    except OSError:
                        shutil.copy2(dst, old, follow_symlinks=False)
                os.replace(src, dst)
                done.append((dst, old))
        except BaseException:
            for dst, old in reversed(done):
                if old is not None:
                    os.replace(old, dst)
                elif dst.is_dir() and not dst.is_symlink():
                    shutil.rmtree(dst, ignore_errors=True)
                else:
                    dst.unlink(missing_ok=True)
            raise
        finally:
            shutil.rmtree(backup, ignore_errors=True)
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def atomic_dir(path):
    """Write a folder's files all together or not at all.

    Yields a fresh, empty temporary folder ``.NAME.tmp-XXXXXXXX`` in :func:`staging_folder`
    (missing parents are created) to write the files into. When the block ends normally they
    take their place in ``path``:

    * ``path`` does not exist: the temporary folder is renamed to it (one atomic step);
    * ``path`` is a folder: each new entry replaces its namesake (``os.replace``) under an
      exclusive lock on ``path``; if one of these steps fails, the entries already replaced get
      their old contents back. Entries of ``path`` the block did not write are left alone.

    The window in which a reader could see some new files beside old ones is a few renames long
    (a process killed with SIGKILL inside it keeps that mix; an exception or KeyboardInterrupt
    does not). When the block raises, ``path`` is left as it was, and the temporary folder and
    any parent folders made for it are removed.
    """
    path = Path(os.path.abspath(path))
    real = path.resolve() if path.is_dir() else path
    stage = staging_folder(path)
    created = _make_parents(stage)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{real.name}.tmp-", dir=stage))
    except BaseException:
        _remove_empty(created)
        raise
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp made it private
        if not os.path.lexists(real):
            try:
                os.rename(tmp, real)
                return
            except OSError:
                if not real.is_dir():  # another run made the folder meanwhile: merge below
                    raise
        _merge(tmp, real)
        tmp.rmdir()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_empty(created)
        raise


def _remove_empty(created: list) -> None:
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:
            return
