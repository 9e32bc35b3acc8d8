"""Inputs are checked before anything is written: finite numbers, bounded sizes, --tasks files,
flags named in every message."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import metarl_envs as envs
from metarl import cli
from metarl.core.validation import (
    check_bool,
    check_choice,
    check_int,
    check_ints,
    check_memory,
    check_number,
    check_optional_int,
)
from metarl.evaluation.protocol import EvalOptions, load_tasks_file
from metarl.identification.variants import VariantPool, check_way
from tests.metarl.cli_helpers import assert_one_line, run_cli

MAML = ["train", "maml", "--env", "Point2DNav", "--preset", "tiny", "--no-progress", "--no-tensorboard",
        "--device", "cpu"]


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        ([*MAML, "--outer", "promp", "--promp-lr", "inf"], "ProMPConfig.lr must be > 0 (a finite number), got inf"),
        ([*MAML, "--inner-lr", "inf"], "inner_lr"),
        ([*MAML, "--init-std", "inf"], "init_std"),
        ([*MAML, "--max-kl", "nan"], "max_kl"),
        ([*MAML, "--discount", "-inf"], "discount"),
        (["train", "finetune", "--env", "Point2DNav", "--learning-rate", "inf"], "--learning-rate"),
        (["train", "finetune", "--env", "Point2DNav", "--finetune-lr", "nan"], "--finetune-lr"),
        (["train", "random-init", "--env", "Point2DNav", "--inner-lr", "inf"], "inner_lr"),
        (["train", "random-init", "--env", "Point2DNav", "--init-std", "nan"], "init_std"),
        (["train", "protonet", "--env", "Point2DNav", "--preset", "tiny", "--learning-rate", "inf"], "learning_rate"),
    ],
)
def test_non_finite_numbers_are_refused_before_anything_is_written(
    argv: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code, err = run_cli([*argv, "--out", str(out)], capsys)
    assert code == 2 and not out.exists()
    assert_one_line(err, needle)


def test_check_number_is_the_one_helper() -> None:
    assert check_number("x", 3, 0, low_open=True) == 3.0
    for bad in (float("inf"), float("nan"), True, "1", None, 10**400):
        with pytest.raises(ValueError, match="^x must be"):
            check_number("x", bad, 0)



def test_check_int_bool_and_choice_name_the_field_and_the_allowed_values() -> None:
    assert check_int("n", 3, 1) == 3 and check_int("n", -5) == -5 and check_int("n", 2, 1, 2) == 2
    for bad in (0, True, 1.0, "1", None, 3):
        with pytest.raises(ValueError, match=r"^n must be an integer >= 1 and <= 2, got "):
            check_int("n", bad, 1, 2)
    assert check_bool("flag", False) is False
    with pytest.raises(ValueError, match="^flag must be True or False, got 1$"):
        check_bool("flag", 1)
    assert check_choice("outer", "promp", ("trpo", "promp")) == "promp"
    with pytest.raises(ValueError, match="^outer must be one of trpo, promp, got 'sgd'$"):
        check_choice("outer", "sgd", ("trpo", "promp"))


def test_check_optional_int_and_check_ints_name_the_field_and_the_allowed_values() -> None:
    assert check_optional_int("env_threads", None, 1) is None and check_optional_int("env_threads", 2, 1) == 2
    for bad in (0, True, 1.5, "2"):
        with pytest.raises(ValueError, match=r"^env_threads must be an integer >= 1 or None, got "):
            check_optional_int("env_threads", bad, 1)
    assert check_ints("hidden_sizes", (64, 32), 1, empty=False) == (64, 32)
    assert check_ints("pooled", (), 1) == () and check_ints("widths", [3], 1) == [3]
    for bad in ((), (64, 0), (64, True), (64, 2.0), 64, "64", None):
        with pytest.raises(ValueError, match=r"^hidden_sizes must be a non-empty tuple of integers >= 1, got "):
            check_ints("hidden_sizes", bad, 1, empty=False)
    with pytest.raises(ValueError, match=r"^pooled must be a tuple of integers >= 1 and <= 8, got \(9,\)$"):
        check_ints("pooled", (9,), 1, 8)

@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        ([*MAML, "--horizon", "1000000000"], ["--horizon 1000000000", "--allow-large", "GiB"]),
        ([*MAML, "--meta-batch-size", "100000000"], ["--meta-batch-size 100000000", "--allow-large"]),
        ([*MAML, "--episodes-per-task", "100000000"], ["--episodes-per-task 100000000", "--allow-large"]),
        (["train", "pretrain", "--env", "Point2DNav", "--preset", "tiny", "--meta-batch-size", "100000000"],
         ["--meta-batch-size 100000000", "--allow-large"]),
        (["train", "finetune", "--env", "Point2DNav", "--num-envs", "100000000"], ["--num-envs", "--allow-large"]),
    ],
)
def test_sizes_that_would_exhaust_memory_are_refused(
    argv: list[str], needles: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code, err = run_cli([*argv, "--out", str(out)], capsys)
    assert code == 2 and not out.exists()
    assert_one_line(err, *needles)


def test_check_memory_names_the_estimate_and_yields_to_allow_large() -> None:
    with pytest.raises(ValueError, match=r"about .* of memory \(--n 5\).*--allow-large"):
        check_memory("the thing", 1e18, "--n 5")
    check_memory("the thing", 1e18, "--n 5", allow_large=True)
    check_memory("the thing", 1e3, "--n 5")


@pytest.fixture(scope="module")
def random_init_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "random"
    assert cli.main(["train", "random-init", "--env", "Point2DNav", "--hidden-sizes", "8", "--out", str(out)]) == 0
    return out


def test_evaluate_bounds_names_its_flags(random_init_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = sorted(p.name for p in random_init_run.iterdir())
    code, err = run_cli(["evaluate", str(random_init_run), "--num-tasks", "1000000000", "--no-progress"], capsys)
    assert code == 2
    assert_one_line(err, "--num-tasks 1000000000", "--allow-large")
    code, err = run_cli(["evaluate", str(random_init_run), "--seed", "-1", "--no-progress"], capsys)
    assert code == 2
    assert_one_line(err, "--seed", "-1")
    code, err = run_cli(["render", str(random_init_run), "--num-tasks", "1000000000"], capsys)
    assert code == 2
    assert_one_line(err, "--num-tasks 1000000000", "--allow-large")
    code, err = run_cli(["render", str(random_init_run), "--fps", "inf"], capsys)
    assert code == 2
    assert_one_line(err, "--fps")
    assert sorted(p.name for p in random_init_run.iterdir()) == before


def _tasks_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tasks.json"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ('[{"family": "Point2DNav", "goal_x_m": 1%s, "goal_y_m": 0}]' % ("0" * 400), ["goal_x_m", "401 digits"]),
        ("[" * 100_000 + "]" * 100_000, ["nests lists or objects 100000 deep"]),
        ('[{"family": ["Point2DNav"], "goal_x_m": 0, "goal_y_m": 0}]', ["task 0", "'family'"]),
        ('[{"family": "AntGoal", "goal_x_m": null, "goal_y_m": 0}]', ["task 0", "goal_x_m", "NoneType"]),
        ('[{"family": "HalfCheetahRandParams", "body_mass_scale": [1, null]}]', ["task 0"]),
        ('{"tasks": 5}', ["non-empty list"]),
        ("{]", ["is not valid JSON"]),
    ],
)
def test_malformed_tasks_files_give_one_line_naming_the_field(
    text: str, needles: list[str], tmp_path: Path
) -> None:
    path = _tasks_file(tmp_path, text)
    with pytest.raises(ValueError) as caught:
        load_tasks_file(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    for needle in needles:
        assert needle in message, (needle, message)


def test_a_vector_field_with_null_names_the_element(tmp_path: Path) -> None:
    spec = envs.distribution("HalfCheetahRandParams").sample(1, "train", __import__("numpy").random.default_rng(0))[0]
    data = spec.to_dict()
    vector = next(name for name, value in data.items() if isinstance(value, list))
    data[vector][1] = None
    path = _tasks_file(tmp_path, json.dumps([data]))
    with pytest.raises(ValueError, match=rf"task 0: {vector}\[1\] must be a real number, got NoneType"):
        load_tasks_file(path)


def test_a_directory_and_a_huge_tasks_file_are_refused(tmp_path: Path, random_init_run: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="is a directory"):
        load_tasks_file(tmp_path)
    huge = tmp_path / "huge.json"
    with huge.open("wb") as file:
        file.truncate(100 * 2**20)  # sparse: refused by its size, never read
    code, err = run_cli(["evaluate", str(random_init_run), "--tasks", str(huge), "--no-progress"], capsys)
    assert code == 2
    assert_one_line(err, str(huge), "100.0 MiB", "--allow-large")


def test_evaluate_of_a_protonet_run_does_not_suggest_a_flag_it_lacks() -> None:
    tasks = tuple(envs.distribution("HalfCheetahDir").sample(2, "test", __import__("numpy").random.default_rng(0)))
    pool = VariantPool(tasks, discrete=True)
    with pytest.raises(ValueError) as caught:
        check_way(5, pool, "test", "HalfCheetahDir", training=False)
    assert "metarl train protonet --way" in str(caught.value)
    assert "use --way" not in str(caught.value)
    with pytest.raises(ValueError, match="use --way 2 or less"):
        check_way(5, pool, "train", "HalfCheetahDir")


def test_eval_options_name_their_flags() -> None:
    with pytest.raises(ValueError, match=r"^seed \(--seed\) must be an integer >= 0, got -1$"):
        EvalOptions(seed=-1)
    with pytest.raises(ValueError, match=r"--num-tasks"):
        EvalOptions(num_tasks=0)


# -- fuzz: the --tasks reader and task construction never raise anything but a ValueError ------------

_FIELD_NAMES = st.sampled_from(["family", "goal_x_m", "goal_y_m", "goal_velocity_mps", "direction_sign",
                                "body_mass_scale", "crippled_leg", "x", ""])
_SCALARS = (st.none() | st.booleans() | st.integers(min_value=-10**450, max_value=10**450)
            | st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(["", "a", *envs.FAMILIES]))
_JSON = st.recursive(_SCALARS, lambda children: st.lists(children, max_size=3)
                     | st.dictionaries(_FIELD_NAMES, children, max_size=3), max_leaves=6)
_TASK = st.dictionaries(_FIELD_NAMES, _JSON, max_size=4) | st.fixed_dictionaries(
    {"family": st.sampled_from(list(envs.FAMILIES))},
    optional={name: _JSON for name in ("goal_x_m", "goal_y_m", "goal_velocity_mps", "direction_sign")})
_TASKS_PATH = Path(tempfile.mkdtemp(prefix="metarl-fuzz-")) / "tasks.json"


@pytest.mark.slow
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=st.lists(_TASK, max_size=3) | _JSON | st.fixed_dictionaries({"tasks": _JSON}))
def test_fuzz_tasks_reader_never_raises_a_traceback(document: object) -> None:
    """1500 generated documents (huge ints, NaN, nesting, wrong types and fields): only one-line
    ``ValueError``s naming the file, or valid tasks."""
    _TASKS_PATH.write_text(json.dumps(document))
    try:
        tasks = load_tasks_file(_TASKS_PATH)
    except ValueError as error:
        assert "\n" not in str(error) and str(_TASKS_PATH) in str(error)
    else:
        assert tasks and all(isinstance(task, envs.Task) for task in tasks)


@pytest.mark.slow
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_TASK)
def test_fuzz_task_construction_raises_only_value_errors(data: dict) -> None:
    try:
        task = envs.task_from_dict(data)
    except ValueError as error:
        assert str(error)
    else:
        assert envs.task_from_dict(task.to_dict()) == task
