"""`metarl evaluate` says what it does after its progress bar ends (the bootstrap of the CIs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from metarl.cli import main as cli_main
from tests.metarl.test_run_videos import _make_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/metarl/conftest.py


def test_evaluate_names_the_bootstrap_after_its_bar_and_hides_both_without_progress(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _make_run(tmp_path / "run", "Point2DNav")
    argv = ["evaluate", str(run), "--num-tasks", "2", "--episodes-per-step", "2", "--steps", "1",
            "--device", "cpu"]
    assert cli_main(argv) == 0
    err = capsys.readouterr().err
    bar, status = err.find("evaluate Point2DNav test"), err.find("bootstrap 95% confidence intervals")
    assert 0 <= bar < status  # the status follows the evaluation's bar
    assert cli_main([*argv, "--no-progress"]) == 0
    assert capsys.readouterr().err == ""
