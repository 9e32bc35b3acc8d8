"""SIGTERM is handled like Ctrl-C: the checkpoint is saved, the command says so and exits 143."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from metarl.algorithms.maml import training as train_module
from metarl.algorithms.presets import MAMLRunConfig, maml_preset
from metarl.core.interrupts import (
    Terminated,
    deferred_interrupts,
    exit_status,
    sigterm_as_interrupt,
)
from metarl.storage.checkpoint import load_checkpoint
from metarl.storage.runs import read_metrics

FLAGS = ["--env", "Point2DNav", "--preset", "tiny", "--meta-batch-size", "2", "--episodes-per-task", "2",
         "--horizon", "10", "--hidden-sizes", "8", "--no-progress", "--no-tensorboard", "--device", "cpu",
         "--checkpoint-every", "1000"]


def test_sigterm_saves_the_checkpoint_and_exits_143(tmp_path: Path) -> None:
    out = tmp_path / "run"
    command = [sys.executable, "-m", "metarl.cli", "train", "maml", "--out", str(out), *FLAGS]
    process = subprocess.Popen([*command, "--iterations", "100000"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while len(read_metrics(out / "metrics.csv")) < 2:  # a few iterations done, none checkpointed since 0
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr
    assert "interrupted: saved iteration" in stderr and "(SIGTERM)" in stderr
    _, metadata = load_checkpoint(out / "checkpoint" / "latest.safetensors")
    saved = metadata["iteration"]
    assert saved >= 1
    resumed = subprocess.run([*command, "--resume", "--iterations", str(saved + 1)], capture_output=True,
                             text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert [row["iteration"] for row in read_metrics(out / "metrics.csv")] == list(range(1, saved + 2))


def test_sigterm_handler_is_restored_and_raises_once() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated), sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)  # the handler runs at the next bytecode
    assert signal.getsignal(signal.SIGTERM) is before
    with deferred_interrupts() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        assert stop and isinstance(stop.interrupt("x"), Terminated)
    assert signal.getsignal(signal.SIGTERM) is before


def test_sigterm_re_raised_as_a_plain_interrupt_still_exits_143() -> None:
    """Ray replaces a KeyboardInterrupt raised inside ray.get/ray.wait by a new, plain one."""
    with pytest.raises(KeyboardInterrupt) as caught, sigterm_as_interrupt():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        except Terminated:
            raise KeyboardInterrupt from None
    assert not isinstance(caught.value, Terminated) and exit_status(caught.value) == 143
    with pytest.raises(KeyboardInterrupt) as caught, sigterm_as_interrupt():
        raise KeyboardInterrupt  # Ctrl-C, after the SIGTERM above
    assert exit_status(caught.value) == 130


def _config(iterations: int) -> MAMLRunConfig:
    return maml_preset("tiny", "Point2DNav").replace(
        iterations=iterations, meta_batch_size=2, episodes_per_task=2, horizon=10, hidden_sizes=(8,),
        checkpoint_every=3, maml={"outer": "promp", "promp_steps": 2},
    )


def _train(out: Path, resume: bool) -> torch.Tensor:
    result = train_module.train_maml(_config(8), out, seed=5, device="cpu", resume=resume, progress=False,
                                     tensorboard=False)
    return torch.cat([p.detach().reshape(-1) for p in result.policy.parameters()])


@pytest.mark.slow
def test_sigterm_at_random_points_always_resumes_to_the_uninterrupted_weights(
    tmp_path: Path, one_torch_thread: None
) -> None:
    """Fault injection: >= 20 SIGTERMs at random moments of a training (setup, sampling, update,
    checkpointing); each time the run is resumed, and it ends with exactly the weights of an
    uninterrupted run (CPU, bit-exact)."""
    start = time.monotonic()
    reference = _train(tmp_path / "reference", resume=False)
    full_run_s = time.monotonic() - start
    rng = random.Random(1234)
    out = tmp_path / "interrupted"
    kills, saved_at = 0, []
    stalled = 0  # kills in a row that came before the run got further (a loaded machine: setup is slow)
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a late signal outside training is ignored
    try:
        for _ in range(200):
            timer = None
            if kills < 20:
                window = full_run_s / 4 * 2 ** min(stalled, 4)
                timer = threading.Timer(rng.uniform(0.0, window), os.kill, (os.getpid(), signal.SIGTERM))
                timer.start()
            try:
                weights = _train(out, resume=(out / "config.json").exists())
            except Terminated:
                kills += 1
                checkpoint = out / "checkpoint" / "latest.safetensors"
                saved_at.append(load_checkpoint(checkpoint)[1]["iteration"] if checkpoint.exists() else None)
                stalled = stalled + 1 if len(saved_at) > 1 and saved_at[-1] == saved_at[-2] else 0
                continue
            finally:
                if timer is not None:
                    timer.cancel()
                    timer.join()
            assert torch.equal(weights, reference)
            if timer is None:
                break  # the final, uninterrupted attempt
            shutil.rmtree(out)  # the signal came too late to interrupt: train this run again to keep killing
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert kills >= 20 and len(set(saved_at)) >= 3, saved_at  # killed at several points of the run
    assert torch.equal(weights, reference)
    assert [row["iteration"] for row in read_metrics(out / "metrics.csv")] == list(range(1, 9))
