"""`metarl render`: videos of a run before and after adaptation, and the errors users hit."""

from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from metarl.cli import main as cli_main
from metarl.core.policy import GaussianMLPPolicy
from metarl.core.rollout import env_dims
from metarl.methods.dispatch import render_run
from metarl.storage.checkpoint import save_checkpoint
from metarl.storage.runs import RunDir, policy_config, policy_tensors
from metarl.video import backend, render
from metarl.video.run_videos import RenderOptions, describe_task, select_task


def _make_run(
    directory: Path, family: str, checkpoint: bool = True, horizon: int | None = None
) -> Path:
    """A MAML run directory as `metarl train maml` leaves it (config + checkpoint), untrained."""
    torch.manual_seed(0)
    obs_dim, act_dim = env_dims(family)
    policy = GaussianMLPPolicy(obs_dim, act_dim, hidden_sizes=(16, 16))
    run = RunDir(directory)
    run.write_config(
        {
            "method": "maml",
            "family": family,
            "horizon": horizon,
            "policy": policy_config(policy, init_std=1.0),
            "maml": {
                "inner_lr": 0.1,
                "inner_objective": "vpg",
                "discount": 0.99,
                "gae_lambda": 1.0,
            },
        }
    )
    if checkpoint:
        run.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        metadata = {"family": family, "obs_dim": obs_dim, "act_dim": act_dim}
        save_checkpoint(run.checkpoint_path, policy_tensors(policy), metadata)
    return directory


def test_render_run_writes_one_panel_per_k(tmp_path: Path) -> None:
    run = _make_run(tmp_path / "run", "Point2DNav")
    options = RenderOptions(
        split="ood", task_index=3, steps=(0, 2), num_tasks=5, episodes_per_step=4,
        width=128, height=96, max_steps=12,
    )  # fmt: skip
    result = render_run(run, options, tmp_path / "out" / "p2d.mp4")
    assert result.path == tmp_path / "out" / "p2d.mp4"
    band = result.size[0] - 96  # the caption band above the 96-pixel pictures
    assert (result.frames, result.size[1]) == (13, 256) and band > 0 and result.size[0] % 16 == 0
    assert sorted(result.returns) == [0, 2]
    assert result.task == select_task("Point2DNav", options)
    with imageio.get_reader(result.path) as reader:
        frames = [frame for frame in reader]
    assert len(frames) == 13 and frames[0].shape == (band + 96, 256, 3)


