"""The run directory: user files never overwritten, stale or mismatched run state detected,
file-system faults reported as one line, and the readers of its tables."""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml

from conftest import tiny_config, write_sphere_dataset
from HyperSORTLib import rundir
from HyperSORTLib.analysis.audit import analyze_run
from HyperSORTLib.cli import main
from HyperSORTLib.data import SegmentationCases, read_nnunet_folder, training_transforms
from HyperSORTLib.inference import InteractiveSegmenter
from HyperSORTLib.inference.interactive import StaleAnalysisWarning
from HyperSORTLib.training import Callback, Trainer


def _trainer(data: Path, run_dir: Path, config, **kwargs) -> Trainer:
    cases = read_nnunet_folder(data)
    return Trainer(config, SegmentationCases(cases, training_transforms(config.data)), cases.case_ids, run_dir,
                   progress=False, **kwargs)


def _cli_train(data: Path, out: Path, config_file: Path, *extra: str) -> int:
    return main(["train", "--data", str(data), "--out", str(out), "--config", str(config_file), "--no-progress",
                 "--no-cache", *extra])


def _relabel(data: Path, case_id: str) -> None:
    """Change one voxel of a case's label file (same name, same size class, other content)."""
    path = data / "labelsTr" / f"{case_id}.nii.gz"
    image = nib.load(path)
    label = np.asarray(image.dataobj).copy()
    label[0, 0, 0] = 2 if label[0, 0, 0] != 2 else 1
    nib.save(nib.Nifti1Image(label, image.affine), path)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config(epochs=1).to_dict()))
    return path


# --------------------------------------------------------------------------- --out safety
def test_train_refuses_a_foreign_non_empty_folder_and_leaves_it_intact(sphere_dataset, tmp_path, config_file,
                                                                        capsys):
    out = tmp_path / "thesis"
    out.mkdir()
    (out / "chapter1.tex").write_text("irreplaceable")
    (out / "config.json").write_text('{"not": "a run"}')
    assert _cli_train(sphere_dataset, out, config_file) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "chapter1.tex" in err and "config.json" in err and "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["chapter1.tex", "config.json"]
    assert (out / "chapter1.tex").read_text() == "irreplaceable"
    assert (out / "config.json").read_text() == '{"not": "a run"}'


def test_train_accepts_an_empty_folder_and_resumes_a_run(sphere_dataset, tmp_path, config_file):
    out = tmp_path / "empty"
    out.mkdir()
    assert _cli_train(sphere_dataset, out, config_file) == 0
    assert rundir.is_run_dir(out)
    assert _cli_train(sphere_dataset, out, config_file, "--epochs", "2") == 0
    assert rundir.load_training_state(out)["epoch"] == 2


def test_check_run_output_rules(tmp_path):
    rundir.check_run_output(tmp_path / "new")  # absent
    started = tmp_path / "started"
    started.mkdir()
    (started / rundir.SKIPPED_FILE).write_text("case_id,check,message\n")  # a run that failed to start
    rundir.check_run_output(started)
    (tmp_path / "file").write_text("x")
    with pytest.raises(rundir.RunDirectoryError, match="is a file"):
        rundir.check_run_output(tmp_path / "file")


def test_model_weights_get_the_permissions_of_the_other_run_files(sphere_dataset, tmp_path):
    run = tmp_path / "run"
    _trainer(sphere_dataset, run, tiny_config(epochs=1)).fit()
    mode = stat.S_IMODE((run / rundir.CONFIG_FILE).stat().st_mode)
    for name in (rundir.MODEL_FILE, rundir.CHECKPOINT_FILE, rundir.LATENTS_FILE, rundir.LOG_FILE):
        assert stat.S_IMODE((run / name).stat().st_mode) == mode, name
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # what any other program would create, not owner-only


# --------------------------------------------------------------------------- data fingerprint
def test_fingerprint_matches_a_copied_dataset_and_names_a_changed_label(sphere_dataset, tmp_path):
    before = rundir.data_fingerprint(read_nnunet_folder(sphere_dataset))
    copy = shutil.copytree(sphere_dataset, tmp_path / "copy")  # new mtimes, same content
    assert rundir.fingerprint_changes(before, rundir.data_fingerprint(read_nnunet_folder(copy))) == []
    _relabel(copy, "case_002")
    changes = rundir.fingerprint_changes(before, rundir.data_fingerprint(read_nnunet_folder(copy)))
    assert len(changes) == 1 and changes[0].startswith("case_002: label labelsTr/case_002.nii.gz")


