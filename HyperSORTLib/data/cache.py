"""Disk cache of preprocessed cases (whole volumes, before patch sampling) and of check results.

An entry's key is a hash of everything its content depends on: each source file's resolved
path, size and modification time, the class map (``label_values``, number of classes), the
preprocessing settings of :class:`~HyperSORTLib.config.DataConfig` (spacing, intensity,
percentiles, window; not the patch) and the MONAI and cache format versions. Editing a scan or a
label, or changing the preprocessing, therefore selects a new entry; stale entries are never
read (delete the folder to reclaim space).

Entries are written atomically (each file through a temporary name, the JSON index last), so a
killed run leaves either a complete entry or none. Arrays are plain ``.npy`` files opened as
memory maps, so a training patch reads only its own window.

The default location is ``$HYPERSORT_CACHE_DIR``, else the user cache folder
(``$XDG_CACHE_HOME/hypersort`` or ``~/.cache/hypersort``; ``%LOCALAPPDATA%\\hypersort`` on
Windows, ``~/Library/Caches/hypersort`` on macOS).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from HyperSORTLib.config import DataConfig
from HyperSORTLib.data.cases import CaseList, CaseRecord
from HyperSORTLib.data.preprocessing import PreprocessedCase
from HyperSORTLib.utils.io import atomic_path, atomic_write_json

CACHE_VERSION = 2


def default_cache_dir() -> Path:
    """``$HYPERSORT_CACHE_DIR``, else the platform's user cache folder + ``hypersort``."""
    env = os.environ.get("HYPERSORT_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "hypersort"


def file_signature(path: Path) -> list[Any]:
    """``[resolved path, size, mtime_ns]``, or ``[path, None, None]`` for a missing file."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        return [str(path.absolute()), None, None]
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


def case_files(case: CaseRecord) -> list[Path]:
    """The image and annotation files of a case, image first."""
    return [Path(case.image), *([Path(case.label)] if case.label is not None else []), *map(Path, case.masks)]


def _hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:32]


def preprocessing_fields(config: DataConfig) -> dict[str, Any]:
    """The settings that change a preprocessed volume (the patch settings do not)."""
    return {"spacing": None if config.spacing is None else [float(s) for s in config.spacing],
            "intensity": config.intensity,
            "percentiles": [float(p) for p in config.percentiles] if config.intensity == "percentile" else None,
            "window": [float(w) for w in config.window] if config.intensity == "window" else None}


def class_map_fields(case_list: CaseList) -> dict[str, Any]:
    return {"num_classes": len(case_list.class_names),
            "label_values": None if case_list.label_values is None else list(case_list.label_values)}


def check_fields(case_list: CaseList) -> dict[str, Any]:
    declared = case_list.declared_values
    return {**class_map_fields(case_list), "declared": None if declared is None else list(declared)}


class PreprocessCache:
    """Preprocessed cases (and check results) on disk under ``root``.

    Args:
        root: cache folder; ``None`` uses :func:`default_cache_dir`.
    """

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def __repr__(self) -> str:
        return f"PreprocessCache({str(self.root)!r})"

    # ------------------------------------------------------------------------- keys
    def case_key(self, case: CaseRecord, case_list: CaseList, config: DataConfig) -> str:
        import monai

        return _hash({"v": CACHE_VERSION, "monai": monai.__version__,
                      "files": [file_signature(p) for p in case_files(case)],
                      "classes": class_map_fields(case_list), "preprocessing": preprocessing_fields(config)})

    def _paths(self, key: str) -> dict[str, Path]:
        folder = self.root / "cases" / key[:2]
        return {name: folder / f"{key}.{name}" for name in ("image.npy", "label.npy", "fg.npy", "json")}

    # ------------------------------------------------------------------------- cases
    def load(self, key: str, mmap: bool = True) -> PreprocessedCase | None:
        """The entry ``key``, or ``None`` when absent or incomplete (arrays memory-mapped)."""
        paths = self._paths(key)
        try:
            meta = json.loads(paths["json"].read_text(encoding="utf-8"))
            mode = "r" if mmap else None
            image = np.load(paths["image.npy"], mmap_mode=mode, allow_pickle=False)
            label = np.load(paths["label.npy"], mmap_mode=mode, allow_pickle=False)
            foreground = np.load(paths["fg.npy"], allow_pickle=False)
        except (OSError, ValueError):
            return None
        if list(image.shape) != meta.get("shape") or list(label.shape) != meta.get("shape"):
            return None
        box = meta.get("foreground_box")
        return PreprocessedCase(image, label, np.asarray(meta["affine"]), np.asarray(meta["original_affine"]),
                                tuple(meta["original_shape"]), foreground,
                                None if box is None else (tuple(box[0]), tuple(box[1])))

    def store(self, key: str, case: PreprocessedCase, case_id: str = "") -> None:
        """Write the entry ``key`` atomically (the JSON index last: it marks the entry complete)."""
        paths = self._paths(key)
        for name, array in (("image.npy", case.image), ("label.npy", case.label), ("fg.npy", case.foreground)):
            with atomic_path(paths[name]) as tmp:
                with open(tmp, "wb") as handle:
                    np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
        atomic_write_json(paths["json"], {
            "version": CACHE_VERSION, "case_id": case_id, "shape": list(case.image.shape),
            "affine": np.asarray(case.affine).tolist(), "original_affine": np.asarray(case.original_affine).tolist(),
            "original_shape": list(case.original_shape),
            "foreground_box": None if case.foreground_box is None else [list(b) for b in case.foreground_box]})

    def paths(self, key: str) -> list[Path]:
        """The files of entry ``key`` (which may not exist)."""
        return list(self._paths(key).values())

    # ------------------------------------------------------------------------- check results
    def check_key(self, case: CaseRecord, case_list: CaseList, deep: bool, version: int) -> str:
        return _hash({"v": version, "deep": deep, "files": [file_signature(p) for p in case_files(case)],
                      "classes": check_fields(case_list), "case_id": case.case_id})

    def load_check(self, key: str) -> Any:
        path = self.root / "checks" / key[:2] / f"{key}.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def store_check(self, key: str, result: Any) -> None:
        """Remember a check result (any JSON value) under ``key``."""
        atomic_write_json(self.root / "checks" / key[:2] / f"{key}.json",
                          result if isinstance(result, dict) else list(result))
