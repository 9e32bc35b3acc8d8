"""Studies: a grid of (family, method, seed) runs, trained and evaluated the way ``metarl`` does it.

A study is a TOML file (format in docs/studies.md)::

    name = "tiny"
    families = ["Point2DNav"]
    seeds = [0, 1]

    [evaluation]            # the protocol of every run: metarl evaluate's flags
    splits = ["test", "ood"]
    num_tasks = 4
    episodes_per_step = 2
    steps = 1

    [methods.maml-trpo]     # a method: the `metarl train <train>` command and its flags
    train = "maml"
    options = { preset = "tiny", iterations = 3 }

    [methods.random-init]
    train = "random-init"
    like = "maml-trpo"      # --like the run of that method with the same family and seed

Each run lives at ``DIR/runs/<family>/<method>/seed<seed>/`` and is exactly the
directory ``metarl train <train> --env <family> --seed <seed> <options>``
followed by ``metarl evaluate --split <split>`` writes: the study calls those
commands' ``main`` in-process. This module holds the file format
(:class:`StudySpec`) and its validation; the expansion into runs
(:class:`~metarl.studies.plan.RunPlan`) and what the run directories on disk say
about each run (:func:`~metarl.studies.plan.run_state`) are :mod:`metarl.studies.plan`.
Running the grid on Ray is :mod:`metarl.studies.runner`.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.resources
import os
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import metarl_envs as envs
from metarl.core.errors import UserError
from metarl.evaluation.protocol import (
    ADAPT_STEPS,
    EPISODES_PER_STEP,
    EVAL_SEED,
    NUM_TASKS,
    EvalOptions,
)
from metarl.methods import Method
from metarl.studies.plan import RunPlan, flag_names, run_path, study_method, study_methods

SPLITS: tuple[str, ...] = ("test", "ood")
# Flags the study sets itself for every run; a method's options may not name them.
RESERVED_OPTIONS: frozenset[str] = frozenset({"out", "env", "seed", "resume", "like", "no_progress"})
_TOP_KEYS = frozenset({"name", "description", "families", "seeds", "evaluation", "methods"})
_METHOD_KEYS = frozenset({"train", "options", "like", "description"})
_EVAL_KEYS = frozenset({"splits", "num_tasks", "episodes_per_step", "steps", "seed", "device",
                        "samples_per_step", "families"})


def _accepts_none(annotation: Any) -> bool:
    """Whether a flag's type admits None (``X | None``, ``Optional[X]``, possibly inside ``Annotated``)."""
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    return type(None) in typing.get_args(annotation) or "None" in str(annotation)


def _fail(where: str, message: str) -> UserError:
    return UserError(f"study {where}: {message}")


