"""The task-block samplers: the same episodes as the local sampler, in process and on Ray actors.

The Ray tests share one local Ray instance (3 CPUs, started once for the module) and are
skipped where Ray is not installed; the in-process block sampler runs the code the actors
run, so every family is checked without starting actors for each.
"""

from __future__ import annotations

import builtins
import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import metarl_envs as envs
from metarl import cli
from metarl.algorithms.maml import training as train_module
from metarl.algorithms.presets import maml_preset
from metarl.cluster.backends import SamplerChoice
from metarl.cluster.ray_sampler import BlockSampler, alignment_padding, task_blocks
from metarl.core.episodes import Episodes
from metarl.core.policy import GaussianMLPPolicy, stack_params
from metarl.core.rollout import env_dims
from metarl.core.sampler import VectorEnvSampler
from metarl_envs.point2d import Point2DNavTask

FIELDS = ("observations", "actions", "rewards", "mask")


def _policy(family: str, hidden_sizes: tuple[int, ...] = (15, 16)) -> GaussianMLPPolicy:
    obs_dim, act_dim = env_dims(family)
    torch.manual_seed(1)
    return GaussianMLPPolicy(obs_dim, act_dim, hidden_sizes, init_std=0.7)


def _per_task_params(policy: GaussianMLPPolicy, num_tasks: int) -> dict[str, torch.Tensor]:
    """Distinct parameters per task, as after adaptation."""
    generator = torch.Generator().manual_seed(2)
    return {
        name: value.detach() + 0.05 * torch.randn(num_tasks, *value.shape, generator=generator)
        for name, value in policy.params().items()
    }


def _assert_same(local: Episodes, other: Episodes) -> None:
    for name in FIELDS:
        assert torch.equal(getattr(local, name), getattr(other, name)), name
    assert list(local.tasks) == list(other.tasks)


def _compare(family: str, sampler: BlockSampler, num_tasks: int, episodes: int, horizon: int,
             hidden_sizes: tuple[int, ...] = (15, 16)) -> None:
    """Two calls (per-task, then shared parameters) against the local sampler from equal generators."""
    policy = _policy(family, hidden_sizes)
    tasks = envs.distribution(family).sample(num_tasks, "train", np.random.default_rng(5))
    local = VectorEnvSampler(family, num_tasks, horizon=horizon)
    local_generator, other_generator = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    shared = stack_params({k: v.detach() for k, v in policy.params().items()}, num_tasks)
    try:
        for params in (_per_task_params(policy, num_tasks), shared):
            expected = local.sample(policy, params, tasks, episodes, local_generator)
            _assert_same(expected, sampler.sample(policy, params, tasks, episodes, other_generator))
            assert torch.equal(local_generator.get_state(), other_generator.get_state())
    finally:
        local.close()
        sampler.close()


def test_task_blocks_are_contiguous_and_even() -> None:
    assert task_blocks(5, 2) == [(0, 3), (3, 5)]
    assert task_blocks(7, 3) == [(0, 3), (3, 5), (5, 7)]
    assert task_blocks(2, 4) == [(0, 1), (1, 2)]  # more workers than tasks: one task each
    with pytest.raises(ValueError, match="workers"):
        task_blocks(3, 0)


def test_alignment_padding_keeps_each_task_at_its_alignment() -> None:
    policy = _policy("Point2DNav", (15, 16))  # per-task floats: 3 * 15 = 45 and 2 * 15 = 30 are not multiples of 4
    for first in range(9):
        padding = alignment_padding(first, policy, episodes_per_task=3)
        start = first - padding
        assert 0 <= padding < 4 and start % 4 == 0
    even = _policy("AntDir", (16, 16))  # act_dim 8, widths 16: every count is a multiple of 4
    assert all(alignment_padding(first, even, episodes_per_task=4) == 0 for first in range(9))


