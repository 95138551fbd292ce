"""The run directory: every file a run holds, its names, readers and writers, written atomically.

Layout::

    RUN_DIR/
      config.json         run configuration, class names, case ids, data source and fingerprint,
                          library and format version, the training method (``hypersort`` or a
                          robust-training baseline, see :func:`run_method`) and the number of
                          processes that train it (``world_size``)
      model.safetensors   learned weights (generator + latent table); loads without running code
      latents.csv         case id, latent coordinates, last training loss per sample
      train_log.csv       one row per epoch (with the number of processes that trained it)
      skipped_cases.csv   cases left out by ``train --skip-bad-cases``, with the reason
      checkpoint.pt       full training state for resuming (tensors and plain values only,
                          loaded with ``torch.load(weights_only=True)``)
      analysis/           written by ``hypersort analyze``: samples.csv, clusters.csv,
                          metrics.json, report.html and provenance.json (the weights digest and
                          epoch it analysed); review.csv holds a reviewer's verdicts

Every file is replaced atomically, so a run killed at any moment leaves the previous complete
version of each file; resuming reads ``checkpoint.pt`` alone. Faults of the folder itself
(read-only, full disk, a path under a file) become a :class:`RunDirectoryError` naming the file.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import math
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load as load_bytes
from safetensors.torch import save_file

from HyperSORTLib import RUN_FORMAT_VERSION, __version__
from HyperSORTLib.config import RunConfig
from HyperSORTLib.utils.io import atomic_path, check_output_folder, file_sha256
from HyperSORTLib.utils.versions import software_versions

CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
CHECKPOINT_FILE = "checkpoint.pt"
LATENTS_FILE = "latents.csv"
LOG_FILE = "train_log.csv"
#: Cases ``hypersort train --skip-bad-cases`` left out, with the reason (written before training starts).
SKIPPED_FILE = "skipped_cases.csv"
RUN_FORMAT = "hypersort-run"
#: The ``method`` of a run trained by ``hypersort train`` (a hyper-network with a latent table).
METHOD_HYPERSORT = "hypersort"

#: Where ``hypersort analyze`` writes inside a run directory, and the files it writes.
ANALYSIS_DIR = "analysis"
SAMPLES_FILE = "samples.csv"
CLUSTERS_FILE = "clusters.csv"
METRICS_FILE = "metrics.json"
REPORT_FILE = "report.html"
PROVENANCE_FILE = "provenance.json"
FIGURES_DIR = "figures"
ANALYSIS_FILES = (SAMPLES_FILE, CLUSTERS_FILE, METRICS_FILE, REPORT_FILE, PROVENANCE_FILE)
#: A reviewer's verdicts on the suspects of ``samples.csv`` (see :mod:`HyperSORTLib.analysis.review`);
#: written by the review front ends, never by ``analyze`` (re-running an analysis keeps it).
REVIEW_FILE = "review.csv"

#: Errors of the file system that are the user's to fix; reported as one line, not a traceback.
USER_FS_ERRNOS = frozenset({errno.EACCES, errno.EROFS, errno.ENOSPC, errno.EISDIR, errno.ENOTDIR, errno.EPERM})


class RunDirectoryError(ValueError):
    """A run directory is missing, incomplete, stale, unwritable or from an incompatible version."""


# --------------------------------------------------------------------------- folder checks
def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` holds a ``config.json`` of format ``hypersort-run``."""
    try:
        return json.loads((Path(path) / CONFIG_FILE).read_text(encoding="utf-8")).get("format") == RUN_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def check_run_output(path: str | Path) -> None:
    """Refuse ``path`` as a run directory unless it is absent, empty (but for files a run writes
    before its ``config.json``) or a HyperSORT run.

    Raises:
        RunDirectoryError: ``path`` is a file, or a non-empty folder that is not a run (naming the files).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirectoryError(f"--out {path} is a file; expected a run directory (new, empty or a HyperSORT run).")
    if not path.is_dir() or is_run_dir(path):
        return
    # A run that stopped before its config.json (e.g. a failed start) leaves only files of its own.
    found = sorted(p.name for p in path.iterdir() if p.name != SKIPPED_FILE and not p.name.startswith(".hypersort-"))
    if found:
        raise RunDirectoryError(f"--out {path} is not a HyperSORT run (no {CONFIG_FILE} of format {RUN_FORMAT}) and "
                                f"is not empty: it holds {_preview(found)}; choose a new or empty folder.")


def check_analysis_output(out_dir: str | Path, overwrite: bool = False) -> None:
    """Refuse to write an analysis over files that ``hypersort analyze`` did not write.

    A folder whose ``provenance.json`` says ``hypersort-analysis`` is an earlier analysis and is
    replaced; otherwise any of the analysis file names present is an error unless ``overwrite``.
    """
    check_output_folder(out_dir, (*ANALYSIS_FILES, FIGURES_DIR), "hypersort analyze", overwrite,
                        written_by_owner=Path(out_dir).is_dir() and read_analysis_provenance(out_dir) is not None,
                        error=RunDirectoryError)


def ensure_writable(run_dir: str | Path, create: bool = True) -> None:
    """Probe a write in ``run_dir`` so an unwritable folder fails before any work.

    With ``create`` the folder is created first; without it, a folder that does not exist yet
    is judged by a probe in its nearest existing parent, and nothing is left behind.
    """
    run_dir = Path(run_dir)
    target = run_dir
    if not create:
        while not target.exists() and target != target.parent:
            target = target.parent
    try:
        if create:
            run_dir.mkdir(parents=True, exist_ok=True)
        if not target.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(target))
        with atomic_path(target / ".hypersort-write-probe") as tmp:
            tmp.write_bytes(b"")
        (target / ".hypersort-write-probe").unlink(missing_ok=True)  # another process may probe the same folder
    except OSError as exc:
        raise RunDirectoryError(f"The run directory {run_dir} is not writable: {exc.strerror or exc}"
                                f"{'' if target == run_dir else f' (in {target})'}.") from exc


@contextlib.contextmanager
def _saving(path: Path) -> Iterator[Path]:
    """``atomic_path`` whose file-system faults (full disk, read-only folder) name the file."""
    try:
        with atomic_path(path) as tmp:
            yield tmp
    except RunDirectoryError:
        raise
    except Exception as exc:
        full = getattr(exc, "errno", None) == errno.ENOSPC or "unexpected pos" in str(exc) \
            or "No space left" in str(exc)
        if not (full or isinstance(exc, OSError)):
            raise
        try:
            free = f"{shutil.disk_usage(path.parent).free / 2**20:.1f} MiB free"
        except OSError:
            free = "free space unknown"
        what = "the disk is full" if full else (getattr(exc, "strerror", None) or str(exc))
        raise RunDirectoryError(f"Could not write {path}: {what} ({free} on its file system).") from exc


def _preview(items: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


# --------------------------------------------------------------------------- config.json
def write_run_config(run_dir: Path, config: RunConfig, case_ids: Sequence[str],
                     data_source: dict[str, Any] | None = None,
                     data_fingerprint: dict[str, Any] | None = None,
                     data_changes: Sequence[dict[str, Any]] = (),
                     created: str | None = None, method: dict[str, Any] | None = None,
                     world_size: int = 1, software: dict[str, Any] | None = None) -> None:
    """Write ``config.json``; ``data_source`` records where the training cases came from
    (e.g. ``{"path": ..., "format": ...}``) so analysis can find them again, ``data_fingerprint``
    what they were (see :func:`data_fingerprint`), ``data_changes`` accepted changes of either,
    ``method`` how the weights were trained (``{"name": ..., ...}``; default HyperSORT),
    ``world_size`` how many processes train it (``torchrun``; 1 for one process; a resume under
    another count rewrites it, and ``train_log.csv`` records the count of every epoch), ``software``
    the code commit and library versions training started with (default: those running now; a
    resume passes the recorded ones on, so a run that spans a code change names where it began)."""
    with _saving(Path(run_dir) / CONFIG_FILE) as tmp:
        tmp.write_text(json.dumps({
            "format": RUN_FORMAT,
            "format_version": RUN_FORMAT_VERSION,
            "library_version": __version__,
            "created": created or utc_now(),
            "config": config.to_dict(),
            "case_ids": list(case_ids),
            "data_source": dict(data_source or {}),
            "data_fingerprint": dict(data_fingerprint or {}),
            "data_changes": list(data_changes),
            "method": dict(method) if method else {"name": METHOD_HYPERSORT},
            "world_size": int(world_size),
            "software": dict(software) if software else software_versions(),
        }, indent=2) + "\n", encoding="utf-8")


def run_method(doc: dict[str, Any]) -> dict[str, Any]:
    """The training method a ``config.json`` document records: ``{"name": "hypersort"}`` for a
    hyper-network run (also for runs written before methods were recorded), otherwise the
    baseline's name (``unet``, ``mcpm``, ``pint``, ``ce-threshold``) and its settings."""
    method = doc.get("method")
    return dict(method) if isinstance(method, dict) and method.get("name") else {"name": METHOD_HYPERSORT}


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_run_config(run_dir: str | Path) -> tuple[RunConfig, list[str], dict[str, Any]]:
    """Read ``config.json``: the configuration, the case ids and the raw document."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise RunDirectoryError(f"{run_dir} is not a HyperSORT run directory: {path.name} is missing.")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunDirectoryError(f"{path} is not valid JSON: {exc}") from exc
    if doc.get("format") != RUN_FORMAT:
        raise RunDirectoryError(f"{path} is not a HyperSORT run configuration (format {doc.get('format')!r}).")
    version = doc.get("format_version")
    if version != RUN_FORMAT_VERSION:
        raise RunDirectoryError(
            f"{path} was written by HyperSORT {doc.get('library_version', '?')} in run format {version}; "
            f"this is HyperSORT {__version__}, which reads run format {RUN_FORMAT_VERSION}.")
    return RunConfig.from_dict(doc["config"]), list(doc["case_ids"]), doc


# --------------------------------------------------------------------------- data fingerprint
#: Bytes of an image hashed for its fingerprint (labels are hashed whole).
IMAGE_HASH_BYTES = 1 << 20


def _file_record(path: Path, root: Path, whole: bool) -> dict[str, Any]:
    digest = file_sha256(path, None if whole else IMAGE_HASH_BYTES)
    stat = path.stat()
    try:
        rel = path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        rel = str(path)
    return {"path": rel, "size": stat.st_size, "sha256": digest, "mtime": round(stat.st_mtime, 3)}


def data_fingerprint(case_list: Any) -> dict[str, Any]:
    """What each case's files are: ``{case_id: {"image": rec, "labels": [rec, ...]}}``.

    A record is the path relative to the dataset root, the size, and a sha256: of the whole file
    for labels (small), of the first MiB for images (``IMAGE_HASH_BYTES``; with the size this
    tells apart any two scans in practice at a fraction of the reading). The modification time is
    recorded but not compared, so a copied dataset still matches.
    """
    root = Path(case_list.root)
    out: dict[str, Any] = {}
    for case in case_list.cases:
        labels = [case.label] if case.label is not None else list(case.masks)
        out[case.case_id] = {"image": _file_record(Path(case.image), root, whole=False),
                             "labels": [_file_record(Path(p), root, whole=True) for p in labels]}
    return out


def fingerprint_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """One line per case present in both whose files differ (path, size or content)."""
    changes = []
    for case_id in old:
        if case_id not in new:
            continue
        a, b = old[case_id], new[case_id]
        pairs = [("image", a.get("image", {}), b.get("image", {}))]
        la, lb = a.get("labels", []), b.get("labels", [])
        if len(la) != len(lb):
            changes.append(f"{case_id}: {len(la)} label file(s) before, {len(lb)} now")
            continue
        pairs += [("label", x, y) for x, y in zip(la, lb)]
        for kind, x, y in pairs:
            diff = [key for key in ("path", "size", "sha256") if x.get(key) != y.get(key)]
            if diff:
                how = "content" if diff == ["sha256"] else ", ".join(diff)
                changes.append(f"{case_id}: {kind} {x.get('path')} -> {y.get('path')} ({how} differs)")
                break
    return changes


def describe_changes(changes: Sequence[str], limit: int = 3) -> str:
    return "; ".join(changes[:limit]) + (f"; ... ({len(changes)} cases in all)" if len(changes) > limit else "")


def check_data_unchanged(run_dir: str | Path, doc: dict[str, Any], case_list: Any,
                         accept_change: bool = False) -> dict[str, Any] | None:
    """Compare ``case_list`` with the fingerprint in ``config.json``.

    Returns:
        ``None`` when it matches (or the run recorded none); otherwise, with ``accept_change``,
        a change record ``{"time", "data_source", "changed_cases", "examples"}`` to store.

    Raises:
        RunDirectoryError: other files under the same case ids and ``accept_change`` is false.
    """
    old = doc.get("data_fingerprint") or {}
    if not old:
        return None
    changes = fingerprint_changes(old, data_fingerprint(case_list))
    if not changes:
        return None
    if not accept_change:
        raise RunDirectoryError(
            f"The dataset {case_list.root} differs from the one {Path(run_dir) / CONFIG_FILE} was trained on, in "
            f"{len(changes)} case(s): {describe_changes(changes)}; pass --accept-data-change to use it anyway.")
    return {"time": utc_now(), "data_source": str(case_list.root), "changed_cases": len(changes),
            "examples": list(changes[:10])}


# --------------------------------------------------------------------------- weights
def save_model_weights(run_dir: Path, state: dict[str, torch.Tensor], epoch: int) -> None:
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state.items()}
    with _saving(Path(run_dir) / MODEL_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "hypersort-model", "epoch": str(epoch),
                                               "library_version": __version__})


def load_model_weights(run_dir: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    return read_model_weights(run_dir, device)[0]


def read_model_weights(run_dir: str | Path,
                       device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], str]:
    """The weights of ``model.safetensors`` and the sha256 of exactly the bytes they were read from."""
    path = Path(run_dir) / MODEL_FILE
    if not path.is_file():
        raise RunDirectoryError(f"{run_dir} has no trained weights yet ({path.name} is missing).")
    data = path.read_bytes()
    try:
        state = {k: v.to(device) for k, v in load_bytes(data).items()}
    except Exception as exc:  # safetensors raises its own error types for truncated files
        raise RunDirectoryError(f"{path} could not be read (truncated or not a safetensors file): {exc}") from exc
    return state, hashlib.sha256(data).hexdigest()


def weights_digest(run_dir: str | Path) -> str:
    """sha256 (hex) of ``model.safetensors``: identifies the weights an output was made with."""
    path = Path(run_dir) / MODEL_FILE
    if not path.is_file():
        raise RunDirectoryError(f"{run_dir} has no trained weights yet ({path.name} is missing).")
    return file_sha256(path)


def weights_epoch(run_dir: str | Path) -> int | None:
    """The epoch recorded in ``model.safetensors``' metadata (``None`` if unreadable)."""
    try:
        with safe_open(str(Path(run_dir) / MODEL_FILE), framework="pt") as handle:
            return int((handle.metadata() or {}).get("epoch"))
    except Exception:
        return None


