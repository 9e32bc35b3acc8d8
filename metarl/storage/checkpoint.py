"""Checkpoints: safetensors tensors + JSON metadata, written atomically, never pickle.

A checkpoint is one ``.safetensors`` file. Its tensors are the policy weights,
the learner's tensors and the raw RNG states (a ``torch.Generator`` state is a
uint8 tensor); its header's metadata holds one JSON document (key ``"metarl"``)
with everything else: format version, family, observation and action sizes,
the iteration, numpy generator states, counters. A human-readable copy of that
JSON is written next to it (``<name>.json``); loading reads only the
``.safetensors`` file, so the two can never disagree about what is loaded.

Writing goes to a temporary file in the same directory, is flushed to disk and
then ``os.replace``'d over the target, so a crash leaves either the old or the
new checkpoint, never a half-written one. The metadata also stores a SHA-256
digest, so a file that was truncated or corrupted anywhere is rejected with a
clear :class:`CheckpointError` instead of loading garbage.

Format versions: version 2 (written now) digests the metadata (every field,
canonical JSON) and the tensors, so an edited iteration or RNG state is
refused. Version 1 (written before) digested the tensors only; it is still
read, so runs written by it keep resuming, and the next checkpoint such a run
saves is version 2. Whatever the version, the metadata fields are checked by
type and range when read (:func:`validate_metadata`, and the trainers' own
readers: :func:`read_int`, :func:`restore_numpy_generator`), and JSON nested
deeper than :data:`MAX_METADATA_DEPTH` is refused, so a crafted header gives a
one-line :class:`CheckpointError` naming the field.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from metarl.core.validation import json_nesting_depth

FORMAT = "metarl-checkpoint"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: digest of the tensors only; 2: of the metadata and the tensors
_META_KEY = "metarl"
MAX_METADATA_DEPTH = 32  # optimizer states nest 6 deep; anything far deeper is not a checkpoint we wrote
MAX_DIM = 1_000_000  # bound on obs_dim / act_dim read from a checkpoint


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: corrupted, truncated, or of another env or run."""


