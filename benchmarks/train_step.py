"""Training-step time and peak memory: batched generated weights vs per-sample loop vs plain UNet.

All variants use the same UNet architecture and input size:

* ``batched``: latents -> weight generator -> every sample's UNet in one grouped pass, channels-last on
  CPU (this library's ``batched_forward``);
* ``batched_vmap``: ``batched`` through ``vmap`` over ``functional_call`` (grouped convolutions
  in the default layout: the batched pass before it was written out channels-last for CPU);
* ``batched_unfused``: ``batched`` with PyTorch's default (multi-tensor) Adam for the generator
  instead of the fused Adam the trainers use (:func:`HyperSORTLib.training.optim.adam`);
* ``looped``:  latents -> weight generator -> one ``functional_call`` per sample (the reference
  release's way);
* ``plain``:   an ordinary UNet with fixed weights trained by the same Adam (the cost floor);
* ``trainer``: :meth:`HyperSORTLib.training.Trainer.train_step`, the step ``hypersort train`` runs
  (``train.forward`` from ``--forward``, bf16 autocast when ``--dtype bf16`` on CUDA), at the
  batch; with ``--processes N`` it runs under ``torchrun`` in N data-parallel processes (NCCL
  on GPUs, Gloo on CPU) and the batch is the global batch;
* ``upstream``: the same Trainer step as the reference release ran it: batch 1, fp32, per-sample
  forward (``--batch`` and ``--dtype`` do not apply).

``--dtype bf16`` runs the generator and UNet forward under bfloat16 autocast, with the loss,
backward and optimiser steps in fp32, as the Trainer does with ``train.amp``; like
``train.amp`` it is for CUDA devices only.

Each variant runs in its own subprocess so its peak memory (max RSS on CPU, max allocated on
CUDA) is its own; ``--in-process`` runs them in this process instead (faster to start; peak
memory then only on CUDA, where the allocator's peak is reset per variant). A variant that fails
(out of memory, say) becomes a row with its error; the others still run. Prints a Markdown
table with the ratios to ``plain`` and to ``batched`` (step time, at equal batch); ``--json``
also writes the rows and the machine.

Usage:
    python benchmarks/train_step.py --preset demo
    python benchmarks/train_step.py --preset demo_wide --variants batched batched_vmap looped plain
    python benchmarks/train_step.py --preset reference --device cuda --dtype bf16 --batch 4
    python benchmarks/train_step.py --preset reference --device cuda --variants trainer upstream
    python benchmarks/train_step.py --preset reference --device cuda --variants trainer --processes 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, machine_record  # noqa: E402
from subprocesses import exit_on_sigterm, run_group  # noqa: E402

PRESETS = {
    # the demo's patch with half its UNet widths (8-64 channels)
    "demo": {"channels": [8, 16, 32, 64], "convs": 1, "classes": 5, "hidden": [50, 50, 50], "patch": [48, 40, 32],
             "batch": 4},
    # the built-in demo's network and patch (HyperSORTLib/demo/demo.yaml)
    "demo_wide": {"channels": [16, 32, 64, 128], "convs": 1, "classes": 5, "hidden": [50, 50, 50],
                  "patch": [48, 40, 32], "batch": 4},
    # the reference HyperSORT UNet and generator (170 M head parameters); 168^3 on GPU, 64^3 on CPU
    "reference": {"channels": [16, 32, 64, 128], "convs": 3, "classes": 2, "hidden": [50, 50, 50],
                  "patch": None, "batch": 2},
}

VARIANTS = ("batched", "batched_vmap", "batched_unfused", "looped", "plain", "trainer", "upstream")
DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def preset_spec(preset: str, device: str, batch: int | None = None, patch: list[int] | None = None) -> dict:
    """The architecture, patch and batch of ``preset``, with the reference patch by device."""
    spec = dict(PRESETS[preset])
    if spec["patch"] is None:
        spec["patch"] = [168] * 3 if device.startswith("cuda") else [64] * 3
    if batch:
        spec["batch"] = batch
    if patch:
        spec["patch"] = list(patch)
    return spec


def _model_config(spec: dict):
    from HyperSORTLib.config import HyperNetConfig, ModelConfig, UNetConfig

    unet = UNetConfig(num_classes=spec["classes"], channels=tuple(spec["channels"]), convs_per_level=spec["convs"])
    return unet, ModelConfig(unet, HyperNetConfig(hidden=tuple(spec["hidden"])))


def _raw_step(variant: str, spec: dict, dev: torch.device, dtype: str, batch: int):
    """A step of ``batched``, ``looped`` or ``plain`` outside the Trainer; returns (step, facts)."""
    from HyperSORTLib.model import HyperSORTModel, RowwiseAdam, UNet3D, batched_forward, looped_forward
    from HyperSORTLib.model.functional import vmap_forward
    from HyperSORTLib.training.losses import DiceCELoss
    from HyperSORTLib.training.optim import adam

    patch = spec["patch"]
    x = torch.randn(batch, 1, *patch, device=dev)
    y = torch.randint(0, spec["classes"], (batch, 1, *patch), device=dev)
    loss_fn = DiceCELoss()
    unet_cfg, model_cfg = _model_config(spec)
    amp = DTYPES[dtype]

    def autocast():
        return torch.autocast(dev.type, dtype=amp) if amp else contextlib.nullcontext()

    if variant == "plain":
        net = UNet3D.from_config(unet_cfg).to(dev)
        opt = adam(net.parameters(), lr=1e-3, betas=(0.9, 0.999))

        def step() -> None:
            opt.zero_grad(set_to_none=True)
            with autocast():
                logits = net(x)
            loss_fn(logits, y).total.mean().backward()
            opt.step()
    else:
        model = HyperSORTModel(model_cfg, [f"c{i}" for i in range(batch)]).to(dev)
        if variant == "batched_unfused":
            hyper_opt = torch.optim.Adam(model.generator.parameters(), lr=1e-3)
        else:
            hyper_opt = adam(model.generator.parameters(), lr=1e-3, betas=(0.9, 0.999))
        latent_opt = RowwiseAdam(model.latents.weight, lr=1e-3, betas=(0.7, 0.9))
        rows = torch.arange(batch)
        forward = {"looped": looped_forward, "batched_vmap": vmap_forward}.get(variant, batched_forward)

        def step() -> None:
            hyper_opt.zero_grad(set_to_none=True)
            latent_opt.zero_grad()
            with autocast():
                z = model.latents(rows)
                logits = forward(model.unet, model.generator(z), x)
            (loss_fn(logits, y).total + z.float().abs().sum(1)).mean().backward()
            hyper_opt.step()
            latent_opt.step(rows)
    forward_name = {"looped": "loop", "plain": "-", "batched_vmap": "vmap"}.get(variant, "batched")
    return step, {"dtype": dtype, "forward": forward_name,
                  "adam": "default" if variant == "batched_unfused" else "fused", "processes": 1}


@contextlib.contextmanager
def _trainer_step(spec: dict, device: str, dtype: str, batch: int, forward: str):
    """A :class:`Trainer` on a stand-in dataset of ``batch`` samples; yields (step, facts).

    Under ``torchrun`` the Trainer is one of the data-parallel processes and each step is this
    process's share of the global batch (as :meth:`Trainer.fit` feeds it).
    """
    from HyperSORTLib.config import DataConfig, RunConfig, TrainConfig
    from HyperSORTLib.training import Trainer
    from HyperSORTLib.training.distributed import shard_bounds

    _, model_cfg = _model_config(spec)
    patch = spec["patch"]
    config = RunConfig(model=model_cfg, data=DataConfig(patch_size=tuple(patch)),
                       train=TrainConfig(device=device, batch_size=batch, amp=dtype == "bf16", forward=forward))

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return batch

        def __getitem__(self, i):
            return {}

    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(config, Items(), [f"c{i}" for i in range(batch)], run_dir, progress=False)
        generator = torch.Generator().manual_seed(0)
        image = torch.rand(batch, 1, *patch, generator=generator)
        label = (torch.rand(batch, 1, *patch, generator=generator) * spec["classes"]).to(torch.uint8)
        context = trainer.dist
        if context.is_distributed:
            start, stop = shard_bounds(batch, context.rank, context.world_size)
            share = slice(start, stop) if stop > start else slice(0, 1)
            rows = list(range(batch))[share]
            feed = {"image": image[share], "label": label[share], "index": rows, "global_index": list(range(batch))}
        else:
            feed = {"image": image, "label": label, "index": list(range(batch))}
        if trainer.device.type == "cuda":
            feed["image"], feed["label"] = feed["image"].pin_memory(), feed["label"].pin_memory()

        def step() -> None:
            trainer.train_step(feed)

        precision = "bf16" if trainer.amp_dtype == torch.bfloat16 else "fp32"
        yield step, {"dtype": precision, "forward": trainer.model.forward_strategy,
                     "adam": "fused" if trainer.hyper_optimizer.defaults.get("fused") else "default",
                     "processes": context.world_size, "rank": context.rank}


def run_variant(variant: str, spec: dict, device: str, steps: int, warmup: int, dtype: str = "fp32",
                forward: str = "auto", isolated: bool = True) -> dict:
    """Median step time and peak memory of one variant (``isolated``: this process runs nothing else)."""
    torch.manual_seed(0)
    batch = 1 if variant == "upstream" else spec["batch"]
    with contextlib.ExitStack() as stack:
        if variant in ("trainer", "upstream"):
            trainer_dtype, trainer_forward = ("fp32", "loop") if variant == "upstream" else (dtype, forward)
            step, facts = stack.enter_context(_trainer_step(spec, device, trainer_dtype, batch, trainer_forward))
        else:
            step, facts = _raw_step(variant, spec, torch.device(device), dtype, batch)
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None and facts.get("processes", 1) > 1:
            dev = torch.device("cuda", torch.cuda.current_device())

        def sync() -> None:
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)

        for _ in range(warmup):
            step()
        sync()
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - start)
        if dev.type == "cuda":
            peak_mb = torch.cuda.max_memory_allocated(dev) / 2**20
        elif isolated:
            peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
        else:
            peak_mb = None
    step_s = statistics.median(times)
    return {"variant": variant, "batch": batch, "step_s": step_s, "samples_per_s": batch / step_s,
            "peak_mb": peak_mb, **facts}


def _release_memory(device: str) -> None:
    import gc

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def _error_row(variant: str, spec: dict, dtype: str, error: str) -> dict:
    batch = 1 if variant == "upstream" else spec["batch"]
    return {"variant": variant, "batch": batch, "dtype": "fp32" if variant == "upstream" else dtype,
            "error": " ".join(error.split())[:300]}


def _worker_command(variant: str, args: argparse.Namespace, spec: dict) -> list[str]:
    worker = [__file__, "--worker", variant, "--preset", args.preset, "--device", args.device,
              "--batch", str(spec["batch"]), "--patch", *map(str, spec["patch"]), "--steps", str(args.steps),
              "--warmup", str(args.warmup), "--dtype", args.dtype, "--forward", args.forward]
    if variant == "trainer" and args.processes > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                str(args.processes), *worker]
    return [sys.executable, *worker]


def table(results: list[dict]) -> list[str]:
    """The Markdown table of ``results`` (step-time ratios only between rows of equal batch)."""
    base = next((r for r in results if r["variant"] == "plain" and "error" not in r), None)
    batched = next((r for r in results if r["variant"] == "batched" and "error" not in r), None)

    def ratio(r: dict, ref: dict | None) -> str:
        return f"{r['step_s'] / ref['step_s']:.2f}x" if ref and ref["batch"] == r["batch"] else "-"

    lines = ["| variant | precision | forward | Adam | processes | batch | step time (s) | samples/s | vs plain | "
             "vs batched | peak memory (MB) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['variant']} | {r['dtype']} | - | - | - | {r['batch']} | failed: {r['error']} "
                         f"| - | - | - | - |")
            continue
        peak = f"{r['peak_mb']:.0f}" if r["peak_mb"] is not None else "-"
        lines.append(f"| {r['variant']} | {r['dtype']} | {r['forward']} | {r.get('adam', '-')} | {r['processes']} | "
                     f"{r['batch']} | "
                     f"{r['step_s']:.3f} | {r['samples_per_s']:.2f} | {ratio(r, base)} | {ratio(r, batched)} | "
                     f"{peak} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="demo")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (auto: CUDA when available)")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--patch", type=int, nargs=3, default=None)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32",
                        help="bf16: bfloat16 autocast of the forward pass")
    parser.add_argument("--forward", choices=("auto", "batched", "loop"), default="auto",
                        help="train.forward of the trainer variant")
    parser.add_argument("--processes", type=int, default=1,
                        help="data-parallel processes of the trainer variant (torchrun)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=["batched", "looped", "plain"])
    parser.add_argument("--in-process", action="store_true", help="run the variants in this process")
    parser.add_argument("--variant-timeout", type=float, default=None,
                        help="seconds one variant's process may run; past it the variant is a failed row")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows and the machine here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"

    spec = preset_spec(args.preset, args.device, args.batch, args.patch)

    exit_on_sigterm()
    if args.worker:
        result = run_variant(args.worker, spec, args.device, args.steps, args.warmup, args.dtype, args.forward)
        if result.get("rank", 0) == 0:
            print(json.dumps(result), flush=True)
        return
    if args.processes > 1 and args.in_process:
        parser.error("--processes > 1 starts torchrun processes; it cannot run --in-process.")

    if args.dtype == "bf16" and not args.device.startswith("cuda"):
        parser.error("--dtype bf16 is bfloat16 autocast on CUDA (as train.amp); use --dtype fp32 on the CPU.")

    results = []
    for variant in args.variants:
        if args.in_process and not (variant == "trainer" and args.processes > 1):
            try:
                result = run_variant(variant, spec, args.device, args.steps, args.warmup, args.dtype, args.forward,
                                     isolated=False)
            except Exception as exc:  # a failing variant (out of memory, an unsupported kernel) is a row
                result = _error_row(variant, spec, args.dtype, f"{type(exc).__name__}: {exc}")
            _release_memory(args.device)
        else:
            code, stdout, stderr = run_group(_worker_command(variant, args, spec), args.variant_timeout)
            if code is None:
                result = _error_row(variant, spec, args.dtype, f"ran past --variant-timeout {args.variant_timeout} s")
            elif code:
                sys.stderr.write(stdout + stderr)
                last = (stderr.strip().splitlines() or [f"exit status {code}"])[-1]
                result = _error_row(variant, spec, args.dtype, last)
            else:
                result = json.loads(stdout.strip().splitlines()[-1])
        results.append(result)
        summary = f"failed: {result['error']}" if "error" in result else f"{result['step_s']:.3f} s/step"
        print(f"  {variant}: {summary}", file=sys.stderr)

    lines = [f"Machine: {describe(args.device)}",
             f"Preset '{args.preset}': UNet channels {spec['channels']}, {spec['convs']} convs/level, "
             f"{spec['classes']} classes, generator trunk {spec['hidden']}, patch {spec['patch']}, batch "
             f"{spec['batch']}, --dtype {args.dtype}; median of {args.steps} steps after {args.warmup} warm-up steps.",
             "", *table(results)]
    print("\n" + "\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps({"script": "train_step", "machine": machine_record(args.device),
                                         "spec": spec, "dtype": args.dtype, "steps": args.steps,
                                         "warmup": args.warmup, "results": results, "markdown": lines}, indent=1))


if __name__ == "__main__":
    main()