# --------------------------------------------------------------------------- training state
def save_training_state(run_dir: Path, state: dict[str, Any]) -> None:
    with _saving(Path(run_dir) / CHECKPOINT_FILE) as tmp:
        torch.save(state, tmp)


def load_training_state(run_dir: Path) -> dict[str, Any] | None:
    """The last checkpoint, or ``None`` if the run has none yet. Never executes pickled code."""
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise RunDirectoryError(f"Checkpoint {path} could not be loaded ({exc}); delete it to restart the run "
                                f"from scratch.") from exc


# --------------------------------------------------------------------------- latents.csv, train_log.csv
def write_latents_csv(run_dir: Path, case_ids: Sequence[str], latents: torch.Tensor,
                      losses: torch.Tensor | None = None) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    dims = latents.shape[1]
    writer.writerow(["case_id", *[f"z{i + 1}" for i in range(dims)], "loss"])
    for i, case_id in enumerate(case_ids):
        loss = "" if losses is None or not torch.isfinite(losses[i]) else f"{float(losses[i]):.6g}"
        writer.writerow([case_id, *[f"{float(v):.8g}" for v in latents[i]], loss])
    with _saving(Path(run_dir) / LATENTS_FILE) as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")


def read_latents_table(run_dir: str | Path, case_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Latents ``[N, D]`` and last training losses ``[N]`` (NaN where not recorded) of a run.

    Raises:
        RunDirectoryError: ``latents.csv`` is missing, malformed, or lists other cases than
            ``config.json``.
    """
    path = Path(run_dir) / LATENTS_FILE
    if not path.is_file():
        raise RunDirectoryError(f"{run_dir} has no latent table yet ({path.name} is missing).")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows or rows[0][:1] != ["case_id"] or rows[0][-1] != "loss" or len(rows[0]) < 3:
        found = rows[0] if rows else "an empty file"
        raise RunDirectoryError(f"{path}: expected a header 'case_id,z1,...,zD,loss'; found {found}.")
    dims = len(rows[0]) - 2
    ids = [row[0] for row in rows[1:]]
    if ids != list(case_ids):
        raise RunDirectoryError(f"{path} lists {len(ids)} cases that do not match the {len(case_ids)} case ids of "
                                f"{CONFIG_FILE} (first difference: {_first_difference(ids, list(case_ids))}).")
    latents = np.empty((len(ids), dims))
    losses = np.full(len(ids), np.nan)
    for i, row in enumerate(rows[1:]):
        if len(row) != dims + 2:
            raise RunDirectoryError(f"{path}, case '{row[0]}': expected {dims + 2} values, found {len(row)}.")
        try:
            latents[i] = [float(v) for v in row[1:-1]]
            losses[i] = float(row[-1]) if row[-1].strip() else math.nan
        except ValueError as exc:
            raise RunDirectoryError(f"{path}, case '{row[0]}': {exc}.") from None
    return latents, losses


def _first_difference(a: Sequence[str], b: Sequence[str]) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"row {i + 1}: '{x}' vs '{y}'"
    if len(a) != len(b):
        return f"{len(a)} vs {len(b)} rows"
    return "none"


def write_train_log(run_dir: Path, history: Sequence[dict[str, Any]]) -> None:
    if not history:
        return
    # Columns in order of first appearance: a run resumed by a newer version adds columns.
    fields = list(dict.fromkeys(key for row in history for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    with _saving(Path(run_dir) / LOG_FILE) as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")


# --------------------------------------------------------------------------- analysis/
#: ``kind`` of a ``clusters.csv`` row: a style (a group of cases whose decoded UNets segment alike) or
#: an isolated group (too small to be a style: candidate errors); empty for a mixture component that
#: ``hypersort analyze`` has not checked.
STYLE_KINDS = ("style", "isolated")


def style_name(cluster: int, kind: str = "", is_main_mode: bool = False) -> str:
    """``style 2``, ``style 0 (main mode)``, ``isolated 5``, or ``cluster 3`` for a mixture component
    whose behaviour was not checked: how the report, the terminal and the front ends name a row."""
    if kind == "isolated":
        return f"isolated {int(cluster)}"
    main = " (main mode)" if is_main_mode else ""
    return f"{'style' if kind == 'style' else 'cluster'} {int(cluster)}{main}"


@dataclass(frozen=True)
class ClusterInfo:
    """A cluster of the latent map: its centre is a latent point whose UNet annotates like the cluster.

    ``kind`` is "style" or "isolated" for the rows of ``hypersort analyze`` (:data:`STYLE_KINDS`), empty for
    a mixture fitted to the latent table without that check; ``description`` says how its UNet segments
    compared with the main mode's."""

    cluster: int
    size: int
    centre: np.ndarray
    is_main_mode: bool
    description: str = ""
    kind: str = ""

    @property
    def name(self) -> str:
        """:func:`style_name` of this row."""
        return style_name(self.cluster, self.kind, self.is_main_mode)


def analysis_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / ANALYSIS_DIR


def read_clusters_table(path: str | Path, dim: int) -> list[ClusterInfo]:
    """Rows of a ``clusters.csv`` (``cluster, size, [weight,] z1..zD, is_main_mode[, description]``).

    When no row is marked as the main mode, the largest cluster is.

    Raises:
        RunDirectoryError: a missing column or a value that is not a number.
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    clusters = []
    for row in rows:
        try:
            centre = [float(row[f"z{i + 1}"]) for i in range(dim)]
            info = ClusterInfo(int(row["cluster"]), int(float(row.get("size") or 0)),
                               np.asarray(centre, dtype=np.float32),
                               str(row.get("is_main_mode", "")).strip().lower() in ("1", "true", "yes"),
                               row.get("description", "") or "",
                               (row.get("kind") or "").strip() if (row.get("kind") or "").strip() in STYLE_KINDS else "")
        except (KeyError, TypeError, ValueError):
            raise RunDirectoryError(f"{path}: expected columns cluster, size, z1..z{dim}, is_main_mode with numbers; "
                                    f"found {row}.") from None
        clusters.append(info)
    if clusters and not any(c.is_main_mode for c in clusters):
        largest = max(clusters, key=lambda c: c.size)
        clusters = [ClusterInfo(c.cluster, c.size, c.centre, c is largest, c.description, c.kind) for c in clusters]
    return clusters


def read_samples_table(path: str | Path) -> dict[str, list[str]]:
    """Columns of a ``samples.csv`` (``case_id`` first), keyed by header.

    Raises:
        RunDirectoryError: no ``case_id`` column, or a row of another length than the header.
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows or rows[0][:1] != ["case_id"]:
        raise RunDirectoryError(f"{path}: expected a header starting with case_id; found "
                                f"{rows[0] if rows else 'an empty file'}.")
    header = rows[0]
    for row in rows[1:]:
        if len(row) != len(header):
            raise RunDirectoryError(f"{path}, case '{row[0] if row else ''}': expected {len(header)} values, "
                                    f"found {len(row)}.")
    return {key: [row[i] for row in rows[1:]] for i, key in enumerate(header)}


def analysis_provenance(run_dir: str | Path, digest: str | None = None) -> dict[str, Any]:
    """The content of ``provenance.json``: which weights (sha256 of ``model.safetensors``, epoch)
    an analysis was made from; ``digest`` is the one taken when the weights were loaded."""
    return {"format": "hypersort-analysis", "library_version": __version__, "created": utc_now(),
            "run_dir": str(run_dir), "weights_sha256": digest or weights_digest(run_dir),
            "epoch": weights_epoch(run_dir), "software": software_versions()}


def read_analysis_provenance(out_dir: str | Path) -> dict[str, Any] | None:
    try:
        doc = json.loads((Path(out_dir) / PROVENANCE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("format") == "hypersort-analysis" else None


def stale_analysis_reason(run_dir: str | Path, digest: str | None = None) -> str | None:
    """Why ``RUN_DIR/analysis`` does not describe the weights with sha256 ``digest`` (default: the
    current ``model.safetensors``), or ``None`` when it does or there is no analysis. An analysis
    without ``provenance.json`` counts as stale."""
    out = analysis_dir(run_dir)
    if not (out / CLUSTERS_FILE).is_file():
        return None
    doc = read_analysis_provenance(out)
    now_epoch = weights_epoch(run_dir)
    if doc is None:
        return (f"{out} records no weights digest ({PROVENANCE_FILE} is missing), so it may describe other weights "
                f"than {MODEL_FILE} (epoch {now_epoch}); re-run `hypersort analyze --run {run_dir}`.")
    if doc.get("weights_sha256") != (digest or weights_digest(run_dir)):
        return (f"{out} was made from the weights of epoch {doc.get('epoch')}, but {MODEL_FILE} now holds epoch "
                f"{now_epoch}; re-run `hypersort analyze --run {run_dir}`.")
    return None
