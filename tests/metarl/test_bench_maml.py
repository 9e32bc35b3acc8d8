"""`metarl bench maml` at Point2DNav's paper config: the breakdown adds up and the report shows it."""

from __future__ import annotations

import pytest
import torch

from metarl.commands.bench.maml import (
    GOALS,
    MAMLBenchConfig,
    iteration_time,
    report,
    run,
    sampler_overhead,
)

CPU = torch.device("cpu")

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/metarl/conftest.py


def test_iteration_breakdown_is_consistent_and_reported() -> None:
    row = iteration_time("Point2DNav", iterations=1, outer="trpo", device=CPU)
    assert row["batch"] == "20 tasks x 20 episodes x 100 steps" and row["cg_subsample"] == 1.0
    seconds = row["seconds_per_iteration"]
    assert 0.0 < row["env_seconds"] <= row["sample_seconds"] < seconds
    assert 0.0 < row["trust_region_seconds"] and 0.0 < row["line_search_seconds"]
    assert row["trust_region_seconds"] + row["line_search_seconds"] <= row["update_seconds"] < seconds
    assert row["outside_env_share"] == pytest.approx(1.0 - row["env_seconds"] / seconds)
    sampler = sampler_overhead("Point2DNav", repeats=1, device=CPU)
    assert sampler["ratio"] == pytest.approx(sampler["sampler_steps_per_s"] / sampler["env_alone_steps_per_s"])
    assert 0.0 < sampler["env_share_in_sampler"] < 1.0
    text = report({"device": "cpu", "threads": 1, "sampler": [sampler], "iterations": [row]})
    assert "line search" in text and "learn2learn MAML-TRPO" in text
    assert f"goal >= {GOALS['sampler_ratio']}x" in text


def test_promp_iterations_report_no_trust_region_split() -> None:
    results = run(MAMLBenchConfig(sampler_families=(), iteration_families=("Point2DNav",), iterations=1,
                                  outer="promp", device="cpu"))
    (row,) = results["iterations"]
    assert "trust_region_seconds" not in row and row["update_seconds"] > 0.0
    assert "line search" not in report(results)
