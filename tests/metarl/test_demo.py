"""``metarl demo``: the README's main job runs end to end (shortened) and prints the table beside the paper's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metarl.commands.demo_cmd import DemoArgs, run_demo
from metarl.evaluation.paper import paper_returns


def test_paper_figures_ship_with_the_package() -> None:
    reference = paper_returns()
    assert "Finn" in reference["source"]
    assert reference["returns"]["Point2DNav"]["maml"] == [-40.4, -11.7, -3.3, -3.2]


@pytest.mark.slow
def test_demo_trains_evaluates_prints_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    result = run_demo(DemoArgs(out=out, iterations=2, device="cpu", no_progress=True, no_video=True))
    printed = capsys.readouterr().out
    assert "MAML (paper)" in printed and "-40.4" in printed and "MAML (ours)" in printed
    assert (out / "demo_returns.png").stat().st_size > 10_000
    document = json.loads((out / "eval_test.json").read_text())
    assert document["num_tasks"] == 40 and document["episodes_per_step"] == 20
    assert len(result["maml"]["returns"]["mean"]) == 4
    # a second demo in the same directory reuses the finished run and only re-evaluates
    again = run_demo(DemoArgs(out=out, iterations=2, device="cpu", no_progress=True, no_video=True))
    assert again["maml"]["per_task"] == result["maml"]["per_task"]
