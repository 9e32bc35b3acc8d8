"""Operating-system errors are one-line messages naming the path; nothing half-written is left;
``evaluate`` checks it can write before working and never throws a finished evaluation away."""

from __future__ import annotations

import contextlib
import errno
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from metarl import cli
from metarl.storage.runs import RunDir
from tests.metarl.cli_helpers import assert_one_line, run_cli

TINY = ["--env", "Point2DNav", "--preset", "tiny", "--iterations", "2", "--meta-batch-size", "2",
        "--episodes-per-task", "2", "--horizon", "10", "--hidden-sizes", "8", "--no-progress",
        "--no-tensorboard", "--device", "cpu"]


@contextlib.contextmanager
def _mounted(directory: Path, *options: str) -> Iterator[None]:
    """``mount`` on ``directory`` for the block (skips where mounting is not allowed)."""
    directory.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", *options, str(directory)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount here ({done.stderr.strip() or 'mount failed'}); needs root")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def test_read_only_out_is_one_line_naming_the_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mount_point = tmp_path / "ro"
    with _mounted(mount_point, "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs"):
        code, err = run_cli(["train", "maml", "--out", str(mount_point / "run"), *TINY], capsys)
        assert code == 2
        assert_one_line(err, str(mount_point / "run"), "Read-only file system")


def test_immutable_out_is_one_line_naming_the_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parent = tmp_path / "immutable"
    parent.mkdir()
    if subprocess.run(["chattr", "+i", str(parent)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not supported on this file system (or not root)")
    try:
        code, err = run_cli(["train", "maml", "--out", str(parent / "run"), *TINY], capsys)
    finally:
        subprocess.run(["chattr", "-i", str(parent)], check=False)
    assert code == 2
    assert_one_line(err, str(parent / "run"), "not permitted")


def test_a_system_path_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(["train", "maml", "--out", "/sys/kernel/metarl-run", *TINY], capsys)
    assert code == 2
    assert_one_line(err, "/sys/kernel/metarl-run")


def test_a_full_disk_leaves_nothing_behind_and_names_the_file(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    disk = tmp_path / "full"
    with _mounted(disk, "-t", "tmpfs", "-o", "size=4k", "tmpfs"):
        out = disk / "run"
        code, err = run_cli(["train", "maml", "--out", str(out), *TINY], capsys)
        assert code == 2
        assert_one_line(err, str(out), "No space left on device")
        assert not out.exists()  # no config.json or header-only metrics.csv left behind


def test_a_disk_that_fills_mid_run_keeps_a_resumable_checkpoint(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    disk = tmp_path / "small"
    with _mounted(disk, "-t", "tmpfs", "-o", "size=40k", "tmpfs"):
        out = disk / "run"
        code, err = run_cli(["train", "maml", "--out", str(out), *TINY, "--iterations", "200",
                          "--checkpoint-every", "1"], capsys)
        assert code == 2
        assert_one_line(err, "No space left on device", "--resume")
        shutil.copytree(out, tmp_path / "copy")
    from metarl.storage.checkpoint import load_checkpoint

    saved = load_checkpoint(tmp_path / "copy" / "checkpoint" / "latest.safetensors")[1]["iteration"]
    code, err = run_cli(["train", "maml", "--out", str(tmp_path / "copy"), "--resume", "--iterations",
                      str(saved + 1), "--no-progress"], capsys)
    assert code == 0, err


@pytest.fixture
def random_init_run(tmp_path: Path) -> Path:
    out = tmp_path / "random"
    assert cli.main(["train", "random-init", "--env", "Point2DNav", "--hidden-sizes", "8", "--out", str(out)]) == 0
    return out


def test_evaluate_in_a_read_only_run_refuses_before_working(
    random_init_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    with _mounted(random_init_run, "--bind", str(random_init_run)):
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(random_init_run)]).returncode != 0:
            pytest.skip("cannot remount read-only")
        code, err = run_cli(["evaluate", str(random_init_run), "--num-tasks", "2", "--episodes-per-step", "2",
                          "--no-progress"], capsys)
    assert code == 2
    assert_one_line(err, str(random_init_run), "Read-only file system", "eval_test.json")


def test_evaluate_never_throws_a_finished_evaluation_away(
    random_init_run: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path
) -> None:
    capsys.readouterr()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "elsewhere"))
    (tmp_path / "elsewhere").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR

    def disk_full(self: RunDir, name: str, document: dict) -> Path:
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path / name))

    monkeypatch.setattr(RunDir, "write_json", disk_full)
    code, err = run_cli(["evaluate", str(random_init_run), "--num-tasks", "2", "--episodes-per-step", "2",
                      "--no-progress"], capsys)
    assert code == 2
    assert_one_line(err, "could not write", "eval_test.json", "was written to")
    saved = list((tmp_path / "elsewhere").glob("metarl-random-eval_test-*.json"))
    assert len(saved) == 1 and str(saved[0]) in err
    document = json.loads(saved[0].read_text())
    assert document["num_tasks"] == 2 and len(document["per_task"]) == 2


class _ClosedPipe:
    """A stdout whose reader has gone away (``metarl envs | head -1``): every write fails with EPIPE."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, text: str) -> int:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    def fileno(self) -> int:
        return self.fd


@pytest.mark.parametrize("argv", [["envs"], ["--help"]])
def test_closed_stdout_stops_quietly(argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A reader that stops early is not an error of the command: no message, exit status 1, and stdout is
    pointed at /dev/null so that Python's flush at exit does not report the pipe again."""
    with open(tmp_path / "stdout", "w") as sink:
        monkeypatch.setattr("sys.stdout", _ClosedPipe(sink.fileno()))
        assert cli.main(argv) == 1
    assert capsys.readouterr().err == ""


def test_a_broken_pipe_elsewhere_is_an_error(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Only a closed stdout ends quietly: a broken pipe of anything else (a socket, a subprocess) while stdout
    is fine is reported as an error."""
    def broken(argv: list[str]) -> int:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    monkeypatch.setattr("metarl.commands.envs_cmd.main", broken)
    assert cli.main(["envs"]) == 2
    assert "metarl: error:" in capsys.readouterr().err
