"""``metarl train maml`` and ``metarl evaluate``: resume bit-exactness, Ctrl-C, bad input, eval schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from metarl import cli
from metarl.algorithms.maml import training as train_module
from metarl.algorithms.maml.learner import MAMLLearner
from metarl.algorithms.presets import PRESETS, MAMLRunConfig, maml_preset
from metarl.evaluation.protocol import EvalOptions
from metarl.methods.dispatch import evaluate_run as evaluate
from metarl.storage.checkpoint import save_checkpoint
from metarl.storage.runs import RunDir, load_policy, read_metrics

SMALL_FLAGS = [
    "--meta-batch-size", "3", "--episodes-per-task", "3", "--horizon", "15", "--hidden-sizes", "8", "8",
    "--no-progress", "--no-tensorboard", "--device", "cpu",
]


def _config(iterations: int, outer: str = "trpo") -> MAMLRunConfig:
    return maml_preset("tiny", "Point2DNav").replace(
        iterations=iterations, meta_batch_size=3, episodes_per_task=3, horizon=15, hidden_sizes=(8, 8),
        checkpoint_every=1, maml={"outer": outer},
    )


def _train(config: MAMLRunConfig, out: Path, resume: bool = False) -> train_module.TrainResult:
    return train_module.train_maml(config, out, seed=3, device="cpu", resume=resume, progress=False,
                                   tensorboard=False)


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("outer", ["trpo", "promp"])
def test_resume_is_bit_exact(tmp_path: Path, outer: str) -> None:
    straight = _train(_config(4, outer), tmp_path / "straight")
    _train(_config(2, outer), tmp_path / "split")
    resumed = _train(_config(4, outer), tmp_path / "split", resume=True)
    for (name, a), b in zip(straight.policy.named_parameters(), resumed.policy.parameters(), strict=True):
        assert torch.equal(a, b), name
    rows_a = read_metrics(tmp_path / "straight" / "metrics.csv")
    rows_b = read_metrics(tmp_path / "split" / "metrics.csv")
    assert [r["iteration"] for r in rows_b] == [1, 2, 3, 4]
    for a, b in zip(rows_a, rows_b, strict=True):
        assert a["adapt/return_k0"] == b["adapt/return_k0"] and a["adapt/return_k1"] == b["adapt/return_k1"]
    assert json.loads((tmp_path / "split" / "config.json").read_text())["iterations"] == 4


def test_ctrl_c_saves_and_resume_continues_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    straight = _train(_config(3), tmp_path / "straight")
    original = MAMLLearner.meta_update
    calls = {"n": 0}

    def interrupted(self: MAMLLearner, support: list, query: object) -> dict:
        calls["n"] += 1
        if calls["n"] == 3:  # Ctrl-C in the middle of iteration 3
            raise KeyboardInterrupt
        return original(self, support, query)

    monkeypatch.setattr(MAMLLearner, "meta_update", interrupted)
    config = _config(3).replace(checkpoint_every=10)  # only the Ctrl-C checkpoint exists
    with pytest.raises(KeyboardInterrupt):
        _train(config, tmp_path / "run")
    monkeypatch.setattr(MAMLLearner, "meta_update", original)
    saved = json.loads((tmp_path / "run" / "checkpoint" / "latest.json").read_text())
    assert saved["iteration"] == 2
    resumed = _train(config, tmp_path / "run", resume=True)
    for a, b in zip(straight.policy.parameters(), resumed.policy.parameters(), strict=True):
        assert torch.equal(a, b)


def test_presets_and_config_validation() -> None:
    for name in PRESETS:
        config = maml_preset(name, "Point2DNav")
        assert MAMLRunConfig.from_dict(config.to_dict()) == config
    paper = maml_preset("paper", "Point2DNav")
    assert (paper.meta_batch_size, paper.episodes_per_task, paper.iterations, paper.hidden_sizes) == (20, 20, 100, (100, 100))
    # the paper code's point script (maml_examples/maml_trpo_point.py): ReLU, fast lr 0.5, meta step 0.01
    assert paper.maml.inner_lr == 0.5 and paper.maml.trpo.max_kl == 0.01 and paper.nonlinearity == "relu"
    assert paper.weight_init == "xavier" and maml_preset("fast", "Point2DNav").weight_init == "pytorch"
    # the paper code's ICML snapshots (maml_examples/test_maml_cheetah*.py): fbs, mbs, mlr, itr, ReLU
    direction, velocity = maml_preset("paper", "HalfCheetahDir"), maml_preset("paper", "HalfCheetahVel")
    assert (direction.episodes_per_task, direction.meta_batch_size, direction.maml.trpo.max_kl, direction.iterations) == (20, 40, 0.02, 100)
    assert (velocity.episodes_per_task, velocity.meta_batch_size, velocity.maml.trpo.max_kl, velocity.iterations) == (10, 40, 0.01, 475)
    assert direction.nonlinearity == velocity.nonlinearity == "relu"
    assert MAMLRunConfig.from_dict(direction.to_dict()) == direction
    with pytest.raises(ValueError, match="meta_batch_size"):
        paper.replace(meta_batch_size=0)
    with pytest.raises(ValueError, match="inner_lr"):
        paper.replace(maml={"inner_lr": -0.1})
    with pytest.raises(ValueError, match="unknown preset"):
        maml_preset("huge", "Point2DNav")


def _run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(argv)
    return code, capsys.readouterr().err


def _assert_one_paragraph(message: str, *needles: str) -> None:
    assert "Traceback" not in message
    assert "\n\n" not in message.strip()
    flat = " ".join(message.split())
    for needle in needles:
        assert needle in flat, (needle, flat)


def test_cli_bad_input_exits_2_and_leaves_the_run_intact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code, err = _run_cli(["train", "maml", "--env", "Nope", "--out", str(out), *SMALL_FLAGS], capsys)
    assert code == 2 and not out.exists()
    _assert_one_paragraph(err, "unknown family 'Nope'", "Point2DNav")
    code, err = _run_cli(["train", "maml", "--env", "Point2DNav", "--out", str(out), "--inner-lr", "-0.1", *SMALL_FLAGS], capsys)
    assert code == 2 and not out.exists()
    _assert_one_paragraph(err, "inner_lr", "> 0")
    code, err = _run_cli(["train", "maml", "--env", "Point2DNav", "--out", str(out), *SMALL_FLAGS, "--meta-batch-size", "0"], capsys)
    assert code == 2 and not out.exists()
    _assert_one_paragraph(err, "meta_batch_size")

    base = ["train", "maml", "--env", "Point2DNav", "--preset", "tiny", "--out", str(out), "--iterations", "1", *SMALL_FLAGS]
    assert cli.main(base) == 0
    capsys.readouterr()
    before = _snapshot(out)

    # a different run in the same directory, with and without --resume
    code, err = _run_cli([*base, "--inner-lr", "0.2"], capsys)
    assert code == 2 and _snapshot(out) == before
    _assert_one_paragraph(err, "already holds a different run", "maml.inner_lr: 0.1 -> 0.2")
    code, err = _run_cli([*base, "--inner-lr", "0.2", "--resume"], capsys)
    assert code == 2 and _snapshot(out) == before
    _assert_one_paragraph(err, "already holds a different run")
    code, err = _run_cli(base, capsys)
    assert code == 2 and _snapshot(out) == before
    _assert_one_paragraph(err, "pass --resume")

    # a checkpoint of another env
    checkpoint = out / "checkpoint" / "latest.safetensors"
    good = checkpoint.read_bytes()
    save_checkpoint(checkpoint, {"policy.log_std": torch.zeros(6)}, {"family": "HalfCheetahVel", "obs_dim": 17, "act_dim": 6, "method": "maml"})
    mismatched = _snapshot(out)
    code, err = _run_cli([*base, "--iterations", "2", "--resume"], capsys)
    assert code == 2 and _snapshot(out) == mismatched
    _assert_one_paragraph(err, "observation size 17 and action size 6")

    # a truncated and a corrupted checkpoint
    checkpoint.write_bytes(good[: len(good) // 2])
    truncated = _snapshot(out)
    code, err = _run_cli([*base, "--iterations", "2", "--resume"], capsys)
    assert code == 2 and _snapshot(out) == truncated
    _assert_one_paragraph(err, "truncated")
    code, err = _run_cli(["evaluate", str(out), "--num-tasks", "2", "--episodes-per-step", "2", "--no-progress"], capsys)
    assert code == 2 and _snapshot(out) == truncated
    _assert_one_paragraph(err, "truncated")
    corrupted = bytearray(good)
    corrupted[-5] ^= 0x55
    checkpoint.write_bytes(bytes(corrupted))
    code, err = _run_cli([*base, "--iterations", "2", "--resume"], capsys)
    assert code == 2
    _assert_one_paragraph(err, "corrupted")

    # the intact checkpoint resumes fine
    checkpoint.write_bytes(good)
    assert cli.main([*base, "--iterations", "2", "--resume"]) == 0
    assert [r["iteration"] for r in read_metrics(out / "metrics.csv")] == [1, 2]


def test_resume_without_repeating_the_flags(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert cli.main(["train", "maml", "--env", "Point2DNav", "--preset", "tiny", "--out", str(out), "--iterations", "1", *SMALL_FLAGS]) == 0
    assert cli.main(["train", "maml", "--out", str(out), "--resume", "--iterations", "2", "--no-progress", "--no-tensorboard"]) == 0
    assert len(read_metrics(out / "metrics.csv")) == 2


def test_relu_run_is_stored_resumed_and_evaluated_as_relu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    flags = ["--env", "Point2DNav", "--preset", "tiny", "--out", str(out), "--iterations", "1", "--weight-init", "xavier",
             "--nonlinearity", "relu"]
    assert cli.main(["train", "maml", *flags, *SMALL_FLAGS]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["nonlinearity"] == "relu" and config["policy"]["nonlinearity"] == "relu"
    assert config["weight_init"] == config["policy"]["weight_init"] == "xavier"
    assert cli.main(["train", "maml", "--out", str(out), "--resume", "--iterations", "2", "--no-progress", "--no-tensorboard"]) == 0
    assert len(read_metrics(out / "metrics.csv")) == 2
    assert load_policy(RunDir(out), config).nonlinearity == "relu"
    assert cli.main(["evaluate", str(out), "--num-tasks", "2", "--episodes-per-step", "2", "--no-progress"]) == 0
    code, err = _run_cli(["train", "maml", *flags[:-1], "elu", "--out", str(tmp_path / "bad"), *SMALL_FLAGS], capsys)
    assert code == 2
    _assert_one_paragraph(err, "unknown nonlinearity 'elu'", "tanh, relu")


def test_evaluate_writes_the_schema(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    _train(_config(1), out)
    document = evaluate(out, EvalOptions(split="test", num_tasks=4, episodes_per_step=3, device="cpu"), progress=False)
    written = json.loads((out / "eval_test.json").read_text())
    assert written == json.loads(json.dumps(document))
    assert written["method"] == "maml" and written["family"] == "Point2DNav" and written["split"] == "test"
    assert written["num_tasks"] == 4 and written["episodes_per_step"] == 3
    for key in ("mean", "iqm"):
        assert len(written["returns"][key]) == 4
    assert len(written["returns"]["ci95"]) == 4 and all(lo <= hi for lo, hi in written["returns"]["ci95"])
    assert len(written["per_task"]) == 4 and all(len(t["returns"]) == 4 for t in written["per_task"])
    assert written["per_task"][0]["task"]["family"] == "Point2DNav"
    mean_k0 = sum(t["returns"][0] for t in written["per_task"]) / 4
    assert written["returns"]["mean"][0] == pytest.approx(mean_k0)
    assert written["samples_per_step"] == 4 * 3 * 15  # no early ends from the origin in 15 steps this far out
    assert written["adapt_seconds"] > 0
    # 2-8-8-2 MLP: 2*8 + 8*8 + 8*2 = 96 multiply-adds; params 96 + 8 + 8 + 2 (biases) + 2 (log-std)
    assert written["params"] == 116 and written["flops_per_forward"] == 192
    # same seed, same numbers; the ood split works too
    again = evaluate(out, EvalOptions(split="test", num_tasks=4, episodes_per_step=3, device="cpu"), progress=False)
    assert again["per_task"] == document["per_task"]
    assert cli.main(["evaluate", str(out), "--split", "ood", "--num-tasks", "3", "--episodes-per-step", "2", "--no-progress"]) == 0
    assert json.loads((out / "eval_ood.json").read_text())["split"] == "ood"
    assert "k" in capsys.readouterr().out


def test_evaluation_adapts_with_the_runs_advantage_normalisation(tmp_path: Path) -> None:
    out = tmp_path / "run"
    flags = ["--env", "Point2DNav", "--preset", "tiny", "--out", str(out), "--iterations", "1",
             "--normalize-advantages", "False", "--cg-subsample", "0.5"]
    assert cli.main(["train", "maml", *flags, *SMALL_FLAGS]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["maml"]["normalize_advantages"] is False and config["maml"]["cg_subsample"] == 0.5
    options = EvalOptions(split="test", num_tasks=3, episodes_per_step=3, steps=1, device="cpu")
    raw = evaluate(out, options, progress=False)["returns"]["mean"]
    config["maml"]["normalize_advantages"] = True
    (out / "config.json").write_text(json.dumps(config))
    normalised = evaluate(out, options, progress=False)["returns"]["mean"]
    assert raw[0] == normalised[0] and raw[1] != normalised[1]  # same start, different inner step


def test_evaluate_on_explicit_tasks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    _train(_config(1), out)
    flags = ["--episodes-per-step", "2", "--no-progress", "--device", "cpu"]
    assert cli.main(["evaluate", str(out), "--num-tasks", "3", *flags]) == 0
    split_document = json.loads((out / "eval_test.json").read_text())
    # an eval_<split>.json is a tasks file: the same tasks and seed give the same returns
    assert cli.main(["evaluate", str(out), "--tasks", str(out / "eval_test.json"), *flags]) == 0
    custom = json.loads((out / "eval_custom.json").read_text())
    assert custom["split"] == "custom" and custom["num_tasks"] == 3
    assert custom["tasks_file"] == str(out / "eval_test.json")
    assert custom["per_task"] == split_document["per_task"]
    assert "eval_custom.json" in capsys.readouterr().out
    # a plain list of task dicts
    tasks_file = tmp_path / "goals.json"
    goals = [{"family": "Point2DNav", "goal_x_m": 0.3, "goal_y_m": -0.2}, {"family": "Point2DNav", "goal_x_m": -0.1, "goal_y_m": 0.4}]
    tasks_file.write_text(json.dumps(goals))
    assert cli.main(["evaluate", str(out), "--tasks", str(tasks_file), *flags]) == 0
    custom = json.loads((out / "eval_custom.json").read_text())
    assert [entry["task"] for entry in custom["per_task"]] == goals
    assert len(custom["returns"]["mean"]) == 4


@pytest.mark.parametrize(
    ("content", "needles"),
    [
        ('[{"family": "HalfCheetahVel", "goal_velocity_mps": 1.0}]', ["HalfCheetahVel", "trained on Point2DNav"]),
        ('[{"family": "Point2DNav", "goal_x_m": 50.0, "goal_y_m": 0.0}]', ["task 0", "goal_x_m"]),
        ("[]", ["non-empty list of task dicts"]),
        ("{not json", ["not valid JSON"]),
        ('[{"goal_x_m": 0.1}]', ["task 0", "'family' key"]),
    ],
)
def test_evaluate_tasks_file_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, needles: list[str]
) -> None:
    out = tmp_path / "run"
    _train(_config(1), out)
    before = _snapshot(out)
    tasks_file = tmp_path / "tasks.json"
    tasks_file.write_text(content)
    code, err = _run_cli(["evaluate", str(out), "--tasks", str(tasks_file), "--no-progress"], capsys)
    assert code == 2
    _assert_one_paragraph(err, *needles)
    assert _snapshot(out) == before


class _FixedLengthSampler:
    """Stands in for VectorEnvSampler: every episode of task t lasts lengths[t] steps, reward -1 per step."""

    horizon = 10

    def __init__(self, lengths: list[int]) -> None:
        self.lengths = lengths
        self.calls: list[int] = []

    def sample(self, policy, task_params, tasks, episodes_per_task, generator):  # noqa: ANN001, ANN201
        from metarl.core.episodes import Episodes

        self.calls.append(episodes_per_task)
        num_tasks, h = len(self.lengths), self.horizon
        mask = torch.zeros(num_tasks, episodes_per_task, h)
        for t, length in enumerate(self.lengths):
            mask[t, :, :length] = 1.0
        return Episodes(observations=torch.ones(num_tasks, episodes_per_task, h, 2) * mask[..., None],
                        actions=torch.ones(num_tasks, episodes_per_task, h, 2) * mask[..., None],
                        rewards=-mask, mask=mask, tasks=list(tasks))


def test_sample_budget_keeps_whole_episodes_until_each_task_reaches_it() -> None:
    from metarl.evaluation.protocol import mean_episode_returns, sample_step_budget

    sampler = _FixedLengthSampler([4, 10])
    episodes = sample_step_budget(sampler, None, {}, ["a", "b"], 20, torch.Generator())
    # rounds of at most ceil(20 / 10) = 2 episodes: task 0 (length 4) has 8, then 16, then 20 steps
    assert sampler.calls == [2, 2, 1]
    kept = episodes.mask[..., 0]
    assert kept[0].tolist() == [1, 1, 1, 1, 1] and kept[1].tolist() == [1, 1, 0, 0, 0]
    assert episodes.mask.sum(dim=(1, 2)).tolist() == [20, 20]
    assert mean_episode_returns(episodes).tolist() == [-4.0, -10.0]
    # a budget that is not a multiple of the length keeps the episode that crosses it
    sampler = _FixedLengthSampler([4, 10])
    episodes = sample_step_budget(sampler, None, {}, ["a", "b"], 18, torch.Generator())
    assert episodes.mask[0, :, 0].sum() == 5 and episodes.mask[1, :, 0].sum() == 2
    # episodes of one step would need 20 episodes: capped at 4 rounds' worth (8), all kept
    sampler = _FixedLengthSampler([1, 10])
    episodes = sample_step_budget(sampler, None, {}, ["a", "b"], 20, torch.Generator())
    assert sum(sampler.calls) == 8 and episodes.mask.sum(dim=(1, 2)).tolist() == [8, 20]


def test_sample_budget_equals_the_episode_protocol_when_no_episode_ends_early(tmp_path: Path) -> None:
    out = tmp_path / "run"
    _train(_config(1), out)
    by_episodes = evaluate(out, EvalOptions(num_tasks=3, episodes_per_step=3, device="cpu"), progress=False)
    by_samples = evaluate(out, EvalOptions(num_tasks=3, samples_per_step=45, device="cpu"), progress=False)
    assert by_samples["per_task"] == by_episodes["per_task"]  # 3 episodes x horizon 15, none ends early
    assert by_samples["samples_per_step_budget"] == 45 and "samples_per_step_budget" not in by_episodes
    with pytest.raises(ValueError, match=r"^samples_per_step \(--samples-per-step\) must be an integer >= 1 or None, got 0$"):
        EvalOptions(samples_per_step=0)
