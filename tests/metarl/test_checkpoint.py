"""Checkpoints: round trip, atomic writes, clear errors on corrupted/truncated/mismatched files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from metarl.storage import checkpoint as ckpt
from metarl.storage.checkpoint import (
    CheckpointError,
    check_compatible,
    load_checkpoint,
    save_checkpoint,
)


def _save(path: Path) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    torch.rand(5, generator=generator)
    tensors = {
        "policy.layers.0.weight": torch.randn(4, 2),
        "policy.log_std": torch.zeros(2),
        "rng.torch": ckpt.generator_state(generator),
        "scalar": torch.tensor(3.5, dtype=torch.float64),
    }
    metadata = {"family": "Point2DNav", "obs_dim": 2, "act_dim": 2, "iteration": 7,
                "numpy_rng": {"state": {"state": 2**100, "inc": 5}}}
    save_checkpoint(path, tensors, metadata)
    return tensors


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint" / "latest.safetensors"
    tensors = _save(path)
    loaded, metadata = load_checkpoint(path)
    assert set(loaded) == set(tensors)
    for name in tensors:
        assert torch.equal(loaded[name], tensors[name]) and loaded[name].dtype == tensors[name].dtype
    assert metadata["iteration"] == 7 and metadata["numpy_rng"]["state"]["state"] == 2**100
    assert (tmp_path / "checkpoint" / "latest.json").is_file()
    # the restored generator continues the same stream
    reference = torch.Generator().manual_seed(3)
    torch.rand(5, generator=reference)
    restored = ckpt.restore_generator(loaded["rng.torch"])
    assert torch.equal(torch.rand(4, generator=restored), torch.rand(4, generator=reference))


def test_never_pickle(tmp_path: Path) -> None:
    path = tmp_path / "c.safetensors"
    _save(path)
    assert b"pickle" not in path.read_bytes()[:200] and path.read_bytes()[8:9] == b"{"


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.safetensors"
    _save(path)
    before = path.read_bytes()

    def crash(src: str, dst: str) -> None:
        raise OSError("disk died during rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk died"):
        save_checkpoint(path, {"x": torch.ones(3)}, {"family": "Point2DNav", "obs_dim": 2, "act_dim": 2})
    assert path.read_bytes() == before  # the old checkpoint is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json", "c.safetensors"]  # no temp left


def test_truncated_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.safetensors"
    _save(path)
    data = path.read_bytes()
    for size in (0, 5, 40, len(data) - 3):
        path.write_bytes(data[:size])
        with pytest.raises(CheckpointError, match="truncated|corrupted"):
            load_checkpoint(path)


def test_corrupted_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.safetensors"
    _save(path)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # flip bits in the tensor data
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(path)
    data = bytearray(path.read_bytes())
    data[12] = ord("#")  # break the JSON header
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(path)
    path.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_checkpoint_of_another_env_is_refused() -> None:
    metadata = {"family": "HalfCheetahVel", "obs_dim": 20, "act_dim": 6}
    with pytest.raises(CheckpointError, match="observation size 20 and action size 6"):
        check_compatible(metadata, "Point2DNav", 2, 2)
    with pytest.raises(CheckpointError, match="not 'HalfCheetahDir'"):
        check_compatible(metadata, "HalfCheetahDir", 20, 6)
    check_compatible(metadata, "HalfCheetahVel", 20, 6)


def test_written_files_get_normal_permissions(tmp_path: Path) -> None:
    path = tmp_path / "c.safetensors"
    _save(path)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
