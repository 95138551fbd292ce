"""Slicer module: time from a probe move to an updated labelmap node, 512x512x200 CT, preview vs full.

Measured through the module's Qt-free logic (``HyperSORTModule.CoreLogic``) against a real MRML
scene (slicer-core), the way a drag in the plot view reaches it: the probe's table row is
edited (what a MovePoints drag writes) and the debounced update fires; the clock stops when the
labelmap node holds the new labels. The debounce delay itself (150 ms in the module) is not
included: add it to get what a user waits after the pointer stops.

Paths compared side by side, on the same scan and model:

* ``preview``: the live labelmap on the coarse preview grid (automatic: 2x the model's spacing);
* ``preview:S``: the same with the preview spacing set to S mm (the panel's *Preview spacing*);
* ``full``: the live labelmap on the input grid (the "full resolution while dragging" option);
* ``accept``: the Accept button: full resolution into a segmentation node (one segment per class).

"first move" includes preprocessing the scan for that grid (paid once per scan and grid);
"next moves" is the median over new latent points after that. Weights are freshly initialised
(timing does not depend on training). Models: ``small`` = the demo's UNet
(``HyperSORTLib/demo/demo.yaml``: 16/32/64/128 channels, one convolution per level, 5 classes) at
the reference data settings (2 mm, 168^3 windows),
``reference`` = the reference HyperSORT configuration (16-128 channels, 3 convolutions per level).

``--shape`` and ``--window`` shrink the scan and the sliding window (quick checks); ``--json``
also writes the rows and the machine.

Run:
    python benchmarks/slicer_probe_latency.py                        # small model, CPU
    python benchmarks/slicer_probe_latency.py --models small,reference --device cuda
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "HyperSORT"))

from HyperSORTLib.config import RunConfig  # noqa: E402
from HyperSORTLib.demo.run import DEMO_CONFIG  # noqa: E402
from HyperSORTLib.inference import InteractiveSegmenter, TrainedRun  # noqa: E402
from HyperSORTLib.model.hypersort import HyperSORTModel  # noqa: E402
from HyperSORTLib.device import resolve_device  # noqa: E402
from HyperSORTModule import SelfTest, StandaloneScene, VolumeNodes  # noqa: E402
from HyperSORTModule.CoreLogic import HyperSORTCoreLogic  # noqa: E402
from machine import describe, machine_record  # noqa: E402


def synthetic_ct(shape=(512, 512, 200), spacing=(0.78, 0.78, 2.0), seed=0):
    """A body-like ellipse of soft tissue with an organ-sized blob, in HU (int16, as CTs are stored)."""
    rng = np.random.default_rng(seed)
    i, j = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    body = (i / 0.85) ** 2 + (j / 0.65) ** 2 < 1
    organ = ((i - 0.25) / 0.3) ** 2 + ((j + 0.1) / 0.25) ** 2 < 1
    slab = np.where(body, 40.0, -1000.0) + np.where(organ, 20.0, 0.0)
    ct = np.repeat(slab[:, :, None], shape[2], axis=2)
    ct += rng.normal(0, 15, shape)
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    return ct.astype(np.int16), affine


def configs(window: int | None = None) -> dict[str, RunConfig]:
    """The two models at the reference data settings (``window``: another sliding-window edge)."""
    reference = RunConfig.from_dict({"model": {"unet": {"num_classes": 5}}})
    if window:
        reference = dataclasses.replace(reference, data=dataclasses.replace(reference.data,
                                                                            patch_size=(window,) * 3))
    return {
        "small": RunConfig(model=DEMO_CONFIG.model, data=reference.data, train=reference.train),
        "reference": reference,
    }


def logic_for(config: RunConfig, device: torch.device, volume_node, scene) -> HyperSORTCoreLogic:
    model = HyperSORTModel(config.model, [f"case_{i}" for i in range(8)], seed=0).to(device).eval()
    # a loaded run without a run directory on disk; the digest stands in for its weights file's
    segmenter = InteractiveSegmenter(TrainedRun(REPO, config, model, device, weights_sha256="untrained" * 2))
    logic = HyperSORTCoreLogic(scene)
    logic.segmenter = segmenter
    logic.setInputVolume(volume_node)
    logic.buildLatentMap()
    logic.updateSegmentationOnRelease = False
    return logic


def probe_move(logic: HyperSORTCoreLogic, z: np.ndarray, full: bool) -> float:
    """Edit the probe row as a drag does, fire the debounced update, return seconds until the node is updated."""
    logic.previewFullResolution = full
    before = logic.previewCount
    table = logic.plot.probeTable.GetTable()
    start = time.perf_counter()
    for dim, value in enumerate(z):
        table.GetColumnByName(f"z{dim + 1}").SetValue(0, float(value))
    table.Modified()
    logic.scheduler.advance(logic.previewDebouncer.delayMs)
    elapsed = time.perf_counter() - start
    if logic.previewCount != before + 1:
        raise RuntimeError(f"expected one update, got {logic.previewCount - before}: {logic.lastError}")
    return elapsed


def measure(name: str, config: RunConfig, device: torch.device, repeats: int, paths: list[str], ct, affine):
    scene = StandaloneScene.newScene()
    volume = SelfTest.addVolumeNode(scene, ct, affine, "CT " + "x".join(map(str, ct.shape)))
    logic = logic_for(config, device, volume, scene)
    dim = config.model.hyper.latent_dim
    rng = np.random.default_rng(0)
    rows = []
    for path in paths:
        if path == "accept":
            times, breakdown = [], []
            for _ in range(repeats):
                logic.setProbe(rng.normal(0, 0.1, dim))
                logic.previewDebouncer.cancel()
                start = time.perf_counter()
                node = logic.acceptSegmentation()
                times.append(time.perf_counter() - start)
                breakdown.append(dict(logic.lastTimings))
                scene.RemoveNode(node)
            grid = "x".join(map(str, ct.shape))
            first, rest = times[0], times[1:] or times
        else:
            full = path == "full"
            spacing = float(path.split(":", 1)[1]) if path.startswith("preview:") else None
            logic.setPreviewSpacing(spacing)
            times, breakdown = [], []
            for _ in range(repeats + 1):
                times.append(probe_move(logic, rng.normal(0, 0.1, dim), full))
                breakdown.append(dict(logic.lastTimings))
            grid = "x".join(map(str, VolumeNodes.volumeArrayIJK(logic.previewLabelmapNode).shape))
            first, rest = times[0], times[1:]
            breakdown = breakdown[1:]
        med = {k: statistics.median(b.get(k, 0.0) for b in breakdown) for k in
               ("hypernetwork", "preprocess", "unet", "resample", "mrml")}
        rows.append({"model": name, "path": path, "grid": grid, "first": first, "next": statistics.median(rest),
                     **med})
        print(f"  {name:9s} {path:7s} first {first:7.2f} s, next {rows[-1]['next']:7.2f} s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default="small", help="comma-separated: small, reference")
    parser.add_argument("--paths", default="preview,preview:6,full,accept",
                        help="comma-separated: preview, preview:<mm>, full, accept")
    parser.add_argument("--repeats", type=int, default=3, help="latent points after the first")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 200), help="voxels of the synthetic scan")
    parser.add_argument("--window", type=int, default=None,
                        help="sliding-window edge in voxels (default: the reference 168)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows and the machine here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    ct, affine = synthetic_ct(tuple(args.shape))
    rows = []
    models = configs(args.window)
    for name in args.models.split(","):
        rows += measure(name, models[name], device, args.repeats, args.paths.split(","), ct, affine)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    window = f", {args.window}^3 windows" if args.window else ""
    lines = [f"Scan {'x'.join(map(str, ct.shape))} int16 at 0.78x0.78x2.0 mm{window}, volume node in a slicer-core "
             f"MRML scene; {describe(device)}; next moves: median of {args.repeats}; load average at the end "
             f"{load}.", "",
             "| model | path | labelmap grid | first move (s) | next moves (s) | vs preview | hyper-network (s) | "
             "UNet (s) | resample (s) | MRML write (s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        base = next((b["next"] for b in rows if b["model"] == r["model"] and b["path"] == "preview"), None)
        ratio = f"{r['next'] / base:.1f}x" if base else "-"
        lines.append(f"| {r['model']} | {r['path']} | {r['grid']} | {r['first']:.2f} | {r['next']:.2f} | {ratio} | "
                     f"{r['hypernetwork']:.3f} | {r['unet']:.2f} | {r['resample']:.2f} | {r['mrml']:.2f} |")
    print("\n" + "\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({"script": "slicer_probe_latency", "machine": machine_record(device),
                                         "scan_shape": list(ct.shape), "window": args.window,
                                         "repeats": args.repeats, "rows": rows, "markdown": lines}, indent=1))


if __name__ == "__main__":
    main()
