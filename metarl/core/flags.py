"""What the subcommands' flag dataclasses share, so that every ``--help`` reads the same way.

Each command declares its flags as a frozen dataclass whose field docstrings are
the help texts, and parses them with :func:`parse`. The annotations here fix
three things tyro would otherwise print:

- ``--no-progress, --no-no-progress``: :data:`OffSwitch` makes a ``no_*``
  boolean (off by default) a lone flag, ``--no-progress``;
- ``{None}|STR ... (default: None)`` for flags whose unset value means "the
  preset's" or "the family's": :func:`optional` shows a plain metavar and says
  what an unset flag does;
- free-text string flags whose values are a fixed set: :func:`choice` shows the
  set (``{tiny,fast,paper}``). The values are still checked by the command's
  own validation, whose errors name the flag and the allowed values, so
  devices such as ``cuda:1`` and families registered after import keep working.

:func:`parse` also reflows the field docstrings (tyro keeps the line breaks of a
docstring that spans several source lines).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import typing
from collections.abc import Iterable, Sequence
from typing import Annotated, Any, TypeVar

import tyro

T = TypeVar("T")

OffSwitch = Annotated[bool, tyro.conf.FlagCreatePairsOff]
"""A ``no_*`` boolean, off by default and switched on by its flag alone (``--no-progress``)."""


def choice(values: Iterable[str], default: str | None = None) -> Any:
    """``tyro.conf.arg`` showing a string flag's allowed values as ``{a,b,c}``.

    ``default`` states what an unset (``None``) flag means, instead of tyro's
    "(default: None)"; leave it out for flags with a real default value.
    """
    metavar = "{" + ",".join(values) + "}"
    hint = None if default is None else f"(default: {default})"
    return tyro.conf.arg(metavar=metavar, help_behavior_hint=hint)


def optional(metavar: str, default: str) -> Any:
    """``tyro.conf.arg`` for an ``X | None = None`` flag: ``METAVAR`` and what an unset flag means."""
    return tyro.conf.arg(metavar=metavar, help_behavior_hint=f"(default: {default})")


def family_choice(note: str | None = None) -> Any:
    """``tyro.conf.arg`` for a task-family flag: ``FAMILY``, and the families known at import in the hint.

    The metavar stays short (ten names would break the help's columns); the hint
    lists the families, then ``note`` (what an unset flag means).
    """
    import metarl_envs as envs

    hint = f"one of {', '.join(envs.FAMILIES)}" + ("" if note is None else f"; {note}")
    return tyro.conf.arg(metavar="FAMILY", help_behavior_hint=f"({hint})")


def device_choice() -> Any:
    """:func:`choice` over the device names (``cuda:N`` is accepted too)."""
    from metarl.core.device import DEVICE_CHOICES

    return choice(DEVICE_CHOICES)


def _reflow(text: str) -> str:
    """One line per paragraph: ``inspect.cleandoc``, then every single line break becomes a space."""
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in paragraphs)


def field_docstrings(cls: type) -> dict[str, str]:
    """The docstring under each annotated field of the dataclass ``cls`` (its own source only).

    Empty when the source is not available (e.g. an install without ``.py`` files):
    tyro then finds no docstrings either, and the help shows the flags alone.
    """
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    tree = ast.parse(textwrap.dedent(source))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for field_node, next_node in zip(body, body[1:], strict=False):
        if (isinstance(field_node, ast.AnnAssign) and isinstance(field_node.target, ast.Name)
                and isinstance(next_node, ast.Expr) and isinstance(next_node.value, ast.Constant)
                and isinstance(next_node.value.value, str)):
            docs[field_node.target.id] = _reflow(next_node.value.value)
    return docs


def parse(cls: type[T], argv: Sequence[str], prog: str) -> T:
    """Parse ``argv`` into the flag dataclass ``cls`` with tyro; ``--help`` prints reflowed help texts.

    The dataclass is parsed through a subclass whose fields carry their docstrings
    as ``tyro.conf.arg(help=...)``; the result is an instance of that subclass,
    so ``cls``'s methods and ``isinstance`` checks keep working. tyro shows a
    required flag's hint as "(required)" only, so the hint of a required flag
    (e.g. :func:`family_choice`'s list) is appended to its help text.
    """
    type_hints = typing.get_type_hints(cls, include_extras=True)
    docs = field_docstrings(cls)
    fields = []
    for field in dataclasses.fields(cls):
        annotation = type_hints[field.name]
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        hints_given = [getattr(meta, "help_behavior_hint", None) for meta in getattr(annotation, "__metadata__", ())]
        if field.name in docs:
            text = docs[field.name]
            if required:
                text = " ".join([text, *(hint for hint in hints_given if isinstance(hint, str))])
            annotation = Annotated[annotation, tyro.conf.arg(help=text)]
        if field.default is not dataclasses.MISSING:
            spec = dataclasses.field(default=field.default)
        elif field.default_factory is not dataclasses.MISSING:
            spec = dataclasses.field(default_factory=field.default_factory)
        else:
            spec = dataclasses.field()
        fields.append((field.name, annotation, spec))
    documented = dataclasses.make_dataclass(cls.__name__, fields, bases=(cls,), frozen=True)
    documented.__module__ = cls.__module__
    description = _reflow(cls.__doc__ or "")
    return tyro.cli(documented, args=list(argv), prog=prog, description=description)
