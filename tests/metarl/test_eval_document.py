"""metarl.evaluation.document: the typed eval_<split>.json, its versions, and errors that name the field."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from metarl.core.policy import GaussianMLPPolicy
from metarl.evaluation.document import (
    SCHEMA_VERSION,
    IdentificationDocument,
    ReturnsDocument,
    WrongKindError,
    document_from_json,
    read_eval_document,
    write_eval_json,
)
from metarl.evaluation.protocol import (
    AdaptationResult,
    EvalOptions,
    returns_document,
)
from metarl.evaluation.stats import summarize

TASK = {"family": "Point2DNav", "goal_x_m": 0.1, "goal_y_m": -0.2}


def _version1_returns() -> dict:
    """A returns document as metarl wrote it before the schema had a version (a fine-tune run's)."""
    per_task = [[-60.0, -50.0], [-40.0, -35.5]]
    return {
        "method": "finetune", "family": "Point2DNav", "split": "test", "num_tasks": 2, "episodes_per_step": 2,
        "returns": summarize(np.asarray(per_task), reps=50),
        "per_task": [{"task": TASK, "returns": row} for row in per_task],
        "samples_per_step": 400, "adapt_seconds": 0.36, "params": 10604, "flops_per_forward": 20800,
        "macs_per_forward": 10400, "inner_lrs": [0.0003], "eval_seed": 20170, "algo": "ppo",
        "recipe": {"freeze": 0, "learning_rate": 0.0003}, "pretrain_timesteps": 4096,
    }  # fmt: skip


def _version1_identification() -> dict:
    interval = {"mean": 0.5, "ci95": [0.4, 0.6]}
    chance = {"mean": 0.2, "ci95": [0.2, 0.2]}
    return {
        "method": "protonet", "family": "Point2DNav", "split": "test", "way": 5, "shot": 5, "queries": 15,
        "episodes": 600, "variants": 40, "discrete_variants": False, "accuracy": {"1": interval, "16": interval},
        "baselines": {"handmade_statistics": {"1": interval, "16": interval}, "chance": {"1": chance, "16": chance}},
        "eval_seed": 20170, "collect_seconds": 0.2, "embed_seconds_per_context16": 1e-4, "params": 10944,
    }  # fmt: skip


def test_version_1_documents_are_read_and_written_back_unchanged() -> None:
    for data, kind in ((_version1_returns(), ReturnsDocument), (_version1_identification(), IdentificationDocument)):
        document = document_from_json(data)
        assert isinstance(document, kind) and document.schema_version == 1
        assert json.dumps(document.to_json()) == json.dumps(data)  # every key, in its order
    returns = document_from_json(_version1_returns())
    assert returns.protocol.horizon is None and returns.protocol.inner_lrs == (0.0003,)
    assert returns.method_fields["algo"] == "ppo"


def _result(horizon: int | None = 100) -> AdaptationResult:
    from metarl_envs import task_from_dict

    tasks = [task_from_dict(TASK), task_from_dict({**TASK, "goal_x_m": -0.3})]
    returns = np.array([[-60.0, -50.0, -45.0, -44.0], [-40.0, -30.0, -28.0, -27.5]])  # [tasks, K]
    return AdaptationResult(tasks, returns, 1500, 0.25, [0.1, 0.05, 0.05], horizon=horizon)


def test_a_new_document_has_the_version_kind_and_horizon_and_round_trips(tmp_path: Path) -> None:
    options = EvalOptions(num_tasks=2, episodes_per_step=4, device="cpu")
    policy = GaussianMLPPolicy(2, 2, (8,))
    document = returns_document("maml", "Point2DNav", options, _result(), policy)
    data = document.to_json()
    assert list(data)[:3] == ["schema_version", "kind", "method"]
    assert data["schema_version"] == SCHEMA_VERSION == 2 and data["kind"] == "returns" and data["horizon"] == 100
    assert data["inner_lrs"] == [0.1, 0.05, 0.05] and data["params"] == sum(p.numel() for p in policy.parameters())
    assert document_from_json(data) == document
    assert returns_document("maml", "Point2DNav", options, _result(), policy).to_json() == data
    path = write_eval_json(tmp_path, document)
    assert path == tmp_path / "eval_test.json" and read_eval_document(path) == document
    # a method's own keys ride along; those naming the counts replace the policy's
    extra = {"algo": "ppo", "params": 7}
    mine = returns_document("finetune", "Point2DNav", options, _result(), policy, extra=extra).to_json()
    assert mine["params"] == 7 and list(mine)[-1] == "algo"
    # a result that does not say its horizon sampled the family's (Point2DNav: 100, as the sampler's default)
    unsaid = returns_document("maml", "Point2DNav", options, _result(horizon=None), policy)
    assert unsaid.protocol.horizon == 100
    said = returns_document("maml", "Point2DNav", options, _result(horizon=None), policy, horizon=30)
    assert said.protocol.horizon == 30
    # a method that adapts without learning rates (or does not adapt) records none
    still = dataclasses.replace(_result(), inner_lrs=[])
    assert returns_document("toy", "Point2DNav", options, still, policy).to_json()["inner_lrs"] == []
    # the checkpoint evaluated: recorded when known, absent otherwise, and read back
    assert "trained_iteration" not in data and document.trained_iteration is None
    trained = returns_document("maml", "Point2DNav", options, _result(), policy, trained=(200, 32_000_000))
    stamped = trained.to_json()
    assert (stamped["trained_iteration"], stamped["trained_env_steps"]) == (200, 32_000_000)
    assert "trained_iteration" not in trained.method_fields and document_from_json(stamped) == trained


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(num_tasks="4"), "eval_test.json: num_tasks must be"),
        (lambda d: d["returns"].update(mean=[]), "returns.mean must be a non-empty list"),
        (lambda d: d["per_task"][1].update(returns=[1.0]), r"per_task\[1\].returns holds 1 values"),
        (lambda d: d["returns"].update(mean_ci95=[[0, 1]]), "returns.mean_ci95 has 1 entries, returns.mean has 2"),
        (lambda d: d.pop("returns"), "lacks 'returns'"),
        (lambda d: d.update(schema_version=SCHEMA_VERSION + 1), "newer than this metarl reads"),
        (lambda d: d.update(schema_version=2), "kind must be one of returns, identification"),
        (lambda d: d.update(schema_version=2, kind="returns"), "needs horizon"),
        (lambda d: d.update(inner_lrs=[0.1, 0.2]), "inner_lrs holds 2 learning rates for 1 adaptation steps"),
        (lambda d: d.update(trained_iteration=-1), "trained_iteration must be"),
        (lambda d: d.update(trained_env_steps="many"), "trained_env_steps must be"),
    ],
)
def test_a_malformed_document_is_refused_naming_the_file_and_field(tmp_path: Path, change, message: str) -> None:
    data = _version1_returns()
    change(data)
    path = tmp_path / "eval_test.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message) as caught:
        read_eval_document(path)
    assert str(path) in str(caught.value)


def test_write_refuses_a_malformed_document_and_writes_nothing(tmp_path: Path) -> None:
    data = _version1_returns()
    data["per_task"] = "none"
    with pytest.raises(ValueError, match="per_task must be a list"):
        write_eval_json(tmp_path, data)
    assert not list(tmp_path.iterdir())


def test_a_reader_of_one_kind_is_told_what_the_document_holds(tmp_path: Path) -> None:
    path = tmp_path / "eval_test.json"
    path.write_text(json.dumps(_version1_identification()))
    with pytest.raises(WrongKindError, match="task-identification accuracy") as caught:
        read_eval_document(path, expect="returns")
    assert caught.value.kind == "identification"
    assert isinstance(read_eval_document(path, expect="identification"), IdentificationDocument)
    with pytest.raises(FileNotFoundError, match="run `metarl evaluate` first"):
        read_eval_document(tmp_path / "eval_ood.json", "run `metarl evaluate` first")
