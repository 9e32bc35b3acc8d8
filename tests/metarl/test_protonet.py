"""ProtoNet task identification: contexts, encoder, training, evaluation, online API, CLI."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from metarl.cli import main as cli_main
from metarl.core.policy import GaussianMLPPolicy
from metarl.evaluation.identification import evaluate_identification
from metarl.identification.config import ProtoNetConfig, preset
from metarl.identification.contexts import (
    collect_contexts,
    distinct_variants,
    sample_contexts,
    transition_dim,
)
from metarl.identification.encoder import ContextEncoder, handmade_statistics
from metarl.identification.identifier import TaskIdentifier, load_trained
from metarl.identification.run import behaviour_from_run, train_run
from metarl.identification.trainer import ProtoNetTrainer, train_protonet
from metarl.identification.variants import variant_pool
from metarl.storage.checkpoint import load_checkpoint, save_checkpoint
from metarl.storage.runs import RunDir, policy_config, policy_tensors
from metarl_envs.point2d import Point2DNavTask

FAMILY = "Point2DNav"
DIM = transition_dim(2, 2)  # Point2DNav: obs 2, act 2 -> 7


def tiny(**changes) -> ProtoNetConfig:
    return dataclasses.replace(preset("tiny", FAMILY), **changes)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> str:
    """One tiny trained run directory shared by the tests below (a few seconds)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("protonet") / "run"
    train_run(tiny(), out, device="cpu", progress=False)
    return str(out)


def test_embedding_is_invariant_to_the_order_of_transitions() -> None:
    encoder = ContextEncoder(2, 2, (32, 32), 16, pooled_hidden_sizes=(32,), handmade_features=True)
    encoder.reset_parameters(torch.Generator().manual_seed(0))
    contexts = torch.randn(3, 5, 12, DIM, generator=torch.Generator().manual_seed(1))  # [3, 5, C, dim]
    permuted = contexts[:, :, torch.randperm(12, generator=torch.Generator().manual_seed(2))]
    with torch.no_grad():
        a, b = encoder(contexts), encoder(permuted)
    assert a.shape == (3, 5, 16 + 6)  # learned part + hand-made statistics
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    # ... but not to the content: another context gives another embedding.
    assert not torch.allclose(a[0, 0], a[0, 1])


def test_contexts_come_from_separate_episodes_and_have_the_documented_shape() -> None:
    tasks = [Point2DNavTask(0.3, 0.3), Point2DNavTask(-0.3, 0.1)]
    contexts = collect_contexts(FAMILY, tasks, contexts_per_task=6, context_size=10, seed=3, progress=False)
    assert contexts.shape == (2, 6, 10, DIM) and contexts.dtype == np.float32
    s, a, r, s_next = contexts[..., :2], contexts[..., 2:4], contexts[..., 4], contexts[..., 5:]
    np.testing.assert_allclose(s_next, s + a, atol=1e-6)  # Point2DNav dynamics: s' = s + a
    goals = np.array([[0.3, 0.3], [-0.3, 0.1]])[:, None, None]
    np.testing.assert_allclose(r, -np.linalg.norm(s_next - goals, axis=-1), atol=1e-5)
    # Same seed, same contexts; another seed, other ones.
    again = collect_contexts(FAMILY, tasks, contexts_per_task=6, context_size=10, seed=3, progress=False)
    np.testing.assert_array_equal(contexts, again)
    other = collect_contexts(FAMILY, tasks, contexts_per_task=6, context_size=10, seed=4, progress=False)
    assert not np.array_equal(contexts, other)


def test_sample_contexts_uses_distinct_episodes_per_variant() -> None:
    # Each "episode" row holds a constant marker: contexts of one variant must carry distinct markers.
    transitions = np.broadcast_to(np.arange(8, dtype=np.float32)[None, :, None, None], (3, 8, 20, DIM)).copy()
    contexts = sample_contexts(transitions, np.array([0, 2]), 8, 5, np.random.default_rng(0))
    assert contexts.shape == (2, 8, 5, DIM)
    for variant in contexts:
        assert sorted(variant[:, 0, 0].tolist()) == list(range(8))
    with pytest.raises(ValueError, match="trajectories per variant"):
        sample_contexts(transitions, np.array([0]), 9, 5, np.random.default_rng(0))


def test_handmade_statistics_are_mean_and_std_of_state_change_and_reward() -> None:
    contexts = np.zeros((1, 2, DIM))
    contexts[0, :, 4] = [1.0, 3.0]  # rewards
    contexts[0, :, 5:] = [[2.0, 0.0], [4.0, 0.0]]  # s' (s = 0)
    features = handmade_statistics(contexts, 2, 2)
    np.testing.assert_allclose(features, [[3.0, 0.0, 1.0, 0.0, 2.0, 1.0]])


