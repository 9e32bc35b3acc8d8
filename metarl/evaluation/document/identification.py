"""The identification document: few-shot task-identification accuracy per context size (ProtoNet)."""

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
    as_text,
    check_version,
    document_head,
)


@dataclasses.dataclass(frozen=True)
class Interval:
    """A mean with its 95% interval (``{"mean": m, "ci95": [low, high]}`` in JSON)."""

    mean: float
    ci95: tuple[float, float]

    def __post_init__(self) -> None:
        as_float(self.mean, "mean")
        if len(self.ci95) != 2:
            raise ValueError(f"ci95 must be a [low, high] pair, got {self.ci95!r}")
        object.__setattr__(self, "ci95", as_floats(self.ci95, "ci95"))

    @classmethod
    def from_json(cls, data: Any, field: str) -> Interval:
        data = as_mapping(data, field)
        if "mean" not in data or "ci95" not in data:
            raise ValueError(f"{field} must hold 'mean' and 'ci95', got keys {sorted(data)}")
        ci95 = as_floats(data["ci95"], f"{field}.ci95")
        if len(ci95) != 2:
            raise ValueError(f"{field}.ci95 must be a [low, high] pair, got {data['ci95']!r}")
        return cls(as_float(data["mean"], f"{field}.mean"), (ci95[0], ci95[1]))

    def to_json(self) -> dict[str, Any]:
        return {"mean": self.mean, "ci95": list(self.ci95)}


def _intervals(data: Any, field: str) -> dict[str, Interval]:
    return {str(size): Interval.from_json(value, f"{field}.{size}") for size, value in as_mapping(data, field).items()}


def _intervals_json(intervals: Mapping[str, Interval]) -> dict[str, Any]:
    return {size: value.to_json() for size, value in intervals.items()}


@dataclasses.dataclass(frozen=True)
class IdentificationProtocol:
    """How a task-identification evaluation was run (ProtoNet; docs/design.md, "Evaluation protocol").

    Attributes:
        family: Task family.
        split: ``test`` or ``ood``.
        variants: Number of variants (tasks) in the pool identified among.
        way: Variants per few-shot episode.
        shot: Support contexts per variant.
        queries: Query contexts per variant.
        episodes: Few-shot episodes averaged.
        eval_seed: The evaluation seed.
    """

    family: str
    split: str
    variants: int
    way: int
    shot: int
    queries: int
    episodes: int
    eval_seed: int

    def __post_init__(self) -> None:
        as_text(self.family, "family")
        as_text(self.split, "split")
        for name in ("variants", "way", "shot", "queries", "episodes"):
            as_int(getattr(self, name), name, 1)
        as_int(self.eval_seed, "eval_seed", 0)


_IDENTIFICATION_KEYS = frozenset({
    "schema_version", "kind", "method", "family", "split", "way", "shot", "queries", "episodes", "variants",
    "discrete_variants", "accuracy", "baselines", "eval_seed", "collect_seconds", "embed_seconds_per_context16",
    "params", "novel_variants", "accuracy_novel_queries", "variant_tasks",
})  # fmt: skip


