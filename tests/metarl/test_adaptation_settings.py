"""A run adapts the same way everywhere: evaluate, render, random-init --like and the API read one
AdaptationSettings from its config.json (docs/design.md, "Evaluation protocol")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from metarl.algorithms import adaptation
from metarl.algorithms.adaptation import AdaptationSettings
from metarl.cli import main as cli_main
from metarl.evaluation import protocol
from metarl.storage.runs import RunDir
from metarl.video import policies, run_videos

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/metarl/conftest.py

FAMILY = "Point2DNav"
TINY_MAML = ["--env", FAMILY, "--preset", "tiny", "--iterations", "1", "--meta-batch-size", "2",
             "--episodes-per-task", "2", "--hidden-sizes", "8", "8", "--seed", "5", "--device", "cpu",
             "--no-progress", "--no-tensorboard"]
SMALL_EVAL = ["--split", "test", "--num-tasks", "2", "--episodes-per-step", "2", "--steps", "2", "--device", "cpu",
              "--no-progress"]


class InnerSteps:
    """Records every inner_step call (its settings and the adapted parameters) of evaluate and render."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[dict[str, Any]] = []
        real = adaptation.inner_step

        def spy(policy, params, episodes, lr, objective="vpg", discount=0.99, gae_lambda=1.0, **kwargs):  # noqa: ANN001, ANN202
            adapted = real(policy, params, episodes, lr, objective, discount, gae_lambda, **kwargs)
            self.calls.append({"lr": lr, "objective": objective, "discount": discount, "gae_lambda": gae_lambda,
                               "normalize_advantages": kwargs.get("normalize_advantages", True),
                               "params": {n: v.detach().clone() for n, v in adapted.items()}})
            return adapted

        monkeypatch.setattr(protocol, "inner_step", spy)  # metarl evaluate
        monkeypatch.setattr(adaptation, "inner_step", spy)  # metarl render (imported where it adapts)

    def take(self) -> list[dict[str, Any]]:
        calls, self.calls = self.calls, []
        return calls


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny MAML run trained with --normalize-advantages False, and its random-init counterpart (--like)."""
    root = tmp_path_factory.mktemp("runs")
    maml, rnd = root / "maml", root / "rnd"
    assert cli_main(["train", "maml", *TINY_MAML, "--normalize-advantages", "False", "--out", str(maml)]) == 0
    assert cli_main(["train", "random-init", "--like", str(maml), "--out", str(rnd)]) == 0
    return maml, rnd


def _render_steps(run: Path, steps: InnerSteps, seed: int = 11) -> list[dict[str, Any]]:
    config = RunDir(run).read_config()
    options = run_videos.RenderOptions(num_tasks=2, episodes_per_step=2, seed=seed, device="cpu")
    task = run_videos.select_task(config["family"], options)
    policies.gradient_run_policies(RunDir(run), config, task, (0, 2), options)
    return steps.take()


def test_a_run_trained_without_normalisation_is_adapted_without_it_by_evaluate_render_and_random_init(
    runs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    maml, rnd = runs
    steps = InnerSteps(monkeypatch)
    for run in (maml, rnd):
        assert cli_main(["evaluate", str(run), *SMALL_EVAL]) == 0
        evaluated = steps.take()
        rendered = _render_steps(run, steps)
        assert len(evaluated) == 2 and len(rendered) == 2
        for call in evaluated + rendered:
            assert call["normalize_advantages"] is False, (run.name, call)
        # the same settings at every step, whichever path adapts
        assert [{k: c[k] for k in ("lr", "objective", "discount", "gae_lambda")} for c in evaluated] == \
               [{k: c[k] for k in ("lr", "objective", "discount", "gae_lambda")} for c in rendered]


def test_every_path_reads_the_same_settings_from_config_json(runs: tuple[Path, Path]) -> None:
    from metarl.algorithms.random_init import config_like
    from metarl.api import load_run

    maml, rnd = runs
    settings = AdaptationSettings.from_config(RunDir(maml).read_config())
    assert settings == AdaptationSettings(inner_lr=0.1, normalize_advantages=False)
    assert protocol.adaptation_settings(RunDir(maml).read_config()) == settings  # evaluate and render
    assert config_like(maml).adaptation() == settings  # random-init --like
    assert AdaptationSettings.from_config(RunDir(rnd).read_config()) == settings  # what the random-init run stores
    assert RunDir(rnd).read_config()["adaptation"]["normalize_advantages"] is False
    assert load_run(maml).adaptation == settings and load_run(rnd).adaptation == settings  # the Python API
    assert settings.lrs(3) == [0.1, 0.05, 0.05]


def test_render_adapts_a_task_exactly_as_evaluate_does(runs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """One task evaluated alone (--tasks) from the render's seed: the same adapted parameters at every k."""
    maml, _ = runs
    steps = InnerSteps(monkeypatch)
    config = RunDir(maml).read_config()
    options = run_videos.RenderOptions(num_tasks=2, task_index=1, episodes_per_step=2, seed=11, device="cpu")
    task = run_videos.select_task(FAMILY, options)
    policies.gradient_run_policies(RunDir(maml), config, task, (0, 2), options)
    rendered = steps.take()
    tasks_file = maml.parent / "task.json"
    tasks_file.write_text(json.dumps([task.to_dict()]))
    assert cli_main(["evaluate", str(maml), "--tasks", str(tasks_file), "--episodes-per-step", "2", "--steps", "2",
                     "--seed", "11", "--device", "cpu", "--no-progress"]) == 0
    evaluated = steps.take()
    assert len(rendered) == len(evaluated) == 2
    for by_render, by_evaluate in zip(rendered, evaluated, strict=True):
        assert by_render["lr"] == by_evaluate["lr"]
        for name, value in by_render["params"].items():
            assert torch.equal(value, by_evaluate["params"][name]), name


def test_runs_written_before_settings_were_recorded_keep_today_s_defaults() -> None:
    old_random_init = {"method": "random_init", "adaptation": {"inner_lr": 0.5, "inner_objective": "vpg",
                                                               "discount": 0.99, "gae_lambda": 1.0}}
    assert AdaptationSettings.from_config(old_random_init) == AdaptationSettings(inner_lr=0.5)
    assert AdaptationSettings.from_config({"method": "maml", "maml": {"inner_lr": 0.2}}).normalize_advantages is True
    with pytest.raises(ValueError, match="names no inner_lr under 'maml' or 'adaptation'"):
        AdaptationSettings.from_config({"method": "maml"})
    with pytest.raises(ValueError, match="inner objective must be one of"):
        AdaptationSettings(inner_lr=0.1, inner_objective="sgd")
    with pytest.raises(ValueError, match="normalize_advantages must be true or false"):
        AdaptationSettings(inner_lr=0.1, normalize_advantages=1)  # type: ignore[arg-type]
