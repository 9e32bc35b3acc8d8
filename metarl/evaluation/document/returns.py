"""The returns document: return before and after k adaptation steps (maml, pretrain, random_init, finetune)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from metarl.evaluation.document.fields import (
    SCHEMA_VERSION,
    as_float,
    as_floats,
    as_int,
    as_mapping,
    as_optional_float,
    as_optional_int,
    as_pairs,
    as_text,
    check_version,
    document_head,
)


@dataclasses.dataclass(frozen=True)
class ReturnsProtocol:
    """How a returns evaluation was run: what runs in one comparison must share.

    Attributes:
        family: Task family.
        split: ``test``, ``ood`` (``train``) or ``custom`` (explicit tasks).
        num_tasks: Number of evaluation tasks.
        episodes_per_step: Fresh episodes per task feeding each step (and each k's return).
        samples_per_step_budget: Env steps per task feeding each step instead (``--samples-per-step``),
            None when fed by episodes.
        steps: Adaptation steps; returns are reported for k = 0..steps.
        inner_lrs: Learning rate of each adaptation step; empty for a method that adapts without one
            (None: not recorded, version 1).
        eval_seed: The evaluation seed that fixed the tasks and the sampling noise (None: not recorded).
        horizon: Episode length the evaluation sampled (None: not recorded, version 1).
        tasks_file: The ``--tasks`` file the tasks came from (None: the split's tasks).
    """

    family: str
    split: str
    num_tasks: int
    episodes_per_step: int
    steps: int
    samples_per_step_budget: int | None = None
    inner_lrs: tuple[float, ...] | None = None
    eval_seed: int | None = None
    horizon: int | None = None
    tasks_file: str | None = None

    def __post_init__(self) -> None:
        as_text(self.family, "family")
        as_text(self.split, "split")
        as_int(self.num_tasks, "num_tasks", 1)
        as_int(self.episodes_per_step, "episodes_per_step", 1)
        as_int(self.steps, "steps", 0)
        as_optional_int(self.samples_per_step_budget, "samples_per_step_budget", 1)
        as_optional_int(self.eval_seed, "eval_seed", 0)
        as_optional_int(self.horizon, "horizon", 1)
        if self.inner_lrs is not None:
            lrs = as_floats(self.inner_lrs, "inner_lrs", empty=True)
            if len(lrs) not in (0, self.steps):
                raise ValueError(f"inner_lrs holds {len(lrs)} learning rates for {self.steps} adaptation steps; "
                                 "give one per step, or none for a method that adapts without one")
            object.__setattr__(self, "inner_lrs", lrs)
        if self.tasks_file is not None:
            as_text(self.tasks_file, "tasks_file")


@dataclasses.dataclass(frozen=True)
class ReturnsSummary:
    """The aggregate over tasks per k (:func:`metarl.evaluation.stats.summarize`).

    ``iqm``, ``ci95`` (the IQM's interval) and ``mean_ci95`` may be missing from
    version-1 documents written before they existed (None).
    """

    mean: tuple[float, ...]
    iqm: tuple[float, ...] | None = None
    ci95: tuple[tuple[float, float], ...] | None = None
    mean_ci95: tuple[tuple[float, float], ...] | None = None

    def __post_init__(self) -> None:
        mean = as_floats(self.mean, "returns.mean")
        object.__setattr__(self, "mean", mean)
        if self.iqm is not None:
            iqm = as_floats(self.iqm, "returns.iqm")
            if len(iqm) != len(mean):
                raise ValueError(f"returns.iqm has {len(iqm)} entries, returns.mean has {len(mean)}")
            object.__setattr__(self, "iqm", iqm)
        for name in ("ci95", "mean_ci95"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, as_pairs(getattr(self, name), f"returns.{name}", len(mean)))

    @classmethod
    def from_json(cls, data: Any) -> ReturnsSummary:
        """From the ``returns`` object of the document."""
        data = as_mapping(data, "returns")
        if "mean" not in data:
            raise ValueError("returns lacks 'mean'")
        return cls(data["mean"], data.get("iqm"), data.get("ci95"), data.get("mean_ci95"))

    def to_json(self) -> dict[str, Any]:
        """The ``returns`` object, in :func:`~metarl.evaluation.stats.summarize`'s key order."""
        data: dict[str, Any] = {"mean": list(self.mean)}
        if self.iqm is not None:
            data["iqm"] = list(self.iqm)
        for name in ("ci95", "mean_ci95"):
            pairs = getattr(self, name)
            if pairs is not None:
                data[name] = [list(pair) for pair in pairs]
        return data


@dataclasses.dataclass(frozen=True)
class TaskReturns:
    """One task (``task.to_dict()``) and its mean return after k = 0..steps steps."""

    task: Mapping[str, Any]
    returns: tuple[float, ...]

    def to_json(self) -> dict[str, Any]:
        return {"task": dict(self.task), "returns": list(self.returns)}


# top-level JSON keys of a returns document that the typed fields name (the rest are method fields)
_RETURNS_KEYS = frozenset({
    "schema_version", "kind", "method", "family", "split", "num_tasks", "episodes_per_step", "returns",
    "per_task", "samples_per_step", "adapt_seconds", "params", "flops_per_forward", "macs_per_forward",
    "inner_lrs", "eval_seed", "horizon", "tasks_file", "samples_per_step_budget", "trained_iteration",
    "trained_env_steps",
})  # fmt: skip
# fields every version-2 returns document records (None only in version-1 documents)
_RETURNS_REQUIRED_V2 = ("samples_per_step", "adapt_seconds", "params", "flops_per_forward", "macs_per_forward")
_PROTOCOL_REQUIRED_V2 = ("inner_lrs", "eval_seed", "horizon")


@dataclasses.dataclass(frozen=True)
class ReturnsDocument:
    """``eval_<split>.json`` of a run evaluated by return (maml, pretrain, random_init, finetune).

    Attributes:
        method: ``config.json["method"]`` of the run.
        protocol: How it was evaluated.
        returns: Aggregate per k over the tasks.
        per_task: Each task's returns, in the protocol's task order.
        samples_per_step: Env steps actually taken per adaptation step, all tasks together.
        adapt_seconds: Wall time of the adaptation.
        params: Parameters of the acting policy.
        flops_per_forward: 2 x the multiply-adds of one policy forward for one observation.
        macs_per_forward: Those multiply-adds.
        method_fields: The method's own top-level keys (e.g. fine-tuning's ``algo``, ``recipe``).
        trained_iteration: The training iteration of the checkpoint evaluated (None: the checkpoint
            records none, e.g. random initialisation, or the document predates this field).
        trained_env_steps: The environment steps that checkpoint had trained on (None likewise).
        schema_version: 1 for documents written before the schema had a version, else :data:`SCHEMA_VERSION`.
    """

    method: str
    protocol: ReturnsProtocol
    returns: ReturnsSummary
    per_task: tuple[TaskReturns, ...]
    samples_per_step: int | None = None
    adapt_seconds: float | None = None
    params: int | None = None
    flops_per_forward: int | None = None
    macs_per_forward: int | None = None
    method_fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    trained_iteration: int | None = None
    trained_env_steps: int | None = None
    schema_version: int = SCHEMA_VERSION

    kind: Literal["returns"] = dataclasses.field(default="returns", init=False)

    def __post_init__(self) -> None:
        as_text(self.method, "method")
        check_version(self.schema_version)
        per_task = tuple(self.per_task)
        object.__setattr__(self, "per_task", per_task)
        if len(self.returns.mean) != self.protocol.steps + 1:
            raise ValueError(f"returns.mean holds {len(self.returns.mean)} values for k = 0..{self.protocol.steps}")
        for index, row in enumerate(per_task):
            if len(row.returns) != self.protocol.steps + 1:
                raise ValueError(f"per_task[{index}].returns holds {len(row.returns)} values, "
                                 f"returns.mean {len(self.returns.mean)}")
        as_optional_int(self.samples_per_step, "samples_per_step", 0)
        as_optional_float(self.adapt_seconds, "adapt_seconds")
        for name in ("params", "flops_per_forward", "macs_per_forward", "trained_iteration", "trained_env_steps"):
            as_optional_int(getattr(self, name), name, 0)
        clash = sorted(set(self.method_fields) & _RETURNS_KEYS)
        if clash:
            raise ValueError(f"method_fields may not hold the document's own keys {clash}")
        if self.schema_version >= 2:
            missing = [name for name in _RETURNS_REQUIRED_V2 if getattr(self, name) is None]
            missing += [name for name in _PROTOCOL_REQUIRED_V2 if getattr(self.protocol, name) is None]
            if missing:
                raise ValueError(f"a version-{self.schema_version} returns document needs {', '.join(missing)}")

    def to_json(self) -> dict[str, Any]:
        """The JSON object: today's keys in today's order, ``schema_version`` and ``kind`` first (version 2)."""
        protocol = self.protocol
        data = document_head(self)
        data.update({
            "num_tasks": protocol.num_tasks,
            "episodes_per_step": protocol.episodes_per_step,
            "returns": self.returns.to_json(),
            "per_task": [row.to_json() for row in self.per_task],
        })  # fmt: skip
        optional = {
            "samples_per_step": self.samples_per_step,
            "adapt_seconds": self.adapt_seconds,
            "params": self.params,
            "flops_per_forward": self.flops_per_forward,
            "macs_per_forward": self.macs_per_forward,
            "inner_lrs": None if protocol.inner_lrs is None else list(protocol.inner_lrs),
            "eval_seed": protocol.eval_seed,
            "horizon": protocol.horizon,
            "tasks_file": protocol.tasks_file,
            "samples_per_step_budget": protocol.samples_per_step_budget,
            "trained_iteration": self.trained_iteration,
            "trained_env_steps": self.trained_env_steps,
        }
        data.update({key: value for key, value in optional.items() if value is not None})
        data.update(self.method_fields)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], schema_version: int) -> ReturnsDocument:
        """From the JSON object (see :func:`document_from_json`, which names the file in errors)."""
        for key in ("method", "family", "split", "num_tasks", "episodes_per_step", "returns", "per_task"):
            if key not in data:
                raise KeyError(key)
        summary = ReturnsSummary.from_json(data["returns"])
        rows = data["per_task"]
        if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence):
            raise ValueError(f"per_task must be a list of {{task, returns}} objects, got {rows!r}")
        per_task = []
        for index, row in enumerate(rows):
            row = as_mapping(row, f"per_task[{index}]")
            if "task" not in row or "returns" not in row:
                raise ValueError(f"per_task[{index}] must hold 'task' and 'returns', got keys {sorted(row)}")
            per_task.append(TaskReturns(as_mapping(row["task"], f"per_task[{index}].task"),
                                        as_floats(row["returns"], f"per_task[{index}].returns")))
        protocol = ReturnsProtocol(
            family=data["family"],
            split=data["split"],
            num_tasks=data["num_tasks"],
            episodes_per_step=data["episodes_per_step"],
            steps=len(summary.mean) - 1,
            samples_per_step_budget=data.get("samples_per_step_budget"),
            inner_lrs=data.get("inner_lrs"),
            eval_seed=data.get("eval_seed"),
            horizon=data.get("horizon"),
            tasks_file=data.get("tasks_file"),
        )
        adapt_seconds = data.get("adapt_seconds")
        return cls(
            method=data["method"],
            protocol=protocol,
            returns=summary,
            per_task=tuple(per_task),
            samples_per_step=data.get("samples_per_step"),
            adapt_seconds=None if adapt_seconds is None else as_float(adapt_seconds, "adapt_seconds"),
            params=data.get("params"),
            flops_per_forward=data.get("flops_per_forward"),
            macs_per_forward=data.get("macs_per_forward"),
            method_fields={key: value for key, value in data.items() if key not in _RETURNS_KEYS},
            trained_iteration=data.get("trained_iteration"),
            trained_env_steps=data.get("trained_env_steps"),
            schema_version=schema_version,
        )
