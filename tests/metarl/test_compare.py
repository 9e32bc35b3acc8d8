"""metarl.evaluation.compare and `metarl compare`: table, CSV and plots from eval_<split>.json files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metarl.cli import main as cli_main
from metarl.evaluation.compare import compare_runs
from metarl.evaluation.results import group_by_seed, load_run_result, pooled_result
from metarl.evaluation.stats import summarize


def _write_run(
    directory: Path,
    method: str,
    per_task: np.ndarray,
    split: str = "ood",
    family: str = "Point2DNav",
) -> Path:
    """A run directory holding only an eval document in the schema of docs/design.md, "Run files" (per_task: [tasks, K])."""
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps({"method": method, "family": family}))
    document = {
        "method": method,
        "family": family,
        "split": split,
        "num_tasks": per_task.shape[0],
        "episodes_per_step": 20,
        "returns": summarize(per_task, reps=200),
        "per_task": [{"task": {"i": i}, "returns": row.tolist()} for i, row in enumerate(per_task)],
        "samples_per_step": 8000,
        "adapt_seconds": 1.25,
        "params": 10_702,
        "flops_per_forward": 21_000,
    }
    (directory / f"eval_{split}.json").write_text(json.dumps(document))
    return directory


def _bootstrap_mean_interval(scores: np.ndarray, reps: int = 4000, seed: int = 123) -> np.ndarray:
    """Independent reference: percentile bootstrap of the mean, resampling tasks and, within each
    task, seeds, with replacement (scores ``[seeds, tasks, K]``); returns ``[K, 2]`` 95% bounds."""
    rng = np.random.default_rng(seed)
    runs, tasks, _ = scores.shape
    means = []
    for _ in range(reps):
        task_index = rng.integers(0, tasks, size=tasks)
        run_index = rng.integers(0, runs, size=(runs, tasks))
        means.append(scores[run_index, task_index[None, :]].mean(axis=(0, 1)))
    return np.percentile(np.array(means), [2.5, 97.5], axis=0).T


def _trimmed_mean(values: np.ndarray) -> float:
    """Interquartile mean written out: sort, drop int(0.25 n) from each end, average the rest."""
    ordered = np.sort(values.reshape(-1))
    cut = int(0.25 * ordered.size)
    return float(ordered[cut : ordered.size - cut].mean())


def _assert_interval_close(got: np.ndarray, expected: np.ndarray) -> None:
    """Bootstrap endpoints agree up to Monte-Carlo noise: 15% of the interval's width."""
    got, expected = np.asarray(got), np.asarray(expected)
    width = expected[:, 1] - expected[:, 0]
    assert np.all(width > 0)
    assert np.all(np.abs(got - expected) < 0.15 * width[:, None]), (got.tolist(), expected.tolist())


