"""Atomic file writes: a reader never sees a half-written file, and a kill mid-write
leaves the previous version intact."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    The temporary file lives in the same directory so ``os.replace`` is a rename on the
    same file system. On any exception the temporary file is removed and ``path`` is left
    untouched.

    Example:
        >>> with atomic_path("run/latents.csv") as tmp:  # doctest: +SKIP
        ...     frame.to_csv(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600, and writers that recreate the file (safetensors) do too; finished
        # files get the usual permissions, set after writing so every writer gets them.
        os.chmod(tmp, 0o666 & ~_UMASK)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def csv_text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A CSV document (``\\n`` line ends) with ``header`` and ``rows``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def atomic_save_nifti(image, path: str | os.PathLike, compresslevel: int = 6) -> None:
    """Write a nibabel image atomically; ``.gz`` names are gzip-compressed reproducibly (no timestamp)."""
    import gzip

    path = Path(path)
    payload = image.to_bytes()
    if path.name.endswith(".gz"):
        payload = gzip.compress(payload, compresslevel=compresslevel, mtime=0)
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name the same file: equal once resolved (``d/../d/x``, symbolic
    links), or the same inode (hard links, bind mounts)."""
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist
        return False


def check_output_file(path: str | os.PathLike, overwrite: bool, what: str = "output",
                      inputs: tuple[str | os.PathLike, ...] = ()) -> Path:
    """Refuse a file path that a command is about to write, before any work is done.

    Refused: a path that is one of ``inputs`` (even with ``overwrite``), an existing folder, a
    path below a file, and an existing file unless ``overwrite``.

    Raises:
        ValueError: one line naming ``what``, the path and the reason.
    """
    path = Path(path)
    for source in inputs:
        if source is not None and same_file(path, source):
            raise ValueError(f"{what} {path} is the input {source}; refusing to overwrite an input, "
                             f"even with --overwrite. Choose another file name.")
    if path.is_dir():
        raise ValueError(f"{what} {path} is an existing folder; expected a file name.")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise ValueError(f"{what} {path}: {parent} is a file, not a folder.")
    if path.exists() and not overwrite:
        raise ValueError(f"{what} {path} already exists; pass --overwrite to replace it.")
    return path



def check_output_folder(folder: str | os.PathLike, names: Sequence[str], owner: str, overwrite: bool = False,
                        written_by_owner: bool = False, error: type[ValueError] = ValueError) -> None:
    """Refuse to write the files ``names`` into ``folder`` where it holds such files that
    ``owner`` (a command) did not write, unless ``overwrite``.

    ``written_by_owner`` says the folder is an earlier output of ``owner`` (the caller's marker
    test), which is always replaced. A ``folder`` that is a file is refused in any case.

    Raises:
        error: one line naming the folder, the clashing names and ``--overwrite``.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise error(f"--out {folder} is a file; expected a folder for the outputs of {owner}.")
    if overwrite or written_by_owner or not folder.is_dir():
        return
    clash = [name for name in names if (folder / name).exists()]
    if clash:
        raise error(f"--out {folder} holds {', '.join(clash)}, not written by {owner}; choose another folder or "
                    f"pass --overwrite to replace them.")


def file_sha256(path: str | os.PathLike, limit: int | None = None) -> str:
    """SHA-256 (hex) of a file, or of its first ``limit`` bytes; read in 1 MiB blocks."""
    import hashlib

    digest = hashlib.sha256()
    remaining = limit
    with open(path, "rb") as handle:
        while remaining is None or remaining > 0:
            block = handle.read(1 << 20 if remaining is None else min(1 << 20, remaining))
            if not block:
                break
            digest.update(block)
            if remaining is not None:
                remaining -= len(block)
    return digest.hexdigest()