def test_resume_on_changed_data_is_refused_then_accepted_and_recorded(tmp_path):
    data = write_sphere_dataset(tmp_path / "data", n_cases=6)
    run = tmp_path / "run"
    _trainer(data, run, tiny_config(epochs=1)).fit()
    doc = json.loads((run / rundir.CONFIG_FILE).read_text())
    assert set(doc["data_fingerprint"]) == {f"case_{i:03d}" for i in range(6)}
    _relabel(data, "case_001")
    _relabel(data, "case_004")
    with pytest.raises(rundir.RunDirectoryError, match=r"2 case\(s\).*case_001.*case_004.*--accept-data-change"):
        _trainer(data, run, tiny_config(epochs=2)).fit()
    assert rundir.load_training_state(run)["epoch"] == 1  # nothing trained
    result = _trainer(data, run, tiny_config(epochs=2), accept_data_change=True).fit()
    assert result.resumed_from == 1 and result.epochs == 2
    doc = json.loads((run / rundir.CONFIG_FILE).read_text())
    assert len(doc["data_changes"]) == 1 and doc["data_changes"][0]["changed_cases"] == 2
    assert doc["data_changes"][0]["time"]
    # The new files are now the recorded ones: the next resume needs no flag.
    _trainer(data, run, tiny_config(epochs=3)).fit()


def test_resume_from_another_dataset_folder_is_refused_without_the_flag(tmp_path, config_file, capsys):
    data = write_sphere_dataset(tmp_path / "data", n_cases=6)
    run = tmp_path / "run"
    assert _cli_train(data, run, config_file) == 0
    moved = shutil.copytree(data, tmp_path / "moved")
    assert _cli_train(moved, run, config_file, "--epochs", "2") == 2
    err = capsys.readouterr().err
    assert str(data) in err and str(moved) in err and "--accept-data-change" in err
    assert _cli_train(moved, run, config_file, "--epochs", "2", "--accept-data-change") == 0
    doc = json.loads((run / rundir.CONFIG_FILE).read_text())
    assert doc["data_source"]["path"] == str(moved)
    assert doc["data_changes"][0]["from"] == str(data) and doc["data_changes"][0]["to"] == str(moved)


