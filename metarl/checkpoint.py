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
digest of the tensor data, so a file that was truncated or corrupted anywhere
(header or data) is rejected with a clear :class:`CheckpointError` instead of
loading garbage.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

FORMAT = "metarl-checkpoint"
FORMAT_VERSION = 1
_META_KEY = "metarl"


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
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp_name, _default_file_mode())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


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
    document = {"format": FORMAT, "version": FORMAT_VERSION, **metadata, "sha256": _digest(cpu)}
    try:
        text = json.dumps(document, sort_keys=True)
    except TypeError as error:
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
        document = json.loads(header["__metadata__"][_META_KEY])
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(
            f"checkpoint {path} is corrupted or is not a metarl checkpoint (unreadable header: {error})"
        ) from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a metarl checkpoint (format {document.get('format')!r})")
    if document.get("version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {document.get('version')!r}; this metarl reads "
            f"version {FORMAT_VERSION}"
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
    if _digest(tensors) != document.get("sha256"):
        raise CheckpointError(
            f"checkpoint {path} is corrupted: its tensor data does not match the digest written with it"
        )
    metadata = {k: v for k, v in document.items() if k not in ("format", "version", "sha256")}
    return tensors, metadata


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
    """Inverse of :func:`flatten_state`."""
    if isinstance(tree, dict):
        if "__tensor__" in tree:
            key = tree["__tensor__"]
            if key not in tensors:
                raise CheckpointError(f"checkpoint lacks tensor {key!r} named in its metadata")
            return tensors[key]
        if "__dict__" in tree:
            return {unflatten_state(tensors, k): unflatten_state(tensors, v) for k, v in tree["__dict__"]}
        if "__tuple__" in tree:
            return tuple(unflatten_state(tensors, v) for v in tree["__tuple__"])
        raise CheckpointError(f"unexpected entry {sorted(tree)} in checkpoint state")
    if isinstance(tree, list):
        return [unflatten_state(tensors, v) for v in tree]
    return tree
