"""The one training loop: checkpoints at 0 / every / end, metrics rows, Ctrl-C, bit-exact resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import metarl.training.loop as loop_module
from metarl.core.interrupts import Terminated
from metarl.storage.checkpoint import generator_state, load_checkpoint, read_generator
from metarl.storage.runs import RunDir, read_metrics, writing_run
from metarl.training.loop import LoopOptions, train_loop

CONFIG = {"method": "toy", "family": "none", "iterations": 6}


class ToyTrainer:
    """A random walk of a weight vector driven by its own generator: deterministic, resumable.

    ``interrupt_in_step`` raises KeyboardInterrupt (or ``interrupt_type``) in the middle of that
    iteration, after the weights and the generator have already moved; ``interrupt_in_state``
    raises in the first :meth:`state` call after that iteration completed (its row is logged).
    """

    def __init__(self, seed: int = 0, interrupt_in_step: int | None = None,
                 interrupt_in_state: int | None = None, interrupt_type: type = KeyboardInterrupt) -> None:
        self.weights = torch.zeros(3, dtype=torch.float64)
        self.generator = torch.Generator().manual_seed(seed)
        self._iteration = 0
        self.interrupt_in_step = interrupt_in_step
        self.interrupt_in_state = interrupt_in_state
        self.interrupt_type = interrupt_type

    @classmethod
    def restored(cls, path: Path) -> ToyTrainer:
        tensors, metadata = load_checkpoint(path)
        trainer = cls()
        trainer.weights = tensors["weights"].clone()
        trainer.generator = read_generator(tensors, "rng", path)
        trainer._iteration = metadata["iteration"]
        return trainer

    @property
    def iteration(self) -> int:
        return self._iteration

    def step(self) -> dict[str, float]:
        noise = torch.randn(3, generator=self.generator, dtype=torch.float64)
        self.weights.add_(noise)  # in place: an interrupted iteration leaves the live state moved
        if self._iteration + 1 == self.interrupt_in_step:
            self.interrupt_in_step = None
            raise self.interrupt_type("stop")
        self.weights.mul_(0.9)
        self._iteration += 1
        return {"train/norm": float(self.weights.norm()), "train/first": float(self.weights[0])}

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        if self._iteration == self.interrupt_in_state:
            self.interrupt_in_state = None
            raise KeyboardInterrupt("stop")
        return ({"weights": self.weights.clone(), "rng": generator_state(self.generator)},
                {"method": "toy", "iteration": self._iteration})


def _options(**changes: Any) -> LoopOptions:
    return LoopOptions(**{"iterations": 6, "desc": "toy", "progress": False, **changes})


def _run(path: Path, trainer: ToyTrainer, resume: bool = False, **changes: Any) -> RunDir:
    with writing_run(path, CONFIG, resume) as run:
        run.write_config(CONFIG)
        train_loop(run, trainer, _options(**changes))
    return run


def _saved_iterations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    saved: list[int] = []
    real = loop_module.save_checkpoint

    def recording(path: Path, tensors: dict, metadata: dict) -> None:
        saved.append(metadata["iteration"])
        real(path, tensors, metadata)

    monkeypatch.setattr(loop_module, "save_checkpoint", recording)
    return saved


def test_checkpoints_at_start_every_and_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    saved = _saved_iterations(monkeypatch)
    run = _run(tmp_path / "run", ToyTrainer(), iterations=7, checkpoint_every=3)
    assert saved == [0, 3, 6, 7]
    assert load_checkpoint(run.checkpoint_path)[1]["iteration"] == 7


def test_zero_iterations_leaves_the_initial_checkpoint_and_no_rows(tmp_path: Path) -> None:
    run = _run(tmp_path / "run", ToyTrainer(), iterations=0)
    tensors, metadata = load_checkpoint(run.checkpoint_path)
    assert metadata["iteration"] == 0 and torch.equal(tensors["weights"], torch.zeros(3, dtype=torch.float64))
    assert run.metrics_path.read_text() == "iteration\n"


def test_each_iteration_logs_one_metrics_row(tmp_path: Path) -> None:
    reference = ToyTrainer()
    expected = [{"iteration": float(i + 1), **reference.step()} for i in range(6)]
    run = _run(tmp_path / "run", ToyTrainer())
    assert read_metrics(run.metrics_path) == expected
    assert not run.tensorboard_dir.exists()


def test_tensorboard_events_are_written_on_request(tmp_path: Path) -> None:
    run = _run(tmp_path / "run", ToyTrainer(), iterations=2, tensorboard=True)
    assert any(path.name.startswith("events.out.tfevents") for path in run.tensorboard_dir.iterdir())


@pytest.mark.parametrize("interrupt_type", [KeyboardInterrupt, Terminated])
def test_interrupt_mid_iteration_saves_the_last_completed_one_and_reraises(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], interrupt_type: type
) -> None:
    path = tmp_path / "run"
    with pytest.raises(interrupt_type):
        _run(path, ToyTrainer(interrupt_in_step=4, interrupt_type=interrupt_type), checkpoint_every=100)
    run = RunDir(path)
    tensors, metadata = load_checkpoint(run.checkpoint_path)
    assert metadata["iteration"] == 3
    uninterrupted = ToyTrainer()
    for _ in range(3):
        uninterrupted.step()
    assert torch.equal(tensors["weights"], uninterrupted.weights)  # not the half-done 4th iteration
    assert [row["iteration"] for row in read_metrics(run.metrics_path)] == [1, 2, 3]
    err = capsys.readouterr().err
    assert f"interrupted: saved iteration 3 to {run.checkpoint_path}; continue with --resume" in err


@pytest.mark.parametrize("where", ["step", "state"])
def test_resume_after_an_interrupt_ends_in_the_uninterrupted_state(tmp_path: Path, where: str) -> None:
    reference = _run(tmp_path / "reference", ToyTrainer(), checkpoint_every=2)
    path = tmp_path / "run"
    interrupt = {"interrupt_in_step": 5} if where == "step" else {"interrupt_in_state": 5}
    with pytest.raises(KeyboardInterrupt):
        _run(path, ToyTrainer(**interrupt), checkpoint_every=2)
    run = RunDir(path)
    assert load_checkpoint(run.checkpoint_path)[1]["iteration"] == 4
    if where == "state":  # the 5th row was logged before the interrupt; resuming drops and redoes it
        assert [row["iteration"] for row in read_metrics(run.metrics_path)] == [1, 2, 3, 4, 5]
    trainer = ToyTrainer.restored(run.checkpoint_path)
    assert trainer.iteration == 4
    _run(path, trainer, resume=True, checkpoint_every=2)
    resumed, expected = load_checkpoint(run.checkpoint_path), load_checkpoint(reference.checkpoint_path)
    assert resumed[1] == expected[1]
    assert resumed[0].keys() == expected[0].keys()
    assert all(torch.equal(resumed[0][key], expected[0][key]) for key in expected[0])
    assert run.metrics_path.read_bytes() == reference.metrics_path.read_bytes()


def test_resume_extends_a_finished_run_like_a_longer_run(tmp_path: Path) -> None:
    longer = _run(tmp_path / "longer", ToyTrainer(), iterations=6)
    path = tmp_path / "run"
    _run(path, ToyTrainer(), iterations=4)
    _run(path, ToyTrainer.restored(RunDir(path).checkpoint_path), resume=True, iterations=6)
    assert RunDir(path).metrics_path.read_bytes() == longer.metrics_path.read_bytes()
    assert torch.equal(load_checkpoint(RunDir(path).checkpoint_path)[0]["weights"],
                       load_checkpoint(longer.checkpoint_path)[0]["weights"])


@pytest.mark.parametrize(("field", "value"), [("iterations", -1), ("checkpoint_every", 0),
                                              ("checkpoint_every", 1.5), ("iterations", True)])
def test_options_name_the_bad_field(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        _options(**{field: value})
