"""HyperSORT against the robust-training baselines and the label-error peers, on the same noisy data.

Not a test: a side-by-side comparison (issue 12). For each cohort (the phantom demo cohort and the
semi-real cohort built from the shared TotalSegmentator examples), the clean cohort is split into
training, meta (MCPM's small clean set, used by no other method) and held-out test cases. For every
noise family (morphological dilation, ElasticDeform-style B-spline deformation, Gaussian random
field deformation) and noise level (share of the training cases perturbed), the training labels are
perturbed with ``hypersort perturb``'s machinery, and on that noisy set the script trains, all with
one run configuration (UNet, epochs, batch size, optimiser, seed):

* HyperSORT (``hypersort train``) and its main mode (the decoded UNet of the main cluster);
* the baselines of ``hypersort baseline``: unet, mcpm, pint, ce-threshold;
* plain UNets on K folds (out-of-fold predictions for cleanlab's label-quality score);
* once per cohort, a plain UNet on the clean labels (the upper bound).

Reported: Dice and HD95 (mm) of the foreground class against the clean labels of the test cases;
AUROC, average precision and precision@k (k = number of perturbed cases) of the rankings
(HyperSORT's suspicion from ``hypersort analyze`` and its main-mode loss signal alone, cleanlab's
score, the small loss of the plain UNet); training wall time of each method on this machine. The task is binary (liver).

Example (the CPU scale of benchmarks/RESULTS.md)::

    nice -n 10 python benchmarks/robust_training.py --out /tmp/robust --cohorts demo --families dilation \\
        --levels 0.4 --cases 20 --epochs 20

Needs cleanlab for the cleanlab column (``pip install 'hypersort[benchmark]'``; AGPL-3.0); without
it that column is left empty.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import describe  # noqa: E402

from HyperSORTLib.baselines import BaselineConfig, BaselineTrainer  # noqa: E402
from HyperSORTLib.baselines.ranking import cleanlab_scores, out_of_fold_probabilities  # noqa: E402
from HyperSORTLib.config import RunConfig  # noqa: E402
from HyperSORTLib.data import read_dataset  # noqa: E402
from HyperSORTLib.data.dataset import PreprocessedCases  # noqa: E402
from HyperSORTLib.data.manifest import read_manifest_rows, MANIFEST_FILE  # noqa: E402
from HyperSORTLib.inference import TrainedRun  # noqa: E402
from HyperSORTLib.latentmap.scores import detection_by_signal  # noqa: E402
from HyperSORTLib.metrics import dice_per_class  # noqa: E402
from HyperSORTLib.perturbation.plan import PerturbationPlan  # noqa: E402
from HyperSORTLib.perturbation.runner import perturb_dataset  # noqa: E402
from HyperSORTLib.training import Trainer  # noqa: E402

SHARED_DATA = ROOT.parent / "shared" / "data"
FAMILIES = ("dilation", "elastic", "gaussian")
BASELINES = ("unet", "mcpm", "pint", "ce-threshold")


def noise_step(family: str, spacing: tuple[float, ...]) -> dict[str, Any]:
    """One perturbation of ``family``, sized in millimetres from the cohort's voxel size."""
    voxel = float(max(spacing))
    if family == "dilation":
        return {"dilate_class": {"class_id": "liver", "mm": 2 * voxel}}
    if family == "elastic":
        return {"elastic_deform": {"displacement_mm": 2 * voxel, "control_spacing_mm": 8 * voxel}}
    if family == "gaussian":
        return {"gaussian_field_deform": {"std_mm": 2 * voxel, "correlation_mm": 6 * voxel}}
    raise ValueError(f"noise family must be one of {', '.join(FAMILIES)}, found {family!r}.")


def build_cohort(name: str, out: Path, n_cases: int, seed: int) -> tuple[Path, tuple[float, ...]]:
    """The clean cohort (no injected bias): its folder and voxel size."""
    if name == "demo":
        from HyperSORTLib.demo.cohort import CohortSpec, generate_cohort

        spec = CohortSpec(n_cases=n_cases, shape=(32, 24, 16), spacing=(10.5, 11.7, 16.0), n_liver_dilated=0,
                          n_spleen_missing=0, n_erroneous=0)
        return generate_cohort(out, spec, seed).root, spec.spacing
    if name == "semireal":
        from HyperSORTLib.demo.semireal import SemirealSpec, build_semireal_cohort, default_sources

        sources = default_sources(SHARED_DATA)
        views = -(-n_cases // len(sources))
        spec = SemirealSpec(views_per_source=views, spacing=(8.0, 8.0, 8.0), crop_size=(32, 24, 24),
                            n_liver_dilated=0, n_liver_missing=0, n_erroneous=0)
        return build_semireal_cohort(sources, out, spec, seed, overwrite=True).root, spec.spacing
    raise ValueError(f"cohort must be demo or semireal, found {name!r}.")


def run_config(shape: tuple[int, ...], spacing: tuple[float, ...], epochs: int, device: str, seed: int) -> RunConfig:
    return RunConfig.from_dict({
        "model": {"unet": {"channels": [8, 16, 32], "convs_per_level": 1}, "hyper": {"hidden": [32, 32]}},
        "data": {"spacing": list(spacing), "patch_size": list(shape), "intensity": "window",
                 "window": [-250.0, 350.0]},
        "train": {"epochs": epochs, "batch_size": 4, "latent_lr": 2e-2, "l1_weight": 0.01, "device": device,
                  "seed": seed, "checkpoint_every": max(1, epochs)},
    })


def hd95(pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...]) -> float:
    from monai.metrics import compute_hausdorff_distance

    if not pred.any() or not truth.any():
        return float("nan")
    a = torch.as_tensor(np.stack([pred == 0, pred > 0])[None].astype(np.float32))
    b = torch.as_tensor(np.stack([truth == 0, truth > 0])[None].astype(np.float32))
    return float(compute_hausdorff_distance(a, b, percentile=95, spacing=list(spacing))[0, 0])


