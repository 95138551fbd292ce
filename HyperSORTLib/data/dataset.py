"""Training datasets: items ``{"image", "label", "index", "case_id"}`` with the case's latent-table row.

* :class:`SegmentationCases` runs a transform over every case once and keeps the results in
  memory (small datasets, the demo, tests).
* :class:`PreprocessedCases` preprocesses every case once to the whole volume, keeps it in the
  disk cache (:class:`~HyperSORTLib.data.cache.PreprocessCache`) or in memory, and cuts the
  patch when an item is requested (centre, label-centred or random, see
  :func:`~HyperSORTLib.data.preprocessing.sample_patch`). Items are cheap, so data-loader
  worker processes can serve them; the expensive reading and resampling happens once, up front,
  where a broken case is reported (or skipped) before training starts.

Both accept an item key ``i`` or ``(i, epoch, seed)``; with the latter, random patch placement
depends only on ``(seed, epoch, i)``, which keeps resumed runs identical to uninterrupted ones.
"""

from __future__ import annotations

import logging
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import Dataset

from HyperSORTLib.config import DataConfig
from HyperSORTLib.data.cases import CaseList, CaseRecord

log = logging.getLogger(__name__)


class CaseLoadError(ValueError):
    """A case could not be read or preprocessed; the message names the case and its files."""


def _files_of(case: CaseRecord) -> str:
    if case.label is not None:
        return f"image {case.image}, label {case.label}"
    return f"image {case.image}, {len(case.masks)} masks in {case.masks[0].parent if case.masks else '?'}"


def _split_key(key: Any) -> tuple[int, int, int]:
    if isinstance(key, (tuple, list)):
        index, epoch, seed = (tuple(key) + (0, 0))[:3]
        return int(index), int(epoch), int(seed)
    return int(key), 0, 0


class SegmentationCases(Dataset):
    """Preprocess every case once and serve ``{"image", "label", "index", "case_id"}``.

    ``index`` is the case's position in the case list, which is its row in the latent table.
    The annotation is read with :func:`~HyperSORTLib.data.labels.load_label` (label file or
    per-class masks, with the list's class selection) and handed to the transform as a
    MetaTensor on the label file's grid.

    Args:
        case_list: the dataset's cases and class names.
        transform: maps ``{"image": path, "label": MetaTensor}`` to tensors [1, X, Y, Z]
            (e.g. :func:`~HyperSORTLib.data.preprocessing.training_transforms`).
        progress: show a progress bar while preprocessing.
    """

    accepts_epoch_keys = True

    def __init__(self, case_list: CaseList, transform: Callable[[dict], dict], progress: bool = False) -> None:
        from HyperSORTLib.data.preprocessing import load_case

        self.case_list = case_list
        num_classes = len(case_list.class_names)
        records = case_list.cases
        if progress:
            from tqdm.auto import tqdm

            records = tqdm(records, desc="preprocessing", unit="case")
        self.items = []
        for index, case in enumerate(records):
            try:
                item = transform(load_case(case, case_list))
            except Exception as exc:  # MONAI wraps reader errors; name the case instead
                raise CaseLoadError(f"Case '{case.case_id}' ({_files_of(case)}) could not be loaded: {exc}") from exc
            image = torch.as_tensor(item["image"], dtype=torch.float32)
            label = torch.as_tensor(item["label"]).round().long()
            if not torch.isfinite(image).all():
                raise CaseLoadError(f"Case '{case.case_id}': image {case.image} contains NaN or infinite values.")
            if image.shape != label.shape:
                raise CaseLoadError(f"Case '{case.case_id}': image shape {tuple(image.shape)} and label shape "
                                    f"{tuple(label.shape)} differ after preprocessing.")
            low, high = int(label.min()), int(label.max())
            if low < 0 or high >= num_classes:
                raise CaseLoadError(f"Case '{case.case_id}': label {case.label} has values {low}..{high}, "
                                    f"expected 0..{num_classes - 1} ({', '.join(case_list.class_names)}).")
            # uint8 keeps the in-memory cache 8x smaller than int64; the trainer widens per batch
            label = label.to(torch.uint8) if num_classes <= 256 else label
            self.items.append({"image": image, "label": label, "index": index, "case_id": case.case_id})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: Any) -> dict:
        return self.items[_split_key(key)[0]]


# ------------------------------------------------------------------------------------ cached
def _prepare(case: CaseRecord, case_list: CaseList, config: DataConfig, cache_root: str | None) -> Any:
    """Preprocess one case; with a cache, store it there and return its key, else return it."""
    from HyperSORTLib.data.cache import PreprocessCache
    from HyperSORTLib.data.preprocessing import preprocess_case

    try:
        volume = preprocess_case(case, case_list, config)
    except Exception as exc:  # reported per case by the caller
        return ("error", f"{type(exc).__name__}: {exc}")
    if cache_root is None:
        return ("ok", volume)
    cache = PreprocessCache(cache_root)
    key = cache.case_key(case, case_list, config)
    try:
        cache.store(key, volume, case.case_id)
    except OSError as exc:  # a full or read-only cache costs memory, not the run
        log.warning("Cannot write case '%s' to the cache %s (%s); keeping it in memory.", case.case_id,
                    cache_root, exc)
        return ("ok", volume)
    return ("ok", key)