@pytest.mark.parametrize("family", envs.FAMILIES)
@pytest.mark.parametrize("workers", [2, 3])
def test_block_sampler_equals_local_sampler(family: str, workers: int) -> None:
    """5 tasks on 2 or 3 blocks (uneven), odd layer widths: bit-identical episodes."""
    horizon = 12
    _compare(family, BlockSampler(family, 5, workers, horizon=horizon), 5, 3, horizon)


def test_block_sampler_with_early_termination() -> None:
    """Episodes that end early are masked the same way (Point2DNav ends when the goal is reached)."""
    family, num_tasks, per_task, horizon = "Point2DNav", 5, 4, 60
    policy = _policy(family, (16,))
    with torch.no_grad():  # mean 0, small steps: episodes near the start end after a few steps, at random
        policy.layers[-1].weight.zero_()
        policy.layers[-1].bias.zero_()
        policy.log_std.fill_(-3.0)
    tasks = [Point2DNavTask(goal_x_m=0.004 * i, goal_y_m=0.0) for i in range(num_tasks)]
    params = stack_params({k: v.detach() for k, v in policy.params().items()}, num_tasks)
    local = VectorEnvSampler(family, num_tasks, horizon=horizon)
    blocks = BlockSampler(family, num_tasks, 2, horizon=horizon)
    expected = local.sample(policy, params, tasks, per_task, torch.Generator().manual_seed(0))
    got = blocks.sample(policy, params, tasks, per_task, torch.Generator().manual_seed(0))
    local.close()
    blocks.close()
    assert 0 < expected.mask.sum() < expected.mask.numel()  # some ended early, not all at once
    _assert_same(expected, got)


def test_sampler_choice_is_validated() -> None:
    with pytest.raises(ValueError, match="local, ray"):
        SamplerChoice("threads")
    with pytest.raises(ValueError, match="ray sampler only"):
        SamplerChoice("local", workers=2)
    with pytest.raises(ValueError, match="workers"):
        SamplerChoice("ray", workers=0)


