"""A trained run's labels in the device's 16-bit type against float32, with the time of each, side by side.

For every scan and every latent point (the run's style centres from ``analysis/clusters.csv``, or
the mixture's, and a few training cases' own latents), the same :class:`InteractiveSegmenter`
path segments the scan twice, once with ``mixed_precision=False`` (float32) and once with
``mixed_precision=True`` (bfloat16 on CPUs with bfloat16 instructions, bfloat16 or float16 on
CUDA), at preview and full resolution. Prints one markdown table: per class, the Dice between the two label maps
(the worst over the points), the share of differing voxels, and the UNet time of each.

    python benchmarks/mixed_precision_agreement.py --run demo_out/run \\
        --scans demo_out/cohort/imagesTr/case_000_0000.nii.gz ../shared/data/ct-examples/totalsegmentator/B_example_ct_dicom/ct.nii.gz
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch

from HyperSORTLib.device import resolve_device
from HyperSORTLib.inference import InteractiveSegmenter, TrainedRun, load_scan
from HyperSORTLib.metrics import dice_per_class
from machine import describe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a trained run directory")
    parser.add_argument("--scans", type=Path, nargs="+", required=True, help="NIfTI scans to segment")
    parser.add_argument("--samples", type=int, default=3, help="training cases whose own latents are also used")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    run = TrainedRun.load(args.run, device=str(device))
    exact = InteractiveSegmenter(run, mixed_precision=False, max_cached_results=0)
    mixed = InteractiveSegmenter(run, mixed_precision=True, max_cached_results=0)
    points = {f"cluster {c.cluster}": c.centre for c in mixed.clusters()}
    step = max(1, len(run.case_ids) // max(args.samples, 1))
    points.update({f"case {i}": run.latent_of(i) for i in run.case_ids[::step][:args.samples]})
    names = run.class_names
    print(f"Run {args.run} ({len(points)} latent points); {describe(device)}; mixed precision: {mixed.precision(True)}\n")
    print("| scan | mode | grid | worst Dice per class (" + ", ".join(names[1:]) + ") | voxels differing, median "
          "(max) | UNet float32 (s) | UNet " + mixed.precision(True) + " (s) | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for scan in args.scans:
        array, affine, _ = load_scan(scan)
        for seg in (exact, mixed):
            seg.set_volume(array, affine, key=str(scan))
        for preview in (True, False):
            worst = np.ones(len(names) - 1)
            differ, times = [], {"float32": [], "mixed": []}
            for z in points.values():
                results = {}
                for which, seg in (("float32", exact), ("mixed", mixed)):
                    results[which] = seg.segment(z, preview=preview).array
                    times[which].append(seg.timings["unet"])
                dice = dice_per_class(results["mixed"], results["float32"], range(1, len(names)))
                worst = np.minimum(worst, [dice[c] for c in range(1, len(names))])
                differ.append(float((results["mixed"] != results["float32"]).mean()))
            grid = "x".join(map(str, (exact._prepared_volume(True) if preview else exact._prepared_volume(False))
                                .image.shape[1:]))
            t32, t16 = statistics.median(times["float32"]), statistics.median(times["mixed"])
            print(f"| {scan.name} | {'preview' if preview else 'full'} | {grid} | "
                  f"{', '.join(f'{d:.4f}' for d in worst)} | {100 * statistics.median(differ):.3f} % "
                  f"({100 * max(differ):.3f} %) | {t32:.3f} | {t16:.3f} | {t32 / t16:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