def test_variants_of_discrete_and_continuous_families() -> None:
    assert distinct_variants(FAMILY, "train") is None
    train = distinct_variants("HalfCheetahCrippled", "train")
    assert [t.crippled_actuator for t in train] == [0, 1, 2, 3]
    pool = variant_pool("HalfCheetahCrippled", "ood", 40, np.random.default_rng(0))
    # ood: the novel actuators (required in every episode) plus the training ones.
    assert [t.crippled_actuator for t in pool.tasks] == [4, 5, 0, 1, 2, 3]
    assert pool.required == (0, 1)


def test_identifies_a_support_variant_from_a_fresh_episode(trained_run: str) -> None:
    identifier = TaskIdentifier.load(trained_run)
    # Three unseen goals, 120 degrees apart at 0.35 m from the start.
    tasks = [Point2DNavTask(0.35, 0.0), Point2DNavTask(-0.175, 0.303), Point2DNavTask(-0.175, -0.303)]
    support = collect_contexts(FAMILY, tasks, 5, 64, seed=11, progress=False)  # [3, 5, 64, dim]
    prototypes = identifier.prototypes(support)
    assert prototypes.shape == (3, identifier.encoder.output_dim)
    fresh = collect_contexts(FAMILY, tasks, 10, 64, seed=12, progress=False)  # new episodes
    correct = 0
    for variant in range(3):
        for context in fresh[variant]:
            index, distances = identifier.identify(context, prototypes)
            assert distances.shape == (3,) and index == int(np.argmin(distances))
            correct += index == variant
    assert correct >= 24, f"identified {correct} of 30 fresh contexts (chance: 10)"
    # The batched form agrees with the one-at-a-time form.
    indices, distances = identifier.identify(fresh[1], prototypes)
    assert indices.shape == (10,) and distances.shape == (10, 3)
    assert indices[0] == identifier.identify(fresh[1, 0], prototypes)[0]


def test_checkpoint_round_trip_and_eval_document(trained_run: str) -> None:
    trained = load_trained(trained_run)
    document = evaluate_identification(trained, "test", episodes=50, context_sizes=(1, 16), eval_variants=12,
                                       progress=False)
    assert set(document["accuracy"]) == {"1", "16"}
    for size in ("1", "16"):
        value = document["accuracy"][size]
        assert value["ci95"][0] <= value["mean"] <= value["ci95"][1]
        assert set(document["baselines"]["handmade_statistics"][size]) == {"mean", "ci95"}
        assert document["baselines"]["chance"][size]["mean"] == pytest.approx(1 / 5)
    again = evaluate_identification(trained, "test", episodes=50, context_sizes=(1, 16), eval_variants=12,
                                    progress=False)
    assert again["accuracy"] == document["accuracy"]  # fixed evaluation seed
    config = json.loads(open(f"{trained_run}/config.json").read())
    assert config["method"] == "protonet" and config["family"] == FAMILY


def test_interrupted_training_resumes_exactly_through_the_checkpoint(tmp_path) -> None:
    torch.set_num_threads(1)
    config = tiny(iterations=40)
    straight = ProtoNetTrainer(config, progress=False)
    straight.train(progress=False)
    first = ProtoNetTrainer(config, progress=False)
    while first.iteration < 17:  # "Ctrl-C" after 17
        assert first.step() == {}  # the only metrics row is the last iteration's
    save_checkpoint(tmp_path / "latest.safetensors", *first.state())
    resumed = ProtoNetTrainer(config, progress=False)
    resumed.load_state(*load_checkpoint(tmp_path / "latest.safetensors"))
    assert resumed.iteration == 17
    resumed.train(progress=False)
    a, b = straight.encoder.state_dict(), resumed.encoder.state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)
    # The row at 40 averages iterations 1..40, 17 of them before the checkpoint.
    rows = [[{k: v for k, v in row.items() if not k.startswith("time/")} for row in trainer.history]
            for trainer in (straight, resumed)]
    assert rows[0] == rows[1] and [row["iteration"] for row in rows[0]] == [40]


