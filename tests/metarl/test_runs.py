"""Run directories: refusal of a different run, metrics.csv rows, resume truncation."""

from __future__ import annotations

from pathlib import Path

import pytest

from metarl.storage.runs import MetricsLogger, RunDir, RunDirError, check_run_dir, read_metrics

CONFIG = {"method": "maml", "family": "Point2DNav", "seed": 0, "iterations": 4, "device": "cpu",
          "run": {"meta_batch_size": 2, "hidden_sizes": [8, 8]}}


def test_new_run_then_refusals(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_dir = check_run_dir(out, CONFIG, resume=False)
    assert not out.exists()  # checking writes nothing
    run_dir.write_config(CONFIG)
    assert run_dir.read_config() == CONFIG
    with pytest.raises(RunDirError, match="already holds this run; pass --resume"):
        check_run_dir(out, CONFIG, resume=False)
    other = {**CONFIG, "family": "HalfCheetahVel"}
    with pytest.raises(RunDirError, match="different run.*family"):
        check_run_dir(out, other, resume=True)
    nested = {**CONFIG, "run": {"meta_batch_size": 3, "hidden_sizes": [8, 8]}}
    with pytest.raises(RunDirError, match="run.meta_batch_size: 2 -> 3"):
        check_run_dir(out, nested, resume=True)
    # resume may extend iterations or move device
    check_run_dir(out, {**CONFIG, "iterations": 10, "device": "cuda"}, resume=True)
    assert run_dir.read_config() == CONFIG


def test_runs_written_before_a_field_existed_resume_with_its_old_value(tmp_path: Path) -> None:
    out = tmp_path / "run"
    check_run_dir(out, CONFIG, resume=False).write_config(CONFIG)  # no nonlinearity / weight_init fields
    newer = {**CONFIG, "nonlinearity": "tanh", "weight_init": "pytorch"}
    check_run_dir(out, newer, resume=True)  # what the older version trained with
    with pytest.raises(RunDirError, match="weight_init: '<absent>' -> 'xavier'"):
        check_run_dir(out, {**newer, "weight_init": "xavier"}, resume=True)
    with pytest.raises(RunDirError, match="nonlinearity: '<absent>' -> 'relu'"):
        check_run_dir(out, {**newer, "nonlinearity": "relu"}, resume=True)


def test_non_run_directories_are_refused(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(RunDirError, match="not empty and holds no metarl run"):
        check_run_dir(tmp_path / "full", CONFIG, resume=False)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(RunDirError, match="is a file"):
        check_run_dir(tmp_path / "afile", CONFIG, resume=False)
    with pytest.raises(RunDirError, match="holds no run"):
        check_run_dir(tmp_path / "new", CONFIG, resume=True)
    (tmp_path / "empty").mkdir()
    check_run_dir(tmp_path / "empty", CONFIG, resume=False)
    with pytest.raises(FileNotFoundError, match="not a metarl run directory"):
        RunDir(tmp_path / "empty").read_config()


def test_metrics_rows_and_resume_truncation(tmp_path: Path) -> None:
    run_dir = RunDir(tmp_path)
    logger = MetricsLogger(run_dir, tensorboard=False)
    for i in (1, 2, 3):
        logger.log(i, {"train/return": -10.0 * i, "time/iteration_s": 0.5})
    logger.log(4, {"train/return": -1.0, "loss/kl": 0.01})  # a new column rewrites the header
    logger.close()
    rows = read_metrics(run_dir.metrics_path)
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4]
    assert rows[1]["train/return"] == -20.0 and rows[3]["loss/kl"] == 0.01 and "loss/kl" not in rows[0]
    # a half-written last line (crash) is dropped, and rows after the checkpoint are discarded
    with run_dir.metrics_path.open("a") as file:
        file.write("5,-3.0,0.")
    resumed = MetricsLogger(run_dir, start_iteration=2, tensorboard=False)
    resumed.log(3, {"train/return": -7.0})
    resumed.close()
    rows = read_metrics(run_dir.metrics_path)
    assert [r["iteration"] for r in rows] == [1, 2, 3] and rows[2]["train/return"] == -7.0


def test_tensorboard_events_are_written(tmp_path: Path) -> None:
    logger = MetricsLogger(RunDir(tmp_path), tensorboard=True)
    logger.log(1, {"train/return": -5.0})
    logger.close()
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tensorboard").iterdir())
