"""Training-step time and peak memory: batched generated weights vs per-sample loop vs plain UNet.

All three variants use the same UNet architecture, input size and batch:

* ``batched``: latents -> weight generator -> every sample's UNet in one vmap'd pass (this library);
* ``looped``:  latents -> weight generator -> one ``functional_call`` per sample (the reference
  release's way);
* ``plain``:   an ordinary UNet with fixed weights trained by Adam (the cost floor).

Each variant runs in its own subprocess so its peak memory (max RSS on CPU, max allocated on
CUDA) is its own. Prints a Markdown table with the ratios to ``plain`` and to ``batched``.

Usage:
    python benchmarks/train_step.py --preset demo
    python benchmarks/train_step.py --preset reference --device cuda
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
from machine import describe

PRESETS = {
    # the built-in demo's network and patch
    "demo": {"channels": [8, 16, 32, 64], "convs": 1, "classes": 5, "hidden": [50, 50, 50], "patch": [48, 40, 32],
             "batch": 4},
    # the reference HyperSORT UNet and generator (170 M head parameters); 168^3 on GPU, 64^3 on CPU
    "reference": {"channels": [16, 32, 64, 128], "convs": 3, "classes": 2, "hidden": [50, 50, 50],
                  "patch": None, "batch": 2},
}


def run_variant(variant: str, spec: dict, device: str, steps: int, warmup: int) -> dict:
    from HyperSORTLib.config import HyperNetConfig, ModelConfig, UNetConfig
    from HyperSORTLib.model import HyperSORTModel, RowwiseAdam, UNet3D, batched_forward, looped_forward
    from HyperSORTLib.training.losses import DiceCELoss

    torch.manual_seed(0)
    dev = torch.device(device)
    batch, patch = spec["batch"], spec["patch"]
    x = torch.randn(batch, 1, *patch, device=dev)
    y = torch.randint(0, spec["classes"], (batch, 1, *patch), device=dev)
    loss_fn = DiceCELoss()
    unet_cfg = UNetConfig(num_classes=spec["classes"], channels=tuple(spec["channels"]), convs_per_level=spec["convs"])
    if variant == "plain":
        net = UNet3D.from_config(unet_cfg).to(dev)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            loss_fn(net(x), y).total.mean().backward()
            opt.step()
    else:
        model = HyperSORTModel(ModelConfig(unet_cfg, HyperNetConfig(hidden=tuple(spec["hidden"]))),
                               [f"c{i}" for i in range(batch)]).to(dev)
        hyper_opt = torch.optim.Adam(model.generator.parameters(), lr=1e-3)
        latent_opt = RowwiseAdam(model.latents.weight, lr=1e-3, betas=(0.7, 0.9))
        rows = torch.arange(batch)
        forward = batched_forward if variant == "batched" else looped_forward

        def step() -> None:
            hyper_opt.zero_grad(set_to_none=True)
            latent_opt.zero_grad()
            z = model.latents(rows)
            logits = forward(model.unet, model.generator(z), x)
            (loss_fn(logits, y).total + z.abs().sum(1)).mean().backward()
            hyper_opt.step()
            latent_opt.step(rows)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    if dev.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    return {"variant": variant, "step_s": statistics.median(times), "peak_mb": peak_mb}


def machine_description(device: str) -> str:
    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return describe(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--patch", type=int, nargs=3, default=None)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=["batched", "looped", "plain"])
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    spec = dict(PRESETS[args.preset])
    if spec["patch"] is None:
        spec["patch"] = [168] * 3 if args.device.startswith("cuda") else [64] * 3
    if args.batch:
        spec["batch"] = args.batch
    if args.patch:
        spec["patch"] = args.patch

    if args.worker:
        print(json.dumps(run_variant(args.worker, spec, args.device, args.steps, args.warmup)))
        return

    results = {}
    for variant in args.variants:
        cmd = [sys.executable, __file__, "--worker", variant, "--preset", args.preset, "--device", args.device,
               "--batch", str(spec["batch"]), "--patch", *map(str, spec["patch"]), "--steps", str(args.steps),
               "--warmup", str(args.warmup)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[variant] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  {variant}: {results[variant]['step_s']:.3f} s/step", file=sys.stderr)

    base = results.get("plain")
    batched = results.get("batched")
    print(f"\nMachine: {machine_description(args.device)}")
    print(f"Preset '{args.preset}': UNet channels {spec['channels']}, {spec['convs']} convs/level, "
          f"{spec['classes']} classes, generator trunk {spec['hidden']}, patch {spec['patch']}, batch {spec['batch']}; "
          f"median of {args.steps} steps after {args.warmup} warm-up steps.\n")
    print("| variant | step time (s) | samples/s | vs plain | vs batched | peak memory (MB) |")
    print("|---|---|---|---|---|---|")
    for variant, r in results.items():
        vs_plain = f"{r['step_s'] / base['step_s']:.2f}x" if base else "-"
        vs_batched = f"{r['step_s'] / batched['step_s']:.2f}x" if batched else "-"
        print(f"| {variant} | {r['step_s']:.3f} | {spec['batch'] / r['step_s']:.2f} | {vs_plain} | {vs_batched} | "
              f"{r['peak_mb']:.0f} |")


if __name__ == "__main__":
    main()
