"""Atomic file writes and checkpoint-file helpers shared by training and evaluation.

Every writer goes through a temporary file in the destination directory and
``os.replace`` (atomic on POSIX), so a reader never sees a partial file and an
interrupted run leaves the previous version in place; the temporary file is
removed when the write fails. torch is imported only by :func:`atomic_torch_save`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_copy", "atomic_torch_save", "atomic_write", "atomic_write_text", "file_sha256",
           "write_json_atomic"]


def _file_mode() -> int:
    """``0o666`` less the process umask: the mode ``open()`` would give a new file (``mkstemp`` gives 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` on a fresh temporary file beside ``path``, then rename it onto ``path``.

    The parent directory is created; the file gets the mode a plain ``open()`` would give it. On
    any exception the temporary file is removed and the exception propagates (``path`` is left
    as it was).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, _file_mode())
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(text: str, path: str | os.PathLike) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json_atomic(data: Any, path: str | os.PathLike) -> None:
    """Write ``data`` as indented JSON (trailing newline) to ``path`` atomically (never a partial file)."""
    atomic_write_text(json.dumps(data, indent=2) + "\n", path)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` atomically."""
    import torch

    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy the file ``src`` to ``dst`` atomically."""
    atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (ties a file to the one it was derived from)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
