"""Data loading vs training: would loading starve the GPU?

Builds a few CT scans of clinical size (the abdomen example of ../shared/data upsampled to about
1 x 1 x 2 mm, ~370 x 300 x 170 voxels, gzip NIfTI like downloaded datasets) and measures, side by
side in one run:

* ``check (headers)`` / ``check (voxels)``: ``hypersort check-data`` without and with voxel reads;
* ``cold, 1 process`` / ``cold, N processes``: reading + RAS + resampling to 2 mm + percentile
  scaling + writing the cache entry (what the first epoch of a run without cache would pay for
  every case, every epoch);
* ``cached, centre patch`` / ``cached, random patch``: one training item from the disk cache
  (memory-mapped window of ``--patch``), in this process;
* ``cached, DataLoader w workers``: items/s through a DataLoader with that many worker processes;

against the rate of the training step (:meth:`Trainer.train_step`, reference UNet and generator by
default, ``--step-batch`` samples, bf16 autocast on CUDA as ``train.amp``) at ``--step-patch``.
``vs step rate`` is how many items one loading path delivers while the step trains one sample:
below 1, that loader alone would starve the device. ``--json`` also writes the rows and the machine.

Usage:
    python benchmarks/loader_throughput.py                      # CPU, small step patch
    python benchmarks/loader_throughput.py --device cuda --step-patch 168 --step-batch 4 --cases 8
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, machine_record  # noqa: E402
from train_step import PRESETS, preset_spec, run_variant  # noqa: E402

from HyperSORTLib.config import DataConfig  # noqa: E402
from HyperSORTLib.data import read_dataset  # noqa: E402
from HyperSORTLib.data.cache import PreprocessCache  # noqa: E402
from HyperSORTLib.data.dataset import PreprocessedCases  # noqa: E402
from HyperSORTLib.data.validation import check_cases  # noqa: E402

#: Exit status of a run that cannot measure anything here (the benchmark suite reports it as skipped).
SKIPPED = 77

_REPO = Path(__file__).resolve().parents[1]
#: The shared CT example: in the checkout's shared/ folder, else beside the checkout.
EXAMPLE = next((root / "shared" / "data" / "ct-examples" / "totalsegmentator" / "A_example_ct_3mm"
                for root in (_REPO, _REPO.parent) if (root / "shared" / "data").is_dir()),
               _REPO.parent / "shared" / "data" / "ct-examples" / "totalsegmentator" / "A_example_ct_3mm")


def make_cases(root: Path, n: int, zoom: tuple[float, float, float]) -> Path:
    """nnU-Net folder of ``n`` clinical-size scans (shifted copies of the upsampled example)."""
    from scipy import ndimage

    ct = nib.load(str(EXAMPLE / "ct.nii.gz"))
    image = np.asanyarray(ct.dataobj).astype(np.int16)
    label = np.asanyarray(nib.load(str(EXAMPLE / "label_total_fast_pred.nii.gz")).dataobj)
    big = ndimage.zoom(image, zoom, order=1).astype(np.int16)
    big_label = ndimage.zoom((label == 5).astype(np.uint8), zoom, order=0)
    affine = np.asarray(ct.affine) @ np.diag([1 / zoom[0], 1 / zoom[1], 1 / zoom[2], 1.0])
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i in range(n):
        shifted = np.roll(big, 7 * i, axis=0)
        nib.save(nib.Nifti1Image(shifted, affine), str(root / "imagesTr" / f"ct_{i:03d}_0000.nii.gz"))
        nib.save(nib.Nifti1Image(np.roll(big_label, 7 * i, axis=0), affine),
                 str(root / "labelsTr" / f"ct_{i:03d}.nii.gz"))
    (root / "dataset.json").write_text('{"labels": {"background": 0, "liver": 1}, "file_ending": ".nii.gz"}')
    return root


def timed(fn, repeat: int = 1) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def step_rate(preset: str, patch: int, batch: int, device: str, dtype: str, steps: int) -> dict:
    """The Trainer step of ``preset`` at ``patch``^3 and ``batch`` (``train_step.py``'s trainer variant)."""
    spec = preset_spec(preset, device, batch, [patch] * 3)
    return run_variant("trainer", spec, device, steps, warmup=1, dtype=dtype, isolated=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--patch", type=int, default=168, help="training patch edge for the loader")
    parser.add_argument("--step-patch", type=int, default=64, help="patch edge of the timed training step")
    parser.add_argument("--step-batch", type=int, default=1, help="samples per timed training step")
    parser.add_argument("--step-preset", choices=sorted(PRESETS), default="reference",
                        help="networks of the timed training step (train_step.py's presets)")
    parser.add_argument("--step-dtype", choices=("fp32", "bf16"), default=None,
                        help="precision of the timed step (default: bf16 on CUDA, as train.amp; fp32 on CPU)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--zoom", type=float, nargs=3, default=(3.0, 3.0, 1.5),
                        help="upsampling of the 3 mm example into the test scans (default: about 1 x 1 x 2 mm)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows and the machine here")
    args = parser.parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    step_dtype = args.step_dtype or ("bf16" if args.device.startswith("cuda") else "fp32")
    if not EXAMPLE.is_dir():
        print(f"{EXAMPLE} is missing (the shared CT examples).", file=sys.stderr)
        sys.exit(SKIPPED)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = make_cases(tmp / "data", args.cases, tuple(args.zoom))
        shape = nib.load(str(next((root / "imagesTr").glob("*.nii.gz")))).shape
        cases = read_dataset(root)
        n = len(cases.cases)
        config = DataConfig(patch_size=(args.patch,) * 3)  # reference: 2 mm, percentile scaling
        rows.append(("check (headers)", timed(lambda: check_cases(cases, deep=False, workers=1)) / n))
        rows.append(("check (voxels)", timed(lambda: check_cases(cases, deep=True, workers=1)) / n))
        rows.append(("cold, 1 process",
                     timed(lambda: PreprocessedCases(cases, config, PreprocessCache(tmp / "c1"))) / n))
        rows.append((f"cold, {args.workers} processes",
                     timed(lambda: PreprocessedCases(cases, config, PreprocessCache(tmp / "c2"),
                                                     workers=args.workers)) / n))
        cache = PreprocessCache(tmp / "c1")
        rows.append(("cache lookup (all cases)", timed(lambda: PreprocessedCases(cases, config, cache), 3) / n))
        volume_shape = PreprocessedCases(cases, config, cache).volume(0).image.shape
        keys = [(i, e, 0) for e in range(3) for i in range(n)]
        for mode in ("center", "random"):
            data = PreprocessedCases(cases, dataclasses.replace(config, patch_sampling=mode), cache)
            rows.append((f"cached, {mode} patch", timed(lambda: [data[k] for k in keys], 3) / len(keys)))
        data = PreprocessedCases(cases, dataclasses.replace(config, patch_sampling="random"), cache)
        for workers in (0, args.workers):
            # as the trainer loads: persistent workers, one batch of keys per step
            loader = torch.utils.data.DataLoader(data, batch_sampler=[[k] for k in keys], num_workers=workers,
                                                 collate_fn=lambda items: items, persistent_workers=workers > 0)
            drain = lambda: sum(1 for _ in loader)  # noqa: E731
            drain()  # start the workers, warm the page cache
            rows.append((f"cached, DataLoader {workers} workers", timed(drain, 3) / len(keys)))

        step = step_rate(args.step_preset, args.step_patch, args.step_batch, args.device, step_dtype, args.steps)

    rate = step["samples_per_s"]
    spacing = "x".join(f"{3 / z:.3g}" for z in args.zoom)
    lines = [f"{n} scans of {shape} voxels (about {spacing} mm, int16 .nii.gz) -> 2 mm volumes {volume_shape}; "
             f"loader patch {args.patch}^3; training step: {args.step_preset} UNet + generator, batch "
             f"{step['batch']}, patch {args.step_patch}^3, {step['dtype']}, forward {step['forward']} on "
             f"{args.device}: {step['step_s']:.3f} s ({rate:.2f} samples/s).", "",
             "| loading | s per case | cases/s | vs step rate |", "|---|---|---|---|"]
    for name, seconds in rows:
        lines.append(f"| {name} | {seconds:.4f} | {1 / seconds:.1f} | {1 / seconds / rate:.1f} |")
    lines += ["", f"Machine: {describe(args.device)}"]
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({
            "script": "loader_throughput", "machine": machine_record(args.device), "cases": n,
            "scan_shape": list(shape), "volume_shape": list(volume_shape), "patch": args.patch,
            "workers": args.workers, "step": step,
            "rows": [{"loading": name, "seconds_per_case": seconds, "cases_per_s": 1 / seconds,
                      "vs_step_rate": 1 / seconds / rate} for name, seconds in rows],
            "markdown": lines}, indent=1))


if __name__ == "__main__":
    main()