def evaluate(run_dir: Path, test: PreprocessedCases, spacing: tuple[float, ...], z: Any = None) -> dict[str, float]:
    run = TrainedRun.load(run_dir, device="cpu")
    z = np.zeros(run.latent_dim) if z is None else z
    dice, dist = [], []
    for i in range(len(test)):
        volume = test.volume(i)
        pred = run.segment(volume.image, z)
        dice.append(dice_per_class(pred, np.asarray(volume.label), [1])[1])
        dist.append(hd95(pred, np.asarray(volume.label), spacing))
    return {"dice": float(np.mean(dice)), "hd95_mm": float(np.nanmean(dist)) if np.isfinite(dist).any() else None}


def timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def one_setting(cohort_root: Path, noisy_root: Path, family: str, level: float, train_ids: list[str],
                meta: PreprocessedCases, test: PreprocessedCases, config: RunConfig, spacing: tuple[float, ...],
                folds: int, seed: int) -> dict[str, Any]:
    from HyperSORTLib.analysis.audit import analyze_run

    full = read_dataset(cohort_root)
    train_full = full.without([c for c in full.case_ids if c not in train_ids])
    count = max(1, round(level * len(train_ids)))
    plan = PerturbationPlan.from_dict({"seed": seed, "clean_group": "clean", "groups": [
        {"name": family, "count": count, "erroneous": True, "perturbations": [noise_step(family, spacing)]}]})
    perturb_dataset(train_full, noisy_root, plan, copy_images=True, overwrite=True)
    rows = {r["case_id"]: r for r in read_manifest_rows(noisy_root / MANIFEST_FILE)}
    noisy = read_dataset(noisy_root, classes="liver")
    noisy = noisy.without([c for c in noisy.case_ids if c not in rows])  # the copy keeps the source's other files
    dataset = PreprocessedCases(noisy, config.data)
    is_error = np.array([rows[c]["erroneous"].strip() == "1" for c in noisy.case_ids])
    out: dict[str, Any] = {"family": family, "level": level, "n_train": len(noisy.case_ids),
                           "n_perturbed": int(is_error.sum()), "methods": {}, "rankings": {}}
    runs = noisy_root.parent / f"runs_{noisy_root.name}"

    result, seconds = timed(lambda: Trainer(config, dataset, noisy.case_ids, runs / "hypersort", progress=False,
                                            data_source=noisy.source).fit())
    audit = analyze_run(runs / "hypersort", manifest=noisy_root / MANIFEST_FILE, device="cpu", use_cache=False)
    centre = audit.clusters.centers[audit.clusters.main_cluster]
    out["methods"]["hypersort (main mode)"] = {**evaluate(runs / "hypersort", test, spacing, centre),
                                               "seconds": seconds}
    for method in BASELINES:
        trainer = BaselineTrainer(config, dataset, noisy.case_ids, runs / method, BaselineConfig(method),
                                  meta_dataset=meta if method == "mcpm" else None,
                                  meta_case_ids=meta.case_list.case_ids if method == "mcpm" else (),
                                  progress=False, data_source=noisy.source)
        _, seconds = timed(trainer.fit)
        out["methods"][method] = {**evaluate(runs / method, test, spacing), "seconds": seconds}
        if method == "unet":
            out["small_loss"] = trainer.sample_loss.numpy().tolist()

    (probs, fold_seconds), _ = timed(lambda: out_of_fold_probabilities(config, dataset, noisy.case_ids,
                                                                       runs / "oof", k=folds))
    # the suspicion ranks outliers of the map; the main-mode loss ranks disagreement with the
    # consensus style, which is what a large systematic group of wrong labels shows
    signals = {"hypersort suspicion": audit.suspicion, "hypersort main-mode loss": audit.signals["main_mode_loss"],
               "small loss": np.asarray(out["small_loss"])}
    oriented = {"hypersort suspicion": True, "hypersort main-mode loss": True, "small loss": True,
                "cleanlab": False}
    try:
        labels = [np.asarray(dataset.volume(i).label) for i in range(len(dataset))]
        signals["cleanlab"] = cleanlab_scores(labels, probs)
    except ImportError as exc:
        print(f"  cleanlab column left empty: {exc}", file=sys.stderr)
    out["rankings"] = detection_by_signal(signals, oriented, is_error, k=int(is_error.sum()))
    out["oof_seconds"] = float(sum(fold_seconds))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cohorts", nargs="+", default=["demo", "semireal"], choices=("demo", "semireal"))
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--levels", nargs="+", type=float, default=[0.2, 0.4])
    parser.add_argument("--cases", type=int, default=24, help="cases per cohort (train + meta + test)")
    parser.add_argument("--test", type=int, default=4, help="held-out test cases")
    parser.add_argument("--meta", type=int, default=2, help="MCPM's clean meta cases (used by no other method)")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    report: dict[str, Any] = {"machine": describe(args.device), "args": {k: str(v) for k, v in vars(args).items()},
                              "cohorts": {}}
    for name in args.cohorts:
        root, spacing = build_cohort(name, args.out / name / "clean", args.cases, args.seed)
        cases = read_dataset(root, classes="liver")
        ids = list(cases.case_ids)
        test_ids, meta_ids, train_ids = ids[-args.test:], ids[-args.test - args.meta:-args.test], \
            ids[:-args.test - args.meta]
        shape = tuple(int(s) for s in nib.load(root / "imagesTr" / f"{ids[0]}_0000.nii.gz").shape)
        shape = tuple(s - s % 4 for s in shape)
        config = run_config(shape, spacing, args.epochs, args.device, args.seed).for_dataset(cases)
        subset = lambda keep: PreprocessedCases(cases.without([c for c in ids if c not in keep]), config.data)  # noqa: E731
        test, meta, clean_train = subset(test_ids), subset(meta_ids), subset(train_ids)
        entry: dict[str, Any] = {"spacing": spacing, "shape": shape, "n_train": len(train_ids), "n_test": len(test_ids),
                                 "n_meta": len(meta_ids), "settings": []}
        clean_run = args.out / name / "runs_clean" / "unet"
        _, seconds = timed(lambda: BaselineTrainer(config, clean_train, clean_train.case_list.case_ids, clean_run,
                                                   progress=False).fit())
        entry["clean_unet"] = {**evaluate(clean_run, test, spacing), "seconds": seconds}
        print(f"{name}: clean-label UNet Dice {entry['clean_unet']['dice']:.3f}", flush=True)
        for family in args.families:
            for level in args.levels:
                noisy_root = args.out / name / f"noisy_{family}_{int(round(100 * level))}"
                setting = one_setting(root, noisy_root, family, level, train_ids, meta, test, config, spacing,
                                      args.folds, args.seed)
                entry["settings"].append(setting)
                summary = ", ".join(f"{m} {v['dice']:.3f}" for m, v in setting["methods"].items())
                print(f"{name} {family} {level:.0%}: Dice {summary}", flush=True)
                (args.out / "results.json").write_text(json.dumps(report | {"cohorts": {**report["cohorts"],
                                                                                         name: entry}}, indent=1,
                                                                   default=_jsonable))
        report["cohorts"][name] = entry
    (args.out / "results.json").write_text(json.dumps(report, indent=1, default=_jsonable))
    print(markdown(report))
    return 0


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


