"""The audit's figures over several training seeds, on the demo and the semi-real cohort, side by side.

For every seed, in its own process: the phantom demo (``hypersort demo``, same phantom cohort,
training seed varied) or the semi-real liver cohort (built once from the real scans of the
shared data folder by :func:`~HyperSORTLib.demo.semireal.build_semireal_cohort`, then trained with
``HyperSORTLib/demo/semireal.yaml`` and audited by ``hypersort analyze``). ``--config FILE`` merges
a YAML over the cohort's configuration (as ``hypersort demo --config`` does), so a candidate setting
is measured over the same seeds as the defaults. Prints one markdown
table per cohort: styles found, ARI / NMI of the styles against the true groups, AUROC / AP of
the suspicion ranking, the main mode's size, clean share and whether it is a consensus,
main-mode Dice (demo), wall time and peak memory, with the commit, torch version and machine.
Paste the tables into ``benchmarks/RESULTS.md`` so the README's figures can be traced to a
commit, and a change that moves them is noticed.

    python benchmarks/demo_figures.py --cohort demo --seeds 0 1 2 --out /tmp/demo_figures
    python benchmarks/demo_figures.py --cohort semireal --shared ../shared/data --seeds 0 1 2 --out /tmp/semireal
    python benchmarks/demo_figures.py --cohort demo --seeds 2 3 --config zoom.yaml --out /tmp/zoom
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import describe  # noqa: E402


def main_mode_composition(run: Path, manifest: Path) -> tuple[int, float]:
    """Size of the main mode's style and the share of clean cases in it."""
    clusters = list(csv.DictReader(open(run / "analysis" / "clusters.csv", newline="")))
    main = next(row["cluster"] for row in clusters if row["is_main_mode"] in ("1", "True", "true"))
    samples = list(csv.DictReader(open(run / "analysis" / "samples.csv", newline="")))
    groups = {row["case_id"]: row["group"] for row in csv.DictReader(open(manifest, newline=""))}
    members = Counter(groups[row["case_id"]] for row in samples if row["cluster"] == main)
    size = sum(members.values())
    return size, members.get("clean", 0) / max(size, 1)


_PEAK = "import resource, sys\nprint('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"

_DEMO_CHILD = ("import sys\n"
               "from HyperSORTLib.cli import main\n"
               "code = main(sys.argv[1:])\n" + _PEAK + "sys.exit(code)\n")

_SEMIREAL_CHILD = """import json, sys, time
from pathlib import Path
from HyperSORTLib.analysis import analyze_run
from HyperSORTLib.config import RunConfig
from HyperSORTLib.data import PreprocessedCases, read_nnunet_folder
from HyperSORTLib.demo.semireal import SEMIREAL_CONFIG_FILE
from HyperSORTLib.training import Trainer
from HyperSORTLib.utils.allocator import keep_freed_memory
from HyperSORTLib.utils.versions import software_versions
keep_freed_memory()  # as every hypersort command does (train, analyze)
cohort, run, seed, device, extra = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
start = time.perf_counter()
cases = read_nnunet_folder(cohort)
config = RunConfig.from_file(SEMIREAL_CONFIG_FILE)
if extra:
    config = config.merged_with_file(extra)
config = config.for_dataset(class_names=cases.class_names, seed=seed, device=device)
Trainer(config, PreprocessedCases(cases, config.data, progress=False), cases.case_ids, run, progress=False,
        data_source={"path": str(cohort), "format": "nnunet"}).fit()
result = analyze_run(run, manifest=cohort / "manifest.csv", device=device, progress=False)
metrics = {**result.metrics, "wall_time_s": time.perf_counter() - start, "seed": seed,
           "software": software_versions()}
(run / "benchmark_metrics.json").write_text(json.dumps(metrics, default=str))
""" + _PEAK


def _child(code: str, args: list[str]) -> tuple[float, float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, *args], stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"run {' '.join(args)} failed:\n{done.stderr}")
    return wall, int(done.stderr.rsplit("PEAK_KB", 1)[1].split()[0]) / 1024


