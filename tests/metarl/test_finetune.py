"""The stable-baselines3 fine-tune baseline: task-mixture env, recipe, files, errors, learning."""

from __future__ import annotations

import json
import tempfile

import numpy as np
import pytest
import torch

import metarl_envs as envs
from metarl.algorithms import finetune as ft
from metarl.cli import main as cli_main
from metarl.storage.checkpoint import CheckpointError
from metarl.storage.runs import RunDir

CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/metarl/conftest.py


def _tasks(n: int, split: str = "test", seed: int = 0) -> list:
    return envs.distribution("Point2DNav").sample(n, split, np.random.default_rng(seed))


def _random_state(spec: ft.ModelSpec, seed: int = 0) -> dict[str, torch.Tensor]:
    """A model state with every tensor perturbed (as after training) and non-trivial obs statistics."""
    with ft.isolated_global_rng(seed):
        venv = ft.wrap_normalization(spec, ft.make_vec_env(spec, 1, np.random.default_rng(seed)), training=True)
        model = ft.build_model(spec, venv, CPU)
        if spec.normalize_obs:
            venv.obs_rms.mean = np.array([0.1, -0.2])
            venv.obs_rms.var = np.array([0.3, 0.5])
        state = ft.model_state(model, venv)
    noise = torch.Generator().manual_seed(seed)
    return {k: v + 0.05 * torch.randn(v.shape, generator=noise, dtype=v.dtype) for k, v in state.items()
            if not k.startswith("obs_rms")} | {k: v for k, v in state.items() if k.startswith("obs_rms")}


def _spec(algo: str = "ppo", normalize_obs: bool = True) -> ft.ModelSpec:
    return ft.make_spec("Point2DNav", algo, hidden_sizes=(16, 16), normalize_obs=normalize_obs)


def _body_and_head(model) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    layers = ft.policy_layers(model)
    body = {f"{i}.{n}": p.detach().clone() for i, layer in enumerate(layers[:-1])
            for m in layer for n, p in m.named_parameters()}
    head = {f"{j}.{n}": p.detach().clone() for j, m in enumerate(layers[-1]) for n, p in m.named_parameters()}
    return body, head


# -- the task-mixture env ------------------------------------------------------------


def test_mixture_env_draws_a_fresh_task_every_episode_from_its_generator() -> None:
    def goals(seed: int) -> list:
        env = ft.TaskMixtureEnv("Point2DNav", np.random.default_rng(seed))
        return [env.reset()[1]["task"] for _ in range(5)]

    first = goals(3)
    assert len(set(first)) == 5  # a new task each episode
    assert first == goals(3)  # and a function of the generator alone
    assert first != goals(4)
    expected = envs.distribution("Point2DNav").sample(1, "train", np.random.default_rng(3))
    assert first[0] == expected[0]  # drawn from the train split of the family's distribution


def test_mixture_env_rescales_unit_actions_onto_the_action_box() -> None:
    task = _tasks(1)[0]
    env = ft.TaskMixtureEnv("Point2DNav", np.random.default_rng(0), tasks=[task])
    assert env.action_space.low.tolist() == [-1, -1] and env.action_space.high.tolist() == [1, 1]
    obs, info = env.reset()
    assert info["task"] == task
    obs, *_ = env.step(np.array([1.0, -0.5]))
    np.testing.assert_allclose(obs, [0.1, -0.05])  # Point2DNav's box is [-0.1, 0.1]^2
    with pytest.raises(ValueError, match="at least one task"):
        ft.TaskMixtureEnv("Point2DNav", np.random.default_rng(0), tasks=[])
    with pytest.raises(ValueError, match="numpy.random.Generator"):
        ft.TaskMixtureEnv("Point2DNav", 0)


