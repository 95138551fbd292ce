"""The GPU suite: the speed measurements of issue 14, side by side in one run of under 8 minutes on one GPU.

Each part is one run of an existing benchmark script, in its own process group under its own
time cap (and the suite's overall ``--budget``):

* ``step-bf16``, ``step-fp32``: ``train_step.py``: batched generated weights vs per-sample loop vs
  plain UNet, reference UNet, 168^3, batch 4, bfloat16 autocast / fp32;
* ``training``: ``train_step.py --variants trainer upstream``: samples/s of the Trainer's step
  (reference UNet and generator, 168^3, batch 4, ``train.amp``, ``train.forward: auto``) against
  the upstream-style step (batch 1, fp32, per-sample forward, as the reference release trains);
* ``loader``: ``loader_throughput.py``: cached patches through the DataLoader against the rate of
  that training step;
* ``probe``: ``slicer_probe_latency.py``: probe move -> updated labelmap node through the Slicer
  module's logic on a 512x512x200 CT (needs slicer-core);
* ``ddp``: ``train_step.py --variants trainer --processes 2``: the same training step in two
  ``torchrun`` processes (needs two GPUs);
* ``step-demo-bf16``: ``train_step.py`` with the 8-64-channel UNet (preset ``demo``) at 168^3, for the
  width threshold of ``train.forward: auto``.

A part that cannot run here is skipped with its reason (no CUDA for bf16, one GPU for ``ddp``,
no slicer-core, no CT example, the budget spent); a part that fails or runs past its cap says
so; the others still run. Writes ``gpu_suite.md`` (the machine, the ratios against the issue's
targets, every part's table) and ``gpu_suite.json`` (the same with each part's rows, command and
output tail) into ``--out``.

``--smoke`` runs every part with tiny sizes on the CPU in under a minute (one thread per part,
two parts at a time, the 2-process part on Gloo): a check that the suite works, not a
measurement. Otherwise the parts run one after the other, so that no part's timing is disturbed.

Usage:
    python benchmarks/gpu_suite.py --out benchmarks/gpu_suite_out            # on a GPU machine
    python benchmarks/gpu_suite.py --smoke --out /tmp/gpu_suite_smoke        # anywhere
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from subprocesses import exit_on_sigterm, run_group  # noqa: E402

#: Exit status of a script that cannot measure anything on this machine (reported as skipped).
SKIPPED = 77

#: The issue's targets: (key, what, comparison, GPU target, CPU target).
TARGETS = (
    ("batched_vs_plain", "batched step / plain step (equal batch)", "<=", 1.10, 1.25),
    ("loop_vs_batched", "loop step / batched step (batched speed-up over the loop)", ">=", 2.0, None),
    ("training_vs_upstream", "training samples/s / upstream-style loop samples/s", ">=", 3.0, None),
    ("loading_vs_step", "cached loading (DataLoader workers) / training step rate", ">=", 2.0, 2.0),
)


@dataclasses.dataclass
class Part:
    """One benchmark run of the suite."""

    name: str
    title: str
    script: str
    args: list[str]
    cap_s: float
    skip: str | None = None

    def command(self, json_path: Path) -> list[str]:
        return [sys.executable, str(HERE / self.script), *self.args, "--json", str(json_path)]


def _sizes(smoke: bool) -> dict:
    if smoke:
        return {"step": ["--preset", "demo", "--patch", "16", "16", "16", "--batch", "2",
                                                "--steps", "1", "--warmup", "1", "--in-process"],
                "demo": ["--preset", "demo", "--patch", "16", "16", "16", "--batch", "2", "--steps", "1",
                         "--warmup", "1", "--in-process"],
                "loader": ["--cases", "2", "--patch", "32", "--zoom", "0.5", "0.5", "0.5", "--step-preset", "demo",
                           "--step-patch", "16", "--step-batch", "2", "--steps", "1", "--workers", "1"],
                "probe": ["--models", "small", "--paths", "preview,full", "--repeats", "1", "--shape", "96", "96",
                          "40", "--window", "32"],
                "ddp": ["--preset", "demo", "--patch", "16", "16", "16", "--batch", "2", "--steps", "1",
                        "--warmup", "1"],
                "what": "demo UNet, 16^3, batch 2", "demo_what": "16^3, batch 2"}
    # a variant that runs past its timeout (a slow kernel, say) is a failed row; the others still report
    return {"step": ["--preset", "reference", "--patch", "168", "168", "168", "--batch", "4", "--steps", "5",
                     "--warmup", "2", "--variant-timeout", "45"],
            "demo": ["--preset", "demo", "--patch", "168", "168", "168", "--batch", "4", "--steps", "5",
                     "--warmup", "2", "--variant-timeout", "30"],
            "loader": ["--cases", "4", "--patch", "168", "--step-preset", "reference", "--step-patch", "168",
                       "--step-batch", "4", "--steps", "3", "--workers", "4"],
            "probe": ["--models", "small,reference", "--paths", "preview,full", "--repeats", "3"],
            "ddp": ["--preset", "reference", "--patch", "168", "168", "168", "--batch", "4", "--steps", "5",
                    "--warmup", "2"],
            "what": "reference UNet, 168^3, batch 4", "demo_what": "168^3, batch 4"}


def plan(device: str, smoke: bool, gpus: int, bf16: bool) -> list[Part]:
    """The suite's parts in the order they run (most wanted first, so a spent budget drops the last)."""
    sizes = _sizes(smoke)
    dev = ["--device", device]
    what = sizes["what"]
    no_bf16 = None
    if not device.startswith("cuda"):
        no_bf16 = f"bf16 autocast is measured on CUDA only (train.amp is CUDA-only); this run is on {device}"
    elif not bf16:
        no_bf16 = "this GPU has no bfloat16 support (torch.cuda.is_bf16_supported() is False)"
    amp = ["--dtype", "bf16" if device.startswith("cuda") and bf16 else "fp32"]
    slicer = None if importlib.util.find_spec("slicer") else "slicer-core is not installed (pip install slicer-core)"
    if device.startswith("cuda"):
        ddp_skip = None if gpus >= 2 else f"{gpus} GPU visible; the 2-process step needs two"
        ddp_dev = ["--device", "cuda"]  # each process takes the GPU of its LOCAL_RANK
    else:
        ddp_skip, ddp_dev = None, dev  # two Gloo processes on the CPU
    caps = (lambda s: 240.0) if smoke else (lambda s: s)
    return [
        Part("step-bf16", f"batched vs loop vs plain step, {what}, bf16 autocast", "train_step.py",
             [*sizes["step"], *dev, "--dtype", "bf16"], caps(140), no_bf16),
        Part("step-fp32", f"batched vs loop vs plain step, {what}, fp32", "train_step.py",
             [*sizes["step"], *dev, "--dtype", "fp32"], caps(140)),
        Part("training", f"training samples/s: the Trainer's step ({what}, train.amp, forward auto) vs the "
             f"upstream-style loop (batch 1, fp32, per-sample forward)", "train_step.py",
             [*sizes["step"], *dev, *amp, "--variants", "trainer", "upstream"], caps(95)),
        Part("loader", "data loading against the training step rate", "loader_throughput.py",
             [*sizes["loader"], *dev], caps(120)),
        Part("probe", "probe move -> labelmap node through the Slicer module's logic", "slicer_probe_latency.py",
             [*sizes["probe"], *dev], caps(120), slicer),
        Part("ddp", f"the Trainer's step in 2 torchrun processes ({what} global)", "train_step.py",
             [*sizes["ddp"], *ddp_dev, *amp, "--variants", "trainer", "--processes", "2"], caps(90), ddp_skip),
        Part("step-demo-bf16", f"batched vs loop vs plain step, 8-64-channel UNet, {sizes['demo_what']}, "
             "bf16 autocast",
             "train_step.py", [*sizes["demo"], *dev, "--dtype", "bf16"], caps(60), no_bf16),
    ]


