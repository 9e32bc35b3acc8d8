"""The inner-gradient agreement probe (metarl.evaluation.probe): cosines of two batches' inner steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metarl.core.policy import GaussianMLPPolicy
from metarl.evaluation.probe import _cosines, agreement_of_steps, inner_gradient_agreement
from metarl.evaluation.protocol import EvalOptions


def test_cosines_of_rows() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    b = torch.tensor([[3.0, 0.0], [1.0, 1.0], [0.0, -1.0]], dtype=torch.float64)
    np.testing.assert_allclose(_cosines(a, b).numpy(), [[1, 2 ** -0.5, 0], [0, 2 ** -0.5, -1]], atol=1e-12)


def _agreement(episodes: int, seed: int = 0):
    torch.manual_seed(seed)
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(16,))
    options = EvalOptions(split="test", num_tasks=8, episodes_per_step=episodes, seed=seed, device="cpu")
    return inner_gradient_agreement(policy, policy.params(), "Point2DNav", options, horizon=20)


def test_goal_tasks_give_task_specific_steps_that_sharpen_with_more_episodes() -> None:
    """On Point2DNav each goal pulls the step its own way: the part of the step that is not shared by all
    tasks agrees between two batches of the same task, more so with more episodes per batch."""
    few, many = _agreement(4), _agreement(64)
    for result in (few, many):
        assert result.same_task.shape == result.task_specific.shape == (8,)
        assert np.all(np.abs(result.same_task) <= 1 + 1e-9) and -1 <= result.across_tasks <= 1
    assert many.task_specific.mean() > 0.5
    assert many.task_specific.mean() > few.task_specific.mean() + 0.1
    assert many.same_task.mean() > many.across_tasks + 0.2
    summary = many.summary()
    assert summary["episodes"] == 64 and summary["task_specific_se"] > 0


def test_needs_two_tasks() -> None:
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(4,))
    with pytest.raises(ValueError, match="num_tasks"):
        inner_gradient_agreement(policy, policy.params(), "Point2DNav",
                                 EvalOptions(split="test", num_tasks=1, episodes_per_step=2, device="cpu"))


def test_across_tasks_leaves_out_pairs_of_the_same_task() -> None:
    """Tasks A, A, B, B (a family of a few discrete variants repeats them): steps of equal tasks point the
    same way, steps of different tasks are orthogonal; only the A-B pairs count across tasks."""
    a, b = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    steps = torch.stack([a, a, b, b]).double()
    labels = ["A", "A", "B", "B"]
    different = torch.tensor([[x != y for y in labels] for x in labels])
    result = agreement_of_steps(steps, steps.clone(), different, episodes=5)
    np.testing.assert_allclose(result.same_task, 1.0)
    assert result.across_tasks == pytest.approx(0.0)  # with the equal pairs it would be 4 / 12
    np.testing.assert_allclose(result.task_specific, 1.0)


def test_tasks_that_are_all_the_same_are_refused() -> None:
    from metarl.evaluation.protocol import evaluation_tasks

    task = evaluation_tasks("Point2DNav", "test", 1, 0)[0]
    policy = GaussianMLPPolicy(2, 2, hidden_sizes=(4,))
    options = EvalOptions(split="custom", num_tasks=3, episodes_per_step=2, device="cpu", tasks=(task,) * 3)
    with pytest.raises(ValueError, match="all the same task"):
        inner_gradient_agreement(policy, policy.params(), "Point2DNav", options)
