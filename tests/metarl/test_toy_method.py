"""A method registered from this file alone (docs/design.md, "Methods") goes through the whole command line.

"toy-noadapt" is the no-adaptation baseline: a randomly initialised policy evaluated unchanged at
every k. Its entry names functions of this module; nothing in metarl/ knows it. ``metarl train
toy-noadapt``, ``evaluate``, ``compare`` and ``render`` run it in-process through the CLI.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pytest
import torch

from metarl import methods
from metarl.core.flags import family_choice
from metarl.storage.runs import RunDir
from tests.metarl.cli_helpers import assert_one_line, run_cli

NAME = "toy-noadapt"
FAMILY = "Point2DNav"


@dataclasses.dataclass(frozen=True)
class ToyArgs:
    """Create a no-adaptation baseline run (a seeded random policy, never adapted)."""

    out: Path
    """Run directory to create."""
    env: Annotated[str, family_choice()] = FAMILY
    """Task family."""
    seed: int = 0
    """Seed of the initial weights."""


def toy_train(args: ToyArgs) -> int:
    from metarl.core.policy import GaussianMLPPolicy
    from metarl.core.rollout import env_dims
    from metarl.storage.checkpoint import save_checkpoint
    from metarl.storage.runs import policy_config, policy_tensors, writing_run

    obs_dim, act_dim = env_dims(args.env)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(args.seed)
        policy = GaussianMLPPolicy(obs_dim, act_dim, (8, 8))
    document = {"method": NAME, "family": args.env, "seed": args.seed, "horizon": None,
                "policy": policy_config(policy, 1.0)}
    with writing_run(args.out, document, resume=False) as run:
        run.write_config(document)
        save_checkpoint(run.checkpoint_path, policy_tensors(policy), {"method": NAME, "family": args.env,
                                                                       "obs_dim": obs_dim, "act_dim": act_dim})
    print(f"toy run in {run.path}")
    return 0


def toy_returns(run_dir: Any, config: Mapping[str, Any], split: str, num_tasks: int, episodes: int,
                seed: int) -> np.ndarray:
    """Each task's mean return of the stored policy, from fresh episodes drawn with ``seed``  # [tasks]."""
    from metarl.core.policy import stack_params
    from metarl.core.sampler import VectorEnvSampler
    from metarl.evaluation.protocol import evaluation_tasks
    from metarl.storage.runs import load_policy

    policy = load_policy(run_dir, config)
    tasks = evaluation_tasks(config["family"], split, num_tasks, seed)
    sampler = VectorEnvSampler(config["family"], num_tasks)
    try:
        params = stack_params({n: v.detach() for n, v in policy.params().items()}, num_tasks)
        batch = sampler.sample(policy, params, tasks, episodes, torch.Generator().manual_seed(seed))
    finally:
        sampler.close()
    return batch.returns.mean(dim=1).double().numpy()


def toy_evaluate(run_dir: Any, config: Mapping[str, Any], options: Any, progress: bool = True) -> dict[str, Any]:
    """The policy unchanged at every k: each k's return from the same seeded episodes."""
    from metarl.evaluation.protocol import (
        AdaptationResult,
        evaluation_tasks,
        returns_document,
        write_eval_json,
    )
    from metarl.storage.runs import load_policy

    row = toy_returns(run_dir, config, options.split, options.num_tasks, options.episodes_per_step, options.seed)
    returns = np.repeat(row[:, None], options.steps + 1, axis=1)  # [tasks, k]
    tasks = evaluation_tasks(config["family"], options.split, options.num_tasks, options.seed)
    result = AdaptationResult(tasks, returns, samples_per_step=0, adapt_seconds=0.0, inner_lrs=[])
    document = returns_document(NAME, config["family"], options, result, load_policy(run_dir, config)).to_json()
    write_eval_json(run_dir, document)
    return document


def toy_policies(run_dir: Any, config: Mapping[str, Any], task: Any, steps: Sequence[int], options: Any) -> dict:
    """The same stored policy at every k."""
    import gymnasium as gym

    import metarl_envs as envs
    from metarl.storage.runs import load_policy
    from metarl.video import render

    policy = load_policy(run_dir, config)
    space = gym.make(envs.env_id(config["family"])).action_space
    return {k: render.gaussian_policy_fn(policy, policy.params(), deterministic=options.deterministic,
                                         seed=options.seed, action_space=space) for k in steps}


TOY = methods.Method(
    name=NAME,
    train_word=NAME,
    summary="a random policy evaluated unchanged at every k (test method)",
    train_args=f"{__name__}:ToyArgs",
    train=f"{__name__}:toy_train",
    evaluate=f"{__name__}:toy_evaluate",
    policies=f"{__name__}:toy_policies",
    resumable=False,
)


@pytest.fixture
def toy() -> Iterator[methods.Method]:
    methods.register(TOY)
    try:
        yield TOY
    finally:
        methods.unregister(NAME)
    assert NAME not in {m.name for m in methods.methods()}


def test_a_method_registered_from_a_test_trains_evaluates_compares_and_renders(
    toy: methods.Method, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from metarl import cli

    assert cli.main(["train"]) == 0
    assert f"train {NAME}" in capsys.readouterr().out
    run = tmp_path / "toy"
    code, err = run_cli(["train", NAME, "--env", FAMILY, "--seed", "3", "--out", str(run)], capsys)
    assert code == 0, err
    config = json.loads((run / "config.json").read_text())
    assert config["method"] == NAME and any((run / "checkpoint").glob("*.safetensors"))

    code, err = run_cli(["evaluate", str(run), "--num-tasks", "3", "--episodes-per-step", "2", "--steps", "2",
                         "--device", "cpu", "--no-progress"], capsys)
    assert code == 0, err
    document = json.loads((run / "eval_test.json").read_text())
    assert document["method"] == NAME and document["num_tasks"] == 3
    per_task = np.array([row["returns"] for row in document["per_task"]])  # [tasks, k]
    assert per_task.shape == (3, 3)
    assert (per_task == per_task[:, :1]).all()  # unchanged at every k
    np.testing.assert_array_equal(per_task[:, 0], toy_returns(RunDir(run), config, "test", 3, 2, document["eval_seed"]))
    mean = document["returns"]["mean"]
    assert mean[0] == mean[1] == mean[2]

    out = tmp_path / "cmp"
    code, err = run_cli(["compare", str(run), "--out", str(out)], capsys)
    assert code == 0, err
    assert {p.name for p in out.iterdir()} >= {"comparison.md", "comparison.csv"}
    assert f"| toy | {NAME} |" in (out / "comparison.md").read_text()

    video = tmp_path / "toy.gif"
    code = cli.main(["render", str(run), "--steps", "0,2", "--num-tasks", "2", "--episodes-per-step", "1",
                     "--deterministic", "--max-steps", "8", "--width", "64", "--height", "64", "--device", "cpu",
                     "--no-progress", "--out", str(video)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert video.stat().st_size > 0 and f"wrote {video}" in printed.out
    shown = next(line for line in printed.out.splitlines() if line.startswith("return of the episode shown:"))
    k0, k2 = (part.split(": ")[-1] for part in shown.split(", "))
    assert "k=0" in shown and "k=2" in shown and k0 == k2  # the same policy acts in both panels


def test_unknown_training_word_names_the_registered_ones(toy: methods.Method, capsys: pytest.CaptureFixture[str]) -> None:
    from metarl import cli

    code = cli.main(["train", "toy"])
    err = capsys.readouterr().err
    assert code == 2
    assert_one_line(err, "unknown command 'train toy'", f"train {NAME}", "train maml")
