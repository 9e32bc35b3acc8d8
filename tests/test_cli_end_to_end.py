"""Every command a user runs, end to end and successful: the files it writes and what they hold.

Tiny runs of every method are trained once per session through ``metarl.cli.main``
(in-process) and shared by the tests that evaluate, compare and render them; one
test goes through ``python -m metarl`` in a subprocess. Expected values are read
back from the written files and recomputed here (means with numpy, tasks drawn
from the documented evaluation seed), not taken from the functions under test.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import metarl_envs as envs
from metarl.cli import COMMANDS
from metarl.cli import main as cli_main

FAMILY = "Point2DNav"
EVAL_SEED = 20170  # the documented evaluation seed (README / `metarl evaluate --help`)
NUM_TASKS, EPISODES, STEPS = 3, 2, 2
SMALL_EVAL = ["--split", "test", "--num-tasks", str(NUM_TASKS), "--episodes-per-step", str(EPISODES),
              "--steps", str(STEPS), "--device", "cpu", "--no-progress"]
# Point2DNav: a return over 100 steps lies in [-100 * (max distance), 0]; goals are within 0.5 m
# of the origin and an episode moves at most 100 * 0.1 * sqrt(2) m
WORST_RETURN = -100 * (0.5 * np.sqrt(2) + 10 * np.sqrt(2))

TRAIN_COMMANDS = {
    "maml": ["train", "maml", "--env", FAMILY, "--preset", "tiny", "--iterations", "2", "--meta-batch-size", "3",
             "--episodes-per-task", "2", "--hidden-sizes", "16", "16", "--device", "cpu", "--no-progress",
             "--no-tensorboard"],
    "pretrain": ["train", "pretrain", "--env", FAMILY, "--preset", "tiny", "--iterations", "2",
                 "--meta-batch-size", "3", "--episodes-per-task", "2", "--device", "cpu", "--no-progress"],
    "finetune": ["train", "finetune", "--env", FAMILY, "--timesteps", "256", "--num-envs", "2",
                 "--hidden-sizes", "16", "16", "--device", "cpu"],
    "protonet": ["train", "protonet", "--env", FAMILY, "--preset", "tiny", "--iterations", "20",
                 "--device", "cpu", "--no-progress"],
    "random_init": ["train", "random-init", "--env", FAMILY, "--hidden-sizes", "8", "8", "--seed", "3"],
}


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny trained run of every method, created through the CLI (shared by the tests below)."""
    threads = torch.get_num_threads()
    root = tmp_path_factory.mktemp("cli_runs")
    runs = {}
    try:
        for method, argv in TRAIN_COMMANDS.items():
            out = root / method
            assert cli_main([*argv, "--out", str(out)]) == 0, method
            runs[method] = out
    finally:
        torch.set_num_threads(threads)
    return runs


@pytest.fixture(scope="session")
def evaluated_runs(tiny_runs: dict[str, Path]) -> dict[str, Path]:
    """The runs above, each evaluated on the test split with a small protocol."""
    threads = torch.get_num_threads()
    try:
        for method, run in tiny_runs.items():
            extra = ["--split", "test", "--device", "cpu", "--no-progress"] if method == "protonet" else SMALL_EVAL
            assert cli_main(["evaluate", str(run), *extra]) == 0, method
    finally:
        torch.set_num_threads(threads)
    return tiny_runs


def _config(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())


