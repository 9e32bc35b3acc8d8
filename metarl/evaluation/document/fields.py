"""Field checks shared by the evaluation documents: each error names the field and what it must be."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from metarl.core.validation import check_int, check_number

SCHEMA_VERSION = 2  # documents without ``schema_version`` are version 1


def as_int(value: Any, field: str, low: int = 0) -> int:
    return check_int(field, value, low)


def as_optional_int(value: Any, field: str, low: int = 0) -> int | None:
    return None if value is None else as_int(value, field, low)


def as_float(value: Any, field: str) -> float:
    return check_number(field, value)


def as_optional_float(value: Any, field: str) -> float | None:
    return None if value is None else as_float(value, field)


def as_text(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{field} must be a non-empty string, got {value!r}")
    return value


def as_floats(value: Any, field: str, empty: bool = False) -> tuple[float, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or (not value and not empty):
        raise ValueError(f"{field} must be a {'' if empty else 'non-empty '}list of numbers, got {value!r}")
    return tuple(as_float(item, f"{field}[{index}]") for index, item in enumerate(value))


def as_pairs(value: Any, field: str, count: int) -> tuple[tuple[float, float], ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ValueError(f"{field} must be a list of [low, high] pairs, got {value!r}")
    if len(value) != count:
        raise ValueError(f"{field} has {len(value)} entries, returns.mean has {count}")
    pairs = []
    for index, pair in enumerate(value):
        numbers = as_floats(pair, f"{field}[{index}]")
        if len(numbers) != 2:
            raise ValueError(f"{field}[{index}] must be a [low, high] pair, got {pair!r}")
        pairs.append((numbers[0], numbers[1]))
    return tuple(pairs)


def as_mapping(value: Any, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{field} must be a JSON object, got {value!r}")
    return value


def check_version(version: Any) -> int:
    as_int(version, "schema_version", 1)
    if version > SCHEMA_VERSION:
        raise ValueError(f"schema_version {version} is newer than this metarl reads ({SCHEMA_VERSION}); "
                         "upgrade metarl to read it")
    return version


def document_head(document: Any) -> dict[str, Any]:
    """The keys every evaluation document starts with: ``schema_version`` and ``kind`` (version 2 on),
    then ``method``, ``family`` and ``split``."""
    data: dict[str, Any] = {}
    if document.schema_version >= 2:
        data["schema_version"] = document.schema_version
        data["kind"] = document.kind
    data.update({"method": document.method, "family": document.protocol.family, "split": document.protocol.split})
    return data
