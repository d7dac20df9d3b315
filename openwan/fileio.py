"""Atomic file writing shared by every writer (checkpoints, videos, images, JSON sidecars).

Every output goes through :func:`write_files`: each file is written to a temp file in its own
directory, then all are published as one unit (a video and its ``.json`` sidecar: both or
neither). Without ``overwrite`` a file is published with ``os.link(tmp, final)``, which fails if
``final`` exists, so two writers racing for one name cannot replace each other: exactly one wins,
the other gets :class:`FileExistsError` and leaves nothing behind.

Temp files are named ``.openwan-tmp.<host>.<pid>.<random>.<name>``; the temp files of a process
that died (killed run, power loss) are removed by the next write into the same directory.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import uuid
from pathlib import Path
from typing import Callable, Iterable, Sequence, Union

PathLike = Union[str, os.PathLike]
TMP_PREFIX = ".openwan-tmp."


class OutputPathError(OSError):
    """The output location cannot be written (not a directory, no permission, ...)."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _host() -> str:
    return "".join(c if c.isalnum() or c == "-" else "-" for c in socket.gethostname())[:32] or "host"


def temp_path(final: PathLike) -> Path:
    """A fresh temp name beside ``final`` that names this host and process."""
    final = Path(final)
    return final.parent / f"{TMP_PREFIX}{_host()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.{final.name}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True                      # exists but is someone else's (or unknown): keep its files
    return True


def clean_stale_temps(directory: PathLike) -> list[Path]:
    """Remove temp files left in ``directory`` by dead processes of this host; returns what was removed.

    A temp file of a live process, of another host (shared file system) or not named by openwan is kept.
    """
    removed = []
    host = _host()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for e in entries:
        if not e.name.startswith(TMP_PREFIX):
            continue
        parts = e.name[len(TMP_PREFIX):].split(".", 3)
        if len(parts) < 4 or parts[0] != host or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        if pid == os.getpid() or _pid_alive(pid):
            continue
        try:
            os.unlink(e.path)
            removed.append(Path(e.path))
        except OSError:
            pass
    return removed


def check_free(paths: Iterable[PathLike], overwrite: bool) -> None:
    """Refuse before any work when an output (or its sidecar) already exists and overwrite is off."""
    for p in paths:
        p = Path(p)
        if p.is_dir():
            raise OutputPathError(f"{p} is a directory; give a file name such as {p / 'out.mp4'}")
        if not overwrite and (p.exists() or p.is_symlink()):
            raise FileExistsError(f"{p} already exists; pass overwrite=True / --overwrite to replace it, or choose "
                                  f"another name")


def ensure_dir(directory: Path) -> None:
    """Create ``directory`` (and its parents), or an OutputPathError naming the file in the way."""
    for ancestor in (directory, *directory.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                raise OutputPathError(f"cannot write in {directory}: {ancestor} is a file, not a directory; "
                                      f"choose another output path")
            break
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputPathError(f"cannot create output directory {directory}: {e.strerror or e}; "
                              f"choose another output path") from None


def _link_exclusive(tmp: Path, final: Path) -> None:
    """Publish ``tmp`` as ``final`` only if ``final`` does not exist (atomic, race-free)."""
    try:
        os.link(tmp, final)
        return
    except FileExistsError:
        raise FileExistsError(f"{final} already exists (another run may have written it meanwhile); nothing was "
                              f"replaced. Pass overwrite=True / --overwrite to replace it, or choose another "
                              f"name") from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS):
            raise
    # No hard links on this file system: reserve the name with O_EXCL, then rename over our reservation.
    try:
        os.close(os.open(final, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        raise FileExistsError(f"{final} already exists (another run may have written it meanwhile); nothing was "
                              f"replaced. Pass overwrite=True / --overwrite to replace it") from None
    os.replace(tmp, final)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _disk_error(e: OSError, path: Path) -> OSError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return OSError(e.errno, f"no space left while writing {path} ({e.strerror}); nothing was saved. Free "
                                f"some space (or choose another output directory) and run again")
    return e


def write_files(items: Sequence[tuple[PathLike, Callable[[str], None]]], overwrite: bool = True) -> list[Path]:
    """Write several files as one unit: all of them or none.

    ``items`` are ``(final_path, write_fn)``; each ``write_fn(tmp_path)`` writes a temp file beside its
    final path. Only when all succeeded are they published, in order. With ``overwrite=False`` an
    existing final path (checked first, and again atomically at publication) raises FileExistsError and
    nothing is left on disk, even when another process creates the file while the temps are written.
    The results get the usual permissions (not mkstemp's 0600).
    """
    finals = [Path(p) for p, _ in items]
    check_free(finals, overwrite)
    temps: list[Path] = []
    published: list[tuple[Path, Path]] = []
    try:
        for final, (_, write_fn) in zip(finals, items):
            ensure_dir(final.parent)
            clean_stale_temps(final.parent)
            tmp = temp_path(final)
            try:
                os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            except OSError as e:
                raise OutputPathError(f"cannot write in {final.parent}: {e.strerror or e}; choose another output "
                                      f"path") from None
            temps.append(tmp)
            try:
                write_fn(str(tmp))
            except OSError as e:
                raise _disk_error(e, final) from None
            os.chmod(tmp, 0o666 & ~_umask())
        for final, tmp in zip(finals, temps):
            if overwrite:
                os.replace(tmp, final)
            else:
                _link_exclusive(tmp, final)
            published.append((final, tmp))
    except BaseException:
        if not overwrite:                      # undo a partial publication (only files that are still ours)
            for final, tmp in published:
                if tmp.exists() and _same_file(final, tmp):
                    final.unlink()
        raise
    finally:
        for tmp in temps:
            if tmp.exists() or tmp.is_symlink():
                tmp.unlink()
    return finals


def atomic_write(path: PathLike, write_fn: Callable[[str], None], suffix: str = "", overwrite: bool = True) -> Path:
    """Call ``write_fn(tmp_path)``, then rename the temp file onto ``path`` (see :func:`write_files`).

    ``suffix`` is accepted for compatibility (temp names keep the final name's suffix).
    """
    return write_files([(path, write_fn)], overwrite=overwrite)[0]


def json_text(obj, indent=2) -> str:
    """JSON that always encodes: UTF-8 text where possible, ``\\u`` escapes for strings that are not valid
    Unicode (a prompt with undecodable bytes from the command line arrives with lone surrogates)."""
    text = json.dumps(obj, indent=indent, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(obj, indent=indent, ensure_ascii=True)
    return text


def write_json(obj, path: PathLike, overwrite: bool = True) -> Path:
    text = json_text(obj)
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), overwrite=overwrite)