@dataclasses.dataclass(frozen=True)
class IdentificationDocument:
    """``eval_<split>.json`` of a run evaluated by task-identification accuracy (ProtoNet).

    Attributes:
        method: ``protonet``.
        protocol: How it was evaluated.
        discrete_variants: Whether the family's variants are a finite set (else a drawn pool).
        accuracy: ProtoNet's accuracy per context size (the keys, as strings).
        handmade_statistics: The hand-made-statistics baseline's accuracy per context size.
        chance: Chance accuracy per context size.
        collect_seconds: Wall time of collecting the contexts.
        embed_seconds_per_context16: Wall time of embedding one context of 16 transitions.
        params: Parameters of the encoder.
        novel_variants: Variants never seen in training (``task.to_dict()``), if any.
        accuracy_novel_queries: Accuracy on the novel variants' queries only, if any.
        variant_tasks: The pool's variants (discrete families).
        method_fields: Further top-level keys.
        schema_version: As :class:`ReturnsDocument`'s.
    """

    method: str
    protocol: IdentificationProtocol
    discrete_variants: bool
    accuracy: Mapping[str, Interval]
    handmade_statistics: Mapping[str, Interval]
    chance: Mapping[str, Interval]
    collect_seconds: float
    embed_seconds_per_context16: float
    params: int
    novel_variants: tuple[Mapping[str, Any], ...] | None = None
    accuracy_novel_queries: Mapping[str, Interval] | None = None
    variant_tasks: tuple[Mapping[str, Any], ...] | None = None
    method_fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    kind: Literal["identification"] = dataclasses.field(default="identification", init=False)

    def __post_init__(self) -> None:
        as_text(self.method, "method")
        check_version(self.schema_version)
        if not isinstance(self.discrete_variants, bool):
            raise ValueError(f"discrete_variants must be true or false, got {self.discrete_variants!r}")
        if set(self.handmade_statistics) != set(self.accuracy) or set(self.chance) != set(self.accuracy):
            raise ValueError("baselines must hold the context sizes of accuracy: "
                             f"{sorted(self.accuracy)}, got {sorted(self.handmade_statistics)} and {sorted(self.chance)}")
        as_float(self.collect_seconds, "collect_seconds")
        as_float(self.embed_seconds_per_context16, "embed_seconds_per_context16")
        as_int(self.params, "params", 0)
        clash = sorted(set(self.method_fields) & _IDENTIFICATION_KEYS)
        if clash:
            raise ValueError(f"method_fields may not hold the document's own keys {clash}")

    def to_json(self) -> dict[str, Any]:
        """The JSON object: today's keys in today's order, ``schema_version`` and ``kind`` first (version 2)."""
        protocol = self.protocol
        data = document_head(self)
        data.update({
            "way": protocol.way,
            "shot": protocol.shot,
            "queries": protocol.queries,
            "episodes": protocol.episodes,
            "variants": protocol.variants,
            "discrete_variants": self.discrete_variants,
            "accuracy": _intervals_json(self.accuracy),
            "baselines": {"handmade_statistics": _intervals_json(self.handmade_statistics),
                          "chance": _intervals_json(self.chance)},
            "eval_seed": protocol.eval_seed,
            "collect_seconds": self.collect_seconds,
            "embed_seconds_per_context16": self.embed_seconds_per_context16,
            "params": self.params,
        })  # fmt: skip
        if self.novel_variants is not None:
            data["novel_variants"] = [dict(task) for task in self.novel_variants]
        if self.accuracy_novel_queries is not None:
            data["accuracy_novel_queries"] = _intervals_json(self.accuracy_novel_queries)
        if self.variant_tasks is not None:
            data["variant_tasks"] = [dict(task) for task in self.variant_tasks]
        data.update(self.method_fields)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], schema_version: int) -> IdentificationDocument:
        """From the JSON object (see :func:`document_from_json`, which names the file in errors)."""
        for key in ("method", "family", "split", "way", "shot", "queries", "episodes", "variants",
                    "discrete_variants", "accuracy", "baselines", "eval_seed", "collect_seconds",
                    "embed_seconds_per_context16", "params"):
            if key not in data:
                raise KeyError(key)
        baselines = as_mapping(data["baselines"], "baselines")
        for key in ("handmade_statistics", "chance"):
            if key not in baselines:
                raise KeyError(f"baselines.{key}")

        def tasks(key: str) -> tuple[Mapping[str, Any], ...] | None:
            value = data.get(key)
            if value is None:
                return None
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
                raise ValueError(f"{key} must be a list of task objects, got {value!r}")
            return tuple(as_mapping(task, f"{key}[{index}]") for index, task in enumerate(value))

        novel = data.get("accuracy_novel_queries")
        return cls(
            method=data["method"],
            protocol=IdentificationProtocol(
                family=data["family"], split=data["split"], variants=data["variants"], way=data["way"],
                shot=data["shot"], queries=data["queries"], episodes=data["episodes"], eval_seed=data["eval_seed"],
            ),
            discrete_variants=data["discrete_variants"],
            accuracy=_intervals(data["accuracy"], "accuracy"),
            handmade_statistics=_intervals(baselines["handmade_statistics"], "baselines.handmade_statistics"),
            chance=_intervals(baselines["chance"], "baselines.chance"),
            collect_seconds=data["collect_seconds"],
            embed_seconds_per_context16=data["embed_seconds_per_context16"],
            params=data["params"],
            novel_variants=tasks("novel_variants"),
            accuracy_novel_queries=None if novel is None else _intervals(novel, "accuracy_novel_queries"),
            variant_tasks=tasks("variant_tasks"),
            method_fields={key: value for key, value in data.items() if key not in _IDENTIFICATION_KEYS},
            schema_version=schema_version,
        )