def _positive_int(where: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(where, f"must be an integer >= {minimum}, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class EvaluationSpec:
    """The evaluation protocol of every run (``metarl evaluate``'s flags), per family if overridden."""

    splits: tuple[str, ...] = SPLITS
    """Splits to evaluate each run on (test, ood)."""
    num_tasks: int = NUM_TASKS
    """Evaluation tasks per split."""
    episodes_per_step: int = EPISODES_PER_STEP
    """Fresh episodes per task for each adaptation step."""
    steps: int = ADAPT_STEPS
    """Adaptation steps: returns at k = 0..steps."""
    seed: int = EVAL_SEED
    """Evaluation seed (the same tasks for every run)."""
    device: str = "auto"
    """auto, cpu or cuda."""
    samples_per_step: int | None = None
    """Feed each step by whole episodes up to this many env steps per task instead (gradient methods)."""

    def __post_init__(self) -> None:
        if not self.splits or any(split not in SPLITS for split in self.splits):
            raise _fail("evaluation.splits", f"must be one or more of {', '.join(SPLITS)}, got {self.splits!r}")
        _positive_int("evaluation.num_tasks", self.num_tasks)
        _positive_int("evaluation.episodes_per_step", self.episodes_per_step)
        _positive_int("evaluation.steps", self.steps, minimum=0)
        _positive_int("evaluation.seed", self.seed, minimum=0)
        if self.samples_per_step is not None:
            _positive_int("evaluation.samples_per_step", self.samples_per_step)
        if self.device not in ("auto", "cpu", "cuda"):
            raise _fail("evaluation.device", f"must be auto, cpu or cuda, got {self.device!r}")

    def options(self, split: str) -> EvalOptions:
        """The evaluation of ``split`` that ``metarl evaluate RUN_DIR`` with :meth:`argv` runs."""
        return EvalOptions(split=split, num_tasks=self.num_tasks, episodes_per_step=self.episodes_per_step,
                           steps=self.steps, seed=self.seed, device=self.device,
                           samples_per_step=self.samples_per_step)

    def argv(self, split: str) -> list[str]:
        """``metarl evaluate`` flags for ``split`` (after the run directory)."""
        argv = ["--split", split, "--num-tasks", str(self.num_tasks), "--episodes-per-step",
                str(self.episodes_per_step), "--steps", str(self.steps), "--seed", str(self.seed),
                "--device", self.device, "--no-progress"]
        if self.samples_per_step is not None:
            argv += ["--samples-per-step", str(self.samples_per_step)]
        return argv

    def matches(self, document: Mapping[str, Any]) -> bool:
        """Whether an ``eval_<split>.json`` was written with this protocol."""
        returns = document.get("returns", {})
        return (
            document.get("num_tasks") == self.num_tasks
            and document.get("episodes_per_step") == self.episodes_per_step
            and document.get("eval_seed") == self.seed
            and document.get("samples_per_step_budget") == self.samples_per_step
            and isinstance(returns, Mapping) and len(returns.get("mean", [])) == self.steps + 1
        )


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """One method of a study: a ``metarl train`` command with its flags."""

    name: str
    """The method's name in the study (its directory under ``runs/<family>/``)."""
    train: str
    """The command: the train word of one of :func:`study_methods` (maml, pretrain, finetune, random-init)."""
    options: tuple[tuple[str, Any], ...] = ()
    """Its flags (without the study's own: out, env, seed, resume, like, no_progress)."""
    like: str | None = None
    """random-init only: the method whose run of the same family and seed it copies (``--like``)."""

    @property
    def trainer(self) -> Method:
        """Its entry in the method registry (:mod:`metarl.methods`)."""
        return study_method(self.train)

    def argv(self) -> list[str]:
        """The method's flags as command-line words, typed the way its tyro dataclass reads them."""
        fields = {field.name: field for field in dataclasses.fields(self.trainer.load("train_args"))}
        argv: list[str] = []
        for name, value in self.options:
            flag = "--" + name.replace("_", "-")
            optional = _accepts_none(fields[name].type)
            if isinstance(value, bool) and not optional:
                argv.append(flag if value else "--no-" + name.replace("_", "-"))
            elif isinstance(value, list | tuple):
                argv += [flag, *(str(item) for item in value)]
            else:
                argv += [flag, str(value)]
        if self.train != "finetune" and "no_progress" in fields:
            argv.append("--no-progress")
        return argv


@dataclasses.dataclass(frozen=True)
class StudySpec:
    """A parsed, validated study file."""

    name: str
    families: tuple[str, ...]
    seeds: tuple[int, ...]
    methods: tuple[MethodSpec, ...]
    evaluation: EvaluationSpec
    family_evaluation: tuple[tuple[str, EvaluationSpec], ...] = ()
    """Per-family protocols that differ from ``evaluation`` (e.g. more episodes for Point2DNav)."""
    description: str = ""
    source: str = ""
    """The file it was read from."""
    text: str = ""
    """The file's text (copied into the study directory)."""

    def evaluation_for(self, family: str) -> EvaluationSpec:
        return dict(self.family_evaluation).get(family, self.evaluation)

    def method(self, name: str) -> MethodSpec:
        return {method.name: method for method in self.methods}[name]

    def plans(self) -> list[RunPlan]:
        """Every (family, method, seed) run, families outermost, methods in file order."""
        plans = []
        for family in self.families:
            for method in self.methods:
                for seed in self.seeds:
                    plans.append(RunPlan(
                        family=family, method=method.name, seed=seed, train=method.train,
                        options=tuple(method.argv()),
                        like=None if method.like is None else run_path(family, method.like, seed),
                        evaluation=self.evaluation_for(family),
                        resumable=method.trainer.resumable,
                    ))
        return plans


# ---------------------------------------------------------------------------------------------
# Reading a study file
# ---------------------------------------------------------------------------------------------


def shipped_studies() -> list[str]:
    """Names of the studies shipped with metarl (``metarl/studies/*.toml``)."""
    folder = importlib.resources.files("metarl") / "studies"
    return sorted(entry.name[:-5] for entry in folder.iterdir() if entry.name.endswith(".toml"))


def find_study(name_or_path: str | os.PathLike[str]) -> tuple[str, str]:
    """The text and source of a study file: a path, or the name of a shipped study.

    Raises:
        UserError: neither a file nor a shipped study (lists the shipped ones).
    """
    path = Path(name_or_path)
    if path.is_file():
        return path.read_text(), str(path)
    name = str(name_or_path).removesuffix(".toml")
    shipped = shipped_studies()
    if name in shipped:
        resource = importlib.resources.files("metarl") / "studies" / f"{name}.toml"
        return resource.read_text(), f"metarl/studies/{name}.toml"
    raise UserError(
        f"study {str(name_or_path)!r} is neither a file nor a shipped study; shipped: {', '.join(shipped)}"
    )


def load_study(name_or_path: str | os.PathLike[str]) -> StudySpec:
    """Read and validate a study (a TOML file, or a shipped study's name)."""
    text, source = find_study(name_or_path)
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"study {source} is not valid TOML: {error}") from None
    return parse_study(document, source=source, text=text)


def _string_list(where: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(item, str) for item in value):
        raise _fail(where, f"must be a non-empty list of strings, got {value!r}")
    if len(set(value)) != len(value):
        raise _fail(where, f"lists an entry twice: {value!r}")
    return tuple(value)


def _unknown_keys(where: str, table: Mapping[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise _fail(where, f"unknown key(s) {unknown}; allowed: {', '.join(sorted(allowed))}")


def _evaluation(where: str, table: Any, base: EvaluationSpec | None = None) -> EvaluationSpec:
    if not isinstance(table, Mapping):
        raise _fail(where, f"must be a table, got {table!r}")
    _unknown_keys(where, table, _EVAL_KEYS if base is None else _EVAL_KEYS - {"families"})
    values = {key: value for key, value in table.items() if key != "families"}
    if "splits" in values:
        values["splits"] = _string_list(f"{where}.splits", values["splits"])
    return dataclasses.replace(base, **values) if base is not None else EvaluationSpec(**values)


def _method(name: str, table: Any, method_names: Sequence[str]) -> MethodSpec:
    where = f"methods.{name}"
    if not isinstance(table, Mapping):
        raise _fail(where, f"must be a table, got {table!r}")
    _unknown_keys(where, table, _METHOD_KEYS)
    train = table.get("train")
    choices = [m.train_word for m in study_methods()]
    if train not in choices:
        raise _fail(f"{where}.train", f"must be one of {', '.join(choices)}, got {train!r}")
    trainer = study_method(train)
    options = table.get("options", {})
    if not isinstance(options, Mapping):
        raise _fail(f"{where}.options", f"must be a table of flags, got {options!r}")
    flags = flag_names(trainer)
    normalised = []
    for key, value in options.items():
        flag = key.replace("-", "_")
        if flag in RESERVED_OPTIONS:
            raise _fail(f"{where}.options.{key}", "is set by the study for every run; remove it")
        if flag not in flags:
            raise _fail(f"{where}.options.{key}", f"is not a flag of `metarl train {train}`; its flags: "
                        + ", ".join(sorted(f.replace("_", "-") for f in flags - RESERVED_OPTIONS)))
        if not isinstance(value, str | int | float | bool | list):
            raise _fail(f"{where}.options.{key}", f"must be a string, number, boolean or list, got {value!r}")
        normalised.append((flag, tuple(value) if isinstance(value, list) else value))
    like = table.get("like")
    if like is not None:
        if train != "random-init":
            raise _fail(f"{where}.like", "is for random-init methods (`metarl train random-init --like`)")
        if like not in method_names or like == name:
            raise _fail(f"{where}.like", f"must name another method of the study ({', '.join(method_names)}), "
                        f"got {like!r}")
    return MethodSpec(name=name, train=train, options=tuple(normalised), like=like)


def parse_study(document: Mapping[str, Any], source: str = "<memory>", text: str = "") -> StudySpec:
    """Validate a parsed study document (errors name the key and the allowed values)."""
    _unknown_keys("file", document, _TOP_KEYS)
    name = document.get("name")
    if not isinstance(name, str) or not name or Path(name).name != name:
        raise _fail("name", f"must be a non-empty name without '/', got {name!r}")
    families = _string_list("families", document.get("families"))
    for family in families:
        if family not in envs.FAMILIES:
            raise _fail("families", f"unknown family {family!r}; families: {', '.join(envs.FAMILIES)}")
    seeds = document.get("seeds")
    if not isinstance(seeds, list) or not seeds:
        raise _fail("seeds", f"must be a non-empty list of seeds, got {seeds!r}")
    seeds = tuple(_positive_int("seeds", seed, minimum=0) for seed in seeds)
    if len(set(seeds)) != len(seeds):
        raise _fail("seeds", f"lists a seed twice: {list(seeds)}")
    methods_table = document.get("methods")
    if not isinstance(methods_table, Mapping) or not methods_table:
        raise _fail("methods", "must hold at least one [methods.<name>] table")
    for method_name in methods_table:
        if Path(method_name).name != method_name or method_name.startswith("."):
            raise _fail("methods", f"method names become directory names; {method_name!r} is not one")
    methods = tuple(_method(n, t, list(methods_table)) for n, t in methods_table.items())
    evaluation_table = document.get("evaluation", {})
    evaluation = _evaluation("evaluation", evaluation_table)
    per_family = evaluation_table.get("families", {})
    if not isinstance(per_family, Mapping):
        raise _fail("evaluation.families", f"must be a table of families, got {per_family!r}")
    family_evaluation = []
    for family, table in per_family.items():
        if family not in families:
            raise _fail("evaluation.families", f"{family!r} is not one of the study's families {list(families)}")
        family_evaluation.append((family, _evaluation(f"evaluation.families.{family}", table, evaluation)))
    description = document.get("description", "")
    if not isinstance(description, str):
        raise _fail("description", f"must be a string, got {description!r}")
    return StudySpec(name=name, families=families, seeds=seeds, methods=methods, evaluation=evaluation,
                     family_evaluation=tuple(family_evaluation), description=description, source=source,
                     text=text)