# -- the fine-tuning recipe --------------------------------------------------------------


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_frozen_layers_stay_bit_for_bit_unchanged(algo: str) -> None:
    spec = _spec(algo)
    state = _random_state(spec)
    recipe = ft.FinetuneRecipe(freeze=2, episodes_per_step=2, num_steps=1, learning_rate=1e-2)
    with ft.isolated_global_rng(0):
        model, venv = ft.prepare_finetune(spec, state, _tasks(1)[0], recipe, env_seed=0, device=CPU)
        body, head = _body_and_head(model)
        model.learn(total_timesteps=2 * 100, reset_num_timesteps=False)
    after_body, after_head = _body_and_head(model)
    for name, value in body.items():
        assert torch.equal(after_body[name], value), f"frozen {name} changed"
    assert any(not torch.equal(after_head[n], v) for n, v in head.items()), "the unfrozen head did not train"


def test_freeze_counts_hidden_layers_then_the_head() -> None:
    spec = _spec("ppo")
    state = _random_state(spec)
    with ft.isolated_global_rng(0):
        model, _ = ft.prepare_finetune(spec, state, _tasks(1)[0], ft.FinetuneRecipe(freeze=3), 0, CPU)
    trainable = {n for n, p in model.policy.named_parameters() if p.requires_grad}
    assert not any(n.startswith(("mlp_extractor.policy_net", "action_net")) for n in trainable)
    assert "log_std" in trainable and any(n.startswith("mlp_extractor.value_net") for n in trainable)
    optimised = {id(p) for group in model.policy.optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for p in model.policy.parameters() if p.requires_grad}


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_new_head_replaces_the_head_and_keeps_the_body(algo: str) -> None:
    spec = _spec(algo)
    state = _random_state(spec)
    with ft.isolated_global_rng(0):
        pretrained, _ = ft.load_policy(spec, state, CPU)
        model, _ = ft.prepare_finetune(spec, state, _tasks(1)[0], ft.FinetuneRecipe(new_head=True), 0, CPU)
    old_body, old_head = _body_and_head(pretrained)
    new_body, new_head = _body_and_head(model)
    assert old_body.keys() == new_body.keys() and old_head.keys() == new_head.keys()
    for name in old_body:
        assert torch.equal(old_body[name], new_body[name]), f"body {name} changed"
    for name in old_head:
        assert not torch.equal(old_head[name], new_head[name]), f"head {name} was not replaced"
    head_modules = ft.policy_layers(model)[-1]
    assert all(p.requires_grad for m in head_modules for p in m.parameters())
    if algo == "ppo":  # the state-independent log-std belongs to neither and is kept
        assert torch.equal(model.policy.log_std, pretrained.policy.log_std)


def test_recipe_errors_name_the_limit() -> None:
    spec = _spec("ppo")
    with pytest.raises(ValueError, match=r"freeze=4 asks for more layers .* has 3 .* 0\.\.3"):
        ft.FinetuneRecipe(freeze=4).check_against(spec)
    with pytest.raises(ValueError, match=r"would freeze the fresh head.*0\.\.2"):
        ft.FinetuneRecipe(freeze=3, new_head=True).check_against(spec)
    with pytest.raises(ValueError, match="freeze must be an integer >= 0"):
        ft.FinetuneRecipe(freeze=-1)
    with pytest.raises(ValueError, match="timesteps must be an integer >= 1"):
        ft.FinetuneConfig(family="Point2DNav", timesteps=0)
    with pytest.raises(ValueError, match="algo must be one of"):
        ft.FinetuneConfig(family="Point2DNav", algo="dqn")
    with pytest.raises(ValueError, match="more layers than the policy network has"):
        ft.FinetuneConfig(family="Point2DNav", hidden_sizes=(8,), recipe=ft.FinetuneRecipe(freeze=3))


