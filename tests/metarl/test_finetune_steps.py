"""``train finetune --timesteps``: the steps it announces, trains and counts on its bar agree."""

from __future__ import annotations

import pytest

from metarl.algorithms import finetune as ft
from metarl.cli import main as cli_main
from metarl.storage.checkpoint import load_checkpoint
from metarl.storage.runs import read_metrics

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
    algo: str, timesteps: int, num_envs: int, tmp_path, capsys
) -> None:
    out = tmp_path / "run"
    assert cli_main(["train", "finetune", "--env", "Point2DNav", "--algo", algo, "--timesteps", str(timesteps),
                     "--num-envs", str(num_envs), "--hidden-sizes", "8", "--out", str(out), "--device", "cpu",
                     "--no-progress"]) == 0
    config = ft.FinetuneConfig(family="Point2DNav", algo=algo, timesteps=timesteps, num_envs=num_envs)
    expected = config.pretrain_steps
    assert expected > timesteps  # these budgets are not whole rounds
    rows = read_metrics(out / "metrics.csv")  # one row per iteration of the training loop
    per_round = ft.steps_per_round(algo, ft.default_hyperparameters(algo), num_envs)
    per_iteration = per_round * (1 if algo == "ppo" else 100)  # SAC: an iteration is horizon (100) rounds
    assert [row["train/timesteps"] for row in rows] == [
        min(expected, per_iteration * (i + 1)) for i in range(-(-expected // per_iteration))
    ]
    _, metadata = load_checkpoint(out / "checkpoint" / "latest.safetensors")
    assert metadata["env_steps"] == expected and metadata["iteration"] == len(rows)
    stdout = capsys.readouterr().out
    assert f"pretraining {expected:,} steps: --timesteps {timesteps:,} rounded up" in stdout
    assert f"for {expected:,} steps" in stdout
