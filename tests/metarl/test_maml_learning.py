"""Does MAML learn to adapt? Point2DNav, tiny preset, 3 seeds (slow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from metarl.algorithms.maml.training import initial_policy, train_maml
from metarl.algorithms.presets import maml_preset
from metarl.evaluation.protocol import EvalOptions, evaluate_gradient_adaptation


@pytest.mark.slow
def test_maml_post_adaptation_beats_pre_adaptation_and_random_init(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    config = maml_preset("tiny", "Point2DNav")
    options = EvalOptions(split="test", num_tasks=10, episodes_per_step=10, steps=1, device="cpu")
    pre, post, random_post = [], [], []
    for seed in range(3):
        result = train_maml(config, tmp_path / f"seed{seed}", seed=seed, device="cpu", progress=False,
                            tensorboard=False)
        maml = evaluate_gradient_adaptation(result.policy, result.policy.params(), "Point2DNav",
                                            config.maml.inner_lr, options, progress=False)
        untrained = initial_policy(config, seed + 100)
        random_init = evaluate_gradient_adaptation(untrained, untrained.params(), "Point2DNav",
                                                   config.maml.inner_lr, options, progress=False)
        pre.append(maml.returns[:, 0].mean())
        post.append(maml.returns[:, 1].mean())
        random_post.append(random_init.returns[:, 1].mean())
    pre, post, random_post = map(np.array, (pre, post, random_post))
    message = f"pre {pre.round(1)}, post {post.round(1)}, random-init post {random_post.round(1)}"
    assert np.all(post > pre + 3.0), message  # adaptation helps on every seed
    assert post.mean() > pre.mean() + 8.0, message  # by a clear margin on average
    assert np.all(post > random_post + 20.0), message  # and meta-training is what makes it work
