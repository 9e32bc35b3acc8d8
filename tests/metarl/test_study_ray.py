"""Studies on a local Ray instance (loopback, 2 CPUs): completion, resume, retries after killed workers,
file sync away from the study directory, a rerun that does nothing, and the report against compare."""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("ray")

from metarl.cli import main as cli_main  # noqa: E402
from metarl.cluster.ray_support import init_ray  # noqa: E402
from metarl.evaluation.compare import compare_runs  # noqa: E402
from metarl.evaluation.results import group_by_seed, pooled_result  # noqa: E402
from metarl.storage.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from metarl.studies.report import method_results, write_report  # noqa: E402
from metarl.studies.runner import RunOptions, run_study  # noqa: E402
from metarl.studies.spec import parse_study  # noqa: E402
from metarl.studies.store import store_name  # noqa: E402
from tests.metarl.test_study import tiny_document  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    import ray

    init_ray(num_cpus=2)
    assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}
    yield ray
    ray.shutdown()


def _snapshot(folder: Path) -> dict[Path, tuple[bytes, int]]:
    return {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in folder.rglob("*") if path.is_file()}


def _assert_same_checkpoint(path: Path, reference: Path) -> None:
    tensors, metadata = load_checkpoint(path)
    expected, expected_metadata = load_checkpoint(reference)
    assert tensors.keys() == expected.keys()
    for name in expected:
        assert torch.equal(tensors[name], expected[name]), name
    assert metadata["iteration"] == expected_metadata["iteration"]
    assert metadata["env_steps"] == expected_metadata["env_steps"]


def _uninterrupted(spec, plan, out: Path) -> Path:
    """The plan's run trained in one go in this process, into ``out``; returns its checkpoint."""
    argv = plan.train_argv(out.parent, resume=False)
    argv[argv.index("--out") + 1] = str(out)
    threads = torch.get_num_threads()
    try:
        assert cli_main(["train", plan.train, *argv]) == 0
    finally:
        torch.set_num_threads(threads)
    return out / "checkpoint" / "latest.safetensors"


def test_tiny_study_completes_resumes_reruns_as_nothing_and_reports_compare_rows(
    local_ray, tmp_path: Path
) -> None:
    document = tiny_document()
    document["evaluation"]["splits"] = ["test", "ood"]
    spec = parse_study(document)
    study = tmp_path / "study"
    maml = spec.plans()[0]
    # a run begun before the study (1 of its 2 iterations): the study resumes it with --resume
    argv = maml.train_argv(study, resume=False)
    argv[argv.index("--iterations") + 1] = "1"
    assert cli_main(["train", "maml", *argv]) == 0

    result = run_study(spec, study, RunOptions(num_cpus=2, progress=False))
    assert sorted(result.done) == sorted(plan.key for plan in spec.plans()) and not result.failed
    manifest = json.loads((study / "manifest.json").read_text())
    assert {run["status"] for run in manifest["runs"]} == {"done"}
    assert all(run["attempts"] == 1 and run["wall_seconds"] > 0 for run in manifest["runs"])
    assert manifest["versions"]["ray"] and manifest["versions"]["torch"]
    for plan in spec.plans():
        assert (study / plan.path / "eval_test.json").is_file() and (study / plan.path / "eval_ood.json").is_file()
    _assert_same_checkpoint(study / maml.path / "checkpoint" / "latest.safetensors",
                            _uninterrupted(spec, maml, tmp_path / "reference" / "seed0"))

    before = _snapshot(study)
    again = run_study(spec, study, RunOptions(num_cpus=2, progress=False))
    assert again.done == [] and sorted(again.skipped) == sorted(result.done)
    assert _snapshot(study) == before

    report = write_report(study)
    text = report.read_text()
    for split in ("test", "ood"):
        rows, missing = method_results(study, manifest, "Point2DNav", split)
        assert not missing and [row.label.split(" (")[0] for row in rows] == ["maml-trpo", "random-init"]
        for row, method in zip(rows, ("maml-trpo", "random-init"), strict=True):
            seeds = sorted((study / "runs" / "Point2DNav" / method).glob("seed*"))
            assert group_by_seed(seeds, split) == [seeds]  # compare --group-seeds pools them into one row
            table, _ = compare_runs(seeds, split, tmp_path / f"compare-{method}-{split}", group_seeds=True)
            expected = pooled_result(seeds, split)
            for field in ("mean", "mean_ci95", "iqm", "iqm_ci95"):
                np.testing.assert_array_equal(getattr(row, field), getattr(expected, field))
            # the report's rows show compare's numbers, the returns', the IQM's and the paired gains' (rows
            # with a share improved, in %): every cell after the label
            report_table = (study / "report" / "Point2DNav" / split / "comparison.md").read_text()
            compare_rows = [line for line in table.splitlines() if line.startswith("| seed")]
            report_rows = [line for line in text.splitlines() if line.startswith(f"| {method} (")
                           and line in report_table]
            assert len(compare_rows) == len(report_rows) == 3 and "%" in compare_rows[2]
            for report_row, compare_row in zip(report_rows, compare_rows, strict=True):
                assert report_row.split("|")[2:] == compare_row.split("|")[2:]
        assert (study / "report" / "Point2DNav" / split / "return_vs_k.png").is_file()
    assert "Generalisation gap" in text and "env steps" in text
    assert (study / "report" / "Point2DNav" / "training_curves.png").is_file()