# --------------------------------------------------------------------------- analysis
@pytest.fixture(scope="module")
def analysed(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("analysed")
    data = write_sphere_dataset(root / "data", n_cases=6)
    run = root / "run"
    cases = read_nnunet_folder(data)
    config = tiny_config(epochs=2)
    Trainer(config, SegmentationCases(cases, training_transforms(config.data)), cases.case_ids, run,
            progress=False, data_source={"path": str(data), "format": "nnunet"}).fit()
    analyze_run(run, device="cpu", n_probes=1, use_cache=False)
    return {"data": data, "run": run, "root": root}


def test_analysis_records_the_weights_it_analysed(analysed):
    doc = rundir.read_analysis_provenance(analysed["run"] / rundir.ANALYSIS_DIR)
    assert doc["weights_sha256"] == rundir.weights_digest(analysed["run"]) and doc["epoch"] == 2
    metrics = json.loads((analysed["run"] / rundir.ANALYSIS_DIR / rundir.METRICS_FILE).read_text())
    assert metrics["provenance"]["weights_sha256"] == doc["weights_sha256"]
    assert rundir.stale_analysis_reason(analysed["run"]) is None


def test_analyze_on_other_images_under_the_same_ids_is_refused(analysed, tmp_path):
    other = shutil.copytree(analysed["data"], tmp_path / "other")
    _relabel(other, "case_003")
    with pytest.raises(rundir.RunDirectoryError, match="case_003.*--accept-data-change"):
        analyze_run(analysed["run"], out_dir=tmp_path / "out", data=other, device="cpu", use_cache=False)
    assert not (tmp_path / "out").exists()


def test_analyze_refuses_an_out_folder_with_foreign_files(analysed, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.html").write_text("my own report")
    code = main(["analyze", "--run", str(analysed["run"]), "--out", str(out), "--device", "cpu", "--no-progress",
                 "--no-cache"])
    err = capsys.readouterr().err
    assert code == 2 and str(out) in err and "report.html" in err and "--overwrite" in err
    assert (out / "report.html").read_text() == "my own report"
    with pytest.raises(rundir.RunDirectoryError, match="report.html.*--overwrite"):
        rundir.check_analysis_output(out)
    rundir.check_analysis_output(out, overwrite=True)
    rundir.check_analysis_output(analysed["run"] / rundir.ANALYSIS_DIR)  # an earlier analysis is replaced


def test_stale_analysis_after_training_continues(analysed, tmp_path):
    run = shutil.copytree(analysed["run"], tmp_path / "run")
    fresh = InteractiveSegmenter.load(run, device="cpu")
    centre = fresh.cluster_centre(0)  # the analysis describes these weights
    assert fresh.analysis_warning is None and fresh.sample_table() is not None
    cases = read_nnunet_folder(analysed["data"])
    config = tiny_config(epochs=3)
    Trainer(config, SegmentationCases(cases, training_transforms(config.data)), cases.case_ids, run,
            progress=False, data_source={"path": str(analysed["data"]), "format": "nnunet"}).fit()
    seg = InteractiveSegmenter.load(run, device="cpu")
    with pytest.raises(rundir.RunDirectoryError, match=r"epoch 2.*epoch 3.*hypersort analyze"):
        seg.cluster_centre(0)
    with pytest.warns(StaleAnalysisWarning, match="epoch 2"):
        clusters = seg.clusters()
    assert clusters and seg.sample_table() is None  # old tables are not shown with new weights
    assert seg.analysis_warning and "epoch 3" in seg.analysis_warning
    assert centre.shape == clusters[0].centre.shape


def test_segment_cluster_refuses_a_stale_analysis(analysed, tmp_path, capsys):
    run = shutil.copytree(analysed["run"], tmp_path / "run")
    image = analysed["data"] / "imagesTr" / "case_000_0000.nii.gz"
    args = ["segment", "--run", str(run), "--input", str(image), "--cluster", "0", "--device", "cpu",
            "--no-progress"]
    assert main([*args, "--output", str(tmp_path / "ok.nii.gz")]) == 0
    cases = read_nnunet_folder(analysed["data"])
    config = tiny_config(epochs=3)
    Trainer(config, SegmentationCases(cases, training_transforms(config.data)), cases.case_ids, run,
            progress=False, data_source={"path": str(analysed["data"]), "format": "nnunet"}).fit()
    capsys.readouterr()
    assert main([*args, "--output", str(tmp_path / "stale.nii.gz")]) == 2
    err = capsys.readouterr().err
    assert "epoch 2" in err and "epoch 3" in err and "hypersort analyze" in err
    assert not (tmp_path / "stale.nii.gz").exists()


# --------------------------------------------------------------------------- file-system faults
class _CountEpochs(Callback):
    def __init__(self) -> None:
        self.epochs = 0

    def on_epoch_end(self, trainer, stats):
        self.epochs += 1


def test_unwritable_run_folder_fails_before_the_first_epoch(sphere_dataset, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    counter = _CountEpochs()
    with pytest.raises(rundir.RunDirectoryError, match="not writable"):
        _trainer(sphere_dataset, blocker / "run", tiny_config(epochs=1), callbacks=[counter]).fit()
    assert counter.epochs == 0


def test_read_only_run_folder_fails_before_the_first_epoch(sphere_dataset, tmp_path):
    run = tmp_path / "ro"
    run.mkdir()
    run.chmod(0o555)
    try:
        if os.access(run, os.W_OK):
            pytest.skip("running as root: permissions are not enforced")
        counter = _CountEpochs()
        with pytest.raises(rundir.RunDirectoryError, match=f"{run}.*not writable"):
            _trainer(sphere_dataset, run, tiny_config(epochs=1), callbacks=[counter]).fit()
        assert counter.epochs == 0
    finally:
        run.chmod(0o755)


def test_full_disk_while_saving_names_the_file_and_free_space(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:595] . unexpected pos 3904 vs 3800")

    monkeypatch.setattr(torch, "save", full)
    (tmp_path / rundir.CHECKPOINT_FILE).write_bytes(b"previous")
    with pytest.raises(rundir.RunDirectoryError, match=r"checkpoint\.pt: the disk is full \(.* MiB free"):
        rundir.save_training_state(tmp_path, {"epoch": 1})
    assert (tmp_path / rundir.CHECKPOINT_FILE).read_bytes() == b"previous"
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS, errno.ENOSPC, errno.ENOTDIR])
def test_cli_prints_file_system_errors_as_one_line(tmp_path, monkeypatch, capsys, code):
    from HyperSORTLib.commands import analyze

    def fail(args):
        raise OSError(code, os.strerror(code), str(tmp_path / "x"))

    monkeypatch.setattr(analyze, "run", fail)
    assert main(["analyze", "--run", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("hypersort analyze: error:") and str(tmp_path / "x") in err


def test_cli_keeps_the_traceback_of_unexpected_os_errors(tmp_path, monkeypatch):
    from HyperSORTLib.commands import analyze

    monkeypatch.setattr(analyze, "run", lambda args: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(OSError, match="I/O error"):
        main(["analyze", "--run", str(tmp_path)])


# --------------------------------------------------------------------------- table readers
def test_latents_table_round_trip_and_malformed(tmp_path):
    latents = torch.tensor([[0.5, -1.25], [2.0, 3.0], [0.0, 1e-3]])
    losses = torch.tensor([0.1, float("nan"), 0.3])
    rundir.write_latents_csv(tmp_path, ["a", "b", "c"], latents, losses)
    z, loss = rundir.read_latents_table(tmp_path, ["a", "b", "c"])
    np.testing.assert_allclose(z, latents.numpy(), rtol=1e-7)
    assert loss[0] == pytest.approx(0.1) and np.isnan(loss[1])
    with pytest.raises(rundir.RunDirectoryError, match="do not match.*'a' vs 'x'"):
        rundir.read_latents_table(tmp_path, ["x", "b", "c"])
    (tmp_path / rundir.LATENTS_FILE).write_text("case_id,z1,loss\na,oops,0.1\n")
    with pytest.raises(rundir.RunDirectoryError, match="case 'a'"):
        rundir.read_latents_table(tmp_path, ["a"])
    (tmp_path / rundir.LATENTS_FILE).write_text("id,z1\n")
    with pytest.raises(rundir.RunDirectoryError, match="expected a header"):
        rundir.read_latents_table(tmp_path, [])


def test_clusters_table_round_trip_and_malformed(tmp_path):
    path = tmp_path / rundir.CLUSTERS_FILE
    path.write_text("cluster,size,weight,z1,z2,is_main_mode,description\n0,4,0.6,0.5,-1,0,\n1,6,0.4,2,3,1,wider\n")
    clusters = rundir.read_clusters_table(path, 2)
    assert [c.cluster for c in clusters] == [0, 1] and [c.is_main_mode for c in clusters] == [False, True]
    np.testing.assert_array_equal(clusters[1].centre, np.float32([2, 3]))
    assert clusters[1].description == "wider" and clusters[0].size == 4
    assert [c.kind for c in clusters] == ["", ""]  # a table without kinds: mixture clusters, not styles
    assert [c.name for c in clusters] == ["cluster 0", "cluster 1 (main mode)"]
    path.write_text("cluster,size,z1,z2,is_main_mode\n0,4,0.5,-1,0\n1,6,2,3,0\n")
    assert [c.is_main_mode for c in rundir.read_clusters_table(path, 2)] == [False, True]  # largest is main
    path.write_text("cluster,kind,size,z1,z2,is_main_mode,description\n0,style,6,0,0,1,like the main mode\n"
                    "1,style,3,1,1,0,liver larger\n2,isolated,1,2,2,0,spleen missing\n3,other,1,3,3,0,\n")
    clusters = rundir.read_clusters_table(path, 2)
    assert [c.kind for c in clusters] == ["style", "style", "isolated", ""]
    assert [c.name for c in clusters] == ["style 0 (main mode)", "style 1", "isolated 2", "cluster 3"]
    assert rundir.style_name(4, "isolated", True) == "isolated 4"
    path.write_text("cluster,size,z1,is_main_mode\n0,4,0.5,1\n")
    with pytest.raises(rundir.RunDirectoryError, match="z1..z2"):
        rundir.read_clusters_table(path, 2)
    path.write_text("cluster,size,z1,is_main_mode\n0,4,abc,1\n")
    with pytest.raises(rundir.RunDirectoryError, match=str(path)):
        rundir.read_clusters_table(path, 1)


def test_samples_table_reader(tmp_path):
    path = tmp_path / rundir.SAMPLES_FILE
    path.write_text("case_id,z1,cluster\na,0.5,0\nb,1.5,1\n")
    assert rundir.read_samples_table(path) == {"case_id": ["a", "b"], "z1": ["0.5", "1.5"], "cluster": ["0", "1"]}
    path.write_text("case_id,z1,cluster\na,0.5\n")
    with pytest.raises(rundir.RunDirectoryError, match="case 'a': expected 3 values, found 2"):
        rundir.read_samples_table(path)


def test_code_version_names_the_checkout_commit():
    import subprocess

    from HyperSORTLib.utils.versions import code_version

    source = Path(rundir.__file__).resolve().parents[1]
    head = subprocess.run(["git", "-C", str(source), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("HyperSORT does not run from a git checkout here")
    assert code_version().split("-")[0] == head.stdout.strip()
