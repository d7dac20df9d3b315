"""Atomic file writing shared by every writer (checkpoints, videos, images, JSON sidecars)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Union

PathLike = Union[str, os.PathLike]


class OutputPathError(OSError):
    """The output location cannot be written (not a directory, no permission, ...)."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: PathLike, write_fn: Callable[[str], None], suffix: str = "") -> Path:
    """Call ``write_fn(tmp_path)``, then rename the temp file onto ``path``.

    The temp file lives in the destination directory (so the rename is atomic) and never survives
    a failure; the result gets the usual permissions (mkstemp would leave 0600).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=(suffix or path.suffix) + ".tmp")
    except OSError as e:
        raise OutputPathError(f"cannot write in {path.parent}: {e.strerror or e}; choose another output path") from None
    os.close(fd)
    try:
        write_fn(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json(obj, path: PathLike) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2, ensure_ascii=False)))