def test_without_ray_the_sampler_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    real_import = builtins.__import__

    def no_ray(name: str, *args: object, **kwargs: object) -> object:
        if name == "ray" or name.startswith("ray."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    # Ray may already be imported by an earlier test: hide the cached modules as well
    for name in [name for name in sys.modules if name == "ray" or name.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)
    out = tmp_path / "run"
    code = cli.main(["train", "maml", "--env", "Point2DNav", "--preset", "tiny", "--out", str(out),
                     "--sampler", "ray", "--workers", "2", "--no-progress", "--no-tensorboard", "--device", "cpu"])
    assert code == 2
    assert "pip install -e '.[ray]'" in " ".join(capsys.readouterr().err.split())  # the CLI wraps lines
    assert not out.exists() or not any(out.iterdir())  # nothing written


def test_cli_refuses_workers_without_ray_sampler(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["train", "maml", "--env", "Point2DNav", "--out", str(tmp_path / "run"), "--workers", "2"])
    assert code == 2
    assert "--sampler ray" in capsys.readouterr().err


# -- on Ray -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    from metarl.cluster.ray_support import init_ray

    init_ray(num_cpus=3)
    yield ray
    ray.shutdown()


def test_ray_sampler_equals_local_sampler(ray_instance) -> None:
    """On actors: 5 tasks on 2 workers (HalfCheetahVel) and on 3 workers (Point2DNav)."""
    from metarl.cluster.ray_sampler import RaySampler

    _compare("HalfCheetahVel", RaySampler("HalfCheetahVel", 5, 2, horizon=10), 5, 3, 10)
    sampler = RaySampler("Point2DNav", 5, 3, horizon=10)
    assert sampler.last_stats == {}
    _compare("Point2DNav", sampler, 5, 3, 10)
    assert set(sampler.last_stats) >= {"send_s", "wait_s", "slowest_rollout_s", "overhead_s"}


def test_ray_sampler_refuses_more_workers_than_cpus(ray_instance, monkeypatch: pytest.MonkeyPatch) -> None:
    from metarl.cluster import ray_sampler
    from metarl.cluster.ray_sampler import RaySampler

    monkeypatch.setattr(ray_sampler, "FREE_CPU_WAIT_SECONDS", 0.5)
    with pytest.raises(cli.UserError, match="needs 4 CPUs"):
        RaySampler("Point2DNav", 5, 4, horizon=10)


def _metrics_without_time(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in csv.DictReader(handle)]


def test_maml_run_with_ray_sampler_has_the_local_metrics(ray_instance, tmp_path: Path) -> None:
    """The tiny preset (fewer iterations), 5 tasks on 2 workers: metrics.csv equal apart from time/; resume
    switches backends."""
    config = maml_preset("tiny", "Point2DNav").replace(iterations=3, meta_batch_size=5, checkpoint_every=1)

    def train(out: Path, sampler: SamplerChoice, iterations: int, resume: bool = False) -> None:
        train_module.train_maml(config.replace(iterations=iterations), out, seed=4, device="cpu", resume=resume,
                                progress=False, tensorboard=False, sampler=sampler)

    train(tmp_path / "local", SamplerChoice(), 3)
    train(tmp_path / "ray", SamplerChoice("ray", workers=2), 3)
    local_rows = _metrics_without_time(tmp_path / "local" / "metrics.csv")
    assert len(local_rows) == 3
    assert local_rows == _metrics_without_time(tmp_path / "ray" / "metrics.csv")
    recorded = json.loads((tmp_path / "ray" / "config.json").read_text())["sampler"]
    assert recorded == {"backend": "ray", "workers": 2, "ray_address": None}

    train(tmp_path / "mixed", SamplerChoice("ray", workers=2), 2)
    train(tmp_path / "mixed", SamplerChoice(), 3, resume=True)
    assert local_rows == _metrics_without_time(tmp_path / "mixed" / "metrics.csv")


def test_bench_sampler_reports_every_backend(ray_instance, capsys: pytest.CaptureFixture[str]) -> None:
    from metarl.commands.bench.sampler import SamplerBenchConfig, report, run

    config = SamplerBenchConfig(family="Point2DNav", tasks=3, episodes=2, horizon=10, workers=(1, 2), repeats=1)
    results = run(config)
    rows = {row["backend"]: row for row in results["backends"]}
    assert list(rows) == ["local", "ray-1", "ray-2"]
    assert rows["local"]["ratio_to_local"] == 1.0
    for name in ("ray-1", "ray-2"):
        row = rows[name]
        assert row["ratio_to_local"] == pytest.approx(row["steps_per_s"] / rows["local"]["steps_per_s"])
        assert 0.0 < row["slowest_rollout_s"] < row["seconds_per_call"]
        assert row["overhead_per_iteration_s"] == pytest.approx(2 * row["overhead_s"])  # 1 inner step + query
        assert row["received_mb"] > 0.0 and row["sent_mb"] > 0.0
        assert 0.0 < row["round_trip_s"] < row["seconds_per_call"]
    assert results["update_seconds"] > 0.0
    model = {row["workers"]: row for row in results["model"]}
    assert set(model) == {4, 16, 64} and model[4]["actors_used"] == 3 == model[64]["actors_used"]  # 3 tasks
    assert model[4]["iteration_s_cpu_learner"] == pytest.approx(model[4]["sampling_s"] + results["update_seconds"])
    assert model[4]["iteration_s_gpu_learner"] == pytest.approx(model[4]["sampling_s"] + 1.0)
    text = report(results)
    assert "load average" in text and "ray-2" in text and "Ray overhead" in text and "outer update" in text and "not measured" in text
    with pytest.raises(SystemExit) as exited:
        cli.main(["bench", "sampler", "--help"])
    assert exited.value.code == 0
    assert "--workers" in capsys.readouterr().out