# -- files: save, reload, refuse ---------------------------------------------------------


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_saved_weights_reload_to_the_same_actions(tmp_path, algo: str) -> None:
    spec = _spec(algo)
    state = _random_state(spec, seed=1)
    ft.save_pretrained(tmp_path / "policy.safetensors", spec, state)
    assert json.loads((tmp_path / "policy.json").read_text())["model"]["algo"] == algo
    loaded_spec, loaded_state = ft.load_pretrained(tmp_path / "policy.safetensors")
    assert loaded_spec == spec
    original, norm_a = ft.load_policy(spec, state, CPU)
    reloaded, norm_b = ft.load_policy(loaded_spec, loaded_state, CPU)
    obs = np.random.default_rng(0).normal(size=(32, 2))
    obs_a = torch.as_tensor(norm_a.normalize_obs(obs), dtype=torch.float32)
    obs_b = torch.as_tensor(norm_b.normalize_obs(obs), dtype=torch.float32)
    assert torch.equal(obs_a, obs_b)
    assert torch.equal(ft.policy_actions(original, obs_a, None), ft.policy_actions(reloaded, obs_b, None))
    sampled_a = ft.policy_actions(original, obs_a, torch.Generator().manual_seed(5))
    sampled_b = ft.policy_actions(reloaded, obs_b, torch.Generator().manual_seed(5))
    assert torch.equal(sampled_a, sampled_b)


def test_corrupted_or_truncated_weights_are_refused(tmp_path) -> None:
    spec = _spec("ppo")
    path = tmp_path / "policy.safetensors"
    ft.save_pretrained(path, spec, _random_state(spec))
    data = bytearray(path.read_bytes())
    data[-20] ^= 0xFF  # flip one byte of tensor data
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted"):
        ft.load_pretrained(path)
    path.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(CheckpointError, match="truncated"):
        ft.load_pretrained(path)


def test_weights_that_do_not_match_their_description_are_refused(tmp_path) -> None:
    spec = _spec("ppo")
    state = _random_state(spec)
    wider = ft.make_spec("Point2DNav", "ppo", hidden_sizes=(32, 16))
    path = tmp_path / "policy.safetensors"
    ft.save_pretrained(path, wider, state)  # a description that lies about the widths
    with pytest.raises(CheckpointError, match="does not match its description"):
        ft.load_pretrained(path)


