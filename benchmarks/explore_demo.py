"""``hypersort explore`` on a trained demo run in headless Chromium: the README's screenshots and the
probe latency (probe release -> updated overlay in the browser).

The run and its cohort are copied to a temporary folder first (the page writes accepted
segmentations next to the scan and verdicts into the run's ``analysis/review.csv``; the originals
are never touched). The explorer runs with the command's default preview delay (150 ms) on the CPU;
Chromium (Debian's chromium + chromium-driver, driven through ``Testing/explore/harness.py``) shows
the page at 1280x800:

1. ``explore-sample.png``: hovering and clicking a member of the first style that is not the main
   mode; its UNet's segmentation of the scan is the slice views' label layer;
2. ``--drags`` probe drags, one burst of mouse moves each: the clock starts when the release is sent
   and stops when the page holds the new preview's summary, then when the axial view has received
   its next streamed frame (``explore-drag.png`` after the first);
3. ``explore-accept.png``: Accept at full resolution (files written next to the copied scan);
4. ``explore-review.png``: the review's most suspicious case opened, a verdict recorded.

Writes the screenshots and ``explore-latency.json`` to ``--screenshots`` and prints a Markdown table
row for ``benchmarks/RESULTS.md``.

Run (a demo run as ``hypersort demo`` writes it: RUN with analysis/, COHORT with imagesTr/):
    python benchmarks/explore_demo.py --run RUN --cohort COHORT --screenshots /tmp/shots
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "Testing" / "explore"))

import harness  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a trained run with analysis/ (hypersort analyze)")
    parser.add_argument("--cohort", type=Path, required=True, help="its dataset folder (imagesTr/, labelsTr/)")
    parser.add_argument("--case", default=None, help="the cohort case whose image is the scan (default: the first)")
    parser.add_argument("--screenshots", type=Path, required=True, help="folder for the PNGs and the latency JSON")
    parser.add_argument("--drags", type=int, default=10, help="probe drags to time (default 10)")
    parser.add_argument("--preview-delay-ms", type=float, default=150.0, help="the command's default: 150")
    return parser.parse_args(argv)


def first_non_main_style_member(run: Path) -> str | None:
    """A case of the first style (not isolated group) that is not the main mode, from analysis/clusters.csv."""
    path = run / "analysis" / "clusters.csv"
    if not path.is_file():
        return None
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row.get("kind") == "style" and row.get("is_main_mode") not in ("1", "True", "true"):
                members = (row.get("members") or "").split()
                if members:
                    return members[0]
    return None


def copy_inputs(run: Path, cohort: Path, case: str | None, work: Path) -> tuple[Path, Path, Path]:
    for folder, what in ((run, "--run"), (cohort, "--cohort")):
        if not folder.is_dir():
            raise SystemExit(f"{what} {folder}: no such folder.")
    images = sorted((cohort / "imagesTr").glob("*.nii.gz"))
    if not images:
        raise SystemExit(f"--cohort {cohort}: no imagesTr/*.nii.gz.")
    image = images[0] if case is None else cohort / "imagesTr" / f"{case}_0000.nii.gz"
    if not image.is_file():
        raise SystemExit(f"--case {case}: {image} does not exist.")
    run_copy, cohort_copy = work / "run", work / "cohort"
    shutil.copytree(run, run_copy, ignore=shutil.ignore_patterns("checkpoint.pt", "review.csv"))
    shutil.copytree(cohort, cohort_copy)
    scan = work / "scans" / image.name.replace("_0000.nii.gz", ".nii.gz")
    scan.parent.mkdir()
    shutil.copy(image, scan)
    return run_copy, cohort_copy, scan


def time_drags(driver, count: int, shots: Path) -> list[dict]:
    """``count`` probe drags, alternately right-up and left-down a little less far, so that no latent point
    repeats (a repeated one would come from the segmenter's cache); the timings of each (a screenshot of
    the first)."""
    rows = []
    for index in range(count):
        before = harness.page_json(driver, "preview-json")["count"]
        source = harness.views(driver)[0].get_attribute("src")
        harness.record_moves(driver)
        dx, dy = (7, -4) if index % 2 == 0 else (-6, 3)
        released = harness.drag_probe(driver, moves=8, dx=dx, dy=dy)
        preview = harness.wait(lambda: (p := harness.page_json(driver, "preview-json"))["count"] > before and p,
                               600, "the probe preview", interval=0.01)
        previewed = time.perf_counter()
        harness.frame_after(driver, source, timeout=600, interval=0.01)
        shown = time.perf_counter()
        moves = driver.execute_script("return window.hsMoves")
        rows.append({"release_to_preview_state_ms": round(1000 * (previewed - released), 1),
                     "release_to_new_axial_frame_ms": round(1000 * (shown - released), 1),
                     "server_preview_ms": preview["ms"], "moves": len(moves),
                     "burst_ms": round(moves[-1] - moves[0], 1) if moves else 0.0,
                     "recomputes": harness.page_json(driver, "preview-json")["count"] - before})
        if index == 0:
            driver.save_screenshot(str(shots / "explore-drag.png"))
        time.sleep(1.0)
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    missing = harness.missing_browser_stack()
    if missing:
        raise SystemExit(f"cannot drive the browser: {missing}")
    shots = args.screenshots
    shots.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="explore-demo-") as work:
        run, cohort, scan = copy_inputs(args.run, args.cohort, args.case, Path(work))
        server = harness.ExploreServer(run, scan, cohort, preview_delay_ms=args.preview_delay_ms)
        driver = None
        try:
            started = time.perf_counter()
            server.wait(600)
            driver = harness.start_browser()
            harness.open_page(driver, server.url)
            print(f"page ready {time.perf_counter() - started:.1f} s after the server started", flush=True)
            driver.save_screenshot(str(shots / "explore-start.png"))

            case = first_non_main_style_member(run) or driver.find_element(
                "css selector", "circle.sample").get_attribute("data-case")
            sample = driver.find_element("css selector", f"circle.sample[data-case='{case}']")
            # events sent to the circle itself: in a dense style its neighbours overlap it on screen
            driver.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))", sample)
            harness.wait(lambda: harness.page_json(driver, "preview-json")["point"] == case, 600, f"the {case} preview")
            driver.execute_script("arguments[0].dispatchEvent(new MouseEvent('mouseenter'))", sample)
            harness.wait(lambda: case in driver.find_element("id", "hovered").text, 30, "the hover text")
            time.sleep(1.0)
            driver.save_screenshot(str(shots / "explore-sample.png"))

            drags = time_drags(driver, args.drags, shots)

            driver.execute_script("arguments[0].dispatchEvent(new MouseEvent('click', {bubbles: true}))",
                                  driver.find_element("css selector", f"circle.sample[data-case='{case}']"))
            harness.wait(lambda: harness.page_json(driver, "preview-json")["point"] == case, 600, f"the {case} preview")
            driver.find_element("id", "accept").click()
            accepted = harness.wait(lambda: driver.find_elements("css selector", ".accepted"), 600, "the accepted files")
            driver.execute_script("arguments[0].scrollIntoView({block: 'end'})", accepted[0])
            time.sleep(1.0)
            driver.save_screenshot(str(shots / "explore-accept.png"))

            driver.find_element("css selector", "#reviewer").send_keys("demo reviewer")
            driver.find_element("id", "start-review").click()
            rows = harness.wait(lambda: driver.find_elements("css selector", ".review-row"), 60, "the review table")
            source = harness.views(driver)[0].get_attribute("src")
            rows[0].find_element("css selector", ".open-case").click()
            harness.wait(lambda: driver.find_elements("id", "review-verdict"), 300, "the review case")
            harness.frame_after(driver, source)
            driver.find_element("id", "verdict-wrong").click()
            harness.wait(lambda: driver.find_elements("css selector", ".review-row .verdict")[0].text == "wrong", 30,
                         "the verdict")
            driver.execute_script("arguments[0].scrollIntoView({block: 'start'})",
                                  driver.find_element("id", "review-verdict"))
            time.sleep(1.0)
            driver.save_screenshot(str(shots / "explore-review.png"))
            error = harness.page_error(driver)
            if error:
                raise SystemExit(f"the page shows an error: {error}")
        finally:
            if driver is not None:
                driver.quit()
            server.stop()
    report(args, drags)
    return 0


def report(args: argparse.Namespace, drags: list[dict]) -> None:
    from machine import describe

    frames = [d["release_to_new_axial_frame_ms"] for d in drags]
    states = [d["release_to_preview_state_ms"] for d in drags]
    server = [d["server_preview_ms"] for d in drags]
    summary = {"run": str(args.run), "machine": describe("cpu"), "cpu_count": os.cpu_count(),
               "load_average_1min_at_end": round(os.getloadavg()[0], 2), "preview_delay_ms": args.preview_delay_ms,
               "drags": drags, "median_release_to_new_axial_frame_ms": statistics.median(frames),
               "max_release_to_new_axial_frame_ms": max(frames),
               "median_release_to_preview_state_ms": statistics.median(states),
               "median_server_preview_ms": statistics.median(server),
               "recomputes_per_burst": sorted({d["recomputes"] for d in drags})}
    (args.screenshots / "explore-latency.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print("| drags | burst | release -> preview state (median) | release -> new axial frame (median / max) "
          "| server: segment + MRML (median) | debounce |")
    print(f"| {len(drags)} | {drags[0]['moves']} moves in {statistics.median(d['burst_ms'] for d in drags):.0f} ms "
          f"| {summary['median_release_to_preview_state_ms']:.0f} ms "
          f"| {summary['median_release_to_new_axial_frame_ms']:.0f} / {summary['max_release_to_new_axial_frame_ms']:.0f} ms "
          f"| {summary['median_server_preview_ms']:.0f} ms | {args.preview_delay_ms:.0f} ms |")


if __name__ == "__main__":
    raise SystemExit(main())
