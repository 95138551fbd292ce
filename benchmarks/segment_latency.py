"""Latency of latent point -> segmentation on a 512x512x200 CT, preview vs full resolution.

Measures :class:`HyperSORTLib.inference.InteractiveSegmenter` the way the Slicer module uses it:
the scan is set once (its preprocessing is timed separately, it is paid once per scan), then
every new latent point costs a hyper-network pass, a UNet pass and, at full resolution, the
interpolation of the class scores back onto the 52-million-voxel input grid. Weights are freshly
initialised (timing does not depend on training); the architectures are the reference HyperSORT
configuration and the demo's UNet (``HyperSORTLib/demo/demo.yaml``: 16/32/64/128 channels, one
convolution per level), both at
the reference data settings (2 mm, 168^3 windows).

A second table compares the two ways of bringing class scores back onto the scan's grid: the
boundary-only interpolation used for non-oblique scans and trilinear ``grid_sample`` on every
voxel, on organ-shaped scores (what a trained UNet produces) and on noise (what the untrained
weights of the latency table produce, the worst case for the boundary-only path).

Run:
    python benchmarks/segment_latency.py                 # both models, CPU
    python benchmarks/segment_latency.py --device cuda   # on a GPU
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from HyperSORTLib.config import RunConfig
from HyperSORTLib.demo.run import DEMO_CONFIG
from HyperSORTLib.inference import InteractiveSegmenter, TrainedRun
from HyperSORTLib.model.hypersort import HyperSORTModel
from HyperSORTLib.device import resolve_device
from machine import describe


def _synthetic_ct(shape=(512, 512, 200), spacing=(0.78, 0.78, 2.0), seed=0) -> tuple[np.ndarray, np.ndarray]:
    """A body-like ellipse of soft tissue with an organ-sized blob, in HU, with noise."""
    rng = np.random.default_rng(seed)
    i, j = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    body = (i / 0.85) ** 2 + (j / 0.65) ** 2 < 1
    organ = ((i - 0.25) / 0.3) ** 2 + ((j + 0.1) / 0.25) ** 2 < 1
    slab = np.where(body, 40.0, -1000.0) + np.where(organ, 20.0, 0.0)
    ct = np.repeat(slab[:, :, None], shape[2], axis=2).astype(np.float32)
    ct += rng.normal(0, 15, shape).astype(np.float32)
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])  # LPS-stored like most DICOM-derived NIfTI
    return ct, affine


def _configs() -> tuple[RunConfig, RunConfig]:
    """The reference HyperSORT setting (2 mm, 168^3 patches, 5 classes) and the demo's small UNet at
    the same data settings."""
    reference = RunConfig.from_dict({"model": {"unet": {"num_classes": 5}}})
    return reference, RunConfig(model=DEMO_CONFIG.model, data=reference.data, train=reference.train)


def _segmenter(config: RunConfig, device: torch.device) -> InteractiveSegmenter:
    model = HyperSORTModel(config.model, [f"case_{i}" for i in range(8)], seed=0).to(device).eval()
    return InteractiveSegmenter(TrainedRun(Path("."), config, model, device))


def measure(name: str, config: RunConfig, device: torch.device, ct: np.ndarray, affine: np.ndarray,
            repeats: int) -> list[dict]:
    seg = _segmenter(config, device)
    rows = []
    for mode in ("preview", "full"):
        preview = mode == "preview"
        seg.set_volume(ct, affine, key=None)  # a new scan: preprocessing is paid on the first call
        t0 = time.perf_counter()
        seg._prepared_volume(preview)
        prep = time.perf_counter() - t0
        samples = []
        for r in range(repeats):
            # a new point each time (never one decoded before), as when the probe moves
            z = np.random.default_rng(1000 * preview + r).normal(0, 0.1, config.model.hyper.latent_dim)
            result = seg.segment(z, preview=preview)
            if device.type == "cuda":
                torch.cuda.synchronize()
            samples.append(dict(seg.timings))
        med = {k: statistics.median(s[k] for s in samples) for k in samples[0]}
        rows.append({"model": name, "mode": mode, "grid": "x".join(map(str, result.array.shape)),
                     "prep": prep, **med})
        print(f"  {name:9s} {mode:7s} total {med['total']:.3f} s", flush=True)
    return rows


def organ_scores(shape: tuple[int, int, int], num_classes: int = 5, seed: int = 0) -> torch.Tensor:
    """Smooth organ-shaped class scores (signed distances to ellipsoids), like a trained UNet's output."""
    rng = np.random.default_rng(seed)
    axes = [np.linspace(-1, 1, n, dtype=np.float32) for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    scores = [np.zeros(shape, np.float32)]
    for _ in range(num_classes - 1):
        c, r = rng.uniform(-0.5, 0.5, 3), rng.uniform(0.15, 0.35, 3)
        scores.append(1.0 - np.sqrt(((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2))
    return torch.from_numpy(np.stack(scores))


def measure_resampling(device: torch.device, ct: np.ndarray, affine: np.ndarray, repeats: int) -> list[dict]:
    """Class scores on the 2 mm grid -> labels on the 512x512x200 grid: boundary-only vs grid_sample."""
    from HyperSORTLib.inference import geometry

    prepared = geometry.prepare_volume(ct, affine, RunConfig().data)
    rows = []
    for kind, scores in (("organ-shaped scores", organ_scores(tuple(prepared.image.shape[1:]))),
                         ("noise scores (untrained UNet)", torch.randn(5, *prepared.image.shape[1:]))):
        times = {}
        results = {}
        for method in ("boundary-only", "grid_sample"):
            original = geometry._axis_permutation
            if method == "grid_sample":
                geometry._axis_permutation = lambda transform: None
            try:
                samples = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    results[method] = geometry.logits_to_labels(scores.to(device), prepared.affine, affine, ct.shape)
                    samples.append(time.perf_counter() - t0)
            finally:
                geometry._axis_permutation = original
            times[method] = statistics.median(samples)
        same = float((results["boundary-only"] == results["grid_sample"]).mean())
        rows.append({"scores": kind, **times, "agree": same})
        print(f"  resample {kind}: {times}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default="small,reference", help="comma-separated: small, reference")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--resample-only", action="store_true", help="only compare the two resampling paths")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    ct, affine = _synthetic_ct()
    reference, small = _configs()
    models = {"small": small, "reference": reference}
    resampling = measure_resampling(device, ct, affine, args.repeats)
    rows = []
    if not args.resample_only:
        for name in args.models.split(","):
            rows += measure(name, models[name], device, ct, affine, args.repeats)
    print(f"\nScan 512x512x200 at 0.78x0.78x2.0 mm, 5 classes; {describe(device)}; median of {args.repeats}.\n")
    print("| class scores on the 2 mm grid | boundary-only (s) | grid_sample, every voxel (s) | speed-up | "
          "labels identical |")
    print("|---|---|---|---|---|")
    for r in resampling:
        print(f"| {r['scores']} | {r['boundary-only']:.2f} | {r['grid_sample']:.2f} | "
              f"{r['grid_sample'] / r['boundary-only']:.1f}x | {100 * r['agree']:.4f} % |")
    if not rows:
        return
    print()
    print("| model | mode | output grid | preprocess once (s) | hyper-network (s) | UNet (s) | resample (s) | "
          "per latent point (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['mode']} | {r['grid']} | {r['prep']:.2f} | {r['hypernetwork']:.3f} | "
              f"{r['unet']:.3f} | {r['resample']:.3f} | {r['total']:.3f} |")


if __name__ == "__main__":
    main()
