"""VectorEnvSampler: shapes, masks, determinism, per-task parameters, early termination."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import metarl_envs as envs
from metarl.core.policy import GaussianMLPPolicy, stack_params
from metarl.core.rollout import env_dims
from metarl.core.sampler import Sampler, VectorEnvSampler
from metarl_envs.point2d import Point2DNavTask


def _shared(policy: GaussianMLPPolicy, num_tasks: int) -> dict[str, torch.Tensor]:
    return stack_params({k: v.detach() for k, v in policy.params().items()}, num_tasks)


@pytest.fixture()
def policy() -> GaussianMLPPolicy:
    torch.manual_seed(0)
    return GaussianMLPPolicy(2, 2, hidden_sizes=(16, 16), init_std=0.5)


def _tasks(n: int, seed: int = 0) -> list:
    return envs.distribution("Point2DNav").sample(n, "train", np.random.default_rng(seed))


def test_env_dims_and_interface() -> None:
    assert env_dims("Point2DNav") == (2, 2)
    assert issubclass(VectorEnvSampler, Sampler)
    with pytest.raises(ValueError, match="available families"):
        VectorEnvSampler("NoSuchFamily", 2)


def test_shapes_masks_and_rewards_match_the_env(policy: GaussianMLPPolicy) -> None:
    sampler = VectorEnvSampler("Point2DNav", num_tasks=3, horizon=7)
    tasks = _tasks(3)
    episodes = sampler.sample(policy, _shared(policy, 3), tasks, 4, torch.Generator().manual_seed(1))
    assert episodes.observations.shape == (3, 4, 7, 2)
    assert episodes.actions.shape == (3, 4, 7, 2)
    assert episodes.rewards.shape == episodes.mask.shape == (3, 4, 7)
    assert episodes.observations.dtype == torch.float32
    assert torch.all(episodes.mask == 1.0)  # no early termination from the origin in 7 steps
    assert list(episodes.tasks) == tasks
    # replay every episode through the single env: same observations and rewards
    for t, task in enumerate(tasks):
        goal = torch.tensor(task.goal, dtype=torch.float64)
        for e in range(4):
            position = torch.zeros(2, dtype=torch.float64)
            for step in range(7):
                assert torch.allclose(episodes.observations[t, e, step].double(), position, atol=1e-6)
                # the policy acts in normalised units: the env moves 0.1 * action, clipped
                position = position + (0.1 * episodes.actions[t, e, step].double()).clamp(-0.1, 0.1)
                expected = -torch.linalg.norm(position - goal)
                assert episodes.rewards[t, e, step].item() == pytest.approx(expected.item(), abs=1e-5)


def test_same_generator_seed_same_episodes(policy: GaussianMLPPolicy) -> None:
    sampler = VectorEnvSampler("Point2DNav", num_tasks=2, horizon=10)
    tasks = _tasks(2)
    a = sampler.sample(policy, _shared(policy, 2), tasks, 3, torch.Generator().manual_seed(5))
    b = sampler.sample(policy, _shared(policy, 2), tasks, 3, torch.Generator().manual_seed(5))
    c = sampler.sample(policy, _shared(policy, 2), tasks, 3, torch.Generator().manual_seed(6))
    assert torch.equal(a.actions, b.actions) and torch.equal(a.rewards, b.rewards)
    assert not torch.equal(a.actions, c.actions)
    # a second sampler instance gives the same numbers too
    d = VectorEnvSampler("Point2DNav", num_tasks=2, horizon=10).sample(
        policy, _shared(policy, 2), tasks, 3, torch.Generator().manual_seed(5)
    )
    assert torch.equal(a.actions, d.actions)


def test_each_task_is_sampled_with_its_own_parameters(policy: GaussianMLPPolicy) -> None:
    sampler = VectorEnvSampler("Point2DNav", num_tasks=2, horizon=5)
    params = _shared(policy, 2)
    params = {k: v.clone() for k, v in params.items()}
    last_bias = "layers.2.bias"
    params[last_bias][0] = torch.tensor([5.0, 5.0])  # task 0 pushes towards +x,+y
    params[last_bias][1] = torch.tensor([-5.0, -5.0])  # task 1 towards -x,-y
    params["log_std"][:] = -6.0  # nearly deterministic
    tasks = _tasks(2)
    episodes = sampler.sample(policy, params, tasks, 3, torch.Generator().manual_seed(0))
    assert torch.all(episodes.actions[0] > 3.0)
    assert torch.all(episodes.actions[1] < -3.0)
    # and the per-task log-std is used: widen task 1 only
    params["log_std"][1] = 1.0
    episodes = sampler.sample(policy, params, tasks, 3, torch.Generator().manual_seed(0))
    assert (episodes.actions[0] - 5.0).abs().max() < 0.5
    assert (episodes.actions[1] + 5.0).abs().max() > 0.5


def test_episodes_that_end_early_stop_contributing(policy: GaussianMLPPolicy) -> None:
    # goal on the first step's target: a deterministic policy moving (+0.1, +0.1) m (normalised
    # action (+1, +1)) reaches it at step 1
    sampler = VectorEnvSampler("Point2DNav", num_tasks=2, horizon=6)
    params = {k: v.clone() for k, v in _shared(policy, 2).items()}
    for name in params:
        if name.startswith("layers.2"):
            params[name].zero_()
    params["layers.2.bias"][:] = 1.0
    params["log_std"][:] = -20.0
    tasks = [Point2DNavTask(0.2, 0.2), Point2DNavTask(-0.4, 0.4)]
    episodes = sampler.sample(policy, params, tasks, 2, torch.Generator().manual_seed(0))
    # task 0 reaches the goal at step index 1 (positions 0.1, 0.2): mask 1,1 then 0
    assert episodes.mask[0].tolist() == [[1, 1, 0, 0, 0, 0]] * 2
    assert torch.all(episodes.rewards[0, :, 2:] == 0) and torch.all(episodes.observations[0, :, 2:] == 0)
    assert torch.all(episodes.actions[0, :, 2:] == 0)
    assert torch.all(episodes.mask[1] == 1)
    assert episodes.num_steps == 2 * 2 + 2 * 6
    # the next call starts fresh episodes (no leftover autoreset)
    again = sampler.sample(policy, params, tasks, 2, torch.Generator().manual_seed(0))
    assert torch.equal(again.mask, episodes.mask) and torch.equal(again.rewards, episodes.rewards)


def test_bad_arguments_are_rejected(policy: GaussianMLPPolicy) -> None:
    sampler = VectorEnvSampler("Point2DNav", num_tasks=2, horizon=5)
    with pytest.raises(ValueError, match="2 tasks per call"):
        sampler.sample(policy, _shared(policy, 2), _tasks(3), 1, torch.Generator())
    with pytest.raises(ValueError, match="one row per task"):
        sampler.sample(policy, _shared(policy, 3), _tasks(2), 1, torch.Generator())
    with pytest.raises(ValueError, match="episodes_per_task"):
        sampler.sample(policy, _shared(policy, 2), _tasks(2), 0, torch.Generator())
    with pytest.raises(ValueError, match="num_tasks"):
        VectorEnvSampler("Point2DNav", num_tasks=0)


def test_the_loop_runs_torch_on_one_thread_and_restores_the_count(
    policy: GaussianMLPPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    import metarl.core.sampler as sampler_module

    seen: list[int] = []
    forward = sampler_module.batched_policy_forward

    def recording_forward(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return forward(*args, **kwargs)

    monkeypatch.setattr(sampler_module, "batched_policy_forward", recording_forward)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        sampler = VectorEnvSampler("Point2DNav", num_tasks=2, horizon=5)
        sampler.sample(policy, _shared(policy, 2), _tasks(2), 3, torch.Generator().manual_seed(0))
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(previous)