def run_part(part: Part, cap_s: float, env: dict, work: Path) -> dict:
    """Run ``part`` in its own process group for at most ``cap_s`` seconds; its record for the report."""
    json_path = work / f"{part.name}.json"
    command = part.command(json_path)
    record = {"name": part.name, "title": part.title, "command": _shown(command), "cap_s": round(cap_s)}
    start = time.perf_counter()
    code, output, _ = run_group(command, cap_s, merge=True, env=env, cwd=REPO)
    record["seconds"] = round(time.perf_counter() - start, 1)
    tail = [line for line in output.splitlines() if line.strip()][-40:]
    record["output_tail"] = tail
    if code is None:
        record.update(status="timed out", reason=f"ran past its cap of {cap_s:.0f} s")
    elif code == SKIPPED:
        record.update(status="skipped", reason=tail[-1] if tail else "the script found nothing to measure")
    elif code != 0 or not json_path.exists():
        record.update(status="failed", reason=tail[-1] if tail else f"exit status {code}")
    else:
        record.update(status="ok", result=json.loads(json_path.read_text()))
    return record


def _shown(command: list[str]) -> str:
    """The command as a reader would type it (``python benchmarks/...``, no temporary paths)."""
    words = ["python", *[str(Path(w).relative_to(REPO)) if w.startswith(str(REPO)) else w for w in command[1:]]]
    if "--json" in words:
        index = words.index("--json")
        words[index:index + 2] = []
    return " ".join(words)


