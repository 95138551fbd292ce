"""``hypersort analyze``: the audit of a tiny trained run, its files, its metrics and its errors."""

from __future__ import annotations

import base64
import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_config, write_sphere_dataset
from HyperSORTLib.analysis import analyze_run
from HyperSORTLib.latentmap import score_clusters, score_detection
from HyperSORTLib.analysis.audit import HIGHER_IS_SUSPICIOUS, SIGNALS
from HyperSORTLib.latentmap.scores import combine_signals
from HyperSORTLib.cli import main
from HyperSORTLib.data import SegmentationCases, read_nnunet_folder, training_transforms
from HyperSORTLib.inference import TrainedRun
from HyperSORTLib.training import RunDirectoryError, Trainer
from HyperSORTLib.training.losses import DiceCELoss

N_CASES = 8
ERRONEOUS = ("case_006", "case_007")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _write_manifest(path: Path, case_ids, columns=("case_id", "group", "erroneous")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for i, case_id in enumerate(case_ids):
            group = "erroneous" if case_id in ERRONEOUS else ("clean" if i % 2 else "style")
            row = {"case_id": case_id, "group": group, "erroneous": int(case_id in ERRONEOUS)}
            writer.writerow([row.get(c, "") for c in columns])
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A run trained for 3 epochs on 8 sphere cases (about 2 s), with a manifest beside it."""
    root = tmp_path_factory.mktemp("analyze")
    data = write_sphere_dataset(root / "data", n_cases=N_CASES)
    config = tiny_config(epochs=3)
    cases = read_nnunet_folder(data)
    Trainer(config, SegmentationCases(cases, training_transforms(config.data)), cases.case_ids, root / "run",
            progress=False, data_source={"path": str(data), "format": "nnunet"}).fit()
    manifest = _write_manifest(root / "manifest.csv", cases.case_ids)
    return {"root": root, "data": data, "run": root / "run", "manifest": manifest}


@pytest.fixture(scope="module")
def tiny_run(trained) -> dict:
    """The trained run analysed with its manifest into ``out``."""
    out = trained["root"] / "out"
    result = analyze_run(trained["run"], out_dir=out, manifest=trained["manifest"], device="cpu", use_cache=False)
    return {**trained, "result": result, "out": out}


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames), list(reader)


# --------------------------------------------------------------------------- outputs
@pytest.mark.slow
def test_samples_csv_columns_rows_and_scores(tiny_run):
    header, rows = _read_csv(tiny_run["out"] / "samples.csv")
    names = tiny_run["result"].class_names[1:]
    assert header == ["case_id", "z1", "z2", "cluster", "component", "style_stability", "density_gmm", "density_kde", "own_loss", "main_mode_loss",
                      "mode_distance", "knn_score", "suspicion", "rank", *[f"label_vs_main_{n}" for n in names],
                      "group", "erroneous"]
    assert [r["case_id"] for r in rows] == [f"case_{i:03d}" for i in range(N_CASES)]
    assert sorted(int(r["rank"]) for r in rows) == list(range(1, N_CASES + 1))
    suspicion = np.array([float(r["suspicion"]) for r in rows])
    order = np.argsort([int(r["rank"]) for r in rows])
    assert np.all(np.diff(suspicion[order]) <= 1e-12), "rank 1 must be the highest suspicion"
    # The CSV holds the computed signals; the combined score is their mean rank.
    result = tiny_run["result"]
    signals = {s: np.array([float(r[s]) if r[s] else np.nan for r in rows]) for s in SIGNALS}
    for name in SIGNALS:
        np.testing.assert_allclose(signals[name], result.signals[name], rtol=1e-5, atol=1e-12, err_msg=name)
    np.testing.assert_array_equal(combine_signals(result.signals, HIGHER_IS_SUSPICIOUS), result.suspicion)
    np.testing.assert_allclose(suspicion, result.suspicion, rtol=1e-5)
    # own_loss is the run's latents.csv loss; the latents are the run's.
    _, latent_rows = _read_csv(tiny_run["run"] / "latents.csv")
    np.testing.assert_allclose(signals["own_loss"], [float(r["loss"]) for r in latent_rows], rtol=1e-5)
    run = TrainedRun.load(tiny_run["run"], device="cpu")
    np.testing.assert_allclose([[float(r["z1"]), float(r["z2"])] for r in rows], run.latents, rtol=1e-6)
    assert [r["erroneous"] for r in rows] == ["1" if r["case_id"] in ERRONEOUS else "0" for r in rows]


@pytest.mark.slow
def test_main_mode_loss_matches_a_direct_evaluation(tiny_run):
    result = tiny_run["result"]
    run = TrainedRun.load(tiny_run["run"], device="cpu")
    centre = result.clusters.centers[result.clusters.main_cluster].astype(np.float32)
    item = SegmentationCases(read_nnunet_folder(tiny_run["data"]), training_transforms(run.config.data))[5]
    with torch.no_grad():
        logits = run.decode(centre)(item["image"][None])
    expected = DiceCELoss()(logits, item["label"][None].long()).total.item()
    assert result.signals["main_mode_loss"][5] == pytest.approx(expected, rel=1e-4)
    # The annotation's volume of every class over the volume that UNet draws on the same scan.
    n = len(result.class_names)
    drawn = np.bincount(logits.argmax(1).ravel().numpy(), minlength=n)[1:]
    labelled = np.bincount(item["label"].long().ravel().numpy(), minlength=n)[1:]
    np.testing.assert_allclose(result.label_vs_main[5], labelled / drawn, rtol=1e-6)
    assert np.all(np.isfinite(result.label_vs_main[5])) and not np.allclose(result.label_vs_main[5], 1.0)
    # samples.csv and metrics.json carry it; the members unlike their UNet are named with their class.
    _, rows = _read_csv(tiny_run["out"] / "samples.csv")
    np.testing.assert_allclose([float(rows[5][f"label_vs_main_{c}"]) for c in result.class_names[1:]],
                               result.label_vs_main[5], rtol=1e-5)
    metrics = json.loads((tiny_run["out"] / "metrics.json").read_text())["main_mode"]
    main_size = int((result.clusters.labels == result.clusters.main_cluster).sum())
    assert metrics["annotations_alike"] + len(metrics["annotations_unlike"]) == main_size
    main = result.clusters.labels == result.clusters.main_cluster
    assert result.annotation_offsets.shape == result.label_vs_main.shape
    assert np.isfinite(result.annotation_offsets).all()
    for entry in metrics["annotations_unlike"]:
        i = result.case_ids.index(entry["case_id"])
        k = result.class_names.index(entry["class"]) - 1
        usual = np.median(result.annotation_offsets[main, k])
        assert abs(np.exp(result.annotation_offsets[i, k] - usual) - 1.0) > 0.15 or result.label_vs_main[i, k] == 0


def test_the_main_modes_annotations_are_compared_with_its_unet_class_by_class():
    from types import SimpleNamespace

    from HyperSORTLib.analysis.annotations import annotations_alike, describe_annotations, label_vs_main

    ratios = label_vs_main(np.array([[100, 50], [125, 50], [100, 0], [100, 50], [90, 60], [80, 50]]),
                           np.array([[100, 50], [100, 50], [100, 50], [100, 50], [100, 50], [100, 0]]))
    result = SimpleNamespace(label_vs_main=ratios, case_ids=tuple(f"case_{i}" for i in range(6)),
                             class_names=("background", "liver", "spleen"),
                             clusters=SimpleNamespace(labels=np.array([0, 0, 0, 0, 1, 0]), main_cluster=0))
    alike, unlike = annotations_alike(result, 0.15)
    # case_4 is outside the main mode; case_1's liver is 25 % larger, case_2 omits the spleen, and
    # case_5 annotates a spleen where the UNet draws none (and a liver 20 % smaller).
    assert alike == 2
    assert [(case, name) for case, name, _ in unlike] == [("case_5", "spleen"), ("case_2", "spleen"),
                                                          ("case_1", "liver")]
    text = describe_annotations(result, 0.15, shown=2)
    assert text == ("2 of its 5 members annotate every class like its usual member, within 15% and 3 robust standard "
                    "deviations of the class (each annotation measured against its UNet on the same scan, with the "
                    "UNet's trend with organ size removed); the others: case_5 (spleen annotated where its UNet draws "
                    "none), case_2 (spleen omitted) and 1 more")
    # What the UNet draws smaller on every scan cancels: members are compared with the usual ratio.
    result.label_vs_main = ratios * np.array([1.0, 0.7])
    assert annotations_alike(result, 0.15)[0] == 2
    assert describe_annotations(SimpleNamespace(label_vs_main=None), 0.15) == ""
    # With the UNet's trend with organ size removed (annotation_offsets), a large liver that only looks
    # 25 % larger than the UNet draws it is alike; the offsets decide, the plain ratios only mark omissions.
    result.label_vs_main = ratios
    result.annotation_offsets = np.zeros((6, 2))
    assert annotations_alike(result, 0.15)[1] == [("case_5", "spleen", float("inf")), ("case_2", "spleen", 0.0)]
    # A class whose annotations vary widely between members (a small organ) names a member only beyond three
    # robust standard deviations: 20 % is within the noise of a class whose members spread by 10 %.
    from HyperSORTLib.analysis.annotations import unlike_members

    rng = np.random.default_rng(0)
    offsets = np.stack([rng.normal(0, 0.02, 40), rng.normal(0, 0.1, 40)], axis=1)
    offsets[0] = [np.log(1.2), 0.0]
    offsets[1] = [0.0, np.log(1.2)]
    named = unlike_members(np.exp(offsets), offsets, np.arange(40), 0.15)
    assert [(i, k) for i, k, _ in named] == [(0, 0)] and named[0][2] == pytest.approx(1.2, abs=0.02)


@pytest.mark.slow
def test_clusters_csv_and_metrics(tiny_run):
    result = tiny_run["result"]
    header, rows = _read_csv(tiny_run["out"] / "clusters.csv")
    assert header == ["cluster", "kind", "size", "weight", "z1", "z2", "is_main_mode", "consistency", "components",
                      "members", "description"]
    assert len(rows) == result.clusters.n_clusters
    assert sum(int(r["size"]) for r in rows) == N_CASES
    assert sum(float(r["weight"]) for r in rows) == pytest.approx(1.0, abs=1e-4)
    assert [r["is_main_mode"] for r in rows].count("1") == 1
    main = int(next(r["cluster"] for r in rows if r["is_main_mode"] == "1"))
    assert main == result.clusters.main_cluster
    assert rows[main]["description"].startswith("segments like the main mode")
    assert all(r["description"] for r in rows)
    # Every case is a member of exactly one row, the row samples.csv gives it.
    _, samples = _read_csv(tiny_run["out"] / "samples.csv")
    member_of = {case: r["cluster"] for r in rows for case in r["members"].split()}
    assert member_of == {r["case_id"]: r["cluster"] for r in samples}
    # Styles come first, then the isolated groups; every mixture component is in one row.
    kinds = [r["kind"] for r in rows]
    assert kinds == sorted(kinds, key=lambda k: k != "style") and set(kinds) <= {"style", "isolated"}
    components = sorted(int(c) for r in rows for c in r["components"].split())
    assert components == list(range(result.mixture.n_clusters))

    metrics = json.loads((tiny_run["out"] / "metrics.json").read_text(), parse_constant=pytest.fail)
    assert metrics["n_samples"] == N_CASES and metrics["latent_dim"] == 2
    assert metrics["n_clusters"] == len(rows) and metrics["main_mode"]["cluster"] == main
    assert len(metrics["probe_cases"]) == 3 and len(metrics["clusters"]) == len(rows)
    assert metrics["clusters"][main]["classes"][0]["name"] == "ball_a"
    # Manifest metrics agree with the library's metrics on the written table.
    _, samples = _read_csv(tiny_run["out"] / "samples.csv")
    errors = np.array([int(r["erroneous"]) for r in samples])
    suspicion = np.array([float(r["suspicion"]) for r in samples])
    expected = score_detection(suspicion, errors)
    for key in ("auroc", "average_precision", "precision_at_k", "k"):
        assert metrics[key] == pytest.approx(expected[key], abs=1e-5), key
    isolated = {r["cluster"] for r in rows if r["kind"] == "isolated"}
    pooled = [-1 if r["cluster"] in isolated else int(r["cluster"]) for r in samples]
    agreement = score_clusters(pooled, [r["group"] for r in samples])
    assert metrics["ari"] == pytest.approx(agreement["ari"]) and metrics["nmi"] == pytest.approx(agreement["nmi"])
    assert set(metrics["detection_by_signal"]) == set(SIGNALS)
    knn = metrics["detection_by_signal"]["knn_score"]
    assert knn["auroc"] == pytest.approx(score_detection([float(r["knn_score"]) for r in samples], errors)["auroc"],
                                         abs=1e-5)
    assert metrics["manifest"]["n_erroneous"] == 2
    assert metrics["manifest"]["group_sizes"] == {"clean": 3, "erroneous": 2, "style": 3}


@pytest.mark.slow
def test_report_is_self_contained_with_plots_and_tables(tiny_run):
    text = (tiny_run["out"] / "report.html").read_text(encoding="utf-8")
    uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(uris) == 4  # clusters, suspicion, manifest groups, probe overlays
    assert all(base64.b64decode(u)[:8] == PNG_SIGNATURE for u in uris)
    assert not re.search(r"(src|href)=\"(https?:)?//", text), "the report must not load anything"
    assert "<script" not in text and "<link" not in text
    for heading in ("Summary", "Latent map", "Styles: what each annotation style does",
                    "Detection against the manifest", "Samples, most suspicious first"):
        assert f"<h2>{heading}" in text
    assert text.count("<table>") >= 4
    assert "(average linkage; components of a style's size merge first" in text  # the default merge, in words
    assert "<code>hypersort compare --runs RUN OTHER_RUN</code>" in text  # how to check the styles
    for i in range(N_CASES):
        assert f"case_{i:03d}" in text
    figures = sorted(p.name for p in (tiny_run["out"] / "figures").iterdir())
    assert figures == ["latent_map_clusters.png", "latent_map_groups.png", "latent_map_suspicion.png",
                       "probe_overlays.png"]
    assert not list(tiny_run["out"].rglob(".*.tmp")), "temporary files left behind"


@pytest.mark.slow
def test_default_output_manifest_from_dataset_and_given_probes(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run["run"], run)
    moved = tmp_path / "moved"
    shutil.copytree(tiny_run["data"], moved)
    result = analyze_run(run, data=moved, probe_cases="case_002, case_005", device="cpu", use_cache=False)
    assert result.out_dir == run / "analysis"
    assert result.manifest is None and result.metrics["manifest"] is None and "auroc" not in result.metrics
    header, _ = _read_csv(run / "analysis" / "samples.csv")
    assert "group" not in header and "erroneous" not in header
    assert result.metrics["probe_cases"] == ["case_002", "case_005"]
    assert "No manifest was given" in (run / "analysis" / "report.html").read_text()
    # A manifest.csv beside the dataset is used by default; same run, same scores.
    _write_manifest(moved / "manifest.csv", result.case_ids)
    again = analyze_run(run, out_dir=tmp_path / "again", data=moved, device="cpu", use_cache=False)
    assert again.manifest is not None and again.manifest.path == moved / "manifest.csv"
    np.testing.assert_allclose(again.suspicion, tiny_run["result"].suspicion)
    assert again.metrics["auroc"] == pytest.approx(tiny_run["result"].metrics["auroc"])


@pytest.mark.slow
def test_cli_writes_report_and_prints_summary(tiny_run, tmp_path, capsys):
    code = main(["analyze", "--run", str(tiny_run["run"]), "--out", str(tmp_path / "cli"), "--manifest",
                 str(tiny_run["manifest"]), "--probe", "case_001", "--device", "cpu", "--no-progress", "--no-cache",
                 "--stability-seeds", "2", "--linkage", "complete", "--small-components", "merge",
                 "--volume-scale", "pair", "--annotations", "members"])
    assert code == 0
    out = capsys.readouterr().out
    assert "most suspicious" in out and "main mode: " in out and str(tmp_path / "cli" / "report.html") in out
    for name in ("report.html", "samples.csv", "clusters.csv", "metrics.json"):
        assert (tmp_path / "cli" / name).is_file()
    # Style stability over two other mixture fits: a share per case, summarised in metrics.json.
    _, samples = _read_csv(tmp_path / "cli" / "samples.csv")
    stability = np.array([float(r["style_stability"]) for r in samples])
    assert np.all((stability >= 0) & (stability <= 1))
    metrics = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert metrics["style_stability"]["mean"] == pytest.approx(stability.mean(), abs=1e-5)
    assert metrics["seeds"] == {"training": 0, "mixture": 0, "stability_refits": 2}
    assert metrics["main_mode"]["thresholds"]["linkage"] == "complete"
    assert metrics["main_mode"]["thresholds"]["small_components"] == "merge"
    assert metrics["main_mode"]["thresholds"]["volume_scale"] == "pair"
    assert metrics["main_mode"]["thresholds"]["annotations"] == "members"
    report = (tmp_path / "cli" / "report.html").read_text()
    assert "(complete linkage)" in report and "usual volume" not in report and "annotate some class differently" in report
    default_report = (tiny_run["out"] / "report.html").read_text()
    assert "measured against that volume" in default_report and "annotate some class differently" not in default_report
    assert "form a style of their own" in default_report
    assert tiny_run["result"].metrics["main_mode"]["thresholds"]["annotations"] == "split"
    # Without refits the column is there and empty.
    _, plain = _read_csv(tiny_run["out"] / "samples.csv")
    assert all(r["style_stability"] == "" for r in plain)


@pytest.mark.slow
def test_cases_cached_by_training_are_read_not_preprocessed(tiny_run, tmp_path):
    from HyperSORTLib.data.cache import PreprocessCache
    from HyperSORTLib.data.preprocessing import preprocess_case

    run = TrainedRun.load(tiny_run["run"], device="cpu")
    cases = read_nnunet_folder(tiny_run["data"])
    cache = PreprocessCache(tmp_path / "cache")
    volume = preprocess_case(cases.cases[3], cases, run.config.data)
    volume.image[...] = 0.0  # a cache entry that differs from the files, to see which one is used
    cache.store(cache.case_key(cases.cases[3], cases, run.config.data), volume, "case_003")
    result = analyze_run(tiny_run["run"], out_dir=tmp_path / "out", manifest=tiny_run["manifest"], device="cpu",
                         cache_dir=tmp_path / "cache", probe_cases="case_003")
    reference = tiny_run["result"].signals["main_mode_loss"]
    changed = np.flatnonzero(~np.isclose(result.signals["main_mode_loss"], reference, rtol=1e-6))
    assert changed.tolist() == [3]
    assert np.all(result.probes[0].image == 0.0)
    assert sorted(p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()) == sorted(
        p.name for p in cache.paths(cache.case_key(cases.cases[3], cases, run.config.data))), "cache written to"


# --------------------------------------------------------------------------- bad input
def test_run_from_another_format_version(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    config = run / "config.json"
    config.write_text(config.read_text().replace('"format_version": 1', '"format_version": 7'))
    with pytest.raises(RunDirectoryError, match="run format 7"):
        analyze_run(run, device="cpu")


def test_bad_manifests(trained, tmp_path):
    ids = [f"case_{i:03d}" for i in range(N_CASES)]
    short = _write_manifest(tmp_path / "short.csv", ids[:-2])
    with pytest.raises(ValueError, match=r"short.csv has no row for 2 .*case_006, case_007"):
        analyze_run(trained["run"], out_dir=tmp_path / "x", manifest=short, device="cpu")
    no_group = _write_manifest(tmp_path / "nogroup.csv", ids, columns=("case_id", "erroneous"))
    with pytest.raises(ValueError, match="nogroup.csv lacks the column.s. group"):
        analyze_run(trained["run"], out_dir=tmp_path / "x", manifest=no_group, device="cpu")
    bad = tmp_path / "bad.csv"
    bad.write_text("case_id,group,erroneous\n" + "".join(f"{c},clean,{'maybe' if c == 'case_003' else 0}\n"
                                                         for c in ids))
    with pytest.raises(ValueError, match="case 'case_003': 'erroneous' must be 1 or 0"):
        analyze_run(trained["run"], out_dir=tmp_path / "x", manifest=bad, device="cpu")
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        analyze_run(trained["run"], out_dir=tmp_path / "x", manifest=tmp_path / "nowhere.csv", device="cpu")
    assert not (tmp_path / "x").exists(), "nothing is written when the input is bad"


def test_unknown_probe_ids(trained, tmp_path):
    with pytest.raises(ValueError, match="Probe case.s. case_999 are not training cases"):
        analyze_run(trained["run"], out_dir=tmp_path / "x", probe_cases=["case_001", "case_999"], device="cpu")


def test_missing_dataset_says_to_pass_data(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained["run"], run)
    config = run / "config.json"
    doc = json.loads(config.read_text())
    doc["data_source"]["path"] = str(tmp_path / "gone")
    config.write_text(json.dumps(doc))
    with pytest.raises(FileNotFoundError, match="gone .*pass --data DATA_DIR"):
        analyze_run(run, device="cpu")
    with pytest.raises(FileNotFoundError, match="given with --data does not exist"):
        analyze_run(run, data=tmp_path / "also_gone", device="cpu")
    other = write_sphere_dataset(tmp_path / "other", n_cases=5)
    with pytest.raises(ValueError, match="lacks 3 of the run's 8 training case.s.: case_005"):
        analyze_run(run, data=other, device="cpu")
    doc["data_source"] = {}
    config.write_text(json.dumps(doc))
    with pytest.raises(FileNotFoundError, match="does not record where the training cases are.*--data"):
        analyze_run(run, device="cpu")


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    assert main(["analyze", "--run", str(tmp_path / "missing_run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hypersort analyze: error:") and "config.json is missing" in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_an_audit_of_unfinished_training_says_so(tiny_run, tmp_path, capsys):
    assert tiny_run["result"].metrics["training"] == {"epoch": 3, "epochs": 3, "finished": True}
    assert "note:" not in tiny_run["result"].summary()
    # The same weights in a run configured for 6 epochs: training stopped (or is running) at epoch 3.
    run = tmp_path / "run"
    shutil.copytree(tiny_run["run"], run)
    doc = json.loads((run / "config.json").read_text())
    doc["config"]["train"]["epochs"] = 6
    (run / "config.json").write_text(json.dumps(doc))
    code = main(["analyze", "--run", str(run), "--manifest", str(tiny_run["manifest"]), "--device", "cpu",
                 "--no-progress", "--no-cache"])
    assert code == 0
    out = capsys.readouterr().out
    assert "note: the weights are from epoch 3 of the 6 configured: training has not finished" in out
    metrics = json.loads((run / "analysis" / "metrics.json").read_text())
    assert metrics["training"]["finished"] is False and metrics["training"]["epoch"] == 3
    assert "Note: the weights are from epoch 3 of the 6 configured" in (run / "analysis" / "report.html").read_text()
