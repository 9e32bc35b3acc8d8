"""The random-initialisation baseline as a run: create, evaluate, compare, like a MAML run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from metarl.algorithms.random_init import RandomInitConfig, config_like, create_run
from metarl.cli import main as cli_main
from metarl.storage.runs import RunDir, RunDirError, load_policy

SMALL_EVAL = [
    "--split",
    "ood",
    "--num-tasks",
    "3",
    "--episodes-per-step",
    "2",
    "--steps",
    "2",
    "--no-progress",
]


def test_create_run_holds_the_seeded_initial_policy(tmp_path: Path) -> None:
    config = RandomInitConfig(family="Point2DNav", hidden_sizes=(8, 8), seed=3)
    run = create_run(tmp_path / "a", config)
    policy = load_policy(run)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        from metarl.core.policy import GaussianMLPPolicy

        expected = GaussianMLPPolicy(2, 2, (8, 8), 1.0)
    for name, value in expected.named_parameters():
        assert torch.equal(value, dict(policy.named_parameters())[name])
    stored = RunDir(run.path).read_config()
    assert stored["method"] == "random_init" and stored["adaptation"]["inner_lr"] == 0.1
    create_run(tmp_path / "a", config)  # the same run again is fine
    with pytest.raises(RunDirError, match="different run"):
        create_run(
            tmp_path / "a", RandomInitConfig(family="Point2DNav", hidden_sizes=(8, 8), seed=4)
        )


def test_like_copies_a_maml_run(tmp_path: Path) -> None:
    maml = tmp_path / "maml"
    maml.mkdir()
    (maml / "config.json").write_text(
        json.dumps(
            {
                "method": "maml", "family": "HalfCheetahDir", "seed": 7, "horizon": 50,
                "policy": {"obs_dim": 17, "act_dim": 6, "hidden_sizes": [32, 32], "init_std": 1.0,
                           "nonlinearity": "relu", "weight_init": "xavier"},
                "maml": {"inner_lr": 0.05, "inner_objective": "lvc", "discount": 0.9, "gae_lambda": 0.95},
            }
        )
    )  # fmt: skip
    config = config_like(maml)
    assert config == RandomInitConfig(
        family="HalfCheetahDir", hidden_sizes=(32, 32), nonlinearity="relu", weight_init="xavier", inner_lr=0.05,
        inner_objective="lvc",
        discount=0.9, gae_lambda=0.95, horizon=50, seed=7,
    )  # fmt: skip


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="family must be one of"):
        RandomInitConfig(family="Nope")
    with pytest.raises(ValueError, match="inner_lr must be > 0"):
        RandomInitConfig(family="Point2DNav", inner_lr=0.0)
    for horizon in (0, 2.5):
        with pytest.raises(ValueError, match=r"^horizon must be an integer >= 1 or None, got "):
            RandomInitConfig(family="Point2DNav", horizon=horizon)


def test_evaluate_and_compare_two_small_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, seed in (("seed0", "0"), ("seed1", "1")):
        argv = ["train", "random-init", "--out", str(tmp_path / name), "--env", "Point2DNav"]
        assert cli_main([*argv, "--hidden-sizes", "8", "8", "--seed", seed]) == 0
        assert cli_main(["evaluate", str(tmp_path / name), *SMALL_EVAL]) == 0
        document = json.loads((tmp_path / name / "eval_ood.json").read_text())
        assert document["method"] == "random_init" and len(document["returns"]["mean"]) == 3
        assert document["num_tasks"] == 3 and len(document["per_task"]) == 3
    capsys.readouterr()
    out = tmp_path / "cmp"
    assert (
        cli_main(
            [
                "compare",
                str(tmp_path / "seed0"),
                str(tmp_path / "seed1"),
                "--split",
                "ood",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "| seed0 | random_init |" in printed and "| seed1 | random_init |" in printed
    assert sorted(p.name for p in out.iterdir()) == [
        "comparison.csv", "comparison.md", "return_vs_k.png", "return_vs_samples.png"
    ]  # fmt: skip
