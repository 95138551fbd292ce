"""Latent point -> labels on a 512x512x200 CT: the reference inference path against the fast path, side by side.

Both paths are :class:`HyperSORTLib.inference.InteractiveSegmenter` on the same scan, model and
latent points, in one process:

* reference: the UNet over the whole preprocessed grid, one sliding window per call, the default
  memory layout, no label maps kept (the path before the fast options);
* fast: the UNet only over the box that holds the patient (background around it), batched
  windows (``--sw-batch-size``), ``channels_last_3d`` on CPU / autocast on CUDA, inference mode;
* one pass: the fast path with ``single_pass_voxels`` at twice the patch's voxels, so a body box
  somewhat larger than the patch runs in one UNet pass instead of overlapping windows (other
  labels: instance normalisation sees the whole box).

The fast and one-pass paths run the UNet in the device's native 16-bit type (``mixed_precision=True``:
CUDA GPUs, and CPUs with bfloat16 instructions); "fast, float32" is the fast path with
``mixed_precision=False``, whose labels are the reference path's exactly. By default
:class:`InteractiveSegmenter` runs previews as "fast" and, on CPU, full resolution as "fast, float32".

Every timed call is a latent point never segmented before (a moving probe); the "again" row is
a point segmented a second time (the probe returning), which the fast path answers from its kept
label maps. The scan is the synthetic CT of ``segment_latency.py`` (a body-shaped ellipse in air,
0.78x0.78x2.0 mm); weights are freshly initialised, the architectures are the demo's UNet
(``HyperSORTLib/demo/demo.yaml``: 16/32/64/128 channels, one convolution per level) and the
reference HyperSORT UNet (16/32/64/128, three per level), at the reference data settings (2 mm,
168^3 windows, preview 4 mm).

Run:
    python benchmarks/inference_fast_path.py                          # demo UNet, preview + full; reference UNet, preview
    python benchmarks/inference_fast_path.py --full-reference         # also the reference UNet at full resolution (minutes)
    python benchmarks/inference_fast_path.py --keep-freed-memory      # as in hypersort explore / segment
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from HyperSORTLib.config import RunConfig
from HyperSORTLib.device import resolve_device
from HyperSORTLib.inference import InteractiveSegmenter
from HyperSORTLib.utils.allocator import keep_freed_memory
from machine import describe
from segment_latency import _configs, _segmenter, _synthetic_ct


def _paths(config: RunConfig, device: torch.device, sw_batch_size: int | None) -> dict[str, InteractiveSegmenter]:
    reference = _segmenter(config, device)
    fast = InteractiveSegmenter(reference.run, sw_batch_size=sw_batch_size, mixed_precision=True)
    one_pass = InteractiveSegmenter(reference.run, sw_batch_size=sw_batch_size, mixed_precision=True,
                                    single_pass_voxels=2 * int(np.prod(config.data.patch_size)))
    fast_fp32 = InteractiveSegmenter(reference.run, sw_batch_size=sw_batch_size, mixed_precision=False)
    reference = InteractiveSegmenter(reference.run, max_cached_results=0, crop_to_body=False, sw_batch_size=1,
                                     channels_last=False, mixed_precision=False)
    return {"reference": reference, "fast, float32": fast_fp32, "fast": fast, "one pass": one_pass}


def _time(seg: InteractiveSegmenter, z: np.ndarray, preview: bool, device: torch.device) -> tuple[dict, np.ndarray]:
    result = seg.segment(z, preview=preview)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return dict(seg.timings), result.array


def measure(name: str, config: RunConfig, device: torch.device, ct: np.ndarray, affine: np.ndarray,
            modes: list[str], repeats: int, sw_batch_size: int | None) -> list[dict]:
    paths = _paths(config, device, sw_batch_size)
    body = ct > -500
    rows = []
    for mode in modes:
        preview = mode == "preview"
        times: dict[str, list[dict]] = {which: [] for which in paths}
        labels: dict[str, np.ndarray] = {}
        for seg in paths.values():
            seg.set_volume(ct, affine, key=None)
            seg._prepared_volume(preview)  # preprocessing is paid once per scan, not per point
        for r in range(repeats):
            z = np.random.default_rng(1000 * preview + r).normal(0, 0.1, config.model.hyper.latent_dim)
            for which, seg in paths.items():  # alternate, so a change of machine load hits both
                timing, labels[which] = _time(seg, z, preview, device)
                times[which].append(timing)
        again, _ = _time(paths["fast"], z, preview, device)
        med = {which: statistics.median(t["total"] for t in samples) for which, samples in times.items()}
        unet = {which: statistics.median(t["unet"] for t in samples) for which, samples in times.items()}
        box = paths["fast"]._prepared_volume(preview).body
        grid = paths["fast"]._prepared_volume(preview).image.shape[1:]
        same = labels["reference"] == labels["fast, float32"]
        same_mixed = labels["fast"] == labels["fast, float32"]
        in_body = body if not preview else None
        foreground = (labels["fast"] > 0) | (labels["fast, float32"] > 0)
        rows.append({"model": name, "mode": mode, "grid": "x".join(map(str, grid)),
                     "box": "x".join(str(b.stop - b.start) for b in box), "reference": med["reference"],
                     "fast": med["fast"], "unet_reference": unet["reference"], "unet_fast": unet["fast"],
                     "fast_fp32": med["fast, float32"], "unet_fast_fp32": unet["fast, float32"],
                     "mixed_same_foreground": float(same_mixed[foreground].mean()) if foreground.any() else 1.0,
                     "precision": paths["fast"].precision(preview),
                     "one_pass": med["one pass"], "unet_one_pass": unet["one pass"],
                     "one_pass_same_body": float((labels["one pass"] == labels["fast"])[in_body].mean())
                     if in_body is not None else float("nan"),
                     "again": again["total"], "same": float(same.mean()),
                     "same_body": float(same[in_body].mean()) if in_body is not None else float("nan")})
        print(f"  {name:9s} {mode:7s} reference {med['reference']:.3f} s, fast float32 {med['fast, float32']:.3f} s, "
              f"fast {med['fast']:.3f} s, "
              f"one pass {med['one pass']:.3f} s, again {again['total'] * 1000:.1f} ms", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="latent points per path and mode (median)")
    parser.add_argument("--full-repeats", type=int, default=1,
                        help="latent points at full resolution (0: previews only)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--sw-batch-size", type=int, default=None, help="windows per UNet call of the fast path")
    parser.add_argument("--full-reference", action="store_true", help="also the reference UNet at full resolution")
    parser.add_argument("--demo-only", action="store_true", help="only the demo UNet")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="the memory settings of a hypersort command's process (explore, segment: "
                             "HyperSORTLib.utils.allocator); without it, those of a host such as Slicer")
    args = parser.parse_args()
    if args.repeats < 1 or args.full_repeats < 0:
        parser.error(f"--repeats must be >= 1 and --full-repeats >= 0 (got {args.repeats} and {args.full_repeats})")
    if args.keep_freed_memory and not keep_freed_memory():
        parser.error("--keep-freed-memory: the settings cannot apply here (not glibc, or a MALLOC_* variable is set)")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    ct, affine = _synthetic_ct()
    reference, demo = _configs()  # 2 mm, 168^3 windows
    rows = measure("demo", demo, device, ct, affine, ["preview"], args.repeats, args.sw_batch_size)
    if args.full_repeats:
        rows += measure("demo", demo, device, ct, affine, ["full"], args.full_repeats, args.sw_batch_size)
    if not args.demo_only:
        rows += measure("reference", reference, device, ct, affine, ["preview"], args.repeats, args.sw_batch_size)
    if args.full_reference and args.full_repeats:
        rows += measure("reference", reference, device, ct, affine, ["full"], args.full_repeats, args.sw_batch_size)
    memory = "a hypersort command's memory settings" if args.keep_freed_memory else "the default memory settings"
    print(f"\nScan 512x512x200 at 0.78x0.78x2.0 mm, 5 classes; {describe(device)}; {memory}; median of "
          f"{args.repeats} latent points (preview) and {args.full_repeats} (full).\n")
    print(f"Fast and one pass in {rows[0]['precision'] if rows else '-'} (autocast); freshly initialised weights, so "
          f"the label agreement under mixed precision is a lower bound (a trained UNet's logits are far from ties).\n")
    print("| UNet | mode | preprocessed grid | body box | reference (s) | fast, float32 (s) | fast (s) | speed-up | "
          "one pass (s) | speed-up | UNet: reference / fast float32 / fast / one pass (s) | point again, fast (ms) | "
          "fast float32 = reference (all / in body) | fast = fast float32, foreground | one pass = fast, in body |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        body = "" if np.isnan(r["same_body"]) else f" / {100 * r['same_body']:.2f} %"
        one = "" if np.isnan(r["one_pass_same_body"]) else f"{100 * r['one_pass_same_body']:.2f} %"
        print(f"| {r['model']} | {r['mode']} | {r['grid']} | {r['box']} | {r['reference']:.3f} | {r['fast_fp32']:.3f} | "
              f"{r['fast']:.3f} | {r['reference'] / r['fast']:.1f}x | {r['one_pass']:.3f} | "
              f"{r['reference'] / r['one_pass']:.1f}x | {r['unet_reference']:.3f} / {r['unet_fast_fp32']:.3f} / "
              f"{r['unet_fast']:.3f} / {r['unet_one_pass']:.3f} | {r['again'] * 1000:.1f} | {100 * r['same']:.2f} %{body} | "
              f"{100 * r['mixed_same_foreground']:.2f} % | {one} |")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"\n({time.perf_counter() - t0:.0f} s in all)")
