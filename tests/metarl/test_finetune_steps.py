"""``train finetune --timesteps``: the steps it announces, trains and counts on its bar agree."""

from __future__ import annotations

import pytest

from metarl.algorithms import finetune as ft
from metarl.cli import main as cli_main

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/metarl/conftest.py


@pytest.mark.parametrize(("algo", "timesteps", "num_envs", "expected"), [
    ("ppo", 3000, 8, 4096),  # 2 rollouts of 256 steps x 8 envs
    ("ppo", 2048, 8, 2048),  # already whole rollouts
    ("ppo", 600, 2, 1024),
    ("sac", 30, 8, 32),  # one step of every env per round
])
def test_pretrain_steps_round_up_to_whole_collection_rounds(
    algo: str, timesteps: int, num_envs: int, expected: int
) -> None:
    config = ft.FinetuneConfig(family="Point2DNav", algo=algo, timesteps=timesteps, num_envs=num_envs)
    assert config.pretrain_steps == expected


@pytest.mark.parametrize(("algo", "timesteps", "num_envs"), [("ppo", 600, 2), ("sac", 30, 4)])
def test_the_command_says_trains_and_counts_the_same_steps(
    algo: str, timesteps: int, num_envs: int, tmp_path, capsys, monkeypatch
) -> None:
    seen: dict[str, int] = {}
    on_training_end = ft.training._TrainingMonitor._on_training_end

    def spy(monitor: ft.training._TrainingMonitor) -> None:  # what SB3 trained, and where the bar ended
        seen.update(trained=monitor.num_timesteps, bar=monitor._bar.n, total=monitor._bar.total)
        on_training_end(monitor)

    monkeypatch.setattr(ft.training._TrainingMonitor, "_on_training_end", spy)
    out = tmp_path / "run"
    assert cli_main(["train", "finetune", "--env", "Point2DNav", "--algo", algo, "--timesteps", str(timesteps),
                     "--num-envs", str(num_envs), "--hidden-sizes", "8", "--out", str(out), "--device", "cpu"]) == 0
    expected = ft.FinetuneConfig(family="Point2DNav", algo=algo, timesteps=timesteps,
                                 num_envs=num_envs).pretrain_steps
    assert expected > timesteps  # these budgets are not whole rounds
    assert seen == {"trained": expected, "bar": expected, "total": expected}
    stdout = capsys.readouterr().out
    assert f"pretraining {expected:,} steps: --timesteps {timesteps:,} rounded up" in stdout
    assert f"for {expected:,} steps" in stdout