@pytest.fixture
def two_runs(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    improving = np.array([-40.0, -20.0, -12.0, -10.0]) + rng.normal(
        0, 2, size=(10, 4)
    )  # [tasks, K]
    flat = np.array([-80.0, -75.0, -72.0, -70.0]) + rng.normal(0, 2, size=(10, 4))
    return [
        _write_run(tmp_path / "maml_run", "maml", improving),
        _write_run(tmp_path / "rand", "random_init", flat),
    ]


def test_compare_writes_table_csv_and_plots(two_runs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "report"
    table, written = compare_runs(two_runs, "ood", out)
    assert {p.name for p in written} == {
        "comparison.md", "comparison.csv", "return_vs_k.png", "return_vs_samples.png"
    }  # fmt: skip
    maml = load_run_result(two_runs[0], "ood")
    # the table holds each run's mean and interval at every k, and the cost columns
    lines = table.splitlines()
    assert "Point2DNav, split ood, 10 tasks" in lines[0]
    row = next(line for line in lines if line.startswith("| maml_run "))
    for k in range(4):
        lo, hi = maml.mean_ci95[k]
        assert f"{maml.mean[k]:.1f} [{lo:.1f}, {hi:.1f}]" in row
    assert "8,000" in row and "10,702" in row and "1.25" in row
    assert (out / "comparison.md").read_text() == table
    # the CSV: one row per (run, k), samples = k * samples_per_step
    rows = list(csv.DictReader((out / "comparison.csv").open()))
    assert len(rows) == 8
    assert [int(r["samples"]) for r in rows if r["label"] == "maml_run"] == [0, 8000, 16000, 24000]
    assert float(rows[3]["mean"]) == pytest.approx(maml.mean[3])
    # area under return-vs-samples / budget, by the trapezoid rule
    m = maml.mean
    assert float(rows[0]["auc_per_budget"]) == pytest.approx(
        (m[0] / 2 + m[1] + m[2] + m[3] / 2) / 3
    )
    for name in ("return_vs_k.png", "return_vs_samples.png"):
        with Image.open(out / name) as image:
            assert image.size[0] > 300 and image.size[1] > 200


def test_cli_compare_prints_the_table_and_adds_reference_rows(
    two_runs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    reference = tmp_path / "paper.json"
    reference.write_text(
        json.dumps(
            {
                "source": "a paper",
                "returns": {"Point2DNav": {"maml": [-40.4, -11.7, -3.3, -3.2], "oracle": -2.3}},
            }
        )
    )
    code = cli_main(
        [
            "compare",
            *map(str, two_runs),
            "--split",
            "ood",
            "--out",
            str(tmp_path / "o"),
            "--reference",
            str(reference),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "| maml_run | maml |" in printed and "| rand | random_init |" in printed
    assert "| paper maml | maml | -40.4 | -11.7 | -3.3 | -3.2 |" in printed
    assert "oracle" not in printed  # scalars of the reference are not curves


def test_missing_evaluation_names_the_command_to_run(
    two_runs: list[Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert (
        cli_main(["compare", *map(str, two_runs), "--split", "test", "--out", str(tmp_path / "o")])
        == 2
    )
    error = " ".join(capsys.readouterr().err.split())
    assert "eval_test.json does not exist" in error and "metarl evaluate" in error


def test_runs_of_different_families_are_refused(tmp_path: Path) -> None:
    a = _write_run(tmp_path / "a", "maml", np.zeros((4, 2)))
    b = _write_run(tmp_path / "b", "maml", np.zeros((4, 2)), family="HalfCheetahDir")
    with pytest.raises(ValueError, match="one family"):
        compare_runs([a, b], "ood", tmp_path / "o")


def test_protonet_and_bad_split_are_refused(tmp_path: Path) -> None:
    run = tmp_path / "proto"
    run.mkdir()
    (run / "eval_test.json").write_text(json.dumps({"method": "protonet", "accuracy": {}}))
    with pytest.raises(ValueError, match="ProtoNet"):
        load_run_result(run, "test")
    with pytest.raises(ValueError, match="test, ood"):
        load_run_result(run, "train")


def test_output_that_is_a_file_is_refused(two_runs: list[Path], tmp_path: Path) -> None:
    blocker = tmp_path / "report"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        compare_runs(two_runs, "ood", blocker)


def test_missing_intervals_are_recomputed_from_per_task_returns(tmp_path: Path) -> None:
    per_task = np.arange(12, dtype=np.float64).reshape(6, 2)  # [tasks, K]
    run = _write_run(tmp_path / "old", "maml", per_task)
    path = run / "eval_ood.json"
    document = json.loads(path.read_text())
    del document["returns"]["mean_ci95"]
    path.write_text(json.dumps(document))
    result = load_run_result(run, "ood")
    np.testing.assert_allclose(result.mean, per_task.mean(axis=0))
    _assert_interval_close(result.mean_ci95, _bootstrap_mean_interval(per_task[None]))


def _write_seed_run(
    directory: Path,
    seed: int,
    per_task: np.ndarray,
    inner_lr: float = 0.5,
    episodes_per_step: int = 20,
) -> Path:
    """A MAML run of a given seed: config.json with the seed, eval document as _write_run."""
    run = _write_run(directory, "maml", per_task)
    config = {
        "method": "maml",
        "family": "Point2DNav",
        "seed": seed,
        "device": "cpu",
        "inner_lr": inner_lr,
    }
    (run / "config.json").write_text(json.dumps(config))
    path = run / "eval_ood.json"
    document = json.loads(path.read_text())
    document["episodes_per_step"] = episodes_per_step
    path.write_text(json.dumps(document))
    return run


def test_group_seeds_pools_only_runs_that_differ_in_their_seed(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    per_seed = [
        np.array([-40.0, -12.0, -4.0, -3.0]) + rng.normal(0, 2, size=(8, 4)) for _ in range(3)
    ]  # each [tasks, K]
    seeds = [_write_seed_run(tmp_path / f"s{i}", i, r) for i, r in enumerate(per_seed)]
    other_lr = _write_seed_run(tmp_path / "lr", 0, per_seed[0], inner_lr=0.1)
    other_protocol = _write_seed_run(tmp_path / "ep40", 3, per_seed[1], episodes_per_step=40)
    runs = [seeds[0], other_lr, seeds[1], other_protocol, seeds[2]]

    groups = group_by_seed(runs, "ood")
    assert groups == [seeds, [other_lr], [other_protocol]]

    pooled = pooled_result(seeds, "ood")
    stacked = np.stack(per_seed)  # [seeds, tasks, K]
    np.testing.assert_allclose(pooled.mean, stacked.mean(axis=(0, 1)))
    _assert_interval_close(pooled.mean_ci95, _bootstrap_mean_interval(stacked))
    np.testing.assert_allclose(pooled.iqm, [_trimmed_mean(stacked[..., k]) for k in range(4)])
    # pooling three seeds narrows the interval against one seed's
    single = load_run_result(seeds[0], "ood")
    assert np.all(np.diff(pooled.mean_ci95, axis=1) < np.diff(single.mean_ci95, axis=1))
    assert pooled.seeds == 3
    assert pooled.label == "s0 (3 seeds: 0, 1, 2)"

    # the ep40 run was evaluated with 40 episodes per step: tabled beside the others only on request
    with pytest.raises(ValueError, match="episodes_per_step"):
        compare_runs(runs, "ood", tmp_path / "pooled", group_seeds=True)
    table, _ = compare_runs(runs, "ood", tmp_path / "pooled", group_seeds=True, allow_mixed_protocols=True)
    assert table.count("| maml |") == 3
    assert "| s0 (3 seeds: 0, 1, 2) | maml |" in table
    assert "pool N training seeds" in table
    assert "- episodes_per_step (s0 (3 seeds: 0, 1, 2): 20, lr: 20, ep40: 40)" in table
    plain, _ = compare_runs(runs, "ood", tmp_path / "plain", allow_mixed_protocols=True)
    assert plain.count("| maml |") == 5
    assert "pool N training seeds" not in plain


def test_group_seeds_needs_each_runs_config(tmp_path: Path) -> None:
    per_task = np.zeros((4, 2))
    run = _write_seed_run(tmp_path / "a", 0, per_task)
    (run / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        group_by_seed([run], "ood")


def test_cli_compare_group_seeds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    per_task = np.array([[-40.0, -10.0], [-30.0, -8.0]])  # [tasks, K]
    runs = [_write_seed_run(tmp_path / f"r{i}", i, per_task + i) for i in range(2)]
    out = tmp_path / "report"
    argv = ["compare", *map(str, runs), "--split", "ood", "--out", str(out), "--group-seeds"]
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "r0 (2 seeds: 0, 1)" in printed
    assert "-34.5" in printed  # mean of k = 0 over both seeds and both tasks


def test_pooling_runs_of_different_configurations_is_refused(tmp_path: Path) -> None:
    per_task = np.zeros((4, 2))  # [tasks, K]
    runs = [
        _write_seed_run(tmp_path / "a", 0, per_task),
        _write_seed_run(tmp_path / "b", 1, per_task, inner_lr=0.1),
    ]
    with pytest.raises(ValueError, match="differ in more than their seed"):
        pooled_result(runs, "ood")


def test_eval_file_reads_another_evaluation_of_each_run(tmp_path: Path) -> None:
    per_task = np.array([[-40.0, -10.0], [-30.0, -8.0]])  # [tasks, K]
    runs = [_write_seed_run(tmp_path / f"r{i}", i, per_task + i) for i in range(2)]
    for run in runs:  # a second evaluation under another name, shifted by -100
        document = json.loads((run / "eval_ood.json").read_text())
        for row in document["per_task"]:
            row["returns"] = [value - 100.0 for value in row["returns"]]
        document["returns"] = summarize(
            np.asarray([row["returns"] for row in document["per_task"]]), reps=200
        )
        (run / "eval_budget.json").write_text(json.dumps(document))
    single = load_run_result(runs[0], "ood", eval_file="eval_budget.json")
    np.testing.assert_allclose(single.mean, [-135.0, -109.0])
    table, _ = compare_runs(
        runs, "ood", tmp_path / "out", group_seeds=True, eval_file="eval_budget.json"
    )
    assert "-134.5" in table  # k = 0 over both seeds and tasks
    with pytest.raises(ValueError, match="file name inside each run directory"):
        load_run_result(runs[0], "ood", eval_file="../eval_budget.json")
    with pytest.raises(FileNotFoundError, match="eval_missing.json does not exist"):
        load_run_result(runs[0], "ood", eval_file="eval_missing.json")


def test_gain_table_pairs_each_task_with_itself_and_finds_a_gain_the_means_hide(tmp_path: Path) -> None:
    # tasks spread over 200 return points; every step adds 3 on every task, plus noise of 1, for 3 seeds
    rng = np.random.default_rng(5)
    base = rng.uniform(-100.0, 100.0, size=(1, 30, 1))  # [1, tasks, 1]: the same tasks for every seed
    per_seed = base + np.array([0.0, 3.0, 6.0, 9.0]) + rng.normal(0, 1, size=(3, 30, 4))  # [seeds, tasks, K]
    per_seed[0, 0, 1] = per_seed[0, 0, 0] - 5.0  # one (seed, task) pair gets worse at k = 1
    seeds = [_write_seed_run(tmp_path / f"s{i}", i, per_seed[i]) for i in range(3)]
    table, _ = compare_runs(seeds, "ood", tmp_path / "out", group_seeds=True)
    pooled = pooled_result(seeds, "ood")
    # the means' intervals at k = 0 and 1 overlap: the unpaired table cannot tell the step helps
    assert pooled.mean_ci95[1, 0] < pooled.mean_ci95[0, 1]
    gains = per_seed[..., 1:] - per_seed[..., :1]  # [seeds, tasks, K-1]
    reference = _bootstrap_mean_interval(gains)  # written out in this file, independent of stats.py
    row = next(line for line in table.splitlines() if line.startswith("| s0 (3 seeds") and "%" in line)
    cells = [cell.strip() for cell in row.strip("|").split("|")][1:]
    for k, cell in enumerate(cells):
        mean, interval = cell.split(" [")
        low, high = (float(v) for v in interval.split("]")[0].split(", "))
        assert float(mean) == pytest.approx(gains[..., k].mean(), abs=0.051)
        _assert_interval_close(np.array([[low, high]]), reference[k : k + 1])
        assert low > 0  # paired, the gain is clearly positive
    assert cells[0].endswith(f"{(gains[..., 0] > 0).mean():.0%}") and cells[0].endswith("99%")
    assert cells[2].endswith("100%")
    rows = list(csv.DictReader((tmp_path / "out" / "comparison.csv").open()))
    assert float(rows[1]["gain"]) == pytest.approx(gains[..., 0].mean())
    assert float(rows[1]["share_improved"]) == pytest.approx(89 / 90)
    assert rows[0]["gain"] == "0.0" and rows[0]["share_improved"] == ""


def test_iqm_table_shows_the_interquartile_mean_and_its_interval_at_every_k(tmp_path: Path) -> None:
    # 3 seeds x 20 tasks; a few tasks with huge returns pull the mean up but not the IQM
    rng = np.random.default_rng(7)
    per_seed = rng.normal(10.0, 2.0, size=(3, 20, 3)) + np.array([0.0, 1.0, 2.0])
    per_seed[:, :2, :] += 500.0
    seeds = [_write_seed_run(tmp_path / f"s{i}", i, per_seed[i]) for i in range(3)]
    table, _ = compare_runs(seeds, "ood", tmp_path / "out", group_seeds=True)
    lines = table.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Interquartile mean"))
    row = next(line for line in lines[start:] if line.startswith("| s0 (3 seeds"))
    cells = [cell.strip() for cell in row.strip("|").split("|")][1:]
    assert len(cells) == 3
    for k, cell in enumerate(cells):
        values = np.sort(per_seed[..., k].ravel())
        middle = values[len(values) // 4: len(values) - len(values) // 4]  # 60 values: the middle 30
        mean, interval = cell.split(" [")
        low, high = (float(v) for v in interval.rstrip("]").split(", "))
        assert float(mean) == pytest.approx(middle.mean(), abs=0.051)
        assert low < float(mean) < high < 20.0  # the huge tasks are outside the middle half
    pooled = pooled_result(seeds, "ood")
    assert pooled.mean[0] > 40.0  # while the mean is pulled far up