def _worker_init() -> None:
    torch.set_num_threads(1)


class PreprocessedCases(Dataset):
    """Whole preprocessed volumes (disk cache or memory); patches cut per item.

    Args:
        case_list: the cases; ``self.case_list`` is this list without the skipped cases.
        config: preprocessing and patch settings.
        cache: a :class:`~HyperSORTLib.data.cache.PreprocessCache`, or ``None`` to keep the
            volumes in memory.
        progress: show a progress bar while preparing.
        workers: processes preparing uncached cases in parallel (0 or 1: in this process).
        skip_failed: leave out the cases that fail to load (listed in ``self.failures``)
            instead of raising :class:`CaseLoadError`.

    Attributes:
        failures: ``(case_id, message)`` of the cases left out.
        cache_hits: how many cases came from the cache.
    """

    accepts_epoch_keys = True

    def __init__(self, case_list: CaseList, config: DataConfig, cache: Any = None, progress: bool = False,
                 workers: int = 0, skip_failed: bool = False) -> None:
        self.config = config
        self.cache = cache
        self.failures: list[tuple[str, str]] = []
        self.cache_hits = 0
        volumes: dict[int, Any] = {}
        pending: list[int] = []
        keys: dict[int, str] = {}
        for i, case in enumerate(case_list.cases):
            if cache is not None:
                keys[i] = cache.case_key(case, case_list, config)
                if cache.load(keys[i]) is not None:
                    volumes[i] = keys[i]
                    self.cache_hits += 1
                    continue
            pending.append(i)
        results = self._run(case_list, pending, workers, progress)
        for i, (status, value) in zip(pending, results):
            case = case_list.cases[i]
            if status == "ok":
                volumes[i] = value
                continue
            message = f"Case '{case.case_id}' ({_files_of(case)}) could not be loaded: {value}"
            if not skip_failed:
                raise CaseLoadError(message)
            log.warning("Skipping: %s", message)
            self.failures.append((case.case_id, value))
        failed = {case_id for case_id, _ in self.failures}
        self.case_list = case_list.without(failed)
        self._volumes = [volumes[i] for i, c in enumerate(case_list.cases) if c.case_id not in failed]

    def _run(self, case_list: CaseList, pending: Sequence[int], workers: int, progress: bool) -> list:
        cache_root = None if self.cache is None else str(self.cache.root)
        bar = None
        if progress and pending:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(pending), desc="preprocessing", unit="case")
        results = []
        try:
            if workers > 1 and len(pending) > 1:
                import multiprocessing

                # fork (as torch's DataLoader) where available: no re-import of the caller's script;
                # the workers run single-threaded, which keeps forked OpenMP runtimes safe
                methods = multiprocessing.get_all_start_methods()
                context = multiprocessing.get_context("fork" if "fork" in methods and sys.platform == "linux"
                                                      else None)
                with ProcessPoolExecutor(min(workers, len(pending)), mp_context=context,
                                         initializer=_worker_init) as pool:
                    futures = [pool.submit(_prepare, case_list.cases[i], case_list, self.config, cache_root)
                               for i in pending]
                    for future in futures:
                        results.append(future.result())
                        if bar is not None:
                            bar.update(1)
            else:
                for i in pending:
                    results.append(_prepare(case_list.cases[i], case_list, self.config, cache_root))
                    if bar is not None:
                        bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return results

    def __len__(self) -> int:
        return len(self._volumes)

    def volume(self, index: int) -> Any:
        """The whole preprocessed volume of case ``index`` (:class:`PreprocessedCase`, memory-mapped when cached)."""
        entry = self._volumes[index]
        if isinstance(entry, str):
            volume = self.cache.load(entry)
            if volume is None:
                case = self.case_list.cases[index]
                raise CaseLoadError(f"Case '{case.case_id}': its cache entry {entry} in {self.cache.root} "
                                    f"disappeared while training; run again to rebuild it.")
            return volume
        return entry

    def __getitem__(self, key: Any) -> dict:
        from HyperSORTLib.data.preprocessing import needs_patch_rng, patch_rng, sample_patch

        index, epoch, seed = _split_key(key)
        volume = self.volume(index)
        rng = patch_rng(seed, epoch, index) if needs_patch_rng(self.config) else None
        image, label = sample_patch(volume.image, volume.label, self.config, rng, volume.foreground,
                                    volume.foreground_box)
        return {"image": torch.from_numpy(image[None]), "label": torch.from_numpy(label[None]),
                "index": index, "case_id": self.case_list.cases[index].case_id}
