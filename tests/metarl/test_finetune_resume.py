"""SB3 fine-tune pretraining: an interrupted run resumed with ``--resume`` equals an uninterrupted one (CPU)."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from metarl.algorithms import finetune as ft
from metarl.storage.checkpoint import load_checkpoint
from metarl.storage.runs import RunDir, RunDirError, read_metrics

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/metarl/conftest.py

NUM_ENVS = 2
ROUND = 256 * NUM_ENVS  # one PPO rollout: n_steps 256 in each env
CONFIG = ft.FinetuneConfig(family="Point2DNav", algo="ppo", timesteps=3 * ROUND, num_envs=NUM_ENVS,
                           hidden_sizes=(8,), seed=5)


def _train(out: Path, resume: bool = False) -> None:
    ft.train_run(CONFIG, out, "cpu", resume=resume, progress=False)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("finetune") / "whole"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _train(out)
    finally:
        torch.set_num_threads(threads)
    return out


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)[0]


def _without_time(rows: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in rows]


@pytest.mark.parametrize("case", ["first round", "later round"])
def test_interrupted_then_resumed_equals_uninterrupted(
    case: str, uninterrupted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ctrl-C at a random env step: in the first round (nothing completed: the resumed run starts from the
    # saved start) or in round 2 or 3 (the state after the last completed round is saved).
    rng = random.Random(f"finetune-resume {case}")
    first, last = (1, ROUND // NUM_ENVS) if case == "first round" else (ROUND // NUM_ENVS + 1, 3 * ROUND // NUM_ENVS)
    stop_at = NUM_ENVS * rng.randint(first, last)  # num_timesteps counts NUM_ENVS per vector step
    on_step = ft.training._RoundMonitor._on_step

    def interrupting(monitor: ft.training._RoundMonitor) -> bool:
        if monitor.num_timesteps == stop_at:
            raise KeyboardInterrupt
        return on_step(monitor)

    out = tmp_path / "run"
    monkeypatch.setattr(ft.training._RoundMonitor, "_on_step", interrupting)
    with pytest.raises(KeyboardInterrupt):
        _train(out)
    monkeypatch.undo()
    saved = load_checkpoint(out / "checkpoint" / "latest.safetensors")[1]["iteration"]
    assert saved == (stop_at - 1) // ROUND  # the rounds completed before the interrupt
    assert not ft.checkpoint_path(RunDir(out)).exists()  # no pretrained weights before the end
    with pytest.raises(RunDirError, match="already holds this run; pass --resume"):
        _train(out)

    _train(out, resume=True)
    expected, resumed = _tensors(ft.checkpoint_path(RunDir(uninterrupted))), _tensors(ft.checkpoint_path(RunDir(out)))
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[name], resumed[name]) for name in expected)
    # the final training state (optimizer moments, counters, envs, generators) matches as well
    whole_state, resumed_state = (load_checkpoint(run / "checkpoint" / "latest.safetensors")
                                  for run in (uninterrupted, out))
    assert whole_state[0].keys() == resumed_state[0].keys()
    assert all(torch.equal(whole_state[0][name], resumed_state[0][name]) for name in whole_state[0])
    assert whole_state[1] == resumed_state[1]
    rows = _without_time(read_metrics(uninterrupted / "metrics.csv"))
    assert [row["iteration"] for row in rows] == [1, 2, 3]
    assert [row["train/timesteps"] for row in rows] == [ROUND, 2 * ROUND, 3 * ROUND]
    assert _without_time(read_metrics(out / "metrics.csv")) == rows


def test_resume_refuses_a_finished_or_missing_run(uninterrupted: Path, tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match="has finished pretraining"):
        _train(uninterrupted, resume=True)
    with pytest.raises(RunDirError, match="--resume was given but .* holds no run"):
        _train(tmp_path / "missing", resume=True)
    assert not (tmp_path / "missing").exists()


def test_resume_refuses_sac_pretraining(tmp_path: Path) -> None:
    config = ft.FinetuneConfig(family="Point2DNav", algo="sac", timesteps=64, num_envs=2, hidden_sizes=(8,))
    out = tmp_path / "sac"
    on_step = ft.training._RoundMonitor._on_step

    def interrupting(monitor: ft.training._RoundMonitor) -> bool:
        if monitor.num_timesteps == 40:  # during the first iteration: the run keeps its saved start
            raise KeyboardInterrupt
        return on_step(monitor)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ft.training._RoundMonitor, "_on_step", interrupting)
        with pytest.raises(KeyboardInterrupt):
            ft.train_run(config, out, "cpu", progress=False)
    with pytest.raises(RunDirError, match="sac pretraining cannot be resumed"):
        ft.train_run(config, out, "cpu", resume=True, progress=False)


def test_a_mujoco_family_resumes_bit_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # MuJoCo envs are restored from mj_getState (mjSTATE_INTEGRATION): interrupted mid-episode in round 2
    config = ft.FinetuneConfig(family="HalfCheetahDir", algo="ppo", timesteps=2 * ROUND, num_envs=NUM_ENVS,
                               hidden_sizes=(8,), seed=1)
    ft.train_run(config, tmp_path / "whole", "cpu", progress=False)
    on_step = ft.training._RoundMonitor._on_step

    def interrupting(monitor: ft.training._RoundMonitor) -> bool:
        if monitor.num_timesteps == ROUND + 2 * 77:
            raise KeyboardInterrupt
        return on_step(monitor)

    monkeypatch.setattr(ft.training._RoundMonitor, "_on_step", interrupting)
    with pytest.raises(KeyboardInterrupt):
        ft.train_run(config, tmp_path / "cut", "cpu", progress=False)
    monkeypatch.undo()
    ft.train_run(config, tmp_path / "cut", "cpu", resume=True, progress=False)
    for name in ("policy.safetensors", "latest.safetensors"):
        whole, cut = (_tensors(tmp_path / run / "checkpoint" / name) for run in ("whole", "cut"))
        assert whole.keys() == cut.keys() and all(torch.equal(whole[k], cut[k]) for k in whole), name
    assert _without_time(read_metrics(tmp_path / "cut" / "metrics.csv")) == _without_time(
        read_metrics(tmp_path / "whole" / "metrics.csv"))


def test_sigterm_saves_and_the_cli_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    command = [sys.executable, "-m", "metarl.cli", "train", "finetune", "--env", "Point2DNav", "--timesteps",
               str(6 * ROUND), "--num-envs", str(NUM_ENVS), "--hidden-sizes", "8", "--out", str(out),
               "--device", "cpu", "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while len(read_metrics(out / "metrics.csv")) < 1:  # a round done, five to go
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr and "interrupted: saved iteration" in stderr
    saved = load_checkpoint(out / "checkpoint" / "latest.safetensors")[1]["iteration"]
    assert 1 <= saved < 6
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert [row["iteration"] for row in read_metrics(out / "metrics.csv")] == [1, 2, 3, 4, 5, 6]
    assert ft.checkpoint_path(RunDir(out)).is_file()
