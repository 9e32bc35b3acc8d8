"""The task suite's import name, metarl_envs, cannot be shadowed by another `envs`.

Many projects have an `envs/` folder, and PyPI has a package called `envs`. Neither may
break metarl: the suite's folder is envs/ but it is imported as metarl_envs
(pyproject.toml maps the one onto the other).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHECK = (
    "import gymnasium as gym, metarl, metarl_envs\n"
    "env = gym.make('MetaRL/HalfCheetahVel-v0')\n"
    "vec = gym.make_vec('MetaRL/Point2DNav-v0', num_envs=2, vectorization_mode='vector_entry_point')\n"
    "print(type(env.unwrapped).__module__, metarl_envs.env_id('AntDir'), len(metarl.families()))\n"
)


def _run(args: list[str], cwd: Path, pythonpath_first: Path | None = None) -> subprocess.CompletedProcess[str]:
    environment = dict(os.environ)
    if pythonpath_first is not None:
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(pythonpath_first), *filter(None, [environment.get("PYTHONPATH", "")])]
        )
    result = subprocess.run(args, cwd=cwd, env=environment, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"{' '.join(args)} failed in {cwd}:\n{result.stdout}\n{result.stderr}"
    return result


def _metarl_script() -> list[str]:
    script = shutil.which("metarl", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("no metarl console script next to this interpreter (package not installed)")
    return [script]


@pytest.fixture
def pypi_envs(tmp_path: Path) -> Path:
    """A folder holding another package named `envs` (as PyPI's), to put first on the path."""
    site = tmp_path / "site"
    (site / "envs").mkdir(parents=True)
    (site / "envs" / "__init__.py").write_text(
        '"""Another project\'s envs package: no env_id, no families."""\n\ndef env(name):\n    return name\n'
    )
    return site


def test_a_package_named_envs_first_on_the_path(pypi_envs: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    # the other package really is the one `import envs` finds
    shadow = _run([sys.executable, "-c", "import envs; print(hasattr(envs, 'env_id'))"], work, pypi_envs)
    assert shadow.stdout.strip() == "False"
    out = _run([sys.executable, "-c", CHECK], work, pypi_envs).stdout.split()
    assert out == ["metarl_envs.goal_families", "MetaRL/AntDir-v0", "10"]
    listed = _run([sys.executable, "-m", "metarl", "envs"], work, pypi_envs).stdout
    assert "HalfCheetahVel  (MetaRL/HalfCheetahVel-v0" in listed
    listed = _run([*_metarl_script(), "envs", "--family", "AntDir"], work, pypi_envs).stdout
    assert "AntDir  (MetaRL/AntDir-v0" in listed


def test_a_users_envs_folder_in_the_working_directory(tmp_path: Path) -> None:
    project = tmp_path / "my_project"
    (project / "envs").mkdir(parents=True)
    (project / "envs" / "__init__.py").write_text("raise ImportError('the user project envs package')\n")
    (project / "envs" / "my_env.py").write_text("X = 1\n")
    out = _run([sys.executable, "-c", CHECK], project).stdout.split()
    assert out == ["metarl_envs.goal_families", "MetaRL/AntDir-v0", "10"]
    listed = _run([sys.executable, "-m", "metarl", "envs"], project).stdout
    assert "Point2DNav  (MetaRL/Point2DNav-v0" in listed
    listed = _run([*_metarl_script(), "envs"], project).stdout
    assert "AntCrippled  (MetaRL/AntCrippled-v0" in listed


def test_gymnasium_module_prefix_syntax(tmp_path: Path) -> None:
    code = (
        "import gymnasium as gym\n"
        "print(type(gym.make('metarl_envs:MetaRL/Point2DNav-v0').unwrapped).__name__)\n"
        "print(type(gym.make('metarl:MetaRL/HalfCheetahDir-v0').unwrapped).__name__)\n"
    )
    out = _run([sys.executable, "-c", code], tmp_path).stdout.split()
    assert out == ["Point2DNavEnv", "HalfCheetahDirEnv"]


def test_pyproject_lists_every_package() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"metarl_envs": "envs"}
    expected = sorted(".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "metarl").rglob("__init__.py"))
    expected += sorted(
        ".".join(("metarl_envs", *p.parent.relative_to(ROOT / "envs").parts))
        for p in (ROOT / "envs").rglob("__init__.py")
    )
    assert sorted(setuptools["packages"]) == sorted(expected)