def _default_file_mode() -> int:
    """The mode ``open()`` would give a new file (0o666 minus the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace`` (atomic).

    The file gets the usual permissions of a new file (``mkstemp`` alone would
    leave it readable by its owner only).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise _with_path(error, path.parent) from None
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp_name, _default_file_mode())
        os.replace(temp_name, path)
    except BaseException as error:
        Path(temp_name).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise _with_path(error, path) from None
        raise


def _with_path(error: OSError, path: Path) -> OSError:
    """``error`` with ``path`` as its file name when it has none (a failed write names no file)."""
    if error.filename is not None or error.errno is None:
        return error
    return type(error)(error.errno, error.strerror, str(path))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    sha = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name]
        sha.update(name.encode())
        sha.update(str(tensor.dtype).encode())
        sha.update(str(tuple(tensor.shape)).encode())
        sha.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return sha.hexdigest()


def _document_digest(document: dict[str, Any], tensor_digest: str) -> str:
    """Version 2's digest: the canonical JSON of every metadata field but ``sha256``, then the tensors'."""
    sha = hashlib.sha256(b"metarl-checkpoint-v2\0")
    body = {key: value for key, value in document.items() if key != "sha256"}
    sha.update(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())
    sha.update(tensor_digest.encode())
    return sha.hexdigest()


def save_checkpoint(
    path: str | os.PathLike[str], tensors: dict[str, torch.Tensor], metadata: dict[str, Any]
) -> None:
    """Save ``tensors`` and JSON-serialisable ``metadata`` to ``path`` (``.safetensors``) atomically.

    Tensors are copied to contiguous CPU tensors first. ``metadata`` should hold
    ``family``, ``obs_dim`` and ``act_dim`` so :func:`check_compatible` can refuse a
    checkpoint of another env.
    """
    path = Path(path)
    cpu = {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in tensors.items()}
    document = {"format": FORMAT, "version": FORMAT_VERSION, **metadata}
    try:
        document["sha256"] = _document_digest(document, _digest(cpu))
        text = json.dumps(document, sort_keys=True)
    except (TypeError, ValueError) as error:
        raise ValueError(f"checkpoint metadata must be JSON-serialisable: {error}") from None
    atomic_write_bytes(path, safetensors_save(cpu, metadata={_META_KEY: text}))
    atomic_write_text(path.with_suffix(".json"), json.dumps(document, indent=2, sort_keys=True) + "\n")


def _read_header(data: bytes, path: Path) -> dict[str, Any]:
    if len(data) < 8:
        raise CheckpointError(f"checkpoint {path} is truncated ({len(data)} bytes); it cannot be loaded")
    (header_size,) = struct.unpack("<Q", data[:8])
    if header_size > len(data) - 8:
        raise CheckpointError(
            f"checkpoint {path} is truncated: its header announces {header_size} bytes but the file has "
            f"{len(data)}; it cannot be loaded"
        )
    try:
        header = json.loads(data[8 : 8 + header_size])
        text = header["__metadata__"][_META_KEY]
        if json_nesting_depth(text) > MAX_METADATA_DEPTH:
            raise ValueError(f"its metadata nests deeper than {MAX_METADATA_DEPTH} levels")
        document = json.loads(text)
    except (ValueError, KeyError, TypeError, RecursionError) as error:
        raise CheckpointError(
            f"checkpoint {path} is corrupted or is not a metarl checkpoint (unreadable header: {error})"
        ) from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise CheckpointError(f"{path} is not a metarl checkpoint (format {found!r})")
    version = document.get("version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise CheckpointError(
            f"checkpoint {path} has format version {version!r}; this metarl reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))}"
        )
    return document


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a checkpoint saved by :func:`save_checkpoint`: ``(tensors on CPU, metadata)``.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        CheckpointError: when the file is truncated, corrupted or not a metarl checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    data = path.read_bytes()
    document = _read_header(data, path)
    try:
        tensors = safetensors_load(data)
    except (SafetensorError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"checkpoint {path} is corrupted or truncated ({error}); it cannot be loaded") from None
    tensor_digest = _digest(tensors)
    if document["version"] == 1:
        if tensor_digest != document.get("sha256"):
            raise CheckpointError(
                f"checkpoint {path} is corrupted: its tensor data does not match the digest written with it"
            )
    elif _document_digest(document, tensor_digest) != document.get("sha256"):
        raise CheckpointError(
            f"checkpoint {path} is corrupted or was edited: its metadata or tensor data does not match the "
            "digest written with it"
        )
    metadata = {k: v for k, v in document.items() if k not in ("format", "version", "sha256")}
    validate_metadata(metadata, path)
    return tensors, metadata


def _field_error(path: Any, key: str, expected: str, value: Any) -> CheckpointError:
    shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:80] + "..."
    return CheckpointError(f"checkpoint {path}: metadata field {key!r} must be {expected}, got {shown}")


def read_int(metadata: dict[str, Any], key: str, path: Any, minimum: int = 0, maximum: int | None = None) -> int:
    """``metadata[key]`` as an int in ``[minimum, maximum]``; :class:`CheckpointError` naming the field."""
    value = metadata.get(key)
    expected = f"an integer >= {minimum}" + ("" if maximum is None else f" and <= {maximum}")
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (maximum is not None and value > maximum):
        raise _field_error(path, key, expected, value)
    return value


def read_float(metadata: dict[str, Any], key: str, path: Any, minimum: float = 0.0) -> float:
    """``metadata[key]`` as a finite float >= ``minimum``; :class:`CheckpointError` naming the field."""
    value = metadata.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < minimum:
        raise _field_error(path, key, f"a finite number >= {minimum}", value)
    return float(value)


def validate_metadata(metadata: dict[str, Any], path: Any = "") -> None:
    """Check the fields every metarl checkpoint may hold, by type and range.

    ``family`` and ``method``: strings; ``obs_dim``, ``act_dim``: integers in
    ``[1, MAX_DIM]``; ``iteration``, ``env_steps`` (when present): integers
    >= 0; ``train_seconds`` (when present): a finite number >= 0.

    Raises:
        CheckpointError: naming the field, what it must be and what it is.
    """
    for key in ("family", "method"):
        if key in metadata and not isinstance(metadata[key], str):
            raise _field_error(path, key, "a string", metadata[key])
    for key in ("obs_dim", "act_dim"):
        if key in metadata:
            read_int(metadata, key, path, 1, MAX_DIM)
    for key in ("iteration", "env_steps"):
        if key in metadata:
            read_int(metadata, key, path)
    if "train_seconds" in metadata:
        read_float(metadata, "train_seconds", path)


def restore_numpy_generator(state: Any, path: Any, key: str) -> np.random.Generator:
    """A numpy ``Generator`` in the saved ``bit_generator.state`` (checked; error naming ``key``)."""
    expected = "a numpy PCG64 generator state {bit_generator, state: {state, inc}, has_uint32, uinteger}"
    if not (
        isinstance(state, dict) and state.get("bit_generator") == "PCG64"
        and isinstance(state.get("state"), dict)
        and all(isinstance(state["state"].get(k), int) and not isinstance(state["state"].get(k), bool)
                and 0 <= state["state"][k] < 2**128 for k in ("state", "inc"))
        and state.get("has_uint32") in (0, 1) and not isinstance(state.get("has_uint32"), bool)
        and isinstance(state.get("uinteger"), int) and not isinstance(state.get("uinteger"), bool)
        and 0 <= state["uinteger"] < 2**32
    ):
        raise _field_error(path, key, expected, state)
    generator = np.random.default_rng()
    try:
        generator.bit_generator.state = state
    except (ValueError, TypeError, OverflowError) as error:
        raise _field_error(path, key, expected, f"{state!r} ({error})") from None
    return generator


def restore_tensor_dict(tensors: dict[str, torch.Tensor], tree: Any, path: Any, key: str) -> dict[str, torch.Tensor]:
    """:func:`unflatten_state` of ``tree``, which must give a dict of name -> tensor (e.g. a learner state)."""
    try:
        state = unflatten_state(tensors, tree)
    except CheckpointError as error:
        raise CheckpointError(f"checkpoint {path}: metadata field {key!r}: {error}") from None
    if not isinstance(state, dict) or not all(
        isinstance(name, str) and isinstance(value, torch.Tensor) for name, value in state.items()
    ):
        raise _field_error(path, key, "a mapping of names to tensors", type(state).__name__)
    return state


def check_compatible(metadata: dict[str, Any], family: str, obs_dim: int, act_dim: int, path: Any = "") -> None:
    """Refuse a checkpoint made for another env: different family, observation or action size."""
    where = f"checkpoint {path} " if path else "checkpoint "
    if metadata.get("obs_dim") != obs_dim or metadata.get("act_dim") != act_dim:
        raise CheckpointError(
            f"{where}was made for family {metadata.get('family')!r} with observation size "
            f"{metadata.get('obs_dim')} and action size {metadata.get('act_dim')}, but {family!r} has "
            f"observation size {obs_dim} and action size {act_dim}; use a checkpoint of {family!r}"
        )
    if metadata.get("family") != family:
        raise CheckpointError(
            f"{where}was made for family {metadata.get('family')!r}, not {family!r}; use a checkpoint of "
            f"{family!r}"
        )


def generator_state(generator: torch.Generator) -> torch.Tensor:
    """The state of a CPU ``torch.Generator`` as a uint8 tensor (storable in safetensors)."""
    return generator.get_state().clone()


def restore_generator(state: torch.Tensor) -> torch.Generator:
    """A CPU ``torch.Generator`` in the saved ``state``."""
    generator = torch.Generator()
    generator.set_state(state.to(torch.uint8).contiguous())
    return generator


def read_generator(tensors: dict[str, torch.Tensor], key: str, path: Any) -> torch.Generator:
    """The generator saved as tensor ``key`` of the checkpoint at ``path``.

    Raises:
        CheckpointError: the tensor is missing or is not a generator state (the message names it).
    """
    if key not in tensors:
        raise CheckpointError(f"checkpoint {path} lacks the tensor {key!r} (the sampling generator's state)")
    try:
        return restore_generator(tensors[key])
    except (RuntimeError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path}: tensor {key!r} is not a generator state ({error})") from None


def flatten_state(state: Any, prefix: str) -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested state (dicts, lists, tensors, JSON scalars) into tensors and a JSON tree.

    Each tensor is stored under ``prefix + path`` and replaced in the tree by
    ``{"__tensor__": key}``; :func:`unflatten_state` puts them back. This lets an
    optimizer's ``state_dict()`` travel through safetensors + JSON without pickle.
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, torch.Tensor):
            key = prefix + (path.lstrip(".") or "root")
            tensors[key] = value
            return {"__tensor__": key}
        if isinstance(value, dict):
            pairs = [[walk(k, f"{path}.k{i}"), walk(v, f"{path}.{i}")] for i, (k, v) in enumerate(value.items())]
            return {"__dict__": pairs}
        if isinstance(value, list | tuple):
            items = [walk(v, f"{path}.{i}") for i, v in enumerate(value)]
            return {"__tuple__": items} if isinstance(value, tuple) else items
        if value is None or isinstance(value, bool | int | float | str):
            return value
        raise ValueError(f"cannot store a {type(value).__name__} at {prefix + path} in a checkpoint")

    return tensors, walk(state, "")


def unflatten_state(tensors: dict[str, torch.Tensor], tree: Any) -> Any:
    """Inverse of :func:`flatten_state` (:class:`CheckpointError` for a tree it did not write)."""
    if isinstance(tree, dict):
        if "__tensor__" in tree:
            key = tree["__tensor__"]
            if not isinstance(key, str) or key not in tensors:
                raise CheckpointError(f"checkpoint lacks tensor {key!r} named in its metadata")
            return tensors[key]
        if "__dict__" in tree:
            pairs = tree["__dict__"]
            if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
                raise CheckpointError("checkpoint state holds a '__dict__' that is not a list of [key, value] pairs")
            out = {}
            for k, v in pairs:
                name = unflatten_state(tensors, k)
                if not isinstance(name, str | int | float | bool | None | tuple):
                    raise CheckpointError(f"checkpoint state holds a dict key of type {type(name).__name__}")
                out[name] = unflatten_state(tensors, v)
            return out
        if "__tuple__" in tree:
            if not isinstance(tree["__tuple__"], list):
                raise CheckpointError("checkpoint state holds a '__tuple__' that is not a list")
            return tuple(unflatten_state(tensors, v) for v in tree["__tuple__"])
        raise CheckpointError(f"unexpected entry {sorted(tree)} in checkpoint state")
    if isinstance(tree, list):
        return [unflatten_state(tensors, v) for v in tree]
    return tree
