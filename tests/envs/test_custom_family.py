"""A family registered from outside the package: the public API and the command line.

The toy family is the example module of docs/adding-a-family.md, written to a
temporary folder as a user's own code would be; the package is never edited. The
CLI finds it through METARL_PLUGINS.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import metarl_envs as envs

ROOT = Path(__file__).resolve().parents[2]


def _toy_module() -> str:
    """The example module of docs/adding-a-family.md (its first python block), verbatim."""
    text = (ROOT / "docs" / "adding-a-family.md").read_text()
    return re.search(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL).group(1)


@pytest.fixture
def toy_plugin(tmp_path: Path) -> dict[str, str]:
    """An environment whose METARL_PLUGINS names the toy module on PYTHONPATH."""
    folder = tmp_path / "user_code"
    folder.mkdir()
    (folder / "toy_line_family.py").write_text(_toy_module())
    environment = dict(os.environ)
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(folder), *filter(None, [environment.get("PYTHONPATH", "")])]
    )
    environment["METARL_PLUGINS"] = "toy_line_family"
    return environment


def _metarl(args: list[str], environment: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "metarl", *args], env=environment, cwd=cwd, capture_output=True,
        text=True, timeout=300,
    )
    assert result.returncode == 0, f"metarl {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def test_toy_family_trains_evaluates_and_renders_through_the_cli(
    toy_plugin: dict[str, str], tmp_path: Path
) -> None:
    listed = _metarl(["envs", "--family", "ToyLine", "--json"], toy_plugin, tmp_path)
    assert json.loads(listed.stdout)["ToyLine"]["id"] == "MetaRL/ToyLine-v0"
    run = tmp_path / "runs" / "toy"
    _metarl(
        ["train", "maml", "--env", "ToyLine", "--preset", "tiny", "--iterations", "2", "--meta-batch-size", "3",
         "--episodes-per-task", "3", "--hidden-sizes", "8", "8", "--device", "cpu", "--no-progress",
         "--no-tensorboard", "--out", str(run)],
        toy_plugin, tmp_path,
    )
    assert json.loads((run / "config.json").read_text())["family"] == "ToyLine"
    _metarl(["evaluate", str(run), "--num-tasks", "3", "--episodes-per-step", "2", "--steps", "1",
             "--device", "cpu", "--no-progress"], toy_plugin, tmp_path)
    evaluation = json.loads((run / "eval_test.json").read_text())
    assert evaluation["family"] == "ToyLine" and len(evaluation["per_task"]) == 3
    assert evaluation["per_task"][0]["task"]["family"] == "ToyLine"
    assert len(evaluation["returns"]["mean"]) == 2  # k = 0, 1
    video = tmp_path / "toy.gif"
    _metarl(["render", str(run), "--split", "test", "--num-tasks", "3", "--episodes-per-step", "2",
             "--steps", "0,1", "--width", "64", "--height", "64", "--out", str(video)], toy_plugin, tmp_path)
    assert video.stat().st_size > 0


def test_an_installed_entry_point_is_loaded(toy_plugin: dict[str, str], tmp_path: Path) -> None:
    """A distribution that declares the module in the metarl.families group needs no variable."""
    del toy_plugin["METARL_PLUGINS"]
    folder = Path(toy_plugin["PYTHONPATH"].split(os.pathsep)[0])
    dist_info = folder / "toy_line-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-line\nVersion: 0.1\n")
    (dist_info / "entry_points.txt").write_text("[metarl.families]\ntoy_line = toy_line_family\n")
    listed = _metarl(["envs", "--family", "ToyLine"], toy_plugin, tmp_path)
    assert "ToyLine  (MetaRL/ToyLine-v0, horizon 20)" in listed.stdout


def test_without_the_plugin_the_family_is_unknown(toy_plugin: dict[str, str], tmp_path: Path) -> None:
    del toy_plugin["METARL_PLUGINS"]
    result = subprocess.run(
        [sys.executable, "-m", "metarl", "envs", "--family", "ToyLine"], env=toy_plugin, cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "unknown family 'ToyLine'" in result.stderr and "METARL_PLUGINS" in result.stderr


def test_a_plugin_that_cannot_be_imported_is_named(toy_plugin: dict[str, str], tmp_path: Path) -> None:
    toy_plugin["METARL_PLUGINS"] = "no_such_family_module"
    result = subprocess.run(
        [sys.executable, "-m", "metarl", "envs"], env=toy_plugin, cwd=tmp_path, capture_output=True,
        text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "no_such_family_module" in result.stderr and "METARL_PLUGINS" in result.stderr


def test_a_plugin_that_registers_badly_is_one_line(toy_plugin: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "bad_family_module.py").write_text(
        "import metarl_envs\n"
        "spec = metarl_envs.family_spec('Point2DNav')\n"
        "metarl_envs.register_family('Point2DNav', module=spec.module, env_class=spec.env_class,\n"
        "    vector_env_class=spec.vector_env_class, distribution_class=spec.distribution_class, horizon=7)\n"
    )
    toy_plugin["METARL_PLUGINS"] = "bad_family_module"
    toy_plugin["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), toy_plugin.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", "metarl", "envs"], env=toy_plugin, cwd=tmp_path, capture_output=True,
        text=True, timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "already registered" in result.stderr


def test_register_family_checks_its_arguments() -> None:
    spec = envs.family_spec("Point2DNav")
    fields = {"module": spec.module, "env_class": spec.env_class, "vector_env_class": spec.vector_env_class,
              "distribution_class": spec.distribution_class, "horizon": spec.horizon}
    assert envs.register_family("Point2DNav", **fields) == "MetaRL/Point2DNav-v0"  # same spec: no-op
    with pytest.raises(ValueError, match="already registered"):
        envs.register_family("Point2DNav", **{**fields, "horizon": 7})
    with pytest.raises(ValueError, match=r"\[A-Z\]"):
        envs.register_family("toy line", **fields)
    with pytest.raises(ValueError, match="horizon"):
        envs.register_family("ToyBad", **{**fields, "horizon": 0})
    assert "ToyBad" not in envs.families()