def _rows(record: dict | None) -> list[dict]:
    if not record or record.get("status") != "ok":
        return []
    result = record["result"]
    return [r for r in result.get("results", result.get("rows", [])) if "error" not in r]


def _row(rows: list[dict], variant: str) -> dict | None:
    return next((r for r in rows if r.get("variant") == variant), None)


def ratios(records: dict[str, dict], workers: int, judge: bool = True) -> list[dict]:
    """The issue's ratios from the parts' rows; each with its target on this device and (``judge``)
    whether it is met."""
    on_gpu = any(r.get("status") == "ok" and r["result"]["machine"]["device"].startswith("cuda")
                 for r in records.values())
    found = []

    def add(key: str, value: float | None, where: str) -> None:
        what, op, gpu_target, cpu_target = next(t[1:] for t in TARGETS if t[0] == key)
        target = gpu_target if on_gpu else cpu_target
        met = None if not judge or target is None else (value <= target if op == "<=" else value >= target)
        found.append({"key": key, "measure": what, "where": where, "value": value,
                      "target": f"{op} {target}" if target is not None else "-", "met": met})

    for name in ("step-bf16", "step-fp32", "step-demo-bf16"):
        rows = _rows(records.get(name))
        batched, looped, plain = (_row(rows, v) for v in ("batched", "looped", "plain"))
        if batched and plain:
            add("batched_vs_plain", batched["step_s"] / plain["step_s"], f"{name}, batch {batched['batch']}")
        if batched and looped:
            add("loop_vs_batched", looped["step_s"] / batched["step_s"], f"{name}, batch {batched['batch']}")
    rows = _rows(records.get("training"))
    trainer, upstream = _row(rows, "trainer"), _row(rows, "upstream")
    if trainer and upstream:
        add("training_vs_upstream", trainer["samples_per_s"] / upstream["samples_per_s"],
            f"training: {trainer['dtype']}, forward {trainer['forward']}, batch {trainer['batch']} "
            f"vs batch 1 fp32 loop")
    loader = records.get("loader")
    if loader and loader.get("status") == "ok":
        result = loader["result"]
        row = next((r for r in result["rows"] if r["loading"] == f"cached, DataLoader {workers} workers"), None)
        if row:
            step = result["step"]
            add("loading_vs_step", row["vs_step_rate"],
                f"loader: {row['loading']} vs {step['samples_per_s']:.2f} samples/s ({step['dtype']}, batch "
                f"{step['batch']})")
    rows = _rows(records.get("ddp"))
    ddp = _row(rows, "trainer")
    if ddp and trainer and ddp["batch"] == trainer["batch"]:
        found.append({"key": "ddp_vs_one", "measure": "2-process samples/s / 1-process samples/s (same global batch)",
                      "where": f"ddp vs training, batch {ddp['batch']}", "value": ddp["samples_per_s"] /
                      trainer["samples_per_s"], "target": "-", "met": None})
    return found