@pytest.mark.parametrize("method", list(TRAIN_COMMANDS))
def test_train_writes_a_run_directory_with_config_and_weights(tiny_runs: dict[str, Path], method: str) -> None:
    run = tiny_runs[method]
    config = _config(run)
    assert config["method"] == method and config["family"] == FAMILY
    weights = list((run / "checkpoint").glob("*.safetensors"))
    assert weights and all(path.stat().st_size > 0 for path in weights)
    if method in ("maml", "pretrain"):  # iterative trainers log one metrics row per iteration
        from metarl.storage.runs import read_metrics

        rows = read_metrics(run / "metrics.jsonl") if (run / "metrics.jsonl").exists() else \
            read_metrics(next(run.glob("metrics*")))
        assert [int(row["iteration"]) for row in rows] == [1, 2]
    if method == "maml":
        assert config["iterations"] == 2 and config["meta_batch_size"] == 3
        assert list(config["hidden_sizes"]) == [16, 16]
        assert not (run / "tensorboard").exists()  # --no-tensorboard
    if method == "random_init":
        assert config["seed"] == 3 and list(config["policy"]["hidden_sizes"]) == [8, 8]


@pytest.mark.parametrize("method", ["maml", "pretrain", "random_init", "finetune"])
def test_evaluate_writes_the_split_tasks_and_consistent_means(
    evaluated_runs: dict[str, Path], method: str
) -> None:
    document = json.loads((evaluated_runs[method] / "eval_test.json").read_text())
    assert document["method"] == method and document["family"] == FAMILY and document["split"] == "test"
    assert document["num_tasks"] == NUM_TASKS and document["episodes_per_step"] == EPISODES
    # the tasks are the test split's, drawn from the documented evaluation seed
    expected_tasks = envs.distribution(FAMILY).sample(NUM_TASKS, "test", np.random.default_rng(EVAL_SEED))
    assert [envs.task_from_dict(row["task"]) for row in document["per_task"]] == expected_tasks
    per_task = np.array([row["returns"] for row in document["per_task"]])  # [tasks, k]
    assert per_task.shape == (NUM_TASKS, STEPS + 1)
    assert np.all(per_task < 0) and np.all(per_task > WORST_RETURN)
    np.testing.assert_allclose(document["returns"]["mean"], per_task.mean(axis=0), rtol=1e-12)
    for (lo, hi), column in zip(document["returns"]["mean_ci95"], per_task.T, strict=True):
        # a bootstrap interval of the mean over tasks: inside the range of the task returns (to float32)
        assert column.min() - 1e-3 <= lo <= column.mean() + 1e-3 and column.mean() - 1e-3 <= hi <= column.max() + 1e-3
    if method != "finetune":  # gradient adaptation: steps taken per adaptation step, all tasks
        assert 0 < document["samples_per_step"] <= NUM_TASKS * EPISODES * 100


