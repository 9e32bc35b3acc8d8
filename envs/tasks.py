"""The task protocol shared by every family of the suite (docs/design.md, "Task protocol").

A *task* is a frozen dataclass that subclasses :class:`Task`. Its fields carry
their units in their names (``goal_velocity_mps``, ``goal_x_m``) and are plain
floats, ints or tuples of them, so a task is hashable, picklable and JSON
serialisable. A task validates itself on construction: an invalid task cannot
exist, and every error names the field and the allowed range.

A *task distribution* (:class:`TaskDistribution`) samples tasks of one family
for a split: ``train`` and ``test`` are disjoint random streams of the same
distribution (unseen tasks), ``ood`` draws outside the training support. All
randomness comes from the ``np.random.Generator`` passed in.

The helpers at the bottom (``check_finite``, ``check_range``, ...) are the one
place where field validation and its error wording live.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np

SPLITS: tuple[str, ...] = ("train", "test", "ood")
# Each split draws from its own child stream of the caller's generator, so the
# train and test draws of one generator never coincide.
_SPLIT_STREAM = {"train": 0x7A11, "test": 0x7E57, "ood": 0x00D5}

T = TypeVar("T", bound="Task")


@dataclasses.dataclass(frozen=True)
class Task:
    """Base of every family's task dataclass.

    Subclasses set ``family`` and implement :meth:`validate`.
    """

    family: ClassVar[str] = ""

    def __post_init__(self) -> None:
        # Normalise lists (from JSON) to tuples so tasks stay hashable.
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, list | np.ndarray):
                numbers = tuple(check_finite(f"{field.name}[{i}]", v) for i, v in enumerate(value))
                object.__setattr__(self, field.name, numbers)
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field and the allowed range if invalid."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: ``{"family": ..., <field>: <value>, ...}``."""
        out: dict[str, Any] = {"family": self.family}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            out[field.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        """Rebuild a task from :meth:`to_dict` output; validates it."""
        if not isinstance(data, dict):
            raise ValueError(f"{cls.__name__}.from_dict expects a dict, got {type(data).__name__}")
        data = dict(data)
        family = data.pop("family", cls.family)
        if family != cls.family:
            raise ValueError(
                f"task dict is of family {family!r}, but {cls.__name__} is family {cls.family!r}"
            )
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        missing = sorted(set(names) - set(data))
        if unknown or missing:
            raise ValueError(
                f"{cls.__name__}.from_dict: unknown fields {unknown}, missing fields {missing}; "
                f"expected exactly {names}"
            )
        return cls(**data)

    @property
    def task_id(self) -> str:
        """Stable identifier: family plus a hash of the canonical JSON of the task."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return f"{self.family}-{hashlib.sha1(blob.encode()).hexdigest()[:12]}"


class TaskDistribution(ABC):
    """A family's distribution over tasks, with train/test/ood splits."""

    family: ClassVar[str]
    task_class: ClassVar[type[Task]]
    #: Set to a sentence explaining why, for families without an ood split.
    no_ood_reason: ClassVar[str | None] = None

    def sample(self, n: int, split: str, rng: np.random.Generator) -> list[Task]:
        """Draw ``n`` tasks of ``split`` using ``rng`` (and nothing else).

        Raises:
            ValueError: on a negative ``n``, an unknown split, a split the
                family does not have, or ``rng`` not being a numpy Generator.
        """
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        check_split(split)
        if split == "ood" and self.no_ood_reason is not None:
            raise ValueError(f"{self.family} has no ood split: {self.no_ood_reason}")
        if not isinstance(rng, np.random.Generator):
            raise ValueError(
                f"rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
                f"got {type(rng).__name__}"
            )
        stream = np.random.default_rng([int(rng.integers(2**63)), _SPLIT_STREAM[split]])
        return self._sample(int(n), split, stream)

    @abstractmethod
    def _sample(self, n: int, split: str, rng: np.random.Generator) -> list[Task]:
        """Draw ``n`` tasks of ``split`` from the split's own stream ``rng``."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Human-readable spec: ``{"varies", "parameters", "splits": {split: text}}``."""

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits this family supports."""
        return ("train", "test") if self.no_ood_reason is not None else SPLITS

    def task_from_dict(self, data: dict[str, Any]) -> Task:
        """Rebuild a task of this family from its dict."""
        return self.task_class.from_dict(data)


# ----------------------------------------------------------------------------
# Validation helpers: the one place where field checks and their wording live.
# ----------------------------------------------------------------------------


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; available splits: {', '.join(SPLITS)}")


def check_finite(name: str, value: Any) -> float:
    """Return ``value`` as float; raise if it is not a finite real number."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range
        raise ValueError(f"{name} must be a finite real number, got an integer of {len(str(abs(value)))} digits") from None
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def check_range(name: str, value: Any, low: float, high: float) -> float:
    """Check ``low <= value <= high`` (and finiteness)."""
    value = check_finite(name, value)
    if not low <= value <= high:
        raise ValueError(f"{name} must lie in [{low}, {high}], got {value!r}")
    return value


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    if isinstance(value, bool) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def check_vector(name: str, values: Any, length: int, low: float, high: float) -> None:
    """Check a tuple field: its length and each element's range."""
    if not isinstance(values, tuple) or len(values) != length:
        got = len(values) if hasattr(values, "__len__") else type(values).__name__
        raise ValueError(f"{name} must hold {length} numbers, got {got}")
    for i, v in enumerate(values):
        check_range(f"{name}[{i}]", v, low, high)


def check_task_type(task: Any, expected: type[Task]) -> None:
    """Raise a clear error when a task of another family (or a non-task) is given."""
    if not isinstance(task, expected):
        what = getattr(task, "family", None) or type(task).__name__
        raise ValueError(
            f"expected a {expected.family} task ({expected.__name__}), got {what!r}; "
            f"sample one with envs.distribution({expected.family!r}).sample(n, split, rng)"
        )
