"""`metarl bench envs` prints the load average and leaves no MuJoCo warning or log behind."""

from __future__ import annotations

from pathlib import Path

import mujoco
import pytest

from metarl.cli import main as cli_main
from metarl.commands.bench.envs import format_load, mujoco_warnings_as_python_warnings


def test_bench_envs_prints_the_load_and_no_settotalmass_warning_or_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # where MuJoCo would write MUJOCO_LOG.TXT
    argv = ["bench", "envs", "--robots", "half_cheetah", "--chunk-steps", "16", "--rounds", "1",
            "--num-envs", "2", "--gym-vector-envs", "2"]
    assert cli_main(argv) == 0
    out, err = capfd.readouterr()  # file descriptors: MuJoCo prints its warnings from C
    assert "| half_cheetah (HalfCheetahVel) |" in out
    assert "load average " in out and " (1, 5, 15 min) on " in out
    assert "settotalmass" not in out + err
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()


def test_the_load_line_says_when_the_machine_was_loaded() -> None:
    assert format_load((1.5, 1.0, 0.5), cpus=2) == "load average 1.50, 1.00, 0.50 (1, 5, 15 min) on 2 CPUs"
    loaded = format_load((8.7, 9.6, 6.3), cpus=2)
    assert loaded.startswith("load average 8.70, 9.60, 6.30 (1, 5, 15 min) on 2 CPUs: the machine was loaded")
    assert "BELOW" in loaded


def test_the_mujoco_warning_handler_is_restored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gymnasium as gym

    monkeypatch.chdir(tmp_path)
    before = mujoco.get_mju_user_warning()
    with mujoco_warnings_as_python_warnings():
        assert mujoco.get_mju_user_warning() is not before
        gym.make("HalfCheetah-v5").close()  # its XML raises the settotalmass warning
    assert mujoco.get_mju_user_warning() is before
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
