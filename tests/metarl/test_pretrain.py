"""The pretrained baseline: TRPO on the task mixture, MAML's adaptation at evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import metarl_envs as envs
from metarl.algorithms.adaptation import inner_step
from metarl.algorithms.presets import maml_preset
from metarl.algorithms.pretrain import (
    episodes_per_iteration,
    run_config_from_document,
    train_pretrain,
    trpo_update,
)
from metarl.cli import main as cli_main
from metarl.core.policy import GaussianMLPPolicy, stack_params
from metarl.core.sampler import VectorEnvSampler
from metarl.evaluation.protocol import EvalOptions
from metarl.methods.pretrain import evaluate_pretrain_run
from metarl.storage.checkpoint import load_checkpoint
from metarl.storage.runs import RunDir, RunDirError, load_policy

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/metarl/conftest.py


def _tiny(iterations: int = 2, **changes):
    return maml_preset("tiny", "Point2DNav").replace(iterations=iterations, meta_batch_size=4,
                                                      episodes_per_task=3, **changes)


def test_trpo_update_improves_the_surrogate_within_the_kl_bound() -> None:
    run_config = _tiny()
    torch.manual_seed(0)
    policy = GaussianMLPPolicy(2, 2, run_config.hidden_sizes, run_config.init_std)
    tasks = envs.distribution("Point2DNav").sample(4, "train", np.random.default_rng(0))
    shared = stack_params({k: v.detach() for k, v in policy.params().items()}, 4)
    episodes = VectorEnvSampler("Point2DNav", 4).sample(policy, shared, tasks, 10, torch.Generator().manual_seed(0))
    before = {k: v.detach().clone() for k, v in policy.params().items()}
    metrics = trpo_update(policy, episodes, run_config)
    assert metrics["train/line_search_accepted"] == 1.0
    assert metrics["loss/surrogate_after"] > metrics["loss/surrogate_before"]
    assert 0.0 < metrics["loss/kl"] <= run_config.maml.trpo.max_kl
    assert any(not torch.equal(before[k], v) for k, v in policy.params().items())


def test_pretraining_sees_maml_s_episode_budget() -> None:
    run_config = _tiny()
    assert episodes_per_iteration(run_config) == run_config.episodes_per_task * (run_config.maml.inner_steps + 1)


def test_a_run_evaluates_with_maml_s_adaptation_unchanged(tmp_path) -> None:
    run = train_pretrain(_tiny(), tmp_path / "run", seed=1, device="cpu", preset="tiny", progress=False)
    config = run.read_config()
    assert config["method"] == "pretrain" and config["maml"]["inner_lr"] == 0.1
    options = EvalOptions(split="test", num_tasks=3, episodes_per_step=2, steps=2, device="cpu")
    document = evaluate_pretrain_run(run, config, options, progress=False)
    assert json.loads(run.eval_path("test").read_text())["method"] == "pretrain"
    # The reference: the evaluation protocol written out (docs/design.md, "Evaluation protocol"):
    # the split's tasks from the evaluation seed; per step, fresh episodes from one generator seeded
    # with it, the mean return of each task's episodes, then one VPG step with lr 0.1, later steps
    # with half of it, on GAE(0.99, 1.0) advantages normalised per task.
    policy = load_policy(run, config)
    tasks = envs.distribution("Point2DNav").sample(3, "test", np.random.default_rng(options.seed))
    assert [envs.task_from_dict(row["task"]) for row in document["per_task"]] == tasks
    sampler = VectorEnvSampler("Point2DNav", 3)
    generator = torch.Generator().manual_seed(options.seed)
    params = stack_params({k: v.detach() for k, v in policy.params().items()}, 3)
    expected = []
    for lr in [0.1, 0.05, None]:
        episodes = sampler.sample(policy, params, tasks, 2, generator)
        per_episode = (episodes.rewards * episodes.mask).sum(-1)  # [tasks, episodes]
        expected.append(per_episode.mean(dim=1).double().numpy())
        if lr is not None:
            params = inner_step(policy, params, episodes, lr, "vpg", 0.99, 1.0, normalize_advantages=True)
    expected = np.stack(expected, axis=1)  # [tasks, k]
    np.testing.assert_allclose([row["returns"] for row in document["per_task"]], expected, rtol=1e-6)
    np.testing.assert_allclose(document["returns"]["mean"], expected.mean(axis=0), rtol=1e-6)
    assert not np.allclose(expected[:, 0], expected[:, 2])  # the policy adapted


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path) -> None:
    train_pretrain(_tiny(iterations=2), tmp_path / "straight", seed=3, device="cpu", progress=False)
    train_pretrain(_tiny(iterations=1), tmp_path / "resumed", seed=3, device="cpu", progress=False)
    train_pretrain(_tiny(iterations=2), tmp_path / "resumed", seed=3, device="cpu", progress=False, resume=True)
    straight, _ = load_checkpoint(RunDir(tmp_path / "straight").checkpoint_path)
    resumed, meta = load_checkpoint(RunDir(tmp_path / "resumed").checkpoint_path)
    assert meta["iteration"] == 2
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_command_and_wrong_method_errors(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert cli_main(["train", "pretrain", "--env", "Point2DNav", "--preset", "tiny", "--iterations", "1",
                     "--meta-batch-size", "2", "--episodes-per-task", "2", "--out", str(out),
                     "--device", "cpu", "--no-progress"]) == 0
    assert cli_main(["train", "pretrain", "--env", "Point2DNav", "--preset", "huge", "--out", str(tmp_path / "x")]) == 2
    assert "unknown preset 'huge'" in capsys.readouterr().err
    # a pretrain run handed to the fine-tune loader, and another method's run to the pretrain loader
    from metarl.algorithms.finetune import load_run

    with pytest.raises(ValueError, match="holds a 'pretrain' run, not a 'finetune' run"):
        load_run(out)
    with pytest.raises(RunDirError, match="holds a 'maml' run, not a 'pretrain' run"):
        run_config_from_document({**RunDir(out).read_config(), "method": "maml"})


@pytest.mark.slow
def test_pretraining_learns_and_adaptation_improves_over_three_seeds(tmp_path) -> None:
    run_config = maml_preset("tiny", "Point2DNav").replace(iterations=10, meta_batch_size=10, episodes_per_task=5)
    options = EvalOptions(split="test", num_tasks=8, episodes_per_step=10, steps=3, device="cpu")
    for seed in range(3):
        run = train_pretrain(run_config, tmp_path / str(seed), seed=seed, device="cpu", progress=False)
        returns = [row["train/return"] for row in _metrics(run)]
        assert returns[-1] > returns[0] + 20.0, f"seed {seed}: pretraining {returns[0]:.1f} -> {returns[-1]:.1f}"
        document = evaluate_pretrain_run(run, run.read_config(), options, progress=False)
        mean = document["returns"]["mean"]
        assert mean[3] > mean[0] + 2.0, f"seed {seed}: adaptation {mean}"


def _metrics(run: RunDir) -> list[dict[str, float]]:
    from metarl.storage.runs import read_metrics

    return read_metrics(run.metrics_path)