def run_demo_seed(seed: int, out: Path, device: str, config: Path | None = None) -> dict:
    """One demo run in its own process: its metrics, wall time and that process's peak RSS."""
    extra = ["--config", str(config)] if config else []
    wall, peak = _child(_DEMO_CHILD, ["demo", "--out", str(out), "--seed", str(seed), "--device", device,
                                      "--no-progress", "--overwrite", *extra])
    metrics = json.loads((out / "metrics.json").read_text())
    size, clean = main_mode_composition(out / "run", out / "cohort" / "manifest.csv")
    return {"seed": seed, "metrics": metrics, "wall_s": wall, "main_size": size, "main_clean": clean,
            "peak_mb": peak}


def run_semireal_seed(seed: int, cohort: Path, out: Path, device: str, config: Path | None = None) -> dict:
    """One semi-real training + audit in its own process."""
    if out.exists():
        import shutil

        shutil.rmtree(out)
    wall, peak = _child(_SEMIREAL_CHILD, [str(cohort), str(out), str(seed), device, str(config or "")])
    metrics = json.loads((out / "benchmark_metrics.json").read_text())
    size, clean = main_mode_composition(out, cohort / "manifest.csv")
    return {"seed": seed, "metrics": metrics, "wall_s": wall, "main_size": size, "main_clean": clean,
            "peak_mb": peak}


def table(rows: list[dict]) -> str:
    lines = ["| seed | styles (isolated cases) | ARI | NMI | AUROC | AP | errors in top k | "
             "main mode: cases, clean share, consensus | main-mode Dice | wall time (s) | peak RSS (MB) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["metrics"]
        n_styles = m.get("n_styles", m.get("n_clusters"))
        # Rows are the styles, largest first, then the isolated groups.
        isolated = sum(m["cluster_sizes"][n_styles:]) if "cluster_sizes" in m and n_styles is not None else None
        consensus = m.get("main_mode", {}).get("consensus")
        dice = m.get("main_mode_dice")
        lines.append(f"| {r['seed']} | {n_styles} ({isolated if isolated is not None else '?'}) | {m['ari']:.3f} | "
                     f"{m['nmi']:.3f} | {m['auroc']:.3f} | {m['average_precision']:.3f} | "
                     f"{m['erroneous_in_top_k']}/{m.get('n_erroneous', m.get('k'))} | "
                     f"{r['main_size']}, {100 * r['main_clean']:.0f}%, {'yes' if consensus else 'no'} | "
                     f"{'' if dice is None else f'{dice:.3f}'} | {r['wall_s']:.0f} | {r['peak_mb']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cohort", choices=("demo", "semireal"), default="demo")
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data",
                        help="shared data folder with the real scans (semireal)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("demo_figures"), help="one folder per seed below it")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML merged over the cohort's configuration (e.g. one changed training setting)")
    args = parser.parse_args()
    config = args.config.resolve() if args.config else None
    if args.cohort == "demo":
        rows = [run_demo_seed(seed, args.out / f"seed_{seed}", args.device, config) for seed in args.seeds]
    else:
        from HyperSORTLib.demo.semireal import SemirealSpec, build_semireal_cohort, default_sources

        cohort = args.out / "cohort"
        build_semireal_cohort(default_sources(args.shared), cohort, SemirealSpec(), seed=0, overwrite=True)
        rows = [run_semireal_seed(seed, cohort, args.out / f"seed_{seed}", args.device, config) for seed in args.seeds]
    software = rows[0]["metrics"].get("software") or rows[0]["metrics"].get("provenance", {}).get("software", {})
    changed = f", with {args.config.name} merged over its configuration" if args.config else ""
    print(f"### {args.cohort}{changed}: {describe(args.device)}, code {software.get('code')} "
          f"({time.strftime('%Y-%m-%d')})\n")
    if args.config:
        print("```yaml\n" + args.config.read_text(encoding="utf-8").strip() + "\n```\n")
    print(table(rows))


if __name__ == "__main__":
    main()
