"""ProtoNet runs through the one training loop: metrics rows, Ctrl-C mid-iteration, exact resume."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import metarl.identification.trainer as trainer_module
from metarl.identification.config import preset
from metarl.identification.run import train_run
from metarl.identification.trainer import LOG_EVERY
from metarl.storage.checkpoint import load_checkpoint
from metarl.storage.runs import read_metrics

CONFIG = dataclasses.replace(preset("tiny", "Point2DNav"), iterations=120, train_variants=20)


def _rows(run: Path) -> list[dict[str, float]]:
    return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in read_metrics(run / "metrics.csv")]


def test_interrupt_mid_iteration_saves_the_last_completed_one_and_resume_matches_an_uninterrupted_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.set_num_threads(1)
    straight = train_run(CONFIG, tmp_path / "straight", device="cpu", progress=False).path
    assert [row["iteration"] for row in _rows(straight)] == [LOG_EVERY, 2 * LOG_EVERY, CONFIG.iterations]

    # Ctrl-C inside iteration 73, after its episodes were drawn and embedded, before the Adam step:
    # a row is pending (51..72) and the episode stream has moved on.
    calls = 0
    loss = trainer_module.prototypical_loss

    def interrupted_loss(*args: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal calls
        calls += 1
        if calls == 73:
            raise KeyboardInterrupt
        return loss(*args)

    monkeypatch.setattr(trainer_module, "prototypical_loss", interrupted_loss)
    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        train_run(CONFIG, out, device="cpu", progress=False, checkpoint_every=500)
    assert f"interrupted: saved iteration 72 to {out / 'checkpoint'}" in capsys.readouterr().err
    assert load_checkpoint(out / "checkpoint" / "latest.safetensors")[1]["iteration"] == 72
    assert [row["iteration"] for row in _rows(out)] == [LOG_EVERY]

    monkeypatch.setattr(trainer_module, "prototypical_loss", loss)
    train_run(CONFIG, out, device="cpu", progress=False, resume=True)
    assert _rows(out) == _rows(straight)  # the row at 100 averages 51..100, across the interruption
    a = load_checkpoint(straight / "checkpoint" / "latest.safetensors")[0]
    b = load_checkpoint(out / "checkpoint" / "latest.safetensors")[0]
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def test_a_checkpoint_without_pending_metrics_still_resumes(tmp_path: Path) -> None:
    """Checkpoints written before the pending metrics were saved (at a row) resume as before."""
    torch.set_num_threads(1)
    config = dataclasses.replace(CONFIG, iterations=LOG_EVERY)
    run = train_run(config, tmp_path / "run", device="cpu", progress=False)
    tensors, metadata = load_checkpoint(run.checkpoint_path)
    assert (metadata["metric_sums"], metadata["metric_count"]) == ([0.0, 0.0], 0)  # saved at a row
    del metadata["metric_sums"], metadata["metric_count"]
    trainer = trainer_module.ProtoNetTrainer(config, progress=False)
    trainer.load_state(tensors, metadata, run.checkpoint_path)
    assert trainer.iteration == LOG_EVERY
    metadata["metric_sums"] = [1.0, float("nan")]
    with pytest.raises(trainer_module.CheckpointError, match="metric_sums"):
        trainer.load_state(tensors, metadata, run.checkpoint_path)


def test_state_is_a_copy_that_later_steps_leave_unchanged() -> None:
    """The loop saves the last completed iteration's state when the next one is interrupted."""
    torch.set_num_threads(1)
    trainer = trainer_module.ProtoNetTrainer(dataclasses.replace(CONFIG, iterations=LOG_EVERY), progress=False)
    while trainer.iteration < LOG_EVERY - 1:
        trainer.step()
    tensors, metadata = trainer.state()
    copies = {key: value.clone() for key, value in tensors.items()}
    history, sums = list(metadata["history"]), list(metadata["metric_sums"])
    trainer.step()  # the row at LOG_EVERY: Adam moves every tensor, history grows, the sums reset
    assert trainer.iteration == LOG_EVERY and len(trainer.history) == 1
    assert all(torch.equal(tensors[key], copies[key]) for key in tensors)
    assert (metadata["history"], metadata["metric_sums"], metadata["iteration"]) == (history, sums, LOG_EVERY - 1)
    assert not torch.equal(trainer.state()[0]["encoder.layers.0.weight"], tensors["encoder.layers.0.weight"])
