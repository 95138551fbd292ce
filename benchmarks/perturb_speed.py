"""Time of each label perturbation on a CT-sized label map (512x512x300) on CPU.

The label map holds organ-like ellipsoids (liver, spleen, kidneys, a gallbladder against the
liver, an aorta) at 0.8 x 0.8 x 1.5 mm. Each perturbation runs ``--repeats`` times (median
reported) with the parameters of a typical plan. Where the library restricts work to the
structure's bounding box or evaluates a deformation from a coarse grid, the straightforward
full-volume version runs beside it (``naive``, median of ``--naive-repeats``) so the table
shows the ratio. Peak memory is measured in a separate, untimed call with ``tracemalloc``
(numpy arrays included).

Usage:
    python benchmarks/perturb_speed.py
    python benchmarks/perturb_speed.py --shape 256 256 150 --repeats 5 --no-naive
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
import tracemalloc
from typing import Callable

import numpy as np
import scipy
from scipy import ndimage

from HyperSORTLib.perturbation import (
    annotate_neighbour,
    dilate_class,
    elastic_deform,
    empty_label,
    erode_class,
    gaussian_field_deform,
    marginal_probability,
    marginal_threshold,
    merge_classes,
    omit_class,
    remove_slices,
    replace_label,
    shift_boundary,
    shift_class,
    swap_classes,
    translate_label,
)
from machine import cpu_model

LIVER, SPLEEN, KIDNEY_R, KIDNEY_L, GALLBLADDER, AORTA = 1, 2, 3, 4, 5, 6


def organ_label(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> np.ndarray:
    """uint8 label map with ellipsoidal organs placed like an abdomen (mm from the centre)."""
    label = np.zeros(shape, np.uint8)
    centre = [(n - 1) / 2 * h for n, h in zip(shape, spacing)]
    axes_mm = [(np.arange(n) * h - c) for n, h, c in zip(shape, spacing, centre)]
    organs = [  # class, centre (mm), semi-axes (mm)
        (LIVER, (-60, -10, 40), (85, 70, 75)),
        (GALLBLADDER, (-30, -65, 5), (18, 15, 35)),
        (SPLEEN, (85, 35, 60), (40, 30, 55)),
        (KIDNEY_R, (-65, 60, -60), (28, 25, 55)),
        (KIDNEY_L, (70, 60, -50), (28, 25, 55)),
    ]
    for class_id, c, r in organs:
        box = [slice(max(0, int(np.searchsorted(ax, ci - ri))), int(np.searchsorted(ax, ci + ri)) + 1)
               for ax, ci, ri in zip(axes_mm, c, r)]
        i, j, k = np.meshgrid(*[ax[b] for ax, b in zip(axes_mm, box)], indexing="ij", sparse=True)
        inside = ((i - c[0]) / r[0]) ** 2 + ((j - c[1]) / r[1]) ** 2 + ((k - c[2]) / r[2]) ** 2 <= 1
        sub = label[tuple(box)]
        sub[inside & (sub == 0)] = class_id
    i, j = np.meshgrid(axes_mm[0], axes_mm[1], indexing="ij", sparse=True)
    aorta = (i - 10) ** 2 + (j - 45) ** 2 <= 12 ** 2
    label[aorta[:, :, None] & (label == 0)] = AORTA
    return label


# --------------------------------------------------------------------------- naive alternatives


def naive_dilate(label: np.ndarray, class_id: int, mm: float, spacing) -> np.ndarray:
    """Full-volume distance transform (no bounding box)."""
    out = label.copy()
    mask = label == class_id
    if mm > 0:
        distance = ndimage.distance_transform_edt(~mask, sampling=spacing)
        out[(distance <= mm + 1e-6) & ~mask & (label == 0)] = class_id
    else:
        distance = ndimage.distance_transform_edt(mask, sampling=spacing)
        out[mask & (distance <= -mm + 1e-6)] = 0
    return out


def naive_elastic(label: np.ndarray, spacing, displacement_mm: float, control_spacing_mm: float, seed: int):
    """Dense zoom of the control grid and a full float64 coordinate grid."""
    rng = np.random.default_rng(seed)
    n_nodes = [max(2, int(math.ceil((n - 1) * h / control_spacing_mm)) + 1) for n, h in zip(label.shape, spacing)]
    nodes = rng.normal(0.0, displacement_mm, size=(3, *n_nodes))
    factors = [n / m for n, m in zip(label.shape, n_nodes)]
    coords = np.indices(label.shape, dtype=np.float64)
    for a in range(3):
        coords[a] += ndimage.zoom(nodes[a], factors, order=3, mode="nearest", grid_mode=False) / spacing[a]
    return ndimage.map_coordinates(label, coords, order=0, mode="constant")


def naive_grf(label: np.ndarray, spacing, std_mm: float, correlation_mm: float, seed: int):
    """White noise smoothed at full resolution, rescaled to std_mm, full coordinate grid."""
    rng = np.random.default_rng(seed)
    sigma = [correlation_mm / math.sqrt(2.0) / h for h in spacing]
    coords = np.indices(label.shape, dtype=np.float64)
    for a in range(3):
        field = ndimage.gaussian_filter(rng.standard_normal(label.shape), sigma, mode="reflect")
        coords[a] += field * (std_mm / field.std()) / spacing[a]
    return ndimage.map_coordinates(label, coords, order=0, mode="grid-constant")


# --------------------------------------------------------------------------- cases


def cases(label: np.ndarray, spacing, donor: np.ndarray) -> list[tuple[str, str, Callable, Callable | None]]:
    s = spacing
    return [
        ("dilate_class", "liver, 5 mm", lambda: dilate_class(label, LIVER, 5.0, s),
         lambda: naive_dilate(label, LIVER, 5.0, s)),
        ("erode_class", "liver, 5 mm", lambda: erode_class(label, LIVER, 5.0, s),
         lambda: naive_dilate(label, LIVER, -5.0, s)),
        ("shift_class", "spleen, (10, 0, 6) mm", lambda: shift_class(label, SPLEEN, (10.0, 0.0, 6.0), s), None),
        ("shift_boundary", "liver into right kidney, 5 mm",
         lambda: shift_boundary(label, LIVER, KIDNEY_R, 5.0, s), None),
        ("annotate_neighbour", "gallbladder into liver",
         lambda: annotate_neighbour(label, LIVER, GALLBLADDER, s), None),
        ("omit_class", "spleen", lambda: omit_class(label, SPLEEN), None),
        ("swap_classes", "kidneys", lambda: swap_classes(label, KIDNEY_R, KIDNEY_L), None),
        ("merge_classes", "gallbladder -> liver", lambda: merge_classes(label, GALLBLADDER, LIVER), None),
        ("replace_label", f"donor {'x'.join(map(str, donor.shape))} resized",
         lambda: replace_label(label, donor), None),
        ("translate_label", "(30, -20, 15) mm", lambda: translate_label(label, (30.0, -20.0, 15.0), s), None),
        ("remove_slices", "axis 2, 40 %", lambda: remove_slices(label, 2, 0.4, seed=0), None),
        ("empty_label", "", lambda: empty_label(label), None),
        ("elastic_deform", "15 mm, control points 80 mm", lambda: elastic_deform(label, s, 15.0, 80.0, seed=0),
         lambda: naive_elastic(label, s, 15.0, 80.0, seed=0)),
        ("gaussian_field_deform", "s 3 mm, l 20 mm", lambda: gaussian_field_deform(label, s, 3.0, 20.0, seed=0),
         lambda: naive_grf(label, s, 3.0, 20.0, seed=0)),
        ("gaussian_field_deform", "s 2 mm, l 5 mm", lambda: gaussian_field_deform(label, s, 2.0, 5.0, seed=0),
         lambda: naive_grf(label, s, 2.0, 5.0, seed=0)),
        ("marginal_probability", "liver, s 3 mm", lambda: marginal_probability(label == LIVER, 3.0, s), None),
    ]


def timed(fn: Callable, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_mb(fn: Callable) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def machine_description() -> str:
    model = cpu_model()
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:
        torch_version = "not installed"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{model}, {cores} cores, numpy {np.__version__}, scipy {scipy.__version__}, torch {torch_version} "
            f"(not used here), Python {platform.python_version()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 300))
    parser.add_argument("--spacing", type=float, nargs=3, default=(0.8, 0.8, 1.5))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive-repeats", type=int, default=1)
    parser.add_argument("--no-naive", action="store_true", help="skip the full-volume alternatives")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument("--only", nargs="+", default=None, help="perturbation names to run")
    args = parser.parse_args()

    shape, spacing = tuple(args.shape), tuple(args.spacing)
    label = organ_label(shape, spacing)
    donor = organ_label(tuple(int(n * 0.8) for n in shape), tuple(h / 0.8 for h in spacing))
    counts = np.bincount(label.ravel(), minlength=7)
    print(f"Label map {shape[0]}x{shape[1]}x{shape[2]} ({label.size / 1e6:.1f} M voxels), spacing "
          f"{spacing} mm, classes 1-6 with {', '.join(f'{c / 1e6:.2f}' for c in counts[1:])} M voxels.")
    print(f"Machine: {machine_description()}\n")
    print(f"Median of {args.repeats} runs (naive: {args.naive_repeats}); peak = tracemalloc peak of one call.\n")
    print("| perturbation | parameters | time (s) | peak (MB) | naive full-volume (s) | naive peak (MB) | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for name, params, fn, naive in cases(label, spacing, donor):
        if args.only and name not in args.only:
            continue
        seconds = timed(fn, args.repeats)
        peak = "" if args.no_memory else f"{peak_mb(fn):.0f}"
        naive_s = naive_peak = ratio = "-"
        if naive is not None and not args.no_naive:
            n_seconds = timed(naive, args.naive_repeats)
            naive_s, ratio = f"{n_seconds:.2f}", f"{n_seconds / seconds:.1f}x"
            naive_peak = "" if args.no_memory else f"{peak_mb(naive):.0f}"
        print(f"| {name} | {params} | {seconds:.2f} | {peak} | {naive_s} | {naive_peak} | {ratio} |", flush=True)
    probabilities = marginal_probability(label == LIVER, 3.0, spacing)
    seconds = timed(lambda: marginal_threshold(probabilities), args.repeats)
    print(f"| marginal_threshold | {probabilities.size / 1e6:.1f} M probabilities | {seconds:.2f} | | - | | - |")


if __name__ == "__main__":
    main()