def test_killed_workers_resume_from_synced_checkpoints_to_the_uninterrupted_weights(
    local_ray, tmp_path: Path
) -> None:
    document = tiny_document(seeds=[3])
    document["methods"] = {"maml-trpo": {"train": "maml", "options": {
        "preset": "tiny", "iterations": 14, "checkpoint-every": 1, "device": "cpu", "threads": 1,
        "no-tensorboard": True}}}
    spec = parse_study(document)
    (plan,) = spec.plans()
    study, worker = tmp_path / "study", tmp_path / "worker"
    outcome: dict = {}

    def drive() -> None:
        try:
            outcome["result"] = run_study(spec, study, RunOptions(
                num_cpus=2, progress=False, max_retries=4, worker_dir=str(worker), sync_seconds=0.2))
        except BaseException as error:  # reported by the assertion below
            outcome["error"] = error

    driver = threading.Thread(target=drive)
    driver.start()
    rng = random.Random(int(time.time()))
    checkpoint = study / plan.path / "checkpoint" / "latest.safetensors"
    killed_at, observed = [], []
    deadline = time.time() + 240
    while len(killed_at) < 2 and time.time() < deadline and driver.is_alive():
        try:
            store = local_ray.get_actor(store_name(study))
            attempts = local_ray.get(store.status.remote()).get(plan.key, [])
        except ValueError:  # the store is not up yet
            attempts = []
        iteration = load_checkpoint(checkpoint)[1]["iteration"] if checkpoint.is_file() else 0
        observed.append(iteration)
        seen = killed_at[-1] if killed_at else 0
        if len(attempts) == len(killed_at) + 1 and attempts[-1]["end"] is None and iteration > seen:
            time.sleep(rng.uniform(0.0, 1.5))  # a random point of the training
            os.kill(attempts[-1]["pid"], signal.SIGKILL)
            killed_at.append(load_checkpoint(checkpoint)[1]["iteration"])
        time.sleep(0.1)
    driver.join(timeout=300)
    observed.append(load_checkpoint(checkpoint)[1]["iteration"])
    assert "error" not in outcome, outcome.get("error")
    assert len(killed_at) == 2 and max(killed_at) < 14, killed_at
    assert outcome["result"].done == [plan.key]
    manifest = json.loads((study / "manifest.json").read_text())
    assert manifest["runs"][0]["attempts"] == 3 and manifest["runs"][0]["status"] == "done"
    # each retry resumed from the checkpoint that had reached the study directory: had one started over,
    # its first checkpoints would have replaced the later one there
    assert observed == sorted(observed) and observed[-1] == 14, observed
    # the run worked in a copy under worker/ (removed once every file reached the study directory)
    assert (worker / store_name(study)).is_dir() and not (worker / store_name(study) / plan.path).exists()
    assert (study / plan.path / "eval_test.json").is_file()
    _assert_same_checkpoint(checkpoint, _uninterrupted(spec, plan, tmp_path / "reference" / "seed3"))



