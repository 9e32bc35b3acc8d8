"""``metarl.evaluate`` finds a run's evaluator in the method registry, and refuses unknown methods first."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import metarl
from metarl.core.errors import UserError
from metarl.evaluation.protocol import EvalOptions
from metarl.methods import Method, register, unregister
from metarl.methods.evaluate import evaluate
from metarl.storage.runs import RunDir

CALLS: list[tuple[str, dict[str, Any], EvalOptions, bool]] = []


def toy_evaluator(run_dir: RunDir, config: dict[str, Any], options: EvalOptions, progress: bool) -> dict[str, Any]:
    CALLS.append((str(run_dir.path), config, options, progress))
    return {"method": config["method"], "evaluated": True}


@pytest.fixture
def toy_method():
    method = register(Method(name="toy-evaluated", train_word="toy-evaluated", summary="a test method",
                             train_args="tests.metarl.test_methods_evaluate:EvalOptions",
                             train="tests.metarl.test_methods_evaluate:toy_evaluator",
                             evaluate="tests.metarl.test_methods_evaluate:toy_evaluator"))
    CALLS.clear()
    yield method
    unregister(method.name)


def _run(path: Path, method: str) -> Path:
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"method": method, "family": "Point2DNav", "horizon": 10}))
    return path


def test_evaluate_calls_the_registered_evaluator_under_the_lock(tmp_path: Path, toy_method: Method) -> None:
    run = _run(tmp_path / "run", toy_method.name)
    options = EvalOptions(split="test", num_tasks=2, episodes_per_step=2, device="cpu")
    assert evaluate(run, options, progress=False) == {"method": "toy-evaluated", "evaluated": True}
    assert CALLS == [(str(run), json.loads((run / "config.json").read_text()), options, False)]
    assert (run / ".metarl.lock").exists()
    assert metarl.evaluate is evaluate


def test_an_unregistered_method_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    run = _run(tmp_path / "run", "no-such-method")
    with pytest.raises(UserError, match="unknown method 'no-such-method'; known methods: .*maml"):
        evaluate(run, EvalOptions(split="test", num_tasks=2, episodes_per_step=2, device="cpu"), progress=False)
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]
