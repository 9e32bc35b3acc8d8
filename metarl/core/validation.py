"""Checks of user-given numbers and sizes, shared by every config dataclass and command.

- :func:`check_number` is the one place where a real-valued setting is checked:
  it must be a real number (not a bool), finite (``inf`` and ``nan`` are
  refused everywhere a number is taken) and inside the allowed range. The
  error names the field and the allowed values. :func:`check_int`,
  :func:`check_bool` and :func:`check_choice` do the same for counts, switches
  and named options; :func:`check_optional_int` for a count that may be
  ``None`` and :func:`check_ints` for a tuple of counts (layer widths).
- :func:`check_memory` bounds every size that allocates (horizon, tasks,
  episodes, batch): the caller gives an estimate of the bytes its arrays will
  hold, and a request for more than half of this machine's memory is refused
  unless the user passes ``--allow-large`` (:data:`ALLOW_LARGE_FLAG`). The
  message names the flags that set the size, the estimate and the flag that
  raises the bound.
- :func:`json_nesting_depth` bounds the nesting of JSON read from a file
  (``--tasks`` files, checkpoint metadata) before ``json.loads`` recurses into it.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from typing import Any

ALLOW_LARGE_FLAG = "--allow-large"
MEMORY_SHARE = 0.5  # a request above this share of physical memory needs --allow-large
FALLBACK_MEMORY_BYTES = 8 * 2**30  # used where the physical memory cannot be read
FLOAT_BYTES = 4
ARRAY_COPIES = 4  # buffers, tensors, advantages, autograd activations: copies of each step's data


def is_finite_number(value: Any) -> bool:
    """True for an int or float (not a bool) that is finite."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def check_number(
    field: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a float; raise ``ValueError`` naming ``field`` unless it is a finite
    real number in the range (``low``/``high`` inclusive unless ``low_open``/``high_open``)."""
    lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
    hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
    bounds = " and ".join(part for part in (lo, hi) if part)
    allowed = f"{bounds} (a finite number)" if bounds else "a finite number"
    if not is_finite_number(value):
        raise ValueError(f"{field} must be {allowed}, got {value!r}")
    number = float(value)
    if low is not None and (number < low or (low_open and number == low)):
        raise ValueError(f"{field} must be {allowed}, got {value!r}")
    if high is not None and (number > high or (high_open and number == high)):
        raise ValueError(f"{field} must be {allowed}, got {value!r}")
    return number


def _integers_allowed(low: int | None, high: int | None, noun: str = "integer") -> str:
    """``integer >= low and <= high`` (the bounds given) for the messages of the integer checks."""
    bounds = " and ".join(
        part for part in ("" if low is None else f">= {low}", "" if high is None else f"<= {high}") if part
    )
    return f"{noun} {bounds}" if bounds else noun


def _is_int_in(value: Any, low: int | None, high: int | None) -> bool:
    return not (isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low)
                or (high is not None and value > high))


def check_int(field: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    """Return ``value``; raise ``ValueError`` naming ``field`` unless it is an int (not a bool)
    in ``[low, high]`` (either bound may be left out)."""
    if not _is_int_in(value, low, high):
        raise ValueError(f"{field} must be an {_integers_allowed(low, high)}, got {value!r}")
    return value


def check_optional_int(field: str, value: Any, low: int | None = None, high: int | None = None) -> int | None:
    """:func:`check_int` where ``None`` (a setting left to its default) is also allowed."""
    if value is not None and not _is_int_in(value, low, high):
        raise ValueError(f"{field} must be an {_integers_allowed(low, high)} or None, got {value!r}")
    return value


def check_ints(
    field: str, value: Any, low: int | None = None, high: int | None = None, *, empty: bool = True
) -> Sequence[int]:
    """Return ``value``; raise ``ValueError`` naming ``field`` unless it is a tuple or list of ints (not
    bools) each in ``[low, high]``, and (with ``empty=False``) holds at least one."""
    if (not isinstance(value, tuple | list) or (not value and not empty)
            or not all(_is_int_in(item, low, high) for item in value)):
        size = "" if empty else "non-empty "
        raise ValueError(f"{field} must be a {size}tuple of {_integers_allowed(low, high, 'integers')}, got {value!r}")
    return value


def check_bool(field: str, value: Any) -> bool:
    """Return ``value``; raise ``ValueError`` naming ``field`` unless it is ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise ValueError(f"{field} must be True or False, got {value!r}")
    return value


def check_choice(field: str, value: Any, choices: tuple[str, ...]) -> str:
    """Return ``value``; raise ``ValueError`` naming ``field`` and ``choices`` unless it is one of them."""
    if value not in choices:
        raise ValueError(f"{field} must be one of {', '.join(choices)}, got {value!r}")
    return value


def physical_memory_bytes() -> int:
    """This machine's physical memory (``FALLBACK_MEMORY_BYTES`` where it cannot be read)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return FALLBACK_MEMORY_BYTES


def format_bytes(count: float) -> str:
    """``1.5 GiB``-style text."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(count) < 1024 or unit == "PiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    raise AssertionError("unreachable")


def step_bytes(obs_dim: int, act_dim: int, hidden_sizes: tuple[int, ...] = ()) -> int:
    """Bytes one environment step of a batch costs: observation, action, reward, mask and the
    policy's activations, times the copies the sampler and the learner keep of them."""
    return FLOAT_BYTES * (obs_dim + act_dim + 2 + 2 * sum(hidden_sizes)) * ARRAY_COPIES


def check_memory(what: str, estimate_bytes: float, flags: str, allow_large: bool = False) -> None:
    """Refuse ``what`` when it would need more than half of this machine's memory.

    Args:
        what: the thing being sized, e.g. ``"a meta-batch"``.
        estimate_bytes: the estimate of the bytes it allocates.
        flags: the flags (or fields) that set the size, named in the message.
        allow_large: the user passed ``--allow-large``: no bound.

    Raises:
        ValueError: naming ``flags``, the estimate and ``--allow-large``.
    """
    if allow_large:
        return
    total = physical_memory_bytes()
    if estimate_bytes > MEMORY_SHARE * total:
        raise ValueError(
            f"{what} would need about {format_bytes(estimate_bytes)} of memory ({flags}), more than "
            f"{MEMORY_SHARE:.0%} of this machine's {format_bytes(total)}; lower them, or pass {ALLOW_LARGE_FLAG} "
            "to try anyway"
        )


def json_nesting_depth(text: str) -> int:
    """The deepest nesting of ``[``/``{`` in JSON ``text`` (brackets inside strings not counted)."""
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_JSON_STRINGS.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


_JSON_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(r"[\[\]{}]")
