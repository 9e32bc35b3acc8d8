"""The evaluation document ``eval_<split>.json``, typed: written and read here alone (docs/design.md, "Run files").

Two kinds of document exist: :class:`ReturnsDocument` (``kind = "returns"``:
return before and after k adaptation steps, every method that adapts; the
evaluation protocol of docs/design.md, "Evaluation protocol") and
:class:`IdentificationDocument` (``kind = "identification"``: ProtoNet's
few-shot accuracy per context size). Each carries its protocol as one block
(:class:`ReturnsProtocol`, :class:`IdentificationProtocol`): what two
evaluations must share for their numbers to sit in one table.

The JSON stays flat, with the keys it has always had (other tools read them);
each document's ``to_json`` and :func:`document_from_json` map between the two;
:func:`write_eval_json` writes (atomically) and :func:`read_eval_document` reads.
The fields live in :mod:`.returns` and :mod:`.identification`, their checks in
:mod:`.fields`. Versions:

- 1: documents written before the schema had a version (no ``schema_version``,
  ``kind`` or ``horizon`` key); read as version 1, the kind told by their
  ``returns`` or ``accuracy`` key, fields written later left ``None``.
- 2 (:data:`SCHEMA_VERSION`): adds ``schema_version``, ``kind`` and, for
  returns, ``horizon`` (the episode length the evaluation sampled); every
  field of the protocol and of the costs is then required.

Keys the schema does not name (a method's own, e.g. fine-tuning's ``algo``
and ``recipe``) are kept in ``method_fields`` and written back at the end.
Reading checks every named field's type and says which field of which file
is wrong.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from metarl.evaluation.document.fields import SCHEMA_VERSION, check_version
from metarl.evaluation.document.identification import (
    IdentificationDocument,
    IdentificationProtocol,
    Interval,
)
from metarl.evaluation.document.returns import (
    ReturnsDocument,
    ReturnsProtocol,
    ReturnsSummary,
    TaskReturns,
)
from metarl.storage.checkpoint import atomic_write_text
from metarl.storage.runs import RunDir, RunDirError

__all__ = [
    "SCHEMA_VERSION",
    "EvalDocument",
    "EvaluationNotSavedError",
    "IdentificationDocument",
    "IdentificationProtocol",
    "Interval",
    "ReturnsDocument",
    "ReturnsProtocol",
    "ReturnsSummary",
    "TaskReturns",
    "WrongKindError",
    "document_from_json",
    "document_kind",
    "read_eval_document",
    "write_eval_json",
]

KINDS: tuple[str, ...] = ("returns", "identification")
KIND_DESCRIPTIONS: dict[str, str] = {
    "returns": "returns before and after adaptation (maml, pretrain, random_init, finetune runs)",
    "identification": "task-identification accuracy (a ProtoNet run)",
}
SCHEMA_HINT = "its schema: docs/design.md, 'Run files'"

EvalDocument = ReturnsDocument | IdentificationDocument


class WrongKindError(ValueError):
    """An evaluation document of another kind than the reader takes (``kind``: the document's)."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def document_from_json(data: Any, where: str = "", expect: str | None = None) -> EvalDocument:
    """The typed document of a JSON object read from ``eval_<split>.json``.

    A document without ``schema_version`` is version 1: its kind is ``identification``
    if it holds ``accuracy``, else ``returns``.

    Args:
        data: The parsed JSON.
        where: Names the document in errors (its path).
        expect: The kind the caller takes (None: either).

    Raises:
        WrongKindError: a document of another kind than ``expect``.
        ValueError: not an evaluation document, or a field of the wrong type, range or
            length; the message names ``where`` and the field.
    """
    name = where or "the evaluation document"
    if not isinstance(data, Mapping):
        raise ValueError(f"{name} must hold a JSON object; {SCHEMA_HINT}")
    kind = document_kind(data, where)
    if expect is not None and kind != expect:
        raise WrongKindError(f"{name} holds {KIND_DESCRIPTIONS[kind]}, not {KIND_DESCRIPTIONS[expect]}", kind)
    try:
        reader = ReturnsDocument if kind == "returns" else IdentificationDocument
        return reader.from_json(data, check_version(data.get("schema_version", 1)))
    except KeyError as error:
        raise ValueError(f"{name} lacks {error.args[0]!r}; it is not an eval_<split>.json of kind {kind!r} "
                         f"({SCHEMA_HINT})") from None
    except (ValueError, TypeError) as error:
        raise ValueError(f"{name}: {error}") from None


def document_kind(data: Mapping[str, Any], where: str = "") -> str:
    """``returns`` or ``identification``: the ``kind`` key, or (version 1) ``identification`` if the
    document holds ``accuracy`` and no ``returns``.

    Raises:
        ValueError: a version-2 document with an unknown or missing ``kind``, or an unreadable version.
    """
    name = where or "the evaluation document"
    try:
        version = check_version(data.get("schema_version", 1))
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None
    if version == 1:
        return "identification" if "accuracy" in data and "returns" not in data else "returns"
    kind = data.get("kind")
    if kind not in KINDS:
        raise ValueError(f"{name}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return kind


def read_eval_document(path: str | os.PathLike[str], missing_hint: str = "", expect: str | None = None
                       ) -> EvalDocument:
    """Read and check the evaluation document in ``path``.

    Raises:
        FileNotFoundError: no such file (the message ends with ``missing_hint``).
        WrongKindError: a document of another kind than ``expect``.
        ValueError: not JSON, or not an evaluation document (names the file and the field).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist" + (f"; {missing_hint}" if missing_hint else ""))
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    return document_from_json(data, str(path), expect)


# ---------------------------------------------------------------------------------------------- writing


class EvaluationNotSavedError(RunDirError):
    """``eval_<split>.json`` could not be written; the finished evaluation was kept elsewhere.

    Attributes:
        document: the evaluation document (its JSON object).
        fallback: where it was written instead (None: printed to standard output).
    """

    def __init__(self, message: str, document: Mapping[str, Any], fallback: Path | None) -> None:
        super().__init__(message)
        self.document = document
        self.fallback = fallback


def write_eval_json(run_dir: RunDir | str | Path, document: EvalDocument | Mapping[str, Any]) -> Path:
    """Write ``document`` as ``eval_<split>.json`` in the run directory (atomically).

    A JSON object is read through :func:`document_from_json` first, so what is
    written is always a checked document of this schema.

    A finished evaluation is never thrown away: if the run directory cannot be written
    (read-only, full disk...), the document goes to a file in the temporary directory
    (or, failing that, to standard output) and :class:`EvaluationNotSavedError` says where.
    """
    typed = document if isinstance(document, (ReturnsDocument, IdentificationDocument)) else \
        document_from_json(document, "the evaluation document")
    data = typed.to_json()
    run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    target = run_dir.eval_path(typed.protocol.split)
    try:
        return run_dir.write_json(target.name, data)
    except OSError as error:
        reason = f"could not write {target} ({error.strerror or error})"
        text = json.dumps(data, indent=2) + "\n"
        fallback = Path(tempfile.gettempdir()) / f"metarl-{run_dir.path.name}-{target.stem}-{os.getpid()}.json"
        try:
            atomic_write_text(fallback, text)
        except OSError:
            print(text)
            raise EvaluationNotSavedError(
                f"{reason}; the finished evaluation was printed to standard output instead", data, None
            ) from None
        raise EvaluationNotSavedError(
            f"{reason}; the finished evaluation was written to {fallback} instead; copy it to {target} "
            "once the directory is writable", data, fallback,
        ) from None
