"""Inputs of a run audit: its training cases and the probe cases (the latent table is read by
:mod:`HyperSORTLib.rundir`, the ground-truth manifest by :mod:`HyperSORTLib.data.manifest`).

Every reader checks its input up front and raises an error naming the file, what was expected
and what was found, so an audit fails before any heavy computation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from HyperSORTLib.rundir import CONFIG_FILE, check_data_unchanged
from HyperSORTLib.utils.nifti import voxel_sizes

__all__ = ["PatchCase", "analysis_patch_config", "check_probe_ids", "nearest_cases", "resolve_case_list",
           "training_patches"]


def _preview(items: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


# --------------------------------------------------------------------------- dataset
def _read_source(source: dict[str, Any]) -> Any:
    """A case list from a ``data_source`` record through the readers the library has."""
    from HyperSORTLib import data as data_module

    if hasattr(data_module, "case_list_from_source"):
        return data_module.case_list_from_source(source)
    layout = source.get("format") or "nnunet"
    if hasattr(data_module, "read_dataset"):
        return data_module.read_dataset(source["path"], format=layout)
    if layout != "nnunet":
        raise ValueError(f"The run's dataset {source['path']} has format '{layout}', which this installation "
                         f"cannot read (it reads nnU-Net raw / MSD folders).")
    return data_module.read_nnunet_folder(source["path"])


def resolve_case_list(run_dir: str | Path, doc: dict[str, Any], case_ids: Sequence[str],
                      data: str | Path | None = None, accept_data_change: bool = False) -> tuple[Any, Path]:
    """The run's training cases (a ``CaseList`` in the run's case order) and the dataset path.

    The dataset is the one recorded in ``config.json`` (``data_source``), or ``data`` when given
    (same format, new location). Its files must match the fingerprint recorded at training
    (other images or labels under the same case ids are an error) unless ``accept_data_change``.

    Raises:
        FileNotFoundError: no dataset is recorded and none given, or the folder does not exist
            (the message says to pass ``--data``).
        ValueError: the dataset lacks some of the run's cases.
        RunDirectoryError: the dataset's files differ from those the run was trained on.
    """
    config_path = Path(run_dir) / CONFIG_FILE
    source = dict(doc.get("data_source") or {})
    if data is not None:
        source["path"] = str(data)
        if not Path(data).exists():
            raise FileNotFoundError(f"The dataset folder {data} given with --data does not exist.")
    path = source.get("path")
    if not path:
        raise FileNotFoundError(f"{config_path} does not record where the training cases are (no data_source); "
                                f"pass --data DATA_DIR with the dataset the run was trained on.")
    if not Path(path).exists():
        raise FileNotFoundError(f"The training dataset {path} recorded in {config_path} was not found; if it has "
                                f"moved, pass --data DATA_DIR with its new location.")
    case_list = _read_source(source)
    by_id = {c.case_id: c for c in case_list.cases}
    absent = [c for c in case_ids if c not in by_id]
    if absent:
        raise ValueError(f"The dataset {path} lacks {len(absent)} of the run's {len(case_ids)} training case(s): "
                         f"{_preview(absent)}; pass --data with the dataset the run was trained on.")
    ordered = dataclasses.replace(case_list, cases=tuple(by_id[c] for c in case_ids))
    check_data_unchanged(run_dir, doc, ordered, accept_change=accept_data_change)
    return ordered, Path(path)


def check_probe_ids(probe_cases: Sequence[str] | str | None, case_ids: Sequence[str]) -> list[str] | None:
    """The given probe ids (a list or a comma-separated string), checked against the run's cases.

    Returns:
        The ids without duplicates, or ``None`` when none were given.

    Raises:
        ValueError: an id is not a training case of the run, or the list is empty.
    """
    if probe_cases is None:
        return None
    ids = [p.strip() for p in probe_cases.split(",")] if isinstance(probe_cases, str) else [str(p) for p in probe_cases]
    ids = [p for p in ids if p]
    if not ids:
        raise ValueError("No probe case ids given; pass a comma-separated list of training case ids.")
    known = set(case_ids)
    unknown = [p for p in ids if p not in known]
    if unknown:
        raise ValueError(f"Probe case(s) {_preview(unknown)} are not training cases of the run "
                         f"({len(case_ids)} cases: {_preview(list(case_ids), 3)}).")
    return list(dict.fromkeys(ids))


def nearest_cases(case_ids: Sequence[str], latents: np.ndarray, centre: np.ndarray, members: np.ndarray,
                  n: int = 3) -> list[str]:
    """The ``n`` members nearest ``centre`` (the ``n`` nearest cases overall when fewer are members)."""
    if n < 1:
        raise ValueError(f"n_probes must be >= 1; found {n}")
    distance = np.linalg.norm(np.asarray(latents) - np.asarray(centre)[None, :], axis=1)
    pool = np.flatnonzero(members)
    if pool.size < n:
        pool = np.arange(len(case_ids))
    return [case_ids[i] for i in pool[np.argsort(distance[pool], kind="stable")[:n]]]


def analysis_patch_config(config: Any) -> Any:
    """The data configuration whose patch every analysis pass uses: the training patch when it is
    deterministic (``center``, ``label_center``), else (``label``, ``random``) the patch centred on
    the annotation, which covers what training saw most; never zoomed or noised (``scale_augmentation``
    and ``noise_augmentation`` 0)."""
    sampling = config.patch_sampling if config.patch_sampling in ("center", "label_center") else "label_center"
    if sampling == config.patch_sampling and not config.scale_augmentation and not config.noise_augmentation:
        return config
    return dataclasses.replace(config, patch_sampling=sampling, scale_augmentation=0.0, noise_augmentation=0.0)


def training_patches(case_list: Any, config: Any, cache: Any = None, progress: bool = False,
                     only: Sequence[str] | None = None) -> Iterator[PatchCase]:
    """Preprocess the cases as training does and cut each one's patch, one case at a time.

    Args:
        case_list: the cases.
        config: the run's ``DataConfig``.
        cache: a ``PreprocessCache`` to read (never written): cases that training cached are not
            preprocessed again.
        progress: show a progress bar.
        only: the case ids to cut (the others are skipped without being read); default every case.

    Yields:
        A :class:`PatchCase` per case, in case-list order.

    Raises:
        ValueError: a case cannot be read or preprocessed (the message names it and its files).
    """
    from HyperSORTLib.data.preprocessing import preprocess_case, sample_patch

    patch_config = analysis_patch_config(config)
    cases = case_list.cases
    if progress:
        from tqdm.auto import tqdm

        cases = tqdm(cases, desc="main-mode loss", unit="case")
    wanted = None if only is None else set(only)
    for index, case in enumerate(cases):
        if wanted is not None and case.case_id not in wanted:
            continue
        volume = None
        if cache is not None:
            try:
                volume = cache.load(cache.case_key(case, case_list, config))
            except Exception:  # an unreadable cache entry costs time, not the analysis
                volume = None
        if volume is None:
            try:
                volume = preprocess_case(case, case_list, config)
            except Exception as exc:
                raise ValueError(f"Case '{case.case_id}' (image {case.image}) could not be preprocessed: "
                                 f"{exc}") from exc
        image, label = sample_patch(np.asarray(volume.image), np.asarray(volume.label), patch_config, None,
                                    volume.foreground, volume.foreground_box)
        spacing = tuple(float(v) for v in voxel_sizes(volume.affine))
        yield PatchCase(index, case.case_id, image.astype(np.float32, copy=False), label, spacing)


@dataclass
class PatchCase:
    """One preprocessed case as the network sees it.

    Attributes:
        index: position in the case list (the latent-table row).
        case_id: the case id.
        image: float32 patch ``[X, Y, Z]`` (RAS, intensities in [0, 1]).
        label: class indices, same shape.
        spacing: voxel spacing in mm along X, Y, Z of the preprocessed grid.
    """

    index: int
    case_id: str
    image: np.ndarray
    label: np.ndarray
    spacing: tuple[float, ...]

    @property
    def voxel_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0