STUDY_TOML = """
name = "stop"
families = ["Point2DNav"]
seeds = [0, 1]
[evaluation]
splits = ["test"]
num_tasks = 2
episodes_per_step = 2
steps = 1
device = "cpu"
[methods.maml-trpo]
train = "maml"
# long enough that SIGTERM reaches both runs mid-training even on a loaded 2-core machine
options = { preset = "tiny", iterations = 120, checkpoint-every = 1, device = "cpu", threads = 1, no-tensorboard = true }
"""


def test_sigterm_stops_every_run_with_its_checkpoint_and_a_rerun_finishes(tmp_path: Path) -> None:
    import subprocess
    import sys

    study_file, study = tmp_path / "stop.toml", tmp_path / "study"
    study_file.write_text(STUDY_TOML)
    command = [sys.executable, "-m", "metarl.cli", "study", "run", str(study_file), "--out", str(study),
               "--num-cpus", "2", "--no-progress"]
    # started as `nohup metarl study run ... &` starts it: SIGINT ignored, which Ray's workers inherit
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    checkpoints = [study / "runs" / "Point2DNav" / "maml-trpo" / f"seed{seed}" / "checkpoint" /
                   "latest.safetensors" for seed in (0, 1)]
    def saved_iteration(path: Path) -> int:  # a trainer writes the checkpoint of iteration 0 first
        try:
            return load_checkpoint(path)[1]["iteration"]
        except (FileNotFoundError, CheckpointError):
            return 0

    deadline = time.time() + 240
    while not all(saved_iteration(path) >= 1 for path in checkpoints) and time.time() < deadline:
        time.sleep(0.5)
    driver.send_signal(signal.SIGTERM)
    output, _ = driver.communicate(timeout=180)
    assert driver.returncode == 143, output
    manifest = json.loads((study / "manifest.json").read_text())
    assert {run["status"] for run in manifest["runs"]} == {"stopped"}, output
    assert [(s["outcome"], bool(s["ended"])) for s in manifest["sessions"]] == [("stopped", True)]
    saved = [load_checkpoint(path)[1]["iteration"] for path in checkpoints]
    assert all(1 <= iteration < 120 for iteration in saved), saved
    # the interrupted runs continue from their checkpoints
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    manifest = json.loads((study / "manifest.json").read_text())
    assert {run["status"] for run in manifest["runs"]} == {"done"}
    assert all(run["attempts"] == 2 for run in manifest["runs"])
    assert [s["outcome"] for s in manifest["sessions"]] == ["stopped", "finished"]
    from metarl.studies.report import write_report

    assert "2 sessions (1 finished, 1 stopped): the study was continued 1 time." in write_report(study).read_text()
    assert all(load_checkpoint(path)[1]["iteration"] == 120 for path in checkpoints)


def test_only_runs_the_selected_runs_and_what_they_need_and_leaves_the_others(local_ray, tmp_path: Path) -> None:
    spec = parse_study(tiny_document())
    study = tmp_path / "study"
    result = run_study(spec, study, RunOptions(num_cpus=2, progress=False, only=("*/random-init/seed1",)))
    assert sorted(result.done) == ["Point2DNav/maml-trpo/seed1", "Point2DNav/random-init/seed1"]
    statuses = {run["key"]: run["status"] for run in json.loads((study / "manifest.json").read_text())["runs"]}
    assert statuses == {"Point2DNav/maml-trpo/seed0": "waiting", "Point2DNav/maml-trpo/seed1": "done",
                        "Point2DNav/random-init/seed0": "waiting", "Point2DNav/random-init/seed1": "done"}
    assert not (study / "runs" / "Point2DNav" / "maml-trpo" / "seed0").exists()
    again = run_study(spec, study, RunOptions(num_cpus=2, progress=False, only=("Point2DNav/*/seed1",)))
    assert again.done == [] and len(again.skipped) == 2
    rest = run_study(spec, study, RunOptions(num_cpus=2, progress=False))
    assert sorted(rest.done) == ["Point2DNav/maml-trpo/seed0", "Point2DNav/random-init/seed0"]
