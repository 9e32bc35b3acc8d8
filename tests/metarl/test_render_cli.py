"""`metarl render`: the same defaults as `metarl evaluate`, and progress while it works."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from metarl.cli import main as cli_main
from metarl.commands.evaluate_cmd import EvaluateArgs
from metarl.commands.render_cmd import RenderArgs
from metarl.core.flags import parse
from metarl.methods.dispatch import render_run
from metarl.video.run_videos import RenderOptions
from tests.metarl.test_run_videos import _make_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/metarl/conftest.py


def _defaults(cls: type) -> dict[str, object]:
    return {field.name: field.default for field in dataclasses.fields(cls)}


def test_render_defaults_to_the_split_and_device_of_evaluate() -> None:
    render_args, evaluate_args = _defaults(RenderArgs), _defaults(EvaluateArgs)
    assert (render_args["split"], render_args["device"]) == ("test", "auto")
    assert (render_args["split"], render_args["device"]) == (evaluate_args["split"], evaluate_args["device"])
    assert (RenderOptions().split, RenderOptions().device) == ("test", "auto")
    parsed = parse(RenderArgs, ["runs/x"], prog="metarl render")
    assert (parsed.split, parsed.device, parsed.no_progress) == ("test", "auto", False)


def test_render_shows_adaptation_episode_and_encoding_progress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _make_run(tmp_path / "run", "Point2DNav")
    argv = ["render", str(run), "--steps", "0,2", "--num-tasks", "3", "--episodes-per-step", "2",
            "--width", "64", "--height", "64", "--max-steps", "6", "--device", "cpu"]
    assert cli_main([*argv, "--out", str(tmp_path / "a.mp4")]) == 0
    captured = capsys.readouterr()
    assert "task 0 of test" in captured.out
    for stage in ("adapting", "rendering episodes", "writing video"):
        assert stage in captured.err
    assert cli_main([*argv, "--out", str(tmp_path / "b.mp4"), "--no-progress"]) == 0
    assert capsys.readouterr().err == ""


def test_fine_tuning_progress_counts_the_steps_it_trains(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from metarl.algorithms.finetune import FinetuneConfig, train_run

    config = FinetuneConfig(family="Point2DNav", timesteps=256, num_envs=2, hidden_sizes=(8, 8))
    run = train_run(config, tmp_path / "ft", device_name="cpu")
    capsys.readouterr()
    options = RenderOptions(steps=(0, 2), num_tasks=3, episodes_per_step=2, width=64, height=64,
                            max_steps=4, device="cpu", progress=True)
    render_run(run.path, options, tmp_path / "ft.mp4")
    err = capsys.readouterr().err
    chunk = 2 * 100  # episodes per step x Point2DNav's horizon
    assert f"fine-tuning ppo (2 x {chunk} steps)" in err
    counts = [int(n) for n in re.findall(rf"(\d+)/{2 * chunk} ", err)]
    assert counts and 0 < max(counts) <= 2 * chunk  # the bar moves, and never past its total
