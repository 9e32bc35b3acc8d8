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

A command whose flags set the fields of config dataclasses does not copy those
fields: :func:`unset_flag` derives a flag (``T | None = None``, "unset: the
preset's") from a config field, its docstring as the help and its metavar from
the field's type or its :func:`choice`, and :func:`flag_dataclass` builds the
command's flag dataclass from such flags and the command's own
(:func:`own_flags`).

:func:`parse` also reflows the field docstrings (tyro keeps the line breaks of a
docstring that spans several source lines).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import textwrap
import types
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


def _metavar(owner: type, name: str, annotation: Any) -> str:
    """The metavar of a flag setting ``owner.name``: its own ``tyro.conf.arg`` metavar, else from its type."""
    for meta in getattr(annotation, "__metadata__", ()):
        if isinstance(getattr(meta, "metavar", None), str):
            return meta.metavar
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    members = [a for a in typing.get_args(annotation) if a is not type(None)] if typing.get_origin(
        annotation) in (typing.Union, types.UnionType) else [annotation]
    if len(members) == 1:
        member = members[0]
        if member is bool:
            return "{True,False}"
        if member in _TYPE_METAVARS:
            return _TYPE_METAVARS[member]
        item = typing.get_args(member)
        if typing.get_origin(member) is tuple and len(item) == 2 and item[1] is Ellipsis and item[0] in _TYPE_METAVARS:
            return f"{_TYPE_METAVARS[item[0]]} [{_TYPE_METAVARS[item[0]]} ...]"
    raise TypeError(f"no flag metavar for {owner.__name__}.{name}: {annotation!r}; give it a tyro.conf.arg metavar")


_TYPE_METAVARS = {int: "INT", float: "FLOAT", str: "STR"}


def unset_flag(owner: type, name: str, unset: str, flag: str | None = None) -> tuple[str, Any, Any]:
    """A flag that sets the field ``name`` of the config dataclass ``owner`` when given.

    The flag is ``T | None = None`` (``None``: leave the field to ``unset``, e.g. "the
    preset's", shown as its default); its help text is the field's docstring and its
    metavar the field's :func:`choice` (or ``{True,False}``, ``INT``, ``FLOAT``,
    ``INT [INT ...]`` from its type).

    Args:
        owner: the config dataclass.
        name: its field.
        unset: what an unset flag means.
        flag: the flag's field name (default ``name``), e.g. ``promp_lr`` for ``ProMPConfig.lr``.

    Returns:
        ``(field name, annotation, dataclasses.field)`` for :func:`flag_dataclass`.
    """
    annotation = typing.get_type_hints(owner, include_extras=True)[name]
    metavar = _metavar(owner, name, annotation)
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    help_text = field_docstrings(owner).get(name)
    config = tyro.conf.arg(metavar=metavar, help=help_text, help_behavior_hint=f"(default: {unset})")
    return flag or name, Annotated[annotation | None, config], dataclasses.field(default=None)


def _same_default(field: dataclasses.Field) -> Any:
    """A new ``dataclasses.field`` with ``field``'s default (or default factory, or none)."""
    if field.default is not dataclasses.MISSING:
        return dataclasses.field(default=field.default)
    if field.default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=field.default_factory)
    return dataclasses.field()


def own_flags(cls: type) -> list[tuple[str, Any, Any]]:
    """The fields of the flag dataclass ``cls``, their docstrings as help texts, for :func:`flag_dataclass`."""
    type_hints = typing.get_type_hints(cls, include_extras=True)
    docs = field_docstrings(cls)
    fields = []
    for field in dataclasses.fields(cls):
        annotation = type_hints[field.name]
        if field.name in docs:
            annotation = Annotated[annotation, tyro.conf.arg(help=docs[field.name])]
        fields.append((field.name, annotation, _same_default(field)))
    return fields


def flag_dataclass(name: str, doc: str, flags: Sequence[tuple[str, Any, Any]], module: str) -> type:
    """A frozen flag dataclass (for :func:`parse`) with these fields, in this order, and ``doc`` as its help."""
    cls = dataclasses.make_dataclass(name, list(flags), frozen=True)
    cls.__doc__ = doc
    cls.__module__ = module
    return cls


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
        fields.append((field.name, annotation, _same_default(field)))
    documented = dataclasses.make_dataclass(cls.__name__, fields, bases=(cls,), frozen=True)
    documented.__module__ = cls.__module__
    description = _reflow(cls.__doc__ or "")
    return tyro.cli(documented, args=list(argv), prog=prog, description=description)