def test_train_command_writes_a_run_that_loads(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    code = cli_main(["train", "finetune", "--env", "Point2DNav", "--timesteps", "512", "--num-envs", "2",
                     "--hidden-sizes", "16", "16", "--out", str(out), "--device", "cpu", "--freeze", "1"])
    assert code == 0
    config, spec, state = ft.load_run(out)
    assert config.recipe.freeze == 1 and config.timesteps == 512 and spec.hidden_sizes == (16, 16)
    assert RunDir(out).read_config()["method"] == "finetune"
    assert (out / "checkpoint" / "policy.safetensors").is_file()
    # the same directory again is refused (it holds a run)
    assert cli_main(["train", "finetune", "--env", "Point2DNav", "--timesteps", "512", "--out", str(out)]) == 2
    assert "already holds" in capsys.readouterr().err


def test_bad_command_input_exits_with_a_clear_error(tmp_path, capsys) -> None:
    base = ["train", "finetune", "--env", "Point2DNav", "--out", str(tmp_path / "r")]
    assert cli_main([*base, "--timesteps", "0"]) == 2
    assert "timesteps must be an integer >= 1" in capsys.readouterr().err
    assert cli_main([*base, "--freeze", "5"]) == 2
    assert "freeze=5 asks for more layers than the policy network has" in capsys.readouterr().err.replace("\n", " ")
    if not torch.cuda.is_available():
        assert cli_main([*base, "--device", "cuda"]) == 2
        assert "no CUDA device is available" in capsys.readouterr().err.replace("\n", " ")
    assert not (tmp_path / "r").exists()  # nothing written on bad input


def test_evaluate_writes_the_maml_schema_on_the_protocol_tasks(tmp_path) -> None:
    from metarl.evaluation.protocol import evaluation_tasks

    out = tmp_path / "run"
    assert cli_main(["train", "finetune", "--env", "Point2DNav", "--timesteps", "512", "--num-envs", "2",
                     "--hidden-sizes", "16", "16", "--new-head", "--out", str(out), "--device", "cpu"]) == 0
    assert cli_main(["evaluate", str(out), "--split", "ood", "--num-tasks", "2", "--episodes-per-step", "2",
                     "--steps", "2", "--device", "cpu", "--no-progress"]) == 0
    document = json.loads((out / "eval_ood.json").read_text())
    assert document["method"] == "finetune" and document["split"] == "ood" and document["num_tasks"] == 2
    assert len(document["returns"]["mean"]) == 3 and len(document["returns"]["ci95"]) == 3
    assert document["samples_per_step"] == 2 * 2 * 100  # tasks x episodes x horizon
    assert document["recipe"]["new_head"] is True
    assert document["params"] == 2 * 16 + 16 + 16 * 16 + 16 + 16 * 2 + 2 + 2  # actor body, head, log-std
    tasks = evaluation_tasks("Point2DNav", "ood", 2)
    assert [row["task"] for row in document["per_task"]] == [task.to_dict() for task in tasks]


def test_a_run_of_another_method_is_refused_by_the_loader(tmp_path) -> None:
    RunDir(tmp_path).write_config({"method": "maml", "family": "Point2DNav"})
    with pytest.raises(ValueError, match="holds a 'maml' run, not a 'finetune' run"):
        ft.load_run(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a metarl run directory"):
        ft.load_run(tmp_path / "missing")


# -- evaluation rollouts and learning --------------------------------------------------


def test_rollout_returns_are_seeded_and_match_the_env_reward(monkeypatch) -> None:
    spec = _spec("ppo", normalize_obs=False)
    model, _ = ft.load_policy(spec, _random_state(spec), CPU)
    tasks = _tasks(2)
    a = ft.rollout_returns(model, spec, tasks, 3, torch.Generator().manual_seed(0))
    recorded = []  # (observations, unit actions) of every step, recorded without changing them
    real_policy_actions = ft.policy_actions

    def spy(model, obs, generator):
        actions = real_policy_actions(model, obs, generator)
        recorded.append((obs.numpy().copy(), actions.numpy().copy()))
        return actions

    monkeypatch.setattr(ft.rollout, "policy_actions", spy)
    b = ft.rollout_returns(model, spec, tasks, 3, torch.Generator().manual_seed(0))
    assert a.shape == (2, 3) and np.array_equal(a, b)
    # Replay each episode in Point2DNav written out: start at the origin, move by the unit action
    # times 0.1 m, reward -||s' - g||, stop within 0.01 m of the goal or after 100 steps.
    for episode in range(6):
        goal = tasks[episode // 3].goal
        position, total = np.zeros(2), 0.0
        for t, (obs, actions) in enumerate(recorded):
            np.testing.assert_allclose(obs[episode], position, atol=1e-6)
            position = position + 0.1 * np.clip(actions[episode].astype(np.float64), -1.0, 1.0)
            total += -float(np.linalg.norm(position - goal))
            if np.all(np.abs(position - goal) < 0.01) or t == 99:
                break
        assert a[episode // 3, episode % 3] == pytest.approx(total, abs=1e-6)


def test_finetune_on_task_reports_k_0_to_num_steps_with_the_maml_budget() -> None:
    spec = _spec("ppo")
    recipe = ft.FinetuneRecipe(episodes_per_step=2, num_steps=2)
    result = ft.finetune_on_task(spec, _random_state(spec), _tasks(1)[0], recipe, seed=0, device=CPU)
    again = ft.finetune_on_task(spec, _random_state(spec), _tasks(1)[0], recipe, seed=0, device=CPU)
    assert len(result.returns) == 3 and result.samples_per_step == 2 * 100
    assert result.returns == again.returns  # same seed, same numbers


def test_finetune_on_task_changes_the_policy_and_measures_the_changed_one(monkeypatch) -> None:
    spec = _spec("ppo", normalize_obs=False)
    state = _random_state(spec)
    captured = {}
    real_prepare = ft.prepare_finetune

    def capture(*args, **kwargs):
        model, venv = real_prepare(*args, **kwargs)
        captured["model"] = model
        captured["before"] = {n: p.detach().clone() for n, p in model.policy.named_parameters()}
        return model, venv

    monkeypatch.setattr(ft.adapt, "prepare_finetune", capture)
    recipe = ft.FinetuneRecipe(episodes_per_step=2, num_steps=2, learning_rate=1e-2)
    task = _tasks(1)[0]
    result = ft.finetune_on_task(spec, state, task, recipe, seed=0, device=CPU)
    model, before = captured["model"], captured["before"]
    changed = [n for n, p in model.policy.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert any(n.startswith(("mlp_extractor.policy_net", "action_net")) for n in changed), changed
    # the fine-tuned policy acts differently from the pretrained one on the same noise
    pretrained, _ = ft.load_policy(spec, state, CPU)
    after = ft.rollout_returns(model, spec, [task], 2, torch.Generator().manual_seed(5))
    start = ft.rollout_returns(pretrained, spec, [task], 2, torch.Generator().manual_seed(5))
    assert not np.array_equal(after, start)
    assert len(result.returns) == 3 and result.returns[0] != result.returns[2]


@pytest.mark.parametrize("algo", ["ppo", "sac"])
def test_finetuning_leaves_nothing_in_the_temp_dir(tmp_path, monkeypatch, algo: str) -> None:
    # SB3 makes an empty SB3-<date> folder per learn() call unless the model has its own logger.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv("SB3_LOGDIR", raising=False)
    spec = _spec(algo)
    recipe = ft.FinetuneRecipe(episodes_per_step=1, num_steps=2)
    ft.finetune_on_task(spec, _random_state(spec), _tasks(1)[0], recipe, seed=0, device=CPU)
    assert tempfile.gettempdir() == str(tmp_path)
    assert list(tmp_path.glob("SB3-*")) == []


@pytest.mark.slow
def test_finetuning_on_unseen_tasks_beats_the_pretrained_policy_over_three_seeds() -> None:
    tasks = _tasks(4, "test", seed=11)
    recipe = ft.FinetuneRecipe(learning_rate=1e-3)
    for seed in range(3):
        config = ft.FinetuneConfig(family="Point2DNav", timesteps=12_288, seed=seed, hidden_sizes=(32, 32),
                                   recipe=recipe)
        spec, state = ft.pretrain(config, CPU)
        returns = np.array([ft.finetune_on_task(spec, state, task, recipe, seed=seed, device=CPU).returns
                            for task in tasks])  # [tasks, k]
        before, after = returns[:, 0].mean(), returns[:, -1].mean()
        assert after > before + 8.0, f"seed {seed}: fine-tuning {before:.1f} -> {after:.1f}"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_finetuning_runs_on_cuda() -> None:
    spec = _spec("ppo")
    recipe = ft.FinetuneRecipe(freeze=1, new_head=True, episodes_per_step=2, num_steps=1)
    result = ft.finetune_on_task(spec, _random_state(spec), _tasks(1)[0], recipe, seed=0,
                                 device=torch.device("cuda"))
    assert len(result.returns) == 2 and all(np.isfinite(result.returns))


def test_only_the_finetune_module_imports_stable_baselines3_and_algorithms_stay_apart() -> None:
    import ast
    from pathlib import Path

    import metarl

    root = Path(metarl.__file__).parent
    algorithms = {"algorithms.maml", "algorithms.pretrain", "algorithms.finetune", "identification"}
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        dotted = ".".join(path.relative_to(root).with_suffix("").parts)
        if not dotted.startswith("algorithms.finetune"):
            assert not any(name.split(".")[0] == "stable_baselines3" for name in imported), path
        mine = next((name for name in algorithms if dotted.startswith(name)), None)
        if mine is not None:
            others = {f"metarl.{name}" for name in algorithms - {mine}}
            assert not {m for m in imported if any(m.startswith(o) for o in others)}, f"{dotted} imports {imported}"