def test_bad_input_raises_clear_errors(trained_run: str) -> None:
    identifier = TaskIdentifier.load(trained_run)
    with pytest.raises(ValueError, match="at least one transition"):
        identifier.embed(np.zeros((0, DIM)))
    with pytest.raises(ValueError, match="must have 7 numbers"):
        identifier.embed(np.zeros((4, DIM + 1)))
    with pytest.raises(ValueError, match="support_contexts must have shape"):
        identifier.prototypes(np.zeros((3, 4, DIM)))
    with pytest.raises(ValueError, match="context_size must be an integer >= 1"):
        tiny(context_size=0)
    with pytest.raises(ValueError, match="context size must be a positive int"):
        collect_contexts(FAMILY, [Point2DNavTask(0.0, 0.0)], 2, 0, progress=False)
    with pytest.raises(ValueError, match="way=5 is larger than the 4 distinct variants"):
        ProtoNetTrainer(tiny(family="HalfCheetahCrippled"), progress=False)
    with pytest.raises(ValueError, match="^way must be an integer >= 2, got 1$"):
        evaluate_identification(load_trained(trained_run), "test", way=1, eval_variants=12, progress=False)
    with pytest.raises(ValueError, match="way=13 is larger than the 12 variants"):
        evaluate_identification(load_trained(trained_run), "test", way=13, eval_variants=12, progress=False)


def test_cli_reports_bad_flags_without_a_traceback(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert cli_main(["train", "protonet", "--env", FAMILY, "--context", "0", "--out", str(out)]) == 2
    assert "context_size must be an integer >= 1" in capsys.readouterr().err
    assert not out.exists()
    assert cli_main(["train", "protonet", "--env", "HalfCheetahCrippled", "--way", "6", "--out", str(out),
                     "--preset", "tiny", "--no-progress"]) == 2
    assert "larger than the 4 distinct variants" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_training_identifies_unseen_variants_well_above_chance() -> None:
    torch.set_num_threads(1)
    for seed in range(3):
        trained = train_protonet(tiny(seed=seed), device="cpu", progress=False)
        document = evaluate_identification(trained, "test", episodes=200, context_sizes=(16,), eval_variants=40,
                                           progress=False)
        accuracy = document["accuracy"]["16"]["mean"]
        handmade = document["baselines"]["handmade_statistics"]["16"]["mean"]
        assert accuracy >= 0.5, f"seed {seed}: accuracy {accuracy:.3f} (chance 0.2)"
        assert accuracy >= handmade + 0.15, f"seed {seed}: {accuracy:.3f} vs hand-made {handmade:.3f}"


def test_contexts_can_be_collected_with_the_policy_of_a_run(tmp_path) -> None:
    policy = GaussianMLPPolicy(2, 2, (8,), init_std=0.01)
    with torch.no_grad():  # a policy that always moves right: normalised mean (+0.5, 0), i.e. (+0.05 m, 0)
        for parameter in policy.parameters():
            parameter.zero_()
        policy.layers[-1].bias.copy_(torch.tensor([0.5, 0.0]))
        policy.log_std.fill_(-5.0)  # std 0.007 normalised, 0.0007 m
    run = RunDir(tmp_path / "maml")
    run.write_config({"method": "maml", "family": FAMILY, "policy": policy_config(policy, 0.01)})
    save_checkpoint(run.checkpoint_path, policy_tensors(policy), {"family": FAMILY, "obs_dim": 2, "act_dim": 2})
    behaviour = behaviour_from_run(run.path, FAMILY)
    contexts = collect_contexts(FAMILY, [Point2DNavTask(0.0, 0.3)], 3, 20, behaviour, seed=0, progress=False)
    actions = contexts[..., 2:4]
    np.testing.assert_allclose(actions.mean(axis=(0, 1, 2)), [0.05, 0.0], atol=0.01)
    with pytest.raises(ValueError, match="was trained on 'Point2DNav'"):
        behaviour_from_run(run.path, "HalfCheetahVel")


def test_protonet_evaluation_refuses_explicit_tasks(tmp_path) -> None:
    from metarl.evaluation.identification import evaluate_protonet_run
    from metarl.evaluation.protocol import EvalOptions

    options = EvalOptions(split="custom", num_tasks=1, tasks=(Point2DNavTask(0.1, 0.2),), tasks_source="t.json")
    with pytest.raises(ValueError, match="identifies among the variants of a split"):
        evaluate_protonet_run(RunDir(tmp_path), {"method": "protonet"}, options, progress=False)
    with pytest.raises(ValueError, match="num_tasks must equal"):
        EvalOptions(split="custom", num_tasks=2, tasks=(Point2DNavTask(0.1, 0.2),))
    with pytest.raises(ValueError, match="evaluated as split 'custom'"):
        EvalOptions(split="test", num_tasks=1, tasks=(Point2DNavTask(0.1, 0.2),))