@pytest.mark.render
def test_cli_render_mujoco_family_before_and_after(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _make_run(tmp_path / "cheetah", "HalfCheetahCrippled", horizon=20)
    out = tmp_path / "cheetah.gif"
    code = cli_main(
        ["render", str(run), "--split", "ood", "--task-index", "1", "--steps", "0,1", "--num-tasks", "4",
         "--episodes-per-step", "2", "--width", "96", "--height", "64", "--out", str(out)]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert "wrote" in capsys.readouterr().out
    frames = imageio.mimread(out)
    assert len(frames) == 21  # reset frame + 20 steps (the run's horizon)
    height, width = np.asarray(frames[0]).shape[:2]
    assert width == 192 and height > 64 and height % 16 == 0  # 64-pixel pictures under a caption band


def _render_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert cli_main(["render", *argv]) == 2
    return " ".join(capsys.readouterr().err.split())


def test_run_without_checkpoint_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _make_run(tmp_path / "run", "Point2DNav", checkpoint=False)
    error = _render_error([str(run), "--out", str(tmp_path / "x.mp4")], capsys)
    assert "holds no checkpoint" in error


def test_directory_that_is_not_a_run_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    error = _render_error([str(tmp_path), "--out", str(tmp_path / "x.mp4")], capsys)
    assert "not a metarl run directory" in error


def test_task_index_outside_the_split_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _make_run(tmp_path / "run", "Point2DNav")
    error = _render_error(
        [str(run), "--task-index", "40", "--out", str(tmp_path / "x.mp4")], capsys
    )
    assert "--task-index 40 is outside" in error and "0..39" in error


def test_unwritable_output_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _make_run(tmp_path / "run", "Point2DNav")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    error = _render_error([str(run), "--out", str(blocker / "x.mp4")], capsys)
    assert "cannot create the folder" in error
    error = _render_error([str(run), "--out", str(tmp_path / "x.avi")], capsys)
    assert ".mp4, .gif" in error
    error = _render_error([str(run), "--steps", "0,one"], capsys)
    assert "--steps must be comma-separated integers" in error


def test_rendering_unavailable_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _make_run(tmp_path / "run", "HalfCheetahDir")

    def unavailable(*args: object, **kwargs: object) -> str:
        raise render.RenderingUnavailableError(
            "headless MuJoCo rendering is unavailable: install libegl1"
        )

    monkeypatch.setattr(backend, "select_gl_backend", unavailable)
    error = _render_error([str(run), "--split", "test", "--out", str(tmp_path / "x.mp4")], capsys)
    assert "headless MuJoCo rendering is unavailable" in error
    assert not (tmp_path / "x.mp4").exists()


def test_describe_task_is_short() -> None:
    import metarl_envs as envs

    for family in ("HalfCheetahRandParams", "HalfCheetahCrippled", "Point2DNav"):
        task = envs.distribution(family).sample(1, "test", np.random.default_rng(0))[0]
        text = describe_task(task)
        assert 0 < len(text) <= 38
    crippled = envs.distribution("HalfCheetahCrippled").sample(1, "ood", np.random.default_rng(0))[
        0
    ]
    assert describe_task(crippled) == f"crippled_actuator={crippled.crippled_actuator}"


def test_render_options_are_checked() -> None:
    with pytest.raises(ValueError, match="split must be one of test, ood"):
        RenderOptions(split="train")
    with pytest.raises(ValueError, match="multiples of 16"):
        RenderOptions(width=100)
    with pytest.raises(ValueError, match="non-negative integers"):
        RenderOptions(steps=(0, -1))


def test_render_finetune_run(tmp_path: Path) -> None:
    from metarl.algorithms.finetune import FinetuneConfig, train_run

    config = FinetuneConfig(family="Point2DNav", timesteps=256, num_envs=2, hidden_sizes=(8, 8))
    run = train_run(config, tmp_path / "ft", device_name="cpu")
    options = RenderOptions(
        split="test", task_index=1, steps=(0, 1), num_tasks=3, episodes_per_step=2,
        width=64, height=64, max_steps=8,
    )  # fmt: skip
    result = render_run(run.path, options, tmp_path / "ft.mp4")
    assert (result.frames, result.size[1]) == (9, 128) and result.size[0] > 64
    assert sorted(result.returns) == [0, 1]


def test_render_protonet_run_overlays_the_identified_variant(tmp_path: Path) -> None:
    from metarl.identification.config import ProtoNetConfig
    from metarl.identification.run import train_run

    config = ProtoNetConfig(
        family="Point2DNav", way=3, shot=2, query=2, context_size=4, hidden_sizes=(16, 16),
        embedding_dim=8, pooled_hidden_sizes=(), iterations=5, train_variants=6, envs_per_variant=4,
        transitions_per_env=20,
    )  # fmt: skip
    run = train_run(config, tmp_path / "proto", device="cpu", progress=False)
    options = RenderOptions(
        split="ood", task_index=2, num_tasks=4, width=64, height=64, max_steps=6
    )
    result = render_run(run.path, options, tmp_path / "proto.mp4")
    assert (result.frames, result.size[1]) == (7, 64) and result.size[0] > 64
    from metarl.video.protonet import protonet_panel

    panel = protonet_panel(run, select_task("Point2DNav", options), options)
    assert len(panel.step_lines) == 7
    assert panel.step_lines[0] == ("identified: -  (no transition yet)",)
    assert panel.step_lines[6][0].startswith("identified: goal_x_m=")
    assert panel.step_lines[6][1].endswith("/6 steps, 3 candidates")


@pytest.mark.parametrize("normalize", [True, False])
def test_render_adapts_with_the_runs_advantage_normalisation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, normalize: bool
) -> None:
    """render adapts as evaluate does: a run trained with --normalize-advantages False adapts without it."""
    import json

    from metarl.video import policies
    run = _make_run(tmp_path / "run", "Point2DNav")
    config = json.loads((run / "config.json").read_text())
    config["maml"]["normalize_advantages"] = normalize
    seen: dict[str, object] = {}
    real = policies.gradient_adapted_params

    def spy(*args: object, **kwargs: object) -> object:
        seen.update(kwargs, settings=args[5])
        return real(*args, **kwargs)

    monkeypatch.setattr(policies, "gradient_adapted_params", spy)
    task = select_task("Point2DNav", RenderOptions(num_tasks=2))
    policies = policies.gradient_run_policies(RunDir(run), config, task, (0, 1), RenderOptions(episodes_per_step=2))
    assert sorted(policies) == [0, 1]
    settings = seen["settings"]
    assert settings.normalize_advantages is normalize and settings.inner_lr == 0.1
