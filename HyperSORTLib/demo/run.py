"""``hypersort demo``: biased phantom cohort -> HyperSORT training -> what the latent map found.

The demo generates a CT-like abdominal cohort with known annotation biases (a clean majority,
a systematic style group, a group with an organ left unannotated and a few gross errors),
trains HyperSORT on it, and scores the learned latent map against the truth:

* ``ari`` / ``nmi``: the annotation styles of ``hypersort analyze`` vs the true groups;
* ``auroc`` / ``average_precision``: ranking of the erroneous cases by the combined suspicion
  score of ``hypersort analyze`` (and by each of its signals);
* ``main_mode_dice`` / ``main_mode_hd95``: Dice and HD95 (mm) against the clean labels of the UNet
  decoded from the main mode, the largest style (:func:`HyperSORTLib.analysis.evaluation.main_mode_scores`).

Outputs in ``OUT``: ``cohort/`` (the dataset), ``run/`` (the training run, with the audit of
``hypersort analyze`` in ``run/analysis/``: ``report.html``, ``samples.csv``, ``clusters.csv``),
``latent_map.png`` and ``metrics.json``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from HyperSORTLib.config import RunConfig
from HyperSORTLib.utils.io import atomic_write_json, check_output_folder
from HyperSORTLib.utils.versions import software_versions

#: The demo's run configuration, shipped with the package (``demo.yaml`` beside this module;
#: its comments say how it differs from the reference configuration and why).
DEMO_CONFIG_FILE = Path(__file__).with_name("demo.yaml")
DEMO_CONFIG = RunConfig.from_file(DEMO_CONFIG_FILE)


@dataclass(frozen=True)
class DemoOptions:
    """What ``hypersort demo`` was asked for."""

    out_dir: Path = Path("demo_out")
    config_path: Path | None = None
    n_cases: int | None = None
    train_overrides: dict[str, Any] = field(default_factory=dict)
    progress: bool = True
    cohort_seed: int = 0
    overwrite: bool = False


#: Folder of the cohort holding the clean labels (before the biases were injected).
CLEAN_LABELS_DIR = "labelsClean"

#: What the demo writes in its output folder.
COHORT_DIR, RUN_DIR, MAP_FILE, METRICS_FILE = "cohort", "run", "latent_map.png", "metrics.json"


def check_demo_output(out: Path, overwrite: bool = False) -> None:
    """Refuse an output folder whose files of the demo's names were not written by the demo.

    A new or empty folder, a folder without those names, or an earlier demo output (its ``run/``
    is a HyperSORT run and ``cohort/`` has a manifest) is fine; anything else needs ``overwrite``.
    """
    from HyperSORTLib.data.manifest import MANIFEST_FILE
    from HyperSORTLib.rundir import is_run_dir

    out = Path(out)
    earlier = is_run_dir(out / RUN_DIR) and (out / COHORT_DIR / MANIFEST_FILE).is_file()
    check_output_folder(out, (COHORT_DIR, RUN_DIR, MAP_FILE, METRICS_FILE), "hypersort demo", overwrite,
                        written_by_owner=earlier)


@dataclass
class DemoResult:
    out_dir: Path
    metrics: dict[str, Any]

    def summary(self) -> str:
        m = self.metrics
        lines = [
            f"HyperSORT demo: {m['n_cases']} cases, {m['epochs']} epochs on {m['device']} in {m['wall_time_s']:.0f} s",
            f"  styles found: {m['n_styles']}   ARI {m['ari']:.3f}   NMI {m['nmi']:.3f}  (vs the true groups)",
            f"  main mode: {m['main_mode_text']}",
            *([f"  main mode's annotations: {m['main_mode_annotations']}"] if m.get("main_mode_annotations") else []),
            f"  erroneous cases: AUROC {_fmt(m['auroc'])}   average precision {_fmt(m['average_precision'])}   "
            f"top-{m['n_erroneous']} caught {m['erroneous_in_top_k']}/{m['n_erroneous']}",
            f"  main-mode UNet vs clean labels: Dice {m['main_mode_dice']:.3f}   HD95 {_fmt(m['main_mode_hd95'])} mm",
            f"  latent map: {self.out_dir / 'latent_map.png'}   metrics: {self.out_dir / 'metrics.json'}",
            f"  audit report: {m['report']}",
            f"  styles of a second training: the demo again with another --seed (e.g. {int(m['seed']) + 1}) and "
            f"--out, then hypersort compare --runs {self.out_dir / RUN_DIR} OTHER_OUT/{RUN_DIR}",
        ]
        return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def demo_config(options: DemoOptions, class_names: tuple[str, ...]) -> RunConfig:
    """The demo configuration, with a user YAML and command-line overrides applied."""
    config = DEMO_CONFIG
    if options.config_path is not None:
        config = config.merged_with_file(options.config_path)
    return config.for_dataset(class_names=class_names, **options.train_overrides)


def run_demo(options: DemoOptions) -> DemoResult:
    """Generate the cohort, train, analyse and write the demo outputs."""
    from HyperSORTLib.analysis import analyze_run
    from HyperSORTLib.analysis.evaluation import main_mode_scores, with_clean_labels
    from HyperSORTLib.analysis.plots import plot_latent_maps
    from HyperSORTLib.analysis.annotations import describe_annotations
    from HyperSORTLib.analysis.styles import describe_main_mode
    from HyperSORTLib.data import PreprocessedCases, read_nnunet_folder
    from HyperSORTLib.data.manifest import MANIFEST_FILE
    from HyperSORTLib.demo.cohort import CohortSpec, generate_cohort
    from HyperSORTLib.inference import TrainedRun
    from HyperSORTLib.training import Trainer

    start = time.perf_counter()
    out = Path(options.out_dir)
    check_demo_output(out, options.overwrite)
    out.mkdir(parents=True, exist_ok=True)
    spec = CohortSpec() if options.n_cases is None else _scaled_spec(CohortSpec(), options.n_cases)
    generate_cohort(out / COHORT_DIR, spec, seed=options.cohort_seed)
    cases = read_nnunet_folder(out / COHORT_DIR)
    config = demo_config(options, cases.class_names)

    dataset = PreprocessedCases(cases, config.data, progress=options.progress)  # as `hypersort train`
    trainer = Trainer(config, dataset, cases.case_ids, out / RUN_DIR, progress=options.progress,
                      data_source={"path": str((out / COHORT_DIR).resolve()), "format": "nnunet"})
    result = trainer.fit()

    audit = analyze_run(out / RUN_DIR, manifest=out / COHORT_DIR / MANIFEST_FILE, device=str(trainer.device),
                        seed=config.train.seed, progress=options.progress)
    run = TrainedRun.load(out / RUN_DIR, device=str(trainer.device))
    groups = [str(g) for g in audit.manifest.groups]
    main = audit.clusters.main_cluster
    clean = with_clean_labels(cases, cases.root / CLEAN_LABELS_DIR)
    scores = main_mode_scores(run, clean, audit.clusters.centers[main])
    n_errors = int(audit.manifest.erroneous.sum())
    top = [audit.case_ids[i] for i in audit.ranking[: max(n_errors, 1)]]
    plot_latent_maps(audit.latents, out / MAP_FILE, colour_by=groups, score=audit.suspicion,
                     labels=list(audit.case_ids), annotate=top,
                     title=f"HyperSORT demo: {len(groups)} phantom cases, {result.epochs} epochs")

    m = audit.metrics
    metrics = {
        "ari": m["ari"], "nmi": m["nmi"], "ari_without_erroneous": m.get("ari_without_erroneous"),
        "nmi_without_erroneous": m.get("nmi_without_erroneous"),
        "auroc": m["auroc"], "average_precision": m["average_precision"], "precision_at_k": m["precision_at_k"],
        "n_erroneous": n_errors, "erroneous_in_top_k": m.get("erroneous_in_top_k"),
        "detection_by_signal": m.get("detection_by_signal"),
        "n_clusters": m["n_clusters"], "n_styles": m["n_styles"], "cluster_sizes": m["cluster_sizes"],
        "main_mode": m["main_mode"], "main_mode_text": describe_main_mode(audit.clusters),
        "main_mode_annotations": describe_annotations(audit, audit.clusters.thresholds.volume),
        "cluster_descriptions": {str(c["cluster"]): c.get("description", "") for c in m["clusters"]},
        "main_mode_dice": scores["dice"], "main_mode_dice_per_class": scores["dice_per_class"],
        "main_mode_hd95": scores["hd95_mm"], "main_mode_hd95_per_class": scores["hd95_per_class"],
        "main_mode_hd95_undefined": scores["hd95_undefined"],
        "n_cases": len(groups), "group_sizes": {g: groups.count(g) for g in sorted(set(groups))},
        "epochs": result.epochs, "device": str(trainer.device), "final_loss": result.history[-1]["loss"],
        "report": str(audit.report_path), "wall_time_s": round(time.perf_counter() - start, 1),
        "seed": config.train.seed, "software": software_versions(), "config": config.to_dict(),
    }
    atomic_write_json(out / METRICS_FILE, metrics)
    return DemoResult(out, metrics)


def _scaled_spec(spec: Any, n_cases: int) -> Any:
    """Keep the demo's group proportions for another cohort size."""
    fraction = n_cases / spec.n_cases
    sizes = {name: max(1, round(getattr(spec, name) * fraction))
             for name in ("n_liver_dilated", "n_spleen_missing", "n_erroneous")}
    return dataclasses.replace(spec, n_cases=n_cases, **sizes)
