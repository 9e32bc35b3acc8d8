"""`metarl compare` refuses runs evaluated under different protocols, names what differs, and tables them on request."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from metarl.cli import main as cli_main
from metarl.evaluation.compare import MixedProtocolsError, compare_runs
from metarl.evaluation.document import (
    ReturnsDocument,
    ReturnsProtocol,
    ReturnsSummary,
    TaskReturns,
    write_eval_json,
)
from metarl.evaluation.stats import summarize

FAMILY = "Point2DNav"  # registered horizon: 100


def _run(
    directory: Path,
    method: str = "maml",
    *,
    horizon: int = 100,
    num_tasks: int = 4,
    episodes_per_step: int = 20,
    inner_lrs: tuple[float, ...] = (0.1, 0.05, 0.05),
    samples_per_step_budget: int | None = None,
    offset: float = 0.0,
) -> Path:
    """A run directory with config.json and an eval_test.json written through the typed document."""
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps({"method": method, "family": FAMILY, "horizon": horizon}))
    steps = len(inner_lrs)
    per_task = np.linspace(-40.0, -10.0, steps + 1) + offset + np.arange(num_tasks)[:, None]  # [tasks, K]
    summary = summarize(per_task, reps=100)
    document = ReturnsDocument(
        method=method,
        protocol=ReturnsProtocol(family=FAMILY, split="test", num_tasks=num_tasks, episodes_per_step=episodes_per_step,
                                 steps=steps, samples_per_step_budget=samples_per_step_budget, inner_lrs=inner_lrs,
                                 eval_seed=20170, horizon=horizon),
        returns=ReturnsSummary(summary["mean"], summary["iqm"], summary["ci95"], summary["mean_ci95"]),
        per_task=tuple(TaskReturns({"family": FAMILY, "goal_x_m": 0.1 * i, "goal_y_m": 0.0}, tuple(row))
                       for i, row in enumerate(per_task.tolist())),
        samples_per_step=num_tasks * episodes_per_step * horizon,
        adapt_seconds=0.5,
        params=10_604,
        flops_per_forward=20_800,
        macs_per_forward=10_400,
    )
    write_eval_json(directory, document)
    return directory


def _refusal(runs: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """What `metarl compare` prints on stderr when it refuses ``runs`` (exit 2, nothing written)."""
    out = tmp_path / "out"
    assert cli_main(["compare", *map(str, runs), "--split", "test", "--out", str(out)]) == 2
    assert not (out / "comparison.md").exists()
    error = capsys.readouterr().err
    assert error.count("\n") == 1, error  # one paragraph
    return error


def test_horizon_50_beside_horizon_200_is_refused_naming_the_horizon(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    runs = [_run(tmp_path / "h50", horizon=50), _run(tmp_path / "h200", horizon=200)]
    error = _refusal(runs, tmp_path, capsys)
    assert "horizon (h50: 50, h200: 200)" in error
    assert "--allow-mixed-protocols" in error
    for field in ("num_tasks", "episodes_per_step", "inner_lrs", "steps"):
        assert field not in error.split("Evaluate them alike")[0]  # only what differs is named


def test_40_tasks_beside_4_is_refused_naming_the_task_count(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    runs = [_run(tmp_path / "forty", num_tasks=40), _run(tmp_path / "four", num_tasks=4)]
    error = _refusal(runs, tmp_path, capsys)
    assert "num_tasks (forty: 40, four: 4)" in error
    assert "horizon" not in error.split("Evaluate them alike")[0]


def test_a_sample_budget_beside_episodes_is_refused(tmp_path: Path) -> None:
    runs = [_run(tmp_path / "episodes"), _run(tmp_path / "budget", samples_per_step_budget=4000)]
    with pytest.raises(MixedProtocolsError) as caught:
        compare_runs(runs, "test", tmp_path / "out")
    assert [d.field for d in caught.value.differences] == ["samples_per_step_budget"]
    assert "budget: 4000 env steps" in str(caught.value) and "episodes: by episodes" in str(caught.value)


def test_learning_rates_differing_within_one_method_are_refused(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    runs = [_run(tmp_path / "lr01"), _run(tmp_path / "lr05", inner_lrs=(0.5, 0.25, 0.25))]
    error = _refusal(runs, tmp_path, capsys)
    assert "inner_lrs of maml (lr01: [0.1, 0.05, 0.05], lr05: [0.5, 0.25, 0.25])" in error


def test_different_methods_under_one_protocol_compare_as_before(tmp_path: Path) -> None:
    # each method adapts with its own learning rates (an SGD step size, Adam's): not a protocol difference
    runs = [_run(tmp_path / "maml"), _run(tmp_path / "finetune", "finetune", inner_lrs=(3e-4,) * 3, offset=-20.0)]
    table, written = compare_runs(runs, "test", tmp_path / "out")
    assert "| maml | maml |" in table and "| finetune | finetune |" in table
    assert "different protocols" not in table
    assert (tmp_path / "out" / "comparison.md").read_text() == table and len(written) == 4


def test_the_flag_tables_mixed_runs_with_the_differences_beside(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    runs = [_run(tmp_path / "h50", horizon=50, num_tasks=40), _run(tmp_path / "h200", horizon=200)]
    out = tmp_path / "out"
    argv = ["compare", *map(str, runs), "--split", "test", "--out", str(out), "--allow-mixed-protocols"]
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "| h50 | maml |" in printed and "| h200 | maml |" in printed
    assert "- horizon (h50: 50, h200: 200)" in printed
    assert "- num_tasks (h50: 40, h200: 4)" in printed
    assert "- horizon (h50: 50, h200: 200)" in (out / "comparison.md").read_text()


def test_version_1_documents_take_the_horizon_from_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A document written before the schema had a version records no horizon: the run's config.json says it."""
    new = _run(tmp_path / "new", horizon=50)
    old = _run(tmp_path / "old", horizon=50)
    path = old / "eval_test.json"
    document = json.loads(path.read_text())
    for key in ("schema_version", "kind", "horizon"):
        del document[key]
    path.write_text(json.dumps(document))
    table, _ = compare_runs([new, old], "test", tmp_path / "same")
    assert "| old | maml |" in table
    # the old run trained (and so was evaluated) with the family's horizon, 100
    (old / "config.json").write_text(json.dumps({"method": "maml", "family": FAMILY, "horizon": None}))
    error = _refusal([new, old], tmp_path, capsys)
    assert "horizon (new: 50, old: 100)" in error