def _num(value: Any, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f"{value:.{digits}f}"


def markdown(report: dict[str, Any]) -> str:
    """The tables of benchmarks/RESULTS.md: segmentation per setting, rankings per setting."""
    lines = [f"Machine: {report['machine']}", ""]
    for name, entry in report["cohorts"].items():
        clean = entry["clean_unet"]
        methods = ["hypersort (main mode)", *BASELINES]
        lines += [f"**{name}** ({entry['n_train']} training, {entry['n_meta']} meta, {entry['n_test']} test cases; "
                  f"clean-label UNet: Dice {_num(clean['dice'])}, HD95 {_num(clean['hd95_mm'], 1)} mm, "
                  f"{clean['seconds']:.0f} s)", "",
                  "| noise | " + " | ".join(f"{m} Dice / HD95" for m in methods) + " |",
                  "|---|" + "---|" * len(methods)]
        for s in entry["settings"]:
            cells = [f"{_num(s['methods'][m]['dice'])} / {_num(s['methods'][m]['hd95_mm'], 1)}" for m in methods]
            lines.append(f"| {s['family']} {s['level']:.0%} ({s['n_perturbed']}/{s['n_train']}) | "
                         + " | ".join(cells) + " |")
        lines += ["", "| noise | ranking | AUROC | AP | precision@k |", "|---|---|---|---|---|"]
        for s in entry["settings"]:
            for signal, m in s["rankings"].items():
                if m is None:
                    continue
                lines.append(f"| {s['family']} {s['level']:.0%} | {signal} | {_num(m['auroc'])} | "
                             f"{_num(m['average_precision'])} | {_num(m['precision_at_k'])} |")
        lines += ["", "| noise | " + " | ".join(f"{m} s" for m in methods) + " | K-fold UNets s |",
                  "|---|" + "---|" * (len(methods) + 1)]
        for s in entry["settings"]:
            lines.append(f"| {s['family']} {s['level']:.0%} | "
                         + " | ".join(f"{s['methods'][m]['seconds']:.0f}" for m in methods)
                         + f" | {s['oof_seconds']:.0f} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