def markdown(report: dict) -> str:
    machine = report["machine"]
    gpus = ", ".join(machine["gpus"]) or "none"
    lines = [f"# GPU suite{' (smoke: tiny sizes, not a measurement)' if report['smoke'] else ''}", "",
             f"Machine: {machine['description']}; GPUs: {gpus}; CUDA {machine['cuda']}, cuDNN {machine['cudnn']}, "
             f"Python {machine['python']}, {machine['cores']} cores.",
             f"Run: {report['started']}, device {report['device']}, code {report['code']}, {report['seconds']:.0f} s "
             f"(budget {report['budget_s']:.0f} s).", "",
             "## Ratios against the targets", "",
             "| measure | from | value | target | met |", "|---|---|---|---|---|"]
    for r in report["ratios"]:
        met = {True: "yes", False: "no", None: "-"}[r["met"]]
        lines.append(f"| {r['measure']} | {r['where']} | {r['value']:.2f} | {r['target']} | {met} |")
    if not report["ratios"]:
        lines.append("| (no ratio: the parts it needs did not run) | | | | |")
    for record in report["parts"]:
        lines += ["", f"## {record['name']}: {record['title']}", "", f"`{record['command']}`", ""]
        if record["status"] == "ok":
            lines.append(f"{record['seconds']:.0f} s (cap {record['cap_s']} s).")
            lines += ["", *[line for line in record["result"]["markdown"] if not line.startswith("Machine:")]]
        else:
            took = f" after {record['seconds']:.0f} s" if "seconds" in record else ""
            lines.append(f"**{record['status'].capitalize()}**{took}: {record['reason']}")
    return "\n".join(lines) + "\n"


def _code_version() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_suite.md and gpu_suite.json")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cuda, cuda:N or cpu")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes on the CPU: checks the suite, measures nothing")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for all parts together (default 450; smoke 600)")
    parser.add_argument("--parts", nargs="+", default=None, help="run only these parts (default: all)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="parts run at the same time (default 1, so timings do not disturb each other; "
                             "smoke 2)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads per part (OMP_NUM_THREADS; default 1 with --smoke, else torch's default)")
    args = parser.parse_args()
    exit_on_sigterm()

    import torch

    from machine import machine_record

    if args.smoke:
        device = "cpu"
    elif args.device == "auto":
        if not torch.cuda.is_available():
            parser.error("no CUDA GPU is visible: run --smoke to check the suite on the CPU, or --device cpu for "
                         "the full sizes on the CPU (hours).")
        device = "cuda"
    else:
        device = args.device
        if device.startswith("cuda") and not torch.cuda.is_available():
            parser.error(f"--device {device}: this PyTorch build sees no CUDA GPU.")
    budget = args.budget or (600.0 if args.smoke else 450.0)
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    bf16 = bool(gpus) and torch.cuda.is_bf16_supported()
    parts = plan(device, args.smoke, gpus, bf16)
    if args.parts:
        unknown = sorted(set(args.parts) - {p.name for p in parts})
        if unknown:
            parser.error(f"unknown parts {unknown}; the parts are {[p.name for p in parts]}")
        parts = [p for p in parts if p.name in args.parts]

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    threads = args.threads or (1 if args.smoke else None)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    args.out.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.timezone.utc)
    clock = time.perf_counter()
    jobs = args.jobs or (2 if args.smoke else 1)

    def one(part: Part, work: Path) -> dict:
        left = budget - (time.perf_counter() - clock)
        if part.skip:
            record = {"name": part.name, "title": part.title, "status": "skipped", "reason": part.skip}
        elif left < 10:
            record = {"name": part.name, "title": part.title, "status": "skipped",
                      "reason": f"the suite's budget of {budget:.0f} s was spent"}
        else:
            print(f"[gpu_suite] {part.name} (cap {min(part.cap_s, left):.0f} s) ...", file=sys.stderr, flush=True)
            record = run_part(part, min(part.cap_s, left), env, work)
        record.setdefault("command", _shown(part.command(Path("out.json"))))
        print(f"[gpu_suite] {part.name}: {record['status']}"
              f"{'' if record['status'] == 'ok' else ': ' + record['reason']}", file=sys.stderr, flush=True)
        return record

    with tempfile.TemporaryDirectory() as work, ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(one, part, Path(work)) for part in parts]
        records = {part.name: future.result() for part, future in zip(parts, futures)}
    loader_args = _sizes(args.smoke)["loader"]
    workers = int(loader_args[loader_args.index("--workers") + 1])
    report = {"suite": "gpu_suite", "smoke": args.smoke, "device": device,
              "started": started.isoformat(timespec="seconds"), "seconds": time.perf_counter() - clock,
              "budget_s": budget, "code": _code_version(), "machine": machine_record(device),
              "ratios": ratios(records, workers, judge=not args.smoke), "parts": list(records.values())}
    (args.out / "gpu_suite.json").write_text(json.dumps(report, indent=1))
    (args.out / "gpu_suite.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
