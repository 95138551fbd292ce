"""The demo's figures over several training seeds, for one commit, side by side.

Runs ``hypersort demo`` once per seed (same phantom cohort, training seed varied), each in its
own process, and prints one markdown table: ARI / NMI of the clusters against the true groups,
AUROC / AP of the suspicion ranking, the main mode's size and share of clean cases, main-mode
Dice, wall time and peak memory, with the commit, torch version and machine it ran on. Paste the
table into ``benchmarks/RESULTS.md`` so the README's demo figures can be traced to a commit, and
a change that moves them is noticed.

    python benchmarks/demo_figures.py --seeds 0 1 2 --out /tmp/demo_figures
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


def main_mode_composition(out: Path) -> tuple[int, float]:
    """Size of the main mode's cluster and the share of clean cases in it."""
    clusters = list(csv.DictReader(open(out / "run" / "analysis" / "clusters.csv", newline="")))
    main = next(row["cluster"] for row in clusters if row["is_main_mode"] in ("1", "True", "true"))
    samples = list(csv.DictReader(open(out / "run" / "analysis" / "samples.csv", newline="")))
    groups = {row["case_id"]: row["group"] for row in csv.DictReader(open(out / "cohort" / "manifest.csv",
                                                                          newline=""))}
    members = Counter(groups[row["case_id"]] for row in samples if row["cluster"] == main)
    size = sum(members.values())
    return size, members.get("clean", 0) / max(size, 1)


_CHILD = ("import resource, sys\n"
          "from HyperSORTLib.cli import main\n"
          "code = main(sys.argv[1:])\n"
          "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
          "sys.exit(code)\n")


def run_seed(seed: int, out: Path, device: str) -> dict:
    """One demo run in its own process: its metrics, wall time and that process's peak RSS."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _CHILD, "demo", "--out", str(out), "--seed", str(seed),
                           "--device", device, "--no-progress"], stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"demo with seed {seed} failed:\n{done.stderr}")
    peak_kb = int(done.stderr.rsplit("PEAK_KB", 1)[1].split()[0])
    metrics = json.loads((out / "metrics.json").read_text())
    size, clean = main_mode_composition(out)
    return {"seed": seed, "metrics": metrics, "wall_s": wall, "main_size": size, "main_clean": clean,
            "peak_mb": peak_kb / 1024}


def table(rows: list[dict]) -> str:
    lines = ["| seed | clusters | ARI | NMI | AUROC | AP | errors in top k | main mode: cases, clean share | "
             "main-mode Dice | wall time (s) | peak RSS (MB) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["metrics"]
        lines.append(f"| {r['seed']} | {m['n_clusters']} | {m['ari']:.3f} | {m['nmi']:.3f} | {m['auroc']:.3f} | "
                     f"{m['average_precision']:.3f} | {m['erroneous_in_top_k']}/{m['n_erroneous']} | "
                     f"{r['main_size']}, {100 * r['main_clean']:.0f}% | {m['main_mode_dice']:.3f} | "
                     f"{r['wall_s']:.0f} | {r['peak_mb']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("demo_figures"), help="one demo folder per seed below it")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    rows = [run_seed(seed, args.out / f"seed_{seed}", args.device) for seed in args.seeds]
    software = rows[0]["metrics"].get("software", {})
    print(f"### {describe(args.device)}, code {software.get('code')} "
          f"({time.strftime('%Y-%m-%d')})\n")
    print(table(rows))


if __name__ == "__main__":
    main()
