"""`metarl bench envs` on a tiny budget: it measures every side and prints the ratios."""

from __future__ import annotations

import pytest

from metarl.cli import main as cli_main
from metarl.commands.bench.envs import EnvBenchConfig, format_results, measure


def test_bench_envs_measures_all_sides_and_formats_ratios() -> None:
    config = EnvBenchConfig(robots=("half_cheetah",), chunk_steps=40, rounds=2, num_envs=4,
                            gym_vector_envs=2)
    (result,) = measure(config)
    assert set(result.rates) == {"ours_single", "gym_single", "ours_vector", "gym_sync", "rollout"}
    assert all(rate > 0 for rate in result.rates.values())
    table = format_results([result], config)
    assert "half_cheetah (HalfCheetahVel)" in table and table.count("x ") >= 3


def test_bench_config_and_targets_refuse_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="robots must be some of"):
        EnvBenchConfig(robots=("humanoid",))
    with pytest.raises(ValueError, match="^num_envs must be an integer >= 1, got 0$"):
        EnvBenchConfig(num_envs=0)
    assert cli_main(["bench", "nope"]) == 2
    assert "available targets: envs" in capsys.readouterr().err