def test_evaluate_prints_the_table_it_wrote(tiny_runs: dict[str, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    run = tiny_runs["random_init"]
    assert cli_main(["evaluate", str(run), "--split", "ood", "--num-tasks", "2", "--episodes-per-step", "1",
                     "--steps", "1", "--device", "cpu", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    document = json.loads((run / "eval_ood.json").read_text())
    assert document["split"] == "ood" and f"wrote {run / 'eval_ood.json'}" in printed
    for mean in document["returns"]["mean"]:
        assert f"{mean:.1f}" in printed
    goals = [(row["task"]["goal_x_m"], row["task"]["goal_y_m"]) for row in document["per_task"]]
    assert all(max(abs(x), abs(y)) > 0.5 for x, y in goals)  # ood goals lie outside the train square


def test_evaluate_protonet_reports_accuracy_above_nothing(evaluated_runs: dict[str, Path]) -> None:
    document = json.loads((evaluated_runs["protonet"] / "eval_test.json").read_text())
    assert document["method"] == "protonet" and document["split"] == "test"
    assert document["accuracy"]
    for size, value in document["accuracy"].items():
        assert int(size) > 0 and 0.0 <= value["mean"] <= 1.0
        chance = document["baselines"]["chance"][size]["mean"]
        assert chance == pytest.approx(1.0 / document["way"])


def test_compare_tables_every_evaluated_run(evaluated_runs: dict[str, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    methods = ["maml", "pretrain", "random_init", "finetune"]
    out = tmp_path / "report"
    reference = Path(__file__).resolve().parents[1] / "metarl" / "data" / "maml_paper_returns.json"
    assert cli_main(["compare", *(str(evaluated_runs[m]) for m in methods), "--split", "test",
                     "--out", str(out), "--reference", str(reference)]) == 0
    printed = capsys.readouterr().out
    names = {"comparison.md", "comparison.csv", "return_vs_k.png", "return_vs_samples.png"}
    assert names <= {path.name for path in out.iterdir()}
    assert (out / "return_vs_k.png").stat().st_size > 5_000
    assert (out / "comparison.md").read_text().strip() in printed
    with (out / "comparison.csv").open() as file:
        rows = list(csv.DictReader(file))
    for method in methods:  # the CSV's means per k are the evaluation documents' means
        source = str(evaluated_runs[method] / "eval_test.json")
        mine = sorted((row for row in rows if row["source"] == source), key=lambda row: int(row["k"]))
        assert {row["method"] for row in mine} == {method}
        means = json.loads(Path(source).read_text())["returns"]["mean"]
        np.testing.assert_allclose([float(row["mean"]) for row in mine], means, rtol=1e-6)
    assert any(row["method"] == "maml" and row["source"] != str(evaluated_runs["maml"] / "eval_test.json")
               for row in rows)  # the reference file's rows
    assert "-40.4" in printed  # the paper's MAML k = 0 row of the reference file


@pytest.mark.render
def test_render_writes_a_gif_with_one_panel_per_k(tiny_runs: dict[str, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import imageio.v3 as iio

    target = tmp_path / "clip.gif"
    assert cli_main(["render", str(tiny_runs["maml"]), "--split", "test", "--task-index", "1", "--steps", "0,1",
                     "--num-tasks", "3", "--episodes-per-step", "2", "--max-steps", "12", "--width", "64",
                     "--height", "64", "--out", str(target)]) == 0
    printed = capsys.readouterr().out
    frames = iio.imread(target, index=None)
    # two 64-pixel panels side by side, under the caption band
    assert frames.shape[0] >= 12 and frames.shape[1] > 64 and frames.shape[2] == 2 * 64
    assert frames.std() > 1.0
    assert f"wrote {target}" in printed and "k=0:" in printed and "k=1:" in printed


def test_envs_json_lists_every_family_with_its_splits(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["envs", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert list(table) == list(envs.FAMILIES)
    for family, info in table.items():
        assert info["id"] == f"MetaRL/{family}-v0" and info["horizon"] == (100 if family == FAMILY else 200)
        assert set(info["splits"]) == {"train", "test", "ood"} and info["parameters"]


def test_bench_envs_tiny_prints_every_side(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["bench", "envs", "--robots", "half_cheetah", "--chunk-steps", "20", "--rounds", "1",
                     "--num-envs", "2", "--gym-vector-envs", "2"]) == 0
    printed = capsys.readouterr().out
    assert "half_cheetah (HalfCheetahVel)" in printed and printed.count("x ") >= 3


def test_bench_maml_json_on_point2dnav(capsys: pytest.CaptureFixture[str]) -> None:
    threads = torch.get_num_threads()
    try:
        assert cli_main(["bench", "maml", "--sampler-families", FAMILY, "--iteration-families",
                         "--repeats", "1", "--device", "cpu", "--json"]) == 0
    finally:
        torch.set_num_threads(threads)
    results = json.loads(capsys.readouterr().out)
    (sampler,) = results["sampler"]
    assert sampler["ratio"] == pytest.approx(sampler["sampler_steps_per_s"] / sampler["env_alone_steps_per_s"])
    assert results["iterations"] == []


def test_demo_tiny_trains_evaluates_and_plots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """The demo has no size flag below --iterations: its config and protocol are shrunk here."""
    import dataclasses

    from metarl.commands import demo_cmd

    tiny = demo_cmd.demo_config
    monkeypatch.setattr(demo_cmd, "demo_config", lambda iterations: tiny(iterations).replace(
        meta_batch_size=3, episodes_per_task=2, hidden_sizes=(16, 16)))
    real_options = demo_cmd.EvalOptions
    monkeypatch.setattr(demo_cmd, "EvalOptions", lambda **kw: dataclasses.replace(
        real_options(**kw), num_tasks=3, episodes_per_step=2))
    out = tmp_path / "demo"
    threads = torch.get_num_threads()
    try:
        assert cli_main(["demo", "--out", str(out), "--iterations", "1", "--device", "cpu", "--no-progress",
                         "--no-video"]) == 0
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    document = json.loads((out / "eval_test.json").read_text())
    assert document["method"] == "maml" and document["num_tasks"] == 3
    per_task = np.array([row["returns"] for row in document["per_task"]])
    np.testing.assert_allclose(document["returns"]["mean"], per_task.mean(axis=0), rtol=1e-12)
    ours = next(line for line in printed.splitlines() if line.startswith("MAML (ours)"))
    assert ours.split()[2:] == [f"{v:.1f}" for v in document["returns"]["mean"]]
    assert "MAML (paper)" in printed and "-40.4" in printed
    assert (out / "demo_returns.png").stat().st_size > 10_000
    assert _config(out)["method"] == "maml"


def test_python_dash_m_metarl_runs_a_command_in_a_fresh_process(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    usage = subprocess.run([sys.executable, "-m", "metarl"], capture_output=True, text=True, env=env,
                           timeout=120, check=True)
    for words in COMMANDS:
        assert " ".join(words) in usage.stdout
    out = tmp_path / "rand"
    created = subprocess.run([sys.executable, "-m", "metarl", "train", "random-init", "--env", FAMILY,
                              "--hidden-sizes", "4", "--out", str(out)],
                             capture_output=True, text=True, env=env, timeout=120)
    assert created.returncode == 0, created.stderr
    assert _config(out)["method"] == "random_init" and f"in {out}" in created.stdout
    bad = subprocess.run([sys.executable, "-m", "metarl", "train", "random-init", "--out", str(tmp_path / "x")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "--env" in bad.stderr and "Traceback" not in bad.stderr


def test_help_lists_every_command_and_unknown_commands_are_refused(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli_main([]) == 0 and cli_main(["--help"]) == 0
    usage = capsys.readouterr().out
    for words, (_, help_text) in COMMANDS.items():
        assert f"{' '.join(words)}" in usage and help_text in usage
    assert cli_main(["train", "dqn"]) == 2
    error = capsys.readouterr().err
    assert "unknown command 'train dqn'" in error and "train maml" in error
    assert cli_main(["bench"]) == 0 and "envs" in capsys.readouterr().out
    from metarl.commands import envs_cmd

    def interrupted(argv: list[str]) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(envs_cmd, "main", interrupted)
    assert cli_main(["envs"]) == 130
    assert "metarl envs: interrupted" in capsys.readouterr().err


def test_device_names_resolve_or_name_the_choices() -> None:
    from metarl.core.device import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="auto, cpu, cuda"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="cuda"):
        resolve_device(f"cuda:{torch.cuda.device_count() + 3}")


@pytest.mark.render
def test_demo_video_shows_the_run_before_and_after_adaptation(
    tiny_runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    import imageio.v3 as iio

    from metarl.commands.demo_cmd import render_demo_video
    from metarl.storage.runs import RunDir

    path = render_demo_video(RunDir(tiny_runs["maml"]), seed=0)
    printed = capsys.readouterr().out
    assert path == tiny_runs["maml"] / "demo_before_after.mp4"
    frames = iio.imread(path, index=None)
    # three 192-pixel panels (k = 0, 1, 3) under the caption band
    assert frames.shape[2:] == (3 * 192, 3) and frames.shape[1] > 192 and len(frames) >= 2
    assert "k=0:" in printed and "k=3:" in printed
