"""Opening NIfTI files safely, and the geometry rules every reader shares.

:func:`open_nifti` is how every part of HyperSORT opens a scan, label or mask: it reads the
header only and refuses a file whose header promises more voxels than the file holds (a
truncated download, or a 100-byte file declaring a 1024^3 volume) or more voxels than
:data:`MAX_VOXELS`, before any voxel array is allocated. The voxel data stays behind
nibabel's lazy proxy.

:data:`SPACING_RANGE_MM`, :func:`voxel_sizes` and :func:`check_affine` are the one rule for a
plausible voxel grid, used by ``check-data``, training preprocessing and inference alike. This
module depends on nibabel and NumPy only, so :mod:`HyperSORTLib.data` and
:mod:`HyperSORTLib.inference` both import it.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

#: Voxel sizes (mm) outside this range mark a broken header (CT and MRI lie well inside it).
SPACING_RANGE_MM = (0.05, 20.0)

#: Largest number of voxels a volume may declare (2^31: 8 GiB of float32, far beyond any CT).
MAX_VOXELS = 1 << 31


#: Deflate's largest compression ratio (about 1032:1 for long runs of one byte), with headroom.
DEFLATE_MAX_RATIO = 1100


class NiftiSizeError(ValueError):
    """A file's header declares more data than the file holds, or an implausibly large volume."""


def voxel_sizes(affine: Any) -> np.ndarray:
    """Voxel size (mm) along each of the three axes of a voxel -> RAS affine."""
    from nibabel.affines import voxel_sizes as _voxel_sizes

    return np.asarray(_voxel_sizes(np.asarray(affine, dtype=np.float64)), dtype=np.float64)[:3]


def affine_problem(affine: Any) -> str | None:
    """Why ``affine`` is not a plausible voxel grid (not finite 4x4, singular, spacing outside
    :data:`SPACING_RANGE_MM`), or ``None`` when it is."""
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        return f"expected a finite 4x4 voxel-to-RAS affine, found {affine.tolist()}"
    spacing = voxel_sizes(affine)
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        return (f"the affine is singular (voxel spacing {np.round(spacing, 4).tolist()} mm, or collapsed axes); "
                f"expected a zero-free, invertible voxel-to-RAS matrix")
    low, high = SPACING_RANGE_MM
    if not ((spacing >= low) & (spacing <= high)).all():
        return (f"voxel size {np.round(spacing, 4).tolist()} mm is not plausible "
                f"(expected {low}..{high} mm per axis)")
    return None


def check_affine(affine: Any, name: str) -> np.ndarray:
    """``affine`` as float64 4x4, or :class:`ValueError` naming ``name`` and the problem."""
    problem = affine_problem(affine)
    if problem is not None:
        raise ValueError(f"{name}: {problem}.")
    return np.asarray(affine, dtype=np.float64)


def declared_data_bytes(header: Any) -> tuple[tuple[int, ...], int, int]:
    """``(shape, data offset, bytes of voxel data)`` that a NIfTI header declares."""
    shape = tuple(int(s) for s in header.get_data_shape())
    itemsize = int(header.get_data_dtype().itemsize)
    offset = int(header["vox_offset"]) if "vox_offset" in header else int(header.get_data_offset())
    if offset == 0:  # a single-file NIfTI has its data after the header and extensions
        offset = int(getattr(header, "single_vox_offset", 0)) + sum(
            e.get_sizeondisk() for e in getattr(header, "extensions", []))
    voxels = int(np.prod(shape, dtype=object)) if shape else 0
    return shape, offset, voxels * itemsize


def _gzip_stored_length(path: Path) -> int:
    """The gzip trailer's uncompressed length (mod 2^32) of the last member."""
    with open(path, "rb") as handle:
        handle.seek(-4, os.SEEK_END)
        (stored,) = struct.unpack("<I", handle.read(4))
    return stored


def size_problem(path: str | os.PathLike, header: Any) -> str | None:
    """Why the file cannot hold what its header declares, or ``None`` when it can.

    Uncompressed files: header offset + voxel bytes must not exceed the file size. ``.gz``
    files: that size must be reachable by deflate from the compressed size (at most
    :data:`DEFLATE_MAX_RATIO`:1; the trailer alone cannot tell 2^32 bytes from 0), and the gzip
    trailer's uncompressed length must equal it (mod 2^32). Both cost one ``stat`` and at most
    a 4-byte read.
    """
    path = Path(path)
    try:
        shape, offset, data_bytes = declared_data_bytes(header)
    except Exception:  # not a NIfTI-like header: nothing to compare
        return None
    file_size = path.stat().st_size
    voxels = int(np.prod(shape, dtype=object)) if shape else 0
    declared = f"its header declares shape {shape} ({data_bytes:,} bytes of voxel data after offset {offset})"
    if voxels > MAX_VOXELS:
        return f"{declared}: {voxels:,} voxels, more than the limit of {MAX_VOXELS:,}; file size {file_size:,} bytes"
    expected = offset + data_bytes
    if str(path).endswith(".gz"):
        if expected > DEFLATE_MAX_RATIO * file_size + 1024:  # the trailer alone is only mod 2^32
            return (f"{declared}, but a {file_size:,}-byte gzip file cannot decompress to {expected:,} bytes "
                    f"(deflate compresses at most {DEFLATE_MAX_RATIO}:1): truncated or corrupt")
        try:
            stored = _gzip_stored_length(path)
        except (OSError, struct.error):
            return f"{declared}, but the gzip file ({file_size:,} bytes) has no complete trailer"
        if stored != expected % (1 << 32):
            return (f"{declared}, but the file ({file_size:,} bytes compressed) decompresses to "
                    f"{stored:,} bytes (mod 2^32), not {expected:,}: truncated or corrupt")
        return None
    if file_size < expected:
        return f"{declared}, but the file holds only {file_size:,} bytes, not {expected:,}: truncated"
    return None


def open_nifti(path: str | os.PathLike, what: str = "file") -> Any:
    """``nib.load`` (header only, lazy voxels) after checking the file can hold what it declares.

    Args:
        path: the NIfTI (or other nibabel) file.
        what: how errors name the file ("image", "label of case 'x'", ...).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the header cannot be parsed (nibabel's reason is included).
        NiftiSizeError: the header declares more data than the file holds, or more than
            :data:`MAX_VOXELS` voxels; the message gives the declared shape and size and the
            file size.
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist.")
    try:
        image = nib.load(str(path))
    except Exception as exc:
        raise ValueError(f"{what} {path}: cannot read the header: {exc or type(exc).__name__}") from exc
    problem = size_problem(path, image.header)
    if problem is not None:
        raise NiftiSizeError(f"{what} {path}: {problem}.")
    return image
